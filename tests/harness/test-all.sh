#!/usr/bin/env bash
# `make test`: every part in order (lint, sanity, unit, integration, molecule); each part runs even when an
# earlier one failed, so one run shows every failure. Ends with a one-line summary.
set -uo pipefail
cd "$(dirname "$0")/../.."

parts=(lint sanity unit integration molecule)
passed=() failed=()
started=$SECONDS
for part in "${parts[@]}"; do
  t0=$SECONDS
  if make --no-print-directory "$part"; then
    passed+=("$part($((SECONDS - t0))s)")
  else
    failed+=("$part($((SECONDS - t0))s)")
  fi
done

printf '\nmake test finished in %ss; passed: %s; failed: %s\n' "$((SECONDS - started))" \
  "${passed[*]:-none}" "${failed[*]:-none}"
printf 'summary: %d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
[ "${#failed[@]}" -eq 0 ]
