#!/usr/bin/env bash
# `make test`: every part in order; each part runs even when an earlier one failed, so one run shows
# every failure. Ends with a time table (per part, and per Molecule scenario and action) and a
# one-line summary. `test-all.sh --list` prints the parts (used by `make help`).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

parts=(
  "prereqs|Debian packages that are missing (tests/harness/prereqs.sh test) and a running Docker engine"
  "venv|.venv from requirements-dev.txt and bot_app[test] (once; again when either changes)"
  "lint|yamllint, ansible-lint (production profile), ruff, antsibull-changelog lint"
  "sanity|ansible-test sanity on a copy of the collection; a skipped test fails the part"
  "unit|ansible-test units (modules, module_utils, filters), harness self-tests, alert rules (promtool), bot_app pytest"
  "integration|playbooks against the real bot on loopback with fake IM/model providers (tests/playbooks)"
  "image|the local Debian 12 systemd image, debootstrap + docker import (once; cached by Docker; built in the background while the parts above run)"
  "molecule|every scenario under molecule/ in a systemd container, two at a time (tests/harness/run_molecule.py)"
)

if [ "${1:-}" = --list ]; then
  for entry in "${parts[@]}"; do printf '%-12s %s\n' "${entry%%|*}" "${entry#*|}"; done
  exit 0
fi

# Plain output when it goes to a file or a CI log (Ansible, Molecule, pytest, ruff, rich all honour these).
if [ ! -t 1 ]; then
  export NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 TERM=dumb
fi

summary_file=.cache/molecule-summary.txt
image_log=.cache/image-build.log
mkdir -p .cache && rm -f "$summary_file"
rows=() failed=()
image_pid=""

# The image build is mostly downloading and unpacking (debootstrap) and nothing before molecule
# needs it, so it runs in the background while lint, sanity and unit use the CPU. The `image`
# part waits for it and shows its output.
start_image_build() {
  make --no-print-directory image >"$image_log" 2>&1 &
  image_pid=$!
}

run_part() {
  if [ "$1" = image ] && [ -n "$image_pid" ]; then
    local rc=0
    wait "$image_pid" || rc=$?
    cat "$image_log"
    return "$rc"
  fi
  make --no-print-directory "$1"
}

started=$SECONDS
for entry in "${parts[@]}"; do
  part="${entry%%|*}"
  t0=$SECONDS
  if run_part "$part"; then
    [ "$part" = prereqs ] && start_image_build
    note=""
    [ "$part" = image ] && [ -n "$image_pid" ] && note=" (waited for the background build)"
    rows+=("$(printf '  %-12s %-6s %5ss%s' "$part" PASS "$((SECONDS - t0))" "$note")")
  else
    rows+=("$(printf '  %-12s %-6s %5ss' "$part" FAIL "$((SECONDS - t0))")")
    failed+=("$part")
  fi
done
total=$((SECONDS - started))

printf '\nmake test: time per part\n'
printf '%s\n' "${rows[@]}"
printf '  %-12s %-6s %5ss (%dm %02ds)\n' total "" "$total" "$((total / 60))" "$((total % 60))"
if [ -f "$summary_file" ]; then
  printf '\n'
  cat "$summary_file"
fi
printf '\nsummary: %d passed, %d failed%s\n' "$((${#parts[@]} - ${#failed[@]}))" "${#failed[@]}" \
  "${failed[*]:+ (failed: ${failed[*]})}"
[ "${#failed[@]}" -eq 0 ]
