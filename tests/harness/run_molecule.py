#!/usr/bin/env python
"""Run Molecule scenarios step by step, with the checks `molecule test` cannot express.

The sequence per scenario is the one in .config/molecule/config.yml:
destroy, syntax, create, prepare, check (fresh host), converge, idempotence,
check (converged host; must report changed=0), verify, destroy (always).

Usage: run_molecule.py [SCENARIO ...]   (all scenarios under molecule/ when none are named)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECAP_LINE = re.compile(r"\S+\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+failed=\d+")
# Molecule's own `check` command recreates the instance; a check-mode converge keeps it.
CHECK_MODE = ["converge", "--", "--check", "--diff"]
PLAIN_ENV = {"NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0", "COLUMNS": "200"}


@dataclass
class ScenarioResult:
    name: str
    steps: list[tuple[str, float, bool]] = field(default_factory=list)
    failure: str | None = None


def discover_scenarios() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def run_step(scenario: str, action: list[str], log_dir: Path, label: str) -> tuple[bool, str]:
    log_file = log_dir / f"{scenario}-{label}.log"
    cmd = ["molecule", action[0], "-s", scenario, *action[1:]]
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, stdin=subprocess.DEVNULL, env={**os.environ, **PLAIN_ENV})
        assert proc.stdout is not None
        output = []
        for line in proc.stdout:
            output.append(line)
            log.write(line)
            sys.stdout.write(f"[{scenario}:{label}] {line}")
        proc.wait()
    return proc.returncode == 0, "".join(output)


def recap_changed(output: str) -> int | None:
    matches = list(RECAP_LINE.finditer(output))
    if not matches:
        return None
    return sum(int(m["changed"]) for m in matches)


def run_scenario(scenario: str, log_dir: Path) -> ScenarioResult:
    result = ScenarioResult(scenario)
    plan = [
        (["destroy"], "destroy"),
        (["syntax"], "syntax"),
        (["create"], "create"),
        (["prepare"], "prepare"),
        (CHECK_MODE, "check-fresh"),
        (["converge"], "converge"),
        (["idempotence"], "idempotence"),
        (CHECK_MODE, "check-converged"),
        (["verify"], "verify"),
    ]
    try:
        for action, label in plan:
            started = time.monotonic()
            ok, output = run_step(scenario, action, log_dir, label)
            if ok and label == "check-converged":
                changed = recap_changed(output)
                if changed is None:
                    ok, result.failure = False, "check-converged: no PLAY RECAP found"
                elif changed:
                    ok = False
                    result.failure = (f"check-converged: check mode on a converged host "
                                      f"reported changed={changed} (must be 0)")
            result.steps.append((label, time.monotonic() - started, ok))
            if not ok:
                result.failure = result.failure or f"{label} failed (log: {log_dir}/{scenario}-{label}.log)"
                break
    finally:
        started = time.monotonic()
        ok = run_step(scenario, ["destroy"], log_dir, "destroy-final")[0]
        result.steps.append(("destroy", time.monotonic() - started, ok))
        if not ok and result.failure is None:
            result.failure = "final destroy failed"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--log-dir", default=str(ROOT / ".cache" / "molecule-logs"))
    args = parser.parse_args()

    scenarios = args.scenarios or discover_scenarios()
    unknown = sorted(set(scenarios) - set(discover_scenarios()))
    if unknown:
        print(f"run_molecule: unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)

    results = [run_scenario(name, log_dir) for name in scenarios]

    print("\nMolecule summary")
    for res in results:
        steps = " ".join(f"{label}:{'ok' if ok else 'FAIL'}({secs:.0f}s)" for label, secs, ok in res.steps)
        print(f"  {res.name}: {'PASS' if res.failure is None else 'FAIL'}  {steps}")
        if res.failure:
            print(f"    -> {res.failure}")
    failed = [r.name for r in results if r.failure]
    print(f"molecule: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
