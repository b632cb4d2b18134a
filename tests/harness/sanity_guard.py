#!/usr/bin/env python
"""Run `ansible-test sanity` and fail when it skipped a test instead of running it.

ansible-test skips a sanity test, and still exits 0, when a program it needs is missing
(`shellcheck` for shell scripts, `pwsh` for PowerShell) or when a Python version, a virtual
environment or libyaml is not available. Its console shows a WARNING and its summary shows nothing;
for shellcheck the JUnit report even calls it "No tests applicable". This wrapper passes the output
through unchanged and turns every such skip into a failure that names the test and the reason.

Usage: sanity_guard.py COMMAND [ARG ...]    (the ansible-test command line to run)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable

# The messages ansible-test prints for a test it did not run although it applies (ansible-test
# 2.19: _internal/util.py find_executable(required='warning') and commands/sanity/__init__.py).
SKIP_PATTERNS = (
    re.compile(r'Required program "(?P<what>[^"]+)" not found'),
    re.compile(r'Skipping sanity test "(?P<what>[^"]+)"(?P<why>.*)'),
)


def skipped_tests(lines: Iterable[str]) -> list[str]:
    """The skip messages in ansible-test's output, one per skipped test or missing program."""
    found: list[str] = []
    for line in lines:
        for pattern in SKIP_PATTERNS:
            match = pattern.search(line)
            if match:
                message = match.group(0).strip()
                if message not in found:
                    found.append(message)
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        seen.append(line)
    proc.wait()
    skips = skipped_tests(seen)
    if skips:
        print("\nsanity_guard: ansible-test did not run every sanity test that applies here:", file=sys.stderr)
        for message in skips:
            print(f"  - {message}", file=sys.stderr)
        print("sanity_guard: install what is missing (tests/harness/prereqs.sh sanity) and run again.",
              file=sys.stderr)
        return proc.returncode or 1
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
