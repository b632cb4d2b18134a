"""Aggregate repeated log lines: the first of a kind is logged, the rest are counted and summed up.

A flood of forged callbacks must not turn into a flood of WARNING lines (disk, ELK, the person on
call). The exact count lives in a Prometheus counter; the log says the first one and then, at most
once per ``interval`` per kind, how many more there were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Kind:
    window_start: float
    suppressed: int = 0


class LogThrottle:
    def __init__(self, logger: logging.Logger, interval: float = 10.0, max_kinds: int = 1024,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.max_kinds = max_kinds
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}

    def log(self, level: int, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged less than ``interval`` ago.

        Returns True when a line was written. The first line after a quiet period carries
        ``(N similar suppressed in the last S s)`` for what was held back before it.
        """
        now = self._clock()
        entry = self._kinds.get(kind)
        if entry is not None and now - entry.window_start < self.interval:
            entry.suppressed += 1
            return False
        suppressed = entry.suppressed if entry is not None else 0
        if entry is None and len(self._kinds) >= self.max_kinds:
            self._forget_quiet(now)
        self._kinds[kind] = _Kind(window_start=now)
        if suppressed:
            msg += " (%d similar suppressed in the last %.0f s)"
            args = (*args, suppressed, self.interval)
        self.logger.log(level, msg, *args)
        return True

    def _forget_quiet(self, now: float) -> None:
        for kind in [k for k, e in self._kinds.items() if now - e.window_start >= self.interval]:
            del self._kinds[kind]
        while len(self._kinds) >= self.max_kinds:
            self._kinds.pop(next(iter(self._kinds)))
