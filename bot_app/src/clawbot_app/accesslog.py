"""Buffered ECS access log: one JSON line per request, written in batches.

Formatting goes through a pre-built template (no ``LogRecord`` per request) and lines are
flushed every 100 ms or every 256 lines, so logging costs little on the request path.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import IO

from clawbot_app.config import LoggingSettings

_FLUSH_SECONDS = 0.1
_MAX_BUFFER = 256
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


class AccessLog:
    def __init__(self, cfg: LoggingSettings):
        self._buf: list[str] = []
        self._handle: asyncio.TimerHandle | None = None
        self._file: IO[str] | None = None
        self._sec = -1
        self._prefix = ""
        self._pid = os.getpid()
        # (method, route, status) -> the two constant stretches of the line around the path
        self._parts: dict[tuple[str, str, int], tuple[str, str]] = {}
        self.configure(cfg)

    def configure(self, cfg: LoggingSettings) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.enabled = cfg.access_log and _LEVELS[cfg.level] <= 20
        if cfg.file:
            path = os.path.expanduser(cfg.file)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - long-lived

    def _timestamp(self) -> str:
        now = time.time()
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{int((now - sec) * 1000):03d}Z"

    def log(self, method: str, path: str, route: str, status: int, duration_ns: int,
            trace_id: str, client: str | None = None) -> None:
        if not self.enabled:
            return
        dumps = json.dumps
        parts = self._parts.get((method, route, status))
        if parts is None:  # routes are templates and methods few: a small, bounded set
            if len(self._parts) > 4096:
                self._parts.clear()
            parts = self._parts[(method, route, status)] = (
                f'"message": {dumps(f"{method} {route} {status}")}, '
                f'"log.logger": "clawbot_app.access", "process.pid": {self._pid}, '
                f'"http.request.method": {dumps(method)}, "url.path": ',
                f', "http.route": {dumps(route)}, "http.response.status_code": {status}, ')
        self._buf.append(
            f'{{"@timestamp": "{self._timestamp()}", "log.level": "info", {parts[0]}'
            f'{dumps(path)}{parts[1]}'
            f'"event.duration": {duration_ns}, "trace.id": {dumps(trace_id)}'
            f'{_client_field(client)}}}')
        if len(self._buf) >= _MAX_BUFFER:
            self.flush()
        elif self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._handle = loop.call_later(_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._buf:
            return
        data = "\n".join(self._buf) + "\n"
        self._buf.clear()
        for stream in (sys.stdout, self._file):
            if stream is None:
                continue
            try:
                stream.write(data)
                stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def _client_field(client: str | None) -> str:
    """``client.address``: the peer, or the client a trusted proxy forwarded (uvicorn's
    ``server.forwarded_allow_ips``); left out when there is none (a Unix socket)."""
    return f', "client.address": {json.dumps(client)}' if client else ""
