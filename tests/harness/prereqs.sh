#!/usr/bin/env bash
# The one place that installs the system packages the make targets stand on. `make test`,
# `make demo`, `make bench` and `.ci/run` all call it; it installs only what is missing (no apt
# update when nothing is), then makes sure a Docker engine answers when the purpose needs one.
#
# Usage: prereqs.sh PURPOSE...
#   PURPOSE: test (everything make test needs) | demo | bench | unit | sanity | molecule
#   list     prints the packages of every purpose (the README's list is checked against it).
#
# Services are not started by the package scripts (a temporary policy-rc.d answers 101): the tests
# start their own redis-server/mariadbd on private sockets, and dockerd is started by
# ensure-docker.sh, so nothing else ends up listening on this machine.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

# "command:package": a purpose is satisfied when every command is found (on PATH or in an sbin
# directory). A command of "-" means "check the package itself" (dpkg status).
declare -A NEEDS
NEEDS[base]="git:git make:make rsync:rsync -:python3-venv"
NEEDS[containers]="dockerd:docker.io debootstrap:debootstrap"
NEEDS[stores]="redis-server:redis-server mariadbd:mariadb-server mariadb-dump:mariadb-client restic:restic"
NEEDS[sanity]="shellcheck:shellcheck"
NEEDS[bench]="wrk:wrk nginx:nginx-light"
PURPOSES="test demo bench unit sanity molecule"

groups_for() {
  case "$1" in
    test) echo "base containers stores sanity" ;;
    demo | molecule) echo "base containers" ;;
    unit) echo "base stores" ;;
    sanity) echo "base sanity" ;;
    bench) echo "base bench" ;;
    *) echo "prereqs: unknown purpose '$1' ($PURPOSES, list)" >&2; return 2 ;;
  esac
}

log() { printf 'prereqs: %s\n' "$*" >&2; }

have() {
  local cmd="$1" pkg="$2"
  if [ "$cmd" = "-" ]; then
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ]
    return
  fi
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ]
}

[ "$#" -gt 0 ] || { echo "usage: prereqs.sh PURPOSE... ($PURPOSES, list)" >&2; exit 2; }

if [ "$1" = list ]; then
  for purpose in $PURPOSES; do
    pkgs=()
    for group in $(groups_for "$purpose"); do
      for pair in ${NEEDS[$group]}; do pkgs+=("${pair#*:}"); done
    done
    echo "$purpose: ${pkgs[*]}"
  done
  exit 0
fi

missing=()
need_docker=false
for purpose in "$@"; do
  groups="$(groups_for "$purpose")"
  for group in $groups; do
    [ "$group" = containers ] && need_docker=true
    for pair in ${NEEDS[$group]}; do
      cmd="${pair%%:*}" pkg="${pair#*:}"
      if ! have "$cmd" "$pkg" && [[ " ${missing[*]} " != *" $pkg "* ]]; then
        missing+=("$pkg")
      fi
    done
  done
done

# python3 on PATH may not be Debian's (pyenv); what matters is that it can make a venv with pip.
if python3 -c 'import ensurepip, venv' 2>/dev/null; then
  kept=()
  for pkg in "${missing[@]}"; do [ "$pkg" = python3-venv ] || kept+=("$pkg"); done
  missing=("${kept[@]}")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { log "missing ${missing[*]}; run as root or install them"; exit 1; }
  log "installing ${missing[*]} (Debian packages; about a minute)"
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# clawbot.stack prereqs.sh: do not start services while installing\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=true
  fi
  cleanup() { if $own_policy; then rm -f "$policy"; fi; }
  trap cleanup EXIT
  apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 "$@"
  }
  apt_log="$(mktemp /var/tmp/clawbot-prereqs.XXXXXX.log)"
  if ! { apt_get update -qq && apt_get install -y -qq --no-install-recommends "${missing[@]}"; } \
      >"$apt_log" 2>&1; then
    log "apt-get failed; last lines of $apt_log:"
    tail -n 30 "$apt_log" >&2
    exit 1
  fi
  rm -f "$apt_log"
  cleanup
  trap - EXIT
  log "installed ${missing[*]}"
fi

if $need_docker; then
  bash "$here/ensure-docker.sh"
fi
