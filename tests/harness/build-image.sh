#!/usr/bin/env bash
# Build (once) and cache the local Debian systemd image the Molecule scenarios and `make demo` run.
# No container registry is reachable, so the root filesystem comes from debootstrap and is imported.
# Usage: build-image.sh [SUITE]   (bookworm by default; trixie works the same way)
set -euo pipefail

suite="${1:-bookworm}"
case "$suite" in
  bookworm) tag=12 ;;
  trixie) tag=13 ;;
  *) echo "build-image: unsupported suite '$suite' (bookworm, trixie)" >&2; exit 2 ;;
esac
image="${CLAWBOT_IMAGE_REPO:-clawbot/debian-systemd}:${tag}"
mirror="${CLAWBOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,iproute2,procps,curl,gnupg"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
fi

rootfs="$(mktemp -d /var/tmp/clawbot-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "build-image: debootstrap $suite into $rootfs (about a minute)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  echo "build-image: debootstrap failed; last lines of $rootfs.log:" >&2
  tail -n 30 "$rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"

# Container-friendly systemd: no getty, no udev triggers, no first-boot wizard.
chroot "$rootfs" systemctl mask getty.target systemd-firstboot.service \
  systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount >/dev/null 2>&1 || true
# An image must not carry a machine id or apt lists; both are made fresh in each container.
: >"$rootfs/etc/machine-id"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
# With no lists the cache must also look old, or `apt: cache_valid_time` trusts an empty cache
# for an hour after the image was built (it judges by the mtime of the lists directory).
touch -d @0 "$rootfs/var/lib/apt/lists"
# tar records "." with the mode of the mktemp directory (0700): the image's / would then be
# closed to every user but root (a non-root container built on it cannot even exec).
chmod 0755 "$rootfs"

tar -C "$rootfs" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' \
  -c 'ENV container=docker' \
  - "$image" >/dev/null
echo "$image"
