#!/usr/bin/env bash
# Print the path of a promtool matching the Prometheus the roles install (Debian's `prometheus`).
# A promtool on PATH is used as it is. Otherwise Debian's package is downloaded (not installed:
# installing it would enable a Prometheus server on this machine) and only promtool is unpacked
# into .cache/tools/, once.
set -euo pipefail
cd "$(dirname "$0")/../.."

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi

dest="$PWD/.cache/tools/prometheus"
tool="$dest/usr/bin/promtool"
if [ ! -x "$tool" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    echo "promtool.sh: apt-get update (no package lists yet)" >&2
    apt-get update -qq >&2
  fi
  # apt's _apt user must be able to write the download directory.
  chmod 0777 "$work"
  (cd "$work" && apt-get download -q prometheus >&2)
  mkdir -p "$dest"
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  install -D -m 0755 "$work/root/usr/bin/promtool" "$tool"
fi
"$tool" --version >/dev/null 2>&1 || { echo "promtool.sh: $tool does not run" >&2; exit 1; }
echo "$tool"
