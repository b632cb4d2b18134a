"""Background conversation-log writer: bounded queue, batched inserts, disk spool + replay.

Rows are already encrypted when submitted. If the database is unreachable (or the queue is
full) rows are appended to ``<data_dir>/spool/conversation-spool.jsonl`` (mode 0600) and
replayed by the same task once the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from clawbot_app.config import Settings
from clawbot_app.db.engine import Database
from clawbot_app.db.schema import conversation_log, dialog_sessions
from clawbot_app.metrics import Metrics

log = logging.getLogger("clawbot_app.logwriter")

TABLES: dict[str, sa.Table] = {t.name: t for t in (conversation_log, dialog_sessions)}
_DT_FIELDS = ("created_at",)
Row = tuple[str, dict[str, Any]]


def _encode(row: Row) -> str:
    table, values = row
    vals = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in values.items()}
    return json.dumps({"table": table, "values": vals}, separators=(",", ":"))


def _decode(line: str) -> Row:
    obj = json.loads(line)
    vals = obj["values"]
    for k in _DT_FIELDS:
        if isinstance(vals.get(k), str):
            vals[k] = dt.datetime.fromisoformat(vals[k])
    return obj["table"], vals


class Spool:
    """Append-only JSON-lines file guarded by an flock (safe across worker processes)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.path = directory / "conversation-spool.jsonl"
        self.lock_path = directory / "spool.lock"

    @contextlib.contextmanager
    def _locked(self) -> Any:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(self, rows: list[Row]) -> None:
        data = "".join(_encode(r) + "\n" for r in rows).encode()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def claim(self) -> list[Path]:
        """Move the live spool aside and return every file waiting for replay."""
        if not self.dir.exists():
            return []
        with self._locked():
            if self.path.exists() and self.path.stat().st_size:
                os.replace(self.path, self.dir / f"replay-{os.getpid()}-{time.time_ns()}.jsonl")
            return sorted(self.dir.glob("replay-*.jsonl"))

    def pending_files(self) -> list[Path]:
        if not self.dir.exists():
            return []
        files = sorted(self.dir.glob("replay-*.jsonl"))
        if self.path.exists() and self.path.stat().st_size:
            files.append(self.path)
        return files

    def pending_rows(self) -> int:
        total = 0
        for f in self.pending_files():
            with f.open("rb") as fh:
                total += sum(1 for _ in fh)
        return total


class ConversationWriter:
    def __init__(self, settings: Settings, db: Database, metrics: Metrics):
        st = settings.storage
        self.db = db
        self.metrics = metrics
        self.batch_size = st.writer_batch_size
        self.replay_interval = st.replay_interval_seconds
        self.queue: asyncio.Queue[Row | None] = asyncio.Queue(maxsize=st.writer_queue_size)
        self.spool = Spool(st.data_path / "spool")
        self._task: asyncio.Task[None] | None = None
        self._last_replay = 0.0
        self.db_ok = True

    def submit(self, table: str, values: dict[str, Any]) -> None:
        """Non-blocking: queue a row; if the queue is full spool it straight to disk."""
        try:
            self.queue.put_nowait((table, values))
        except asyncio.QueueFull:
            self.spool.append([(table, values)])
            self.metrics.conversation_spooled.inc()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush queued rows (DB or spool) and stop the task."""
        if self._task is None:
            return
        await self.queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            rest: list[Row] = []
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None:
                    rest.append(item)
            if rest:
                self.spool.append(rest)
        self._task = None

    async def flush(self) -> None:
        """Wait until every submitted row has been written or spooled."""
        await self.queue.join()

    async def _run(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), self.replay_interval)
            except TimeoutError:
                await self._maybe_replay()
                continue
            batch: list[Row] = []
            stop = item is None
            if item is not None:
                batch.append(item)
            taken = 1
            while len(batch) < self.batch_size and not self.queue.empty():
                nxt = self.queue.get_nowait()
                taken += 1
                if nxt is None:
                    stop = True
                else:
                    batch.append(nxt)
            try:
                if batch:
                    await self._write(batch)
                await self._maybe_replay()
            except Exception:  # never let the writer die
                log.exception("log writer error")
            finally:
                for _ in range(taken):
                    self.queue.task_done()
            if stop:
                return

    async def _insert(self, rows: list[Row]) -> None:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for table, values in rows:
            grouped.setdefault(table, []).append(values)
        try:
            async with self.db.engine.begin() as conn:
                for table, values in grouped.items():
                    await conn.execute(sa.insert(TABLES[table]), values)
        except IntegrityError:  # duplicates (replay / concurrent session create): row by row
            for table, values in rows:
                try:
                    async with self.db.engine.begin() as conn:
                        await conn.execute(sa.insert(TABLES[table]), [values])
                except IntegrityError:
                    continue

    async def _write(self, rows: list[Row]) -> None:
        try:
            await asyncio.wait_for(self._insert(rows), 10.0)
            if not self.db_ok:
                log.info("database reachable again")
            self.db_ok = True
        except Exception as exc:
            if self.db_ok:
                log.error("conversation log write failed, spooling to disk: %s",
                          type(exc).__name__)
            self.db_ok = False
            self.spool.append(rows)
            self.metrics.conversation_spooled.inc(len(rows))

    async def _maybe_replay(self, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._last_replay < self.replay_interval:
            return 0
        self._last_replay = now
        if not self.spool.pending_files():
            return 0
        return await self.replay()

    async def replay(self) -> int:
        """Insert spooled rows; files are removed only after a successful insert."""
        replayed = 0
        for path in self.spool.claim():
            rows = [_decode(line) for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
            try:
                for i in range(0, len(rows), 500):
                    await asyncio.wait_for(self._insert(rows[i:i + 500]), 30.0)
            except Exception as exc:
                log.warning("spool replay failed (%s), will retry", type(exc).__name__)
                self.db_ok = False
                break
            path.unlink()
            replayed += len(rows)
            self.metrics.conversation_replayed.inc(len(rows))
        if replayed:
            self.db_ok = True
            log.info("replayed %d spooled conversation rows", replayed)
        return replayed
