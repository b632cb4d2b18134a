#!/usr/bin/env bash
# Make sure a Docker engine answers: reuse a running one, otherwise start it (systemd's
# docker.service where systemd runs, dockerd in the background elsewhere); prereqs.sh installs
# Debian's docker.io when it is missing. Idempotent; safe to call from every target.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  bash "$(dirname "$0")/prereqs.sh" molecule
  docker info >/dev/null 2>&1 && exit 0
fi

if [ -d /run/systemd/system ] && systemctl list-unit-files docker.service >/dev/null 2>&1; then
  # A machine booted with systemd: let it own the engine, as on any Debian host.
  log "starting docker.service"
  systemctl start docker.service || true
else
  # No systemd (a CI sandbox): run dockerd in the background. A previous one may have died and
  # left its pid file behind.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/clawbot-dockerd.log)"
    nohup dockerd >/var/log/clawbot-dockerd.log 2>&1 &
  fi
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "docker engine is up"
    exit 0
  fi
  sleep 1
done
log "ERROR: dockerd did not answer within 60 s; last log lines:"
if [ -f /var/log/clawbot-dockerd.log ]; then tail -n 20 /var/log/clawbot-dockerd.log >&2; \
else journalctl -u docker.service -n 20 --no-pager >&2 || true; fi
exit 1
