"""Prometheus metrics: one registry per process, or all workers' values in multiprocess mode.

With ``server.workers > 1`` the supervisor (:mod:`clawbot_app.server`) points
``PROMETHEUS_MULTIPROC_DIR`` at an empty private directory before it spawns the workers. Every
worker then keeps its values in memory-mapped files there, and ``/metrics`` answered by any
worker reads all of them (:func:`render`):

* counters and histograms add up every worker that ever ran since the service started, the
  exited ones included, so a worker restart (SIGHUP, or uvicorn replacing a dead worker) never
  makes a total go down: ``rate()`` sees no reset. A service restart empties the directory: an
  ordinary counter reset.
* gauges say per metric how workers combine (``multiprocess_mode``); all of them use a
  ``live*`` mode, so the values of a worker that is gone are dropped at the next scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it; set by server.py
# 0.5 and 2 are bucket bounds because the P99 alerts fire at 500 ms and 2000 ms
# (histogram_quantile interpolates inside a bucket: with 1 and 2.5 only, a steady 1.5 s would
# read as a P99 near 2.5 s).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 2.5, 5, 10, 30, 60)
# How often each worker writes its active session count in multiprocess mode (seconds).
SESSIONS_REFRESH_SECONDS = 10.0
# Gauges whose label sets come and go (a keyring's key id changes, a provider is removed). In
# multiprocess mode a removed label set cannot leave the worker's file: it is set to 0 there
# and 0 is left out of /metrics (neither "current" nor a creation time can be 0).
_ZERO_MEANS_REMOVED = ("clawbot_keyring_current_info",
                       "clawbot_keyring_current_created_timestamp_seconds")
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    """The shared directory when this process runs as one of several workers, else None."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class PolledGauge(Gauge):
    """A gauge whose value a function computes (``set_function``), in either mode.

    In one process the function runs at each scrape, as ``Gauge.set_function`` does. In
    multiprocess mode a scrape reads files, so each worker writes the function's value there
    every :data:`SESSIONS_REFRESH_SECONDS` on its event loop (and at a scrape it answers).
    """

    _poll: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        if multiprocess_dir() is None:
            super().set_function(f)
            return
        self._poll = f
        self.refresh()
        with contextlib.suppress(RuntimeError):  # no running loop: refreshed at scrapes only
            asyncio.get_running_loop().call_later(SESSIONS_REFRESH_SECONDS, self._tick)

    def refresh(self) -> None:
        if self._poll is not None:
            self.set(self._poll())

    def _tick(self) -> None:
        self.refresh()
        with contextlib.suppress(RuntimeError):  # the loop is closing
            asyncio.get_running_loop().call_later(SESSIONS_REFRESH_SECONDS, self._tick)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.http_latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.model_calls = Counter(
            "model_calls_total", "Model provider calls", ["provider", "outcome"], registry=r)
        self.model_latency = Histogram(
            "model_call_duration_seconds", "Model provider call latency", ["provider"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.callback_verification_failures = Counter(
            "callback_verification_failures_total", "IM callback signature/token failures",
            ["platform"], registry=r)
        # Each worker counts the sessions it served within the TTL (ChatService keeps them in
        # process memory): the service's count is the sum over the live workers, an upper
        # bound when one session's turns reach several workers.
        self.active_sessions = PolledGauge(
            "active_sessions", "Dialog sessions active within the session TTL", registry=r,
            multiprocess_mode="livesum")
        self.conversation_spooled = Counter(
            "conversation_log_spooled_total", "Conversation rows spooled to disk", registry=r)
        self.conversation_replayed = Counter(
            "conversation_log_replayed_total", "Spooled rows replayed into the DB", registry=r)
        self.conversation_dead_letter = Counter(
            "clawbot_conversation_dead_letter_total", "Conversation rows the DB rejected, moved to "
            "<data_dir>/spool/dead-letter.jsonl (never replayed automatically)", registry=r)
        self.conversation_journal_errors = Counter(
            "clawbot_conversation_journal_errors_total",
            "Journal writes that failed (those rows are not crash safe)", registry=r)
        self.rate_limited = Counter(
            "rate_limited_total", "Requests rejected by the tenant rate limit", registry=r)
        # Workers reload one by one: while they do, both key ids of a keyring are current
        # somewhere, and both are shown.
        self.keyring_current = Gauge(
            "clawbot_keyring_current_info", "Current key id of each loaded keyring file (1)",
            ["keyring", "key_id"], registry=r, multiprocess_mode="livemax")
        self.keyring_created = Gauge(
            "clawbot_keyring_current_created_timestamp_seconds",
            "Unix time the current key of each loaded keyring file was created (its 'created' "
            "meta; absent when unknown)", ["keyring"], registry=r, multiprocess_mode="livemax")
        self._keyring_labels: set[tuple[str, str]] = set()
        self._created_labels: set[str] = set()
        self._multiproc = multiprocess_dir()

    def set_keyring_current(self, current: Mapping[str, str],
                            created: Mapping[str, float] | None = None) -> None:
        """Publish ``{keyring label: current key id}`` and ``{keyring label: unix time of the
        current key's creation}`` (labels whose creation time is unknown are left out); label
        sets no longer given go away.

        Called when keyrings are loaded (start, SIGHUP), so scrapes stay cheap.
        """
        labels = set(current.items())
        for keyring, key_id in self._keyring_labels - labels:
            self._remove(self.keyring_current, keyring, key_id)
        for keyring, key_id in labels:
            self.keyring_current.labels(keyring=keyring, key_id=key_id).set(1)
        self._keyring_labels = labels
        times = {k: v for k, v in (created or {}).items() if k in current and v > 0}
        for keyring in self._created_labels - times.keys():
            self._remove(self.keyring_created, keyring)
        for keyring, value in times.items():
            self.keyring_created.labels(keyring=keyring).set(value)
        self._created_labels = set(times)

    def _remove(self, gauge: Gauge, *labels: str) -> None:
        """Drop a label set. A worker's file cannot forget one (prometheus_client does not
        implement removal there): its entry is set to 0, which /metrics leaves out."""
        gauge.labels(*labels).set(0)
        if self._multiproc is None:
            gauge.remove(*labels)

    def render(self) -> bytes:
        if self._multiproc is None:
            return generate_latest(self.registry)
        self.active_sessions.refresh()
        reap_dead_workers(self._multiproc)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_DropZero(MultiProcessCollector(None, str(self._multiproc)),
                                    _ZERO_MEANS_REMOVED))
        return generate_latest(registry)


class _DropZero:
    """Leaves out the samples of value 0 of the named metrics (see :data:`_ZERO_MEANS_REMOVED`)."""

    def __init__(self, inner: MultiProcessCollector, names: Iterable[str]):
        self._inner = inner
        self._names = frozenset(names)

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            if family.name in self._names:
                family.samples = [s for s in family.samples if s.value != 0]
            yield family


def reap_dead_workers(path: Path) -> list[int]:
    """``mark_process_dead`` for every worker whose live gauge files remain but whose process is
    gone (a graceful exit and a crash alike); returns their pids.

    uvicorn has no hook in the supervisor when a worker exits, so the worker that answers a
    scrape does this bookkeeping first.
    """
    pids = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path):
            match = _LIVE_GAUGE_FILE.fullmatch(entry.name)
            if match:
                pids.add(int(match.group(1)))
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        with contextlib.suppress(FileNotFoundError):  # another worker reaped it meanwhile
            mark_process_dead(pid, str(path))
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists (another user's): not ours to reap
        return True
    return True
