#!/usr/bin/env bash
# Make sure a Docker engine answers: reuse a running one, otherwise install Debian's docker.io
# (when missing) and start dockerd in the background. Idempotent; safe to call from every target.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io"
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"; }
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends docker.io >/dev/null
fi

# A previous dockerd may have died and left its pid file behind.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/clawbot-dockerd.log)"
  nohup dockerd >/var/log/clawbot-dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "docker engine is up"
    exit 0
  fi
  sleep 1
done
log "ERROR: dockerd did not answer within 60 s; last log lines:"
tail -n 20 /var/log/clawbot-dockerd.log >&2 || true
exit 1
