"""Read the output of one `molecule test` run: where each action starts, how it ended, its recap.

run_molecule.py feeds lines in as they arrive (for progress and timings) and asks at the end
whether the run kept the promises `molecule test` alone cannot check (the second check-mode run,
on the converged host, must report changed=0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# `INFO     [common > converge] Executing` (Molecule 25+; with or without a timestamp prefix).
_ACTION = r"^(?:\S+\s+)?[A-Z]+\s+\[(?P<scenario>[^\]>]+?) > (?P<action>[a-z_-]+)\] "
ACTION_START = re.compile(_ACTION + r"Executing\s*$")
ACTION_END = re.compile(_ACTION + r"Executed: (?P<how>.+?)\s*$")
RECAP_LINE = re.compile(r"\S+\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+failed=\d+")

# Lines Molecule prints on every run that say nothing about this project. Molecule always looks for
# a `default` scenario to share state with, and logs its absence at CRITICAL level; this
# collection has no `default` scenario on purpose (each scenario owns its instance).
NOISE = (re.compile(r"^CRITICAL\s+'molecule/default/molecule\.yml' glob failed\.\s+Exiting\.\s*$"),)


# Molecule 26 colours the result line of a failed action even with NO_COLOR set (logger.py writes
# the escape codes itself on that path); every other line honours NO_COLOR. Strip what gets through.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(line: str) -> str:
    return ANSI_ESCAPE.sub("", line)


def is_noise(line: str) -> bool:
    return any(p.match(line) for p in NOISE)


def recap_changed(output: str) -> int | None:
    """Sum of changed= over every PLAY RECAP host line; None when there is no recap at all."""
    matches = list(RECAP_LINE.finditer(output))
    if not matches:
        return None
    return sum(int(m["changed"]) for m in matches)


@dataclass
class Action:
    """One action of the test sequence as it ran. `label` tells the two check runs apart."""

    name: str
    label: str
    started: float
    ended: float | None = None
    outcome: str | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else self.started) - self.started

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.startswith("Successful")


def action_label(name: str, earlier: list[str]) -> str:
    """How the time table and failure messages name an action, given the actions run before it.

    The sequence in .config/molecule/config.yml runs `check` twice, on the fresh and on the
    converged host, and `destroy` twice, before and after the test.
    """
    runs = earlier.count(name)
    if name == "check":
        return ("check-fresh", "check-converged")[runs] if runs < 2 else f"check-{runs + 1}"
    if runs == 0:
        return name
    return f"{name}-final" if runs == 1 else f"{name}-{runs + 1}"


@dataclass
class RunTranscript:
    """The actions of one `molecule test` run, built line by line."""

    scenario: str
    actions: list[Action] = field(default_factory=list)

    def feed(self, line: str, now: float) -> Action | None:
        """Take one output line; returns the action whose result this line reports, if any."""
        start = ACTION_START.match(line)
        if start and start["scenario"] == self.scenario:
            if self.actions and self.actions[-1].ended is None:
                self.actions[-1].ended = now
            name = start["action"]
            label = action_label(name, [a.name for a in self.actions])
            self.actions.append(Action(name, label, now))
            return None
        if self.actions:
            current = self.actions[-1]
            current.lines.append(line)
            end = ACTION_END.match(line)
            if end and end["scenario"] == self.scenario and end["action"] == current.name:
                current.ended, current.outcome = now, end["how"]
                return current
        return None

    def finish(self, now: float) -> None:
        if self.actions and self.actions[-1].ended is None:
            self.actions[-1].ended = now

    def verdict(self, returncode: int, expected: list[str]) -> str | None:
        """None when the run passed every check; otherwise one line saying what failed."""
        failed = self.failed_action()
        if failed is not None:
            return f"{failed.label} failed"
        if returncode != 0:
            return f"molecule exited {returncode} after {self.actions[-1].label}" if self.actions \
                else f"molecule exited {returncode} before any action started"
        ran = [a.name for a in self.actions]
        if ran != expected:
            return f"ran {', '.join(ran) or 'nothing'}; the test sequence is {', '.join(expected)}"
        if expected.count("check") < 2:
            return None  # a scenario whose own sequence has no check-mode run on the converged host
        converged = next((a for a in self.actions if a.label == "check-converged"), None)
        if converged is None:
            return "no check-mode run on the converged host"
        changed = recap_changed("".join(converged.lines))
        if changed is None:
            return "check-converged: no PLAY RECAP found"
        if changed:
            return f"check-converged: check mode on a converged host reported changed={changed} (must be 0)"
        return None

    def failed_action(self) -> Action | None:
        return next((a for a in self.actions if not a.ok), None)

    def action(self, label: str) -> Action | None:
        return next((a for a in self.actions if a.label == label), None)
