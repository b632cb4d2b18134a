"""Conversation-log writer: journal, bounded queue, batched inserts, disk spool + replay.

Rows are already encrypted when submitted. ``submit``/``submit_many`` first append them to the
crash-safe journal (:mod:`clawbot_app.journal`, ``<data_dir>/journal/``), then queue them for
the background task, which inserts them in batches and then marks them done in the journal.

* DB unreachable (or the queue full): rows go to ``<data_dir>/spool/conversation-spool.jsonl``
  (mode 0600) and are replayed by the same task once the DB answers again.
* The DB rejects the data of a row (encoding, constraint, value): the batch is retried without
  the rows already committed, then row by row; the good rows are written and each bad one goes
  to ``<data_dir>/spool/dead-letter.jsonl`` (mode 0600, never replayed automatically). The
  spool replay does the same, so one bad row never blocks the others.
* Process killed: the journal segments it left are moved into the spool on the next start (or
  by another live worker) and replayed; rows already committed are skipped as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from clawbot_app.config import Settings
from clawbot_app.db.engine import Database
from clawbot_app.db.schema import conversation_log, dialog_sessions
from clawbot_app.journal import FsyncPolicy, Journal, Segment, lock_current
from clawbot_app.keyfile import write_private_file
from clawbot_app.metrics import Metrics

log = logging.getLogger("clawbot_app.logwriter")

TABLES: dict[str, sa.Table] = {t.name: t for t in (conversation_log, dialog_sessions)}
_DT_FIELDS = ("created_at",)
Row = tuple[str, dict[str, Any]]
_Item = tuple[Row, Segment | None]

_BATCH_TIMEOUT = 10.0
_REPLAY_TIMEOUT = 30.0
_REPLAY_CHUNK = 500
_LOOKUP_CHUNK = 500
_DUPLICATE_CODES = frozenset({1555, 2067, 1062})  # SQLite PRIMARYKEY/UNIQUE, MySQL ER_DUP_ENTRY
# MySQL/MariaDB server errors about the data of a row (pymysql reports some of them, e.g. 1292
# "Incorrect datetime value", as OperationalError): null, duplicate, out of range, truncated,
# incorrect value, no default, incorrect string, too long, foreign key, check constraint.
_MYSQL_ROW_ERRORS = frozenset({1048, 1062, 1264, 1265, 1292, 1364, 1366, 1406, 1451, 1452,
                               3819, 4025})


# -- encoding ----------------------------------------------------------------------------------
def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in values.items()}


def _encode(row: Row) -> str:
    """One JSON line. ``ensure_ascii`` escapes everything, lone surrogates included, so any
    Python string can be written and read back, even one no DB driver can encode (only a
    high+low surrogate pair stored as two code points comes back as the one character)."""
    table, values = row
    return json.dumps({"table": table, "values": _jsonable(values)}, separators=(",", ":"),
                      ensure_ascii=True)


def _decode(line: str) -> Row:
    """Inverse of :func:`_encode`; raises ``ValueError`` on anything else."""
    obj = json.loads(line)
    if not isinstance(obj, dict) or obj.get("table") not in TABLES \
            or not isinstance(obj.get("values"), dict):
        raise ValueError("not a conversation row")
    vals: dict[str, Any] = obj["values"]
    for k in _DT_FIELDS:
        if isinstance(vals.get(k), str):
            with contextlib.suppress(ValueError):  # not ISO: the DB rejects it, dead letter
                vals[k] = dt.datetime.fromisoformat(vals[k])
    return obj["table"], vals


def _dead_record(reason: str, **fields: Any) -> str:
    record = {"dead_at": dt.datetime.now(dt.UTC).isoformat(), "error": reason, **fields}
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True, default=repr)


# -- error classification -----------------------------------------------------------------------
def _driver_code(exc: BaseException) -> int | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def is_duplicate(exc: BaseException) -> bool:
    """A primary-key / unique-key duplicate: the row (or its session) is already stored."""
    return isinstance(exc, IntegrityError) and _driver_code(exc) in _DUPLICATE_CODES


def is_row_error(exc: BaseException) -> bool:
    """The DB or its driver rejected the data of a row. Anything else (connection lost, timeout,
    lock, missing table, access denied) is an outage: spool the rows and retry later."""
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    if isinstance(exc, DBAPIError):
        return not isinstance(exc.orig, sqlite3.Error) and _driver_code(exc) in _MYSQL_ROW_ERRORS
    if isinstance(exc, StatementError):  # a bind parameter failed to convert, before the DB
        return True
    return isinstance(exc, UnicodeError)  # e.g. a lone surrogate the driver cannot encode


def error_label(exc: BaseException) -> str:
    """Type and driver code only: DB error messages may quote the row's values."""
    code = _driver_code(exc)
    return f"{type(exc).__name__}({code})" if code is not None else type(exc).__name__


# -- files ---------------------------------------------------------------------------------------
class Spool:
    """Append-only JSON-lines files guarded by an flock (safe across worker processes)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.path = directory / "conversation-spool.jsonl"
        self.dead_path = directory / "dead-letter.jsonl"
        self.lock_path = directory / "spool.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _append(self, path: Path, lines: Sequence[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        with self._locked():
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def append(self, rows: Sequence[Row]) -> None:
        self._append(self.path, [_encode(r) for r in rows])

    def dead_letter(self, records: Sequence[str]) -> None:
        """Append dead-letter records (never replayed automatically)."""
        self._append(self.dead_path, records)

    def dead_rows(self) -> int:
        if not self.dead_path.exists():
            return 0
        with self.dead_path.open("rb") as fh:
            return sum(1 for _ in fh)

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

    def rewrite(self, path: Path, rows: Sequence[Row]) -> None:
        """Atomically replace a replay file with the rows still to do."""
        write_private_file(path, "".join(_encode(r) + "\n" for r in rows).encode())


@dataclass
class _Outcome:
    stored: int = 0  # inserted, or already in the DB
    dead: int = 0
    rest: list[Row] = field(default_factory=list)  # not stored because the DB is unavailable


def _segment_counts(items: Sequence[_Item]) -> Counter[Segment]:
    return Counter(seg for _, seg in items if seg is not None)


class ConversationWriter:
    def __init__(self, settings: Settings, db: Database, metrics: Metrics):
        st = settings.storage
        self.db = db
        self.metrics = metrics
        self.batch_size = st.writer_batch_size
        self.replay_interval = st.replay_interval_seconds
        self.linger = st.writer_linger_ms / 1000
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=st.writer_queue_size)
        self.spool = Spool(st.data_path / "spool")
        fsync: FsyncPolicy = st.journal_fsync
        self.journal = Journal(st.data_path / "journal", fsync=fsync)
        self._task: asyncio.Task[None] | None = None
        self._last_replay = 0.0
        self.db_ok = True
        self._journal_ok = True

    # -- request side ------------------------------------------------------------------------
    def submit(self, table: str, values: dict[str, Any]) -> None:
        """Journal one row, then queue it; see :meth:`submit_many`."""
        self.submit_many([(table, values)])

    def submit_many(self, rows: Sequence[Row]) -> None:
        """Non-blocking. Append ``rows`` to the journal with one write (so they survive a crash
        of this process once this returns), then queue them; if the queue is full, spool them."""
        for table, _ in rows:
            if table not in TABLES:
                raise ValueError(f"unknown conversation table {table!r}")
        seg = self._journal(rows)
        overflow: list[Row] = []
        for row in rows:
            try:
                self.queue.put_nowait((row, seg))
            except asyncio.QueueFull:
                overflow.append(row)
        if overflow:
            self._spool_overflow(overflow, seg)

    def _journal(self, rows: Sequence[Row]) -> Segment | None:
        try:
            data = "".join(_encode(r) + "\n" for r in rows).encode("ascii")
            seg = self.journal.append(data, len(rows))
        except (OSError, TypeError, ValueError) as exc:
            self.metrics.conversation_journal_errors.inc()
            if self._journal_ok:
                log.error("conversation journal write failed (%s); rows are queued in memory "
                          "only until it works again", error_label(exc))
            self._journal_ok = False
            return None
        if not self._journal_ok:
            log.info("conversation journal writable again")
            self._journal_ok = True
        return seg

    def _spool_overflow(self, rows: list[Row], seg: Segment | None) -> None:
        try:
            self.spool.append(rows)
        except OSError as exc:  # still in the journal (if it worked): recovered on restart
            log.error("conversation spool write failed (%s)", error_label(exc))
            return
        self.metrics.conversation_spooled.inc(len(rows))
        if seg is not None:
            self.journal.done(seg, len(rows))

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush queued rows (DB or spool), stop the task, delete the finished journal."""
        if self._task is None:
            self.journal.close()
            return
        await self.queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            rest: list[_Item] = []
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None:
                    rest.append(item)
            if rest:
                self.spool.append([row for row, _ in rest])
                self._done(rest)
        self._task = None
        self.journal.close()

    async def flush(self) -> None:
        """Wait until every submitted row has been written, spooled or dead-lettered."""
        await self.queue.join()

    # -- writer task -------------------------------------------------------------------------
    async def _run(self) -> None:
        await self._guarded(self._maybe_replay(force=True))  # what a crashed run left behind
        while True:
            try:
                first = await asyncio.wait_for(self.queue.get(), self.replay_interval)
            except TimeoutError:
                self.journal.rotate_idle()
                await self._guarded(self._maybe_replay())
                continue
            if first is not None and self.linger and self.queue.qsize() < self.batch_size:
                await asyncio.sleep(self.linger)
            items, taken, stop = self._take_batch(first)
            try:
                if items:
                    await self._write(items)
                self.journal.rotate_idle()
                await self._maybe_replay()
            except Exception:  # never let the writer die
                log.exception("log writer error")
            finally:
                for _ in range(taken):
                    self.queue.task_done()
            if stop:
                return

    async def _guarded(self, coro: Coroutine[Any, Any, object]) -> None:
        try:
            await coro
        except Exception:  # never let the writer die
            log.exception("log writer error")

    def _take_batch(self, first: _Item | None) -> tuple[list[_Item], int, bool]:
        items: list[_Item] = [] if first is None else [first]
        taken, stop = 1, first is None
        while len(items) < self.batch_size and not self.queue.empty():
            nxt = self.queue.get_nowait()
            taken += 1
            if nxt is None:
                stop = True
            else:
                items.append(nxt)
        return items, taken, stop

    async def _write(self, items: list[_Item]) -> None:
        if self.journal.fsync == "batch":
            await self.journal.sync(_segment_counts(items))
        outcome = await self._store([row for row, _ in items], _BATCH_TIMEOUT)
        if outcome.rest:
            self.spool.append(outcome.rest)
            self.metrics.conversation_spooled.inc(len(outcome.rest))
        self._done(items)

    def _done(self, items: Sequence[_Item]) -> None:
        for seg, n in _segment_counts(items).items():
            self.journal.done(seg, n)

    # -- storing -----------------------------------------------------------------------------
    async def _store(self, rows: list[Row], timeout: float) -> _Outcome:
        """Insert ``rows``: duplicates count as stored, rows the DB rejects are dead-lettered,
        and on an outage the rows not stored come back in ``rest`` (spool, retry later)."""
        err = await self._attempt(self._insert(rows, timeout))
        if err is None:
            return _Outcome(stored=len(rows))
        if not is_row_error(err):
            return _Outcome(rest=rows)
        try:
            fresh = await self._without_committed(rows, timeout)
        except Exception as exc:
            if not is_row_error(exc):
                self._db_down(exc)
                return _Outcome(rest=rows)
            fresh = rows
        skipped = len(rows) - len(fresh)
        if skipped and fresh:
            err = await self._attempt(self._insert(fresh, timeout))
            if err is None:
                return _Outcome(stored=len(rows))
            if not is_row_error(err):
                return _Outcome(stored=skipped, rest=fresh)
        outcome = await self._store_each(fresh, timeout)
        outcome.stored += skipped
        return outcome

    async def _store_each(self, rows: list[Row], timeout: float) -> _Outcome:
        out = _Outcome()
        for i, row in enumerate(rows):
            err = await self._attempt(self._insert([row], timeout))
            if err is None or is_duplicate(err):
                out.stored += 1
            elif is_row_error(err):
                self._dead_letter(row, err)
                out.dead += 1
            else:
                out.rest = rows[i:]
                break
        return out

    async def _attempt(self, insert: Coroutine[Any, Any, None]) -> Exception | None:
        """Run an insert; ``None`` on success, else the error (an outage is logged once)."""
        try:
            await insert
        except Exception as exc:
            if not is_row_error(exc):
                self._db_down(exc)
            return exc
        self._db_up()
        return None

    async def _insert(self, rows: Sequence[Row], timeout: float) -> None:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for table, values in rows:
            grouped.setdefault(table, []).append(values)

        async def run() -> None:
            async with self.db.engine.begin() as conn:
                for table, values in grouped.items():
                    await conn.execute(sa.insert(TABLES[table]), values)

        await asyncio.wait_for(run(), timeout)

    async def _without_committed(self, rows: list[Row], timeout: float) -> list[Row]:
        """Drop the rows whose primary key is already in the DB (a replay of committed rows,
        e.g. the journal of a killed process), so the rest can go in as one batch again."""
        ids: dict[str, list[str]] = {}
        for table, values in rows:
            rid = values.get("id")
            if isinstance(rid, str) and rid.isascii():
                ids.setdefault(table, []).append(rid)
        found: set[tuple[str, str]] = set()

        async def run() -> None:
            async with self.db.engine.connect() as conn:
                for table, keys in ids.items():
                    col = TABLES[table].c.id
                    for i in range(0, len(keys), _LOOKUP_CHUNK):
                        res = await conn.execute(
                            sa.select(col).where(col.in_(keys[i:i + _LOOKUP_CHUNK])))
                        found.update((table, k) for k in res.scalars())

        await asyncio.wait_for(run(), timeout)
        return [r for r in rows if (r[0], r[1].get("id")) not in found]

    def _dead_letter(self, row: Row, exc: BaseException) -> None:
        table, values = row
        self.spool.dead_letter([_dead_record(error_label(exc), table=table,
                                             values=_jsonable(values))])
        self.metrics.conversation_dead_letter.inc()
        log.error("conversation row rejected by the database (%s), moved to %s",
                  error_label(exc), self.spool.dead_path)

    def _db_down(self, exc: BaseException) -> None:
        if self.db_ok:
            log.error("conversation log write failed, spooling to disk: %s", error_label(exc))
        self.db_ok = False

    def _db_up(self) -> None:
        if not self.db_ok:
            log.info("database reachable again")
        self.db_ok = True

    # -- replay ------------------------------------------------------------------------------
    async def _maybe_replay(self, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._last_replay < self.replay_interval:
            return 0
        self._last_replay = now
        adopted = self.journal.adopt_orphans(self.spool.dir)
        if adopted:
            log.info("recovered %d journal segment(s) left by a stopped process", adopted)
        if not self.spool.pending_files():
            return 0
        return await self.replay()

    async def replay(self) -> int:
        """Insert spooled rows. A file is removed once all its rows are stored or
        dead-lettered; after an outage mid-file it is rewritten with the rows still to do."""
        replayed = 0
        for path in self.spool.claim():
            fd = lock_current(path)  # another worker may be replaying it right now
            if fd is None:
                continue
            try:
                stored, complete = await self._replay_file(path)
            finally:
                os.close(fd)
            replayed += stored
            if not complete:
                log.warning("spool replay failed, will retry")
                break
        if replayed:
            log.info("replayed %d spooled conversation rows", replayed)
        return replayed

    async def _replay_file(self, path: Path) -> tuple[int, bool]:
        rows = self._read_replay_file(path)
        stored = 0
        for i in range(0, len(rows), _REPLAY_CHUNK):
            outcome = await self._store(rows[i:i + _REPLAY_CHUNK], _REPLAY_TIMEOUT)
            stored += outcome.stored
            self.metrics.conversation_replayed.inc(outcome.stored)
            if outcome.rest:
                self.spool.rewrite(path, outcome.rest + rows[i + _REPLAY_CHUNK:])
                return stored, False
        os.unlink(path)
        return stored, True

    def _read_replay_file(self, path: Path) -> list[Row]:
        """Decode a replay file; lines that are not rows (a line torn by a power loss) are
        dead-lettered as they are."""
        rows: list[Row] = []
        bad: list[str] = []
        for raw in path.read_bytes().splitlines():
            if not raw.strip():
                continue
            try:
                rows.append(_decode(raw.decode("utf-8")))
            except ValueError as exc:
                bad.append(_dead_record(type(exc).__name__, source=path.name,
                                        raw=raw.decode("utf-8", "backslashreplace")))
        if bad:
            self.spool.dead_letter(bad)
            self.metrics.conversation_dead_letter.inc(len(bad))
            log.error("%d undecodable line(s) in %s moved to %s", len(bad), path.name,
                      self.spool.dead_path)
        return rows
