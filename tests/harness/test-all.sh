#!/usr/bin/env bash
# `make test`: every part in order; each part runs even when an earlier one failed, so one run shows
# every failure. Ends with a time table (per part, and per Molecule scenario and action) and a
# one-line summary. `test-all.sh --list` prints the parts (used by `make help`).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

parts=(
  "prereqs|Debian packages that are missing (tests/harness/prereqs.sh test) and a running Docker engine"
  "lint|yamllint, ansible-lint (production profile), ruff, antsibull-changelog lint"
  "sanity|ansible-test sanity on a copy of the collection; a skipped test fails the part"
  "unit|ansible-test units (modules, module_utils, filters), harness self-tests, bot_app pytest"
  "integration|playbooks against the real bot on loopback with fake IM/model providers (tests/playbooks)"
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
mkdir -p .cache && rm -f "$summary_file"
rows=() failed=()
started=$SECONDS
for entry in "${parts[@]}"; do
  part="${entry%%|*}"
  t0=$SECONDS
  if make --no-print-directory "$part"; then
    rows+=("$(printf '  %-12s %-6s %5ss' "$part" PASS "$((SECONDS - t0))")")
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
