"""Write-ahead journal of acknowledged conversation rows: segmented, crash safe.

``Journal.append`` writes the encoded rows with one ``os.write()`` on an ``O_APPEND`` file
descriptor. Once it returns, the bytes are in the kernel page cache and survive a kill of the
process; the fsync policy adds power-loss safety (``always``: on every append, ``batch``: once
per writer batch, ``never``: leave it to the kernel).

The journal is cut into segment files (``seg-<pid>-<ns>-<n>.jsonl``, mode 0600). The writer
calls :meth:`Journal.done` once a row is committed to the DB, spooled or dead-lettered; a
segment that is no longer the active one and has no pending rows is deleted. A live process
holds an ``flock`` on each of its segments, so the segments nobody holds are those of a dead
process: :meth:`Journal.adopt_orphans` moves them into the spool directory, where the normal
replay inserts them (rows have UUID primary keys; duplicates are skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from clawbot_app.keyfile import fsync_dir

FsyncPolicy = Literal["never", "batch", "always"]
FSYNC_POLICIES: tuple[str, ...] = get_args(FsyncPolicy)
SEGMENT_GLOB = "seg-*.jsonl"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 60.0


def lock_current(path: Path) -> int | None:
    """Open ``path`` and take an exclusive non-blocking ``flock`` on it.

    Returns the fd, or ``None`` when the file is gone, locked by someone else, or was renamed
    or deleted meanwhile (the lock is on an inode that ``path`` no longer names).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except OSError:  # locked elsewhere (BlockingIOError) or gone (FileNotFoundError)
        pass
    os.close(fd)
    return None


class Segment:
    """One journal file of this process, locked for as long as it is open."""

    __slots__ = ("path", "fd", "rows", "pending", "opened", "dirty")

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd
        self.rows = 0
        self.pending = 0
        self.opened = time.monotonic()
        self.dirty = False


class Journal:
    def __init__(self, directory: Path, fsync: FsyncPolicy = "never", max_rows: int = 4096,
                 max_age_seconds: float = 1.0):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"journal fsync policy must be one of {FSYNC_POLICIES}")
        self.dir = directory
        self.fsync: FsyncPolicy = fsync
        self.max_rows = max_rows
        self.max_age = max_age_seconds
        self._active: Segment | None = None
        self._segments: set[Segment] = set()
        self._seq = itertools.count()

    # -- hot path --------------------------------------------------------------------------
    def append(self, data: bytes, rows: int) -> Segment:
        """Write ``rows`` encoded rows (``data``, whole lines) with one ``os.write``.

        Raises ``OSError`` (disk full, permissions); the segment that failed is retired, so a
        torn line never has rows appended after it.
        """
        seg = self._active
        if seg is None or seg.rows >= self.max_rows:
            seg = self._rotate()
        try:
            _write_all(seg.fd, data)
            if self.fsync == "always":
                os.fdatasync(seg.fd)
        except OSError:
            self._retire(seg)
            raise
        seg.rows += rows
        seg.pending += rows
        seg.dirty = self.fsync == "batch"
        return seg

    # -- writer side -----------------------------------------------------------------------
    def done(self, seg: Segment, rows: int) -> None:
        """``rows`` of ``seg`` are in the DB (or spooled / dead-lettered)."""
        seg.pending -= rows
        if seg.pending <= 0 and seg is not self._active:
            self._delete(seg)

    async def sync(self, segments: Iterable[Segment]) -> None:
        """``batch`` policy: flush the given segments to disk (off the event loop)."""
        for seg in segments:
            if seg.dirty:
                seg.dirty = False
                await asyncio.to_thread(os.fdatasync, seg.fd)

    def rotate_idle(self) -> None:
        """Retire (and so delete) the active segment once all its rows are done and it is at
        least ``max_age`` old: an idle server keeps no journal file, a busy one does not create
        a file per batch (``max_rows`` bounds the size of a segment under steady load)."""
        seg = self._active
        if seg is not None and seg.pending <= 0 and \
                time.monotonic() - seg.opened >= self.max_age:
            self._retire(seg)

    def close(self) -> None:
        """Delete the finished segments; leave (unlocked) the ones with pending rows, which the
        next start adopts."""
        if self._active is not None:
            self._retire(self._active)
        for seg in list(self._segments):
            self._segments.discard(seg)
            os.close(seg.fd)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    # -- recovery --------------------------------------------------------------------------
    def adopt_orphans(self, dest: Path) -> int:
        """Move the segments of dead processes into ``dest`` as ``replay-<name>`` (empty ones are
        deleted); return how many segments were moved."""
        if not self.dir.is_dir():
            return 0
        moved = 0
        for path in sorted(self.dir.glob(SEGMENT_GLOB)):
            fd = lock_current(path)
            if fd is None:
                continue  # a live process owns it, or another process adopted it
            try:
                if os.fstat(fd).st_size == 0:
                    path.unlink()
                else:
                    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
                    os.replace(path, dest / f"replay-{path.name}")
                    moved += 1
            finally:
                os.close(fd)
        self._remove_stale_tmp()
        return moved

    # -- internals -------------------------------------------------------------------------
    def _rotate(self) -> Segment:
        if self._active is not None:
            self._retire(self._active)
        seg = self._open_segment()
        self._segments.add(seg)
        self._active = seg
        return seg

    def _open_segment(self) -> Segment:
        """Create, lock, then rename into place: a scanner never sees an unlocked segment."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"seg-{os.getpid()}-{time.time_ns()}-{next(self._seq)}.jsonl"
        tmp = self.dir / f"{_TMP_PREFIX}{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self.dir / name
            os.rename(tmp, path)
            if self.fsync != "never":
                fsync_dir(self.dir)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return Segment(path, fd)

    def _retire(self, seg: Segment) -> None:
        if seg is self._active:
            self._active = None
        if seg.pending <= 0:
            self._delete(seg)

    def _delete(self, seg: Segment) -> None:
        if seg not in self._segments:
            return
        self._segments.discard(seg)
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()  # before close: nobody can lock and read it in between
        os.close(seg.fd)

    def _remove_stale_tmp(self) -> None:
        """A crash between create and rename leaves an empty ``.tmp-`` file; remove old ones."""
        for path in self.dir.glob(f"{_TMP_PREFIX}{SEGMENT_GLOB}"):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime < _STALE_TMP_SECONDS:
                    continue
                fd = lock_current(path)
                if fd is None:
                    continue
                try:
                    path.unlink()
                finally:
                    os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

