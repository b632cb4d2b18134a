#!/usr/bin/env bash
# Start a container that runs systemd as PID 1 with the settings measured to work on these
# machines (no --privileged: an explicit capability list, host cgroup namespace, tmpfs /run).
# Keep in step with the platform in .config/molecule/config.yml.
set -euo pipefail

name="${1:?usage: systemd-container.sh NAME IMAGE}"
image="${2:?usage: systemd-container.sh NAME IMAGE}"
caps=(SYS_ADMIN NET_ADMIN SYS_PTRACE SYS_CHROOT AUDIT_CONTROL AUDIT_READ AUDIT_WRITE SYS_NICE
      IPC_LOCK IPC_OWNER LINUX_IMMUTABLE NET_BROADCAST SYSLOG WAKE_ALARM BLOCK_SUSPEND
      MAC_ADMIN MAC_OVERRIDE SYS_MODULE SYS_RAWIO SYS_PACCT SYS_TTY_CONFIG LEASE DAC_READ_SEARCH)

args=(--detach --name "$name" --hostname "$name" --cgroupns host
      --volume /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --tmpfs /tmp
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined
      --label clawbot.stack/role=demo)
for cap in "${caps[@]}"; do args+=(--cap-add "$cap"); done

docker run "${args[@]}" "$image" /lib/systemd/systemd >/dev/null
# PID 1 needs a moment before its bus answers; then wait for the boot to finish.
state=""
for _ in $(seq 1 60); do
  state="$(docker exec "$name" timeout 120 systemctl is-system-running --wait 2>/dev/null || true)"
  case "$state" in running|degraded|maintenance|stopping) break ;; esac
  sleep 1
done
case "$state" in
  running|degraded) echo "systemd-container: $name is up ($state)" ;;
  *) echo "systemd-container: $name did not boot (state: ${state:-unknown})" >&2; exit 1 ;;
esac
