#!/usr/bin/env python
"""Run Molecule scenarios: one `molecule test` per scenario, several at once, with a time table.

Each scenario runs the sequence in .config/molecule/config.yml in a single Molecule process:
destroy, syntax, create, prepare, check (fresh host), converge, idempotence, check (converged host;
failed here unless its recap says changed=0), verify, destroy (Molecule destroys on failure too).

The terminal gets one line per action as it ends; the whole output of each scenario goes to
.cache/molecule-logs/<scenario>.log, and the output of a failed action is printed in full at the
end. Scenarios run `--jobs` at a time (default 2): most of a scenario is spent waiting on the
container (apt, systemd, services), so two of them share the two cores well.

Usage: run_molecule.py [--jobs N] [SCENARIO ...]   (all scenarios under molecule/ when none are named)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from molecule_output import RunTranscript, action_label, is_noise, plain

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = ROOT / ".config" / "molecule" / "config.yml"
# Plain output for logs and CI; MOLECULE_GLOB names where the scenarios are, which also keeps
# Molecule from suggesting that a collection move them to extensions/molecule.
PLAIN_ENV = {"NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0",
             "COLUMNS": "200", "MOLECULE_GLOB": "molecule/*/molecule.yml"}
FAILED_OUTPUT_LINES = 400
# Scenarios that take far longer than the others start first, so the job slots finish together
# instead of one long scenario running alone at the end (site: about 500 s against 140-210 s).
LONG_FIRST = ("site", "ha")
_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


@dataclass
class ScenarioResult:
    name: str
    transcript: RunTranscript
    seconds: float
    failure: str | None
    log_file: Path


def discover_scenarios() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def configured_sequence(scenario: str | None = None) -> list[str]:
    """The base config's test sequence, or the scenario's own when its molecule.yml sets one."""
    base = list(yaml.safe_load(BASE_CONFIG.read_text())["scenario"]["test_sequence"])
    if scenario is None:
        return base
    own = (yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text()) or {}).get("scenario", {})
    return list(own.get("test_sequence") or base)


def run_scenario(scenario: str, log_dir: Path, expected: list[str], width: int) -> ScenarioResult:
    log_file = log_dir / f"{scenario}.log"
    transcript = RunTranscript(scenario)
    started = time.monotonic()
    tag = f"[{scenario}]".ljust(width + 2)
    say(f"{tag} molecule test (log: {log_file})")
    cmd = ["molecule", "test", "-s", scenario]
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, env={**os.environ, **PLAIN_ENV})
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = plain(raw)
            if is_noise(line):
                continue
            log.write(line)
            done = transcript.feed(line, time.monotonic())
            if done is not None:
                say(f"{tag} {done.label:<16} {'ok' if done.ok else 'FAILED':<6} {done.seconds:5.0f}s")
        proc.wait()
    now = time.monotonic()
    transcript.finish(now)
    for act in transcript.actions:
        if act.outcome is None:
            say(f"{tag} {act.label:<16} {'no result':<6} {act.seconds:5.0f}s")
    failure = transcript.verdict(proc.returncode, expected)
    say(f"{tag} {'PASS' if failure is None else 'FAIL: ' + failure} in {now - started:.0f}s")
    return ScenarioResult(scenario, transcript, now - started, failure, log_file)


def time_table(results: list[ScenarioResult], labels: list[str]) -> list[str]:
    width = max(len(r.name) for r in results)
    widths = [max(len(lab), 5) for lab in labels]
    rows = [f"  {'scenario':<{width}}  {'result':<6} {'total':>6}  "
            + " ".join(f"{lab:>{w}}" for lab, w in zip(labels, widths, strict=True))]
    for res in results:
        by_label = {a.label: a for a in res.transcript.actions}
        cells = []
        for lab, w in zip(labels, widths, strict=True):
            act = by_label.get(lab)
            cell = "-" if act is None else f"{act.seconds:.0f}s" + ("" if act.ok else "!")
            cells.append(f"{cell:>{w}}")
        rows.append(f"  {res.name:<{width}}  {'PASS' if res.failure is None else 'FAIL':<6} "
                    f"{res.seconds:5.0f}s  " + " ".join(cells))
    return rows


def column_labels(expected: list[str]) -> list[str]:
    return [action_label(name, expected[:n]) for n, name in enumerate(expected)]


def run_order(scenarios: list[str]) -> list[str]:
    """The long scenarios first (in LONG_FIRST's order), then the others as given."""
    long = [name for name in LONG_FIRST if name in scenarios]
    return long + [name for name in scenarios if name not in long]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MOLECULE_JOBS", "2")),
                        help="scenarios run at once (default: $MOLECULE_JOBS or 2)")
    parser.add_argument("--log-dir", default=str(ROOT / ".cache" / "molecule-logs"))
    parser.add_argument("--summary", help="also write the time table to this file")
    args = parser.parse_args()

    known = discover_scenarios()
    scenarios = args.scenarios or known
    unknown = sorted(set(scenarios) - set(known))
    if unknown:
        print(f"run_molecule: unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    expected = configured_sequence()
    scenarios = run_order(scenarios)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        width = max(len(name) for name in scenarios)
        results = list(pool.map(lambda name: run_scenario(name, log_dir, configured_sequence(name), width),
                                scenarios))
    wall = time.monotonic() - started

    for res in results:
        if res.failure is None:
            continue
        act = res.transcript.failed_action() or res.transcript.action(res.failure.split(":")[0])
        print(f"\n---- {res.name}: {res.failure}; output of {act.label if act else 'the run'} "
              f"(last {FAILED_OUTPUT_LINES} lines; whole run in {res.log_file}) ----")
        lines = act.lines if act is not None else res.log_file.read_text().splitlines(keepends=True)
        sys.stdout.write("".join(lines[-FAILED_OUTPUT_LINES:]))

    failed = [r.name for r in results if r.failure]
    table = [f"Molecule: {len(results) - len(failed)} passed, {len(failed)} failed, "
             f"{wall:.0f}s wall clock with {args.jobs} at a time (seconds per action; ! = failed)",
             *time_table(results, column_labels(expected))]
    table += [f"  {r.name}: {r.failure}" for r in results if r.failure]
    print("\n" + "\n".join(table))
    if args.summary:
        Path(args.summary).write_text("\n".join(table) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
