"""Metrics of one process: the keyrings' creation times; the multiprocess bookkeeping parts.

``/metrics`` of several real workers is in ``test_metrics_workers.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.openai_provider import FakeModelServer
from prometheus_client.parser import text_string_to_metric_families

from clawbot_app.config import load_settings
from clawbot_app.keyfile import unix_time
from clawbot_app.metrics import Metrics, reap_dead_workers
from clawbot_app.server import prepare_multiprocess_dir
from clawbot_app.services import Services
from tests.support import running_app, settings_dict, write_keyring

CREATED = "clawbot_keyring_current_created_timestamp_seconds"


def _created(text: str) -> dict[str, float]:
    return {s.labels["keyring"]: s.value for family in text_string_to_metric_families(text)
            if family.name == CREATED for s in family.samples}


def _ring(path: Path, current: str, created: dict[str, str | None]) -> Path:
    """A version 1 keyring whose keys were created at ``created`` (None: no ``created``)."""
    keys = {kid: f"sk-{kid}" for kid in created}
    meta = {kid: {"created": when, "retired": None, "source": "external",
                  "format": "external", "length": None} for kid, when in created.items()}
    path.write_text(json.dumps({"version": 1, "current": current, "keys": keys, "meta": meta}))
    return path


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def _config(tmp_path: Path, model: FakeModelServer, **providers: Any) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path, model.base_url, models={
        "providers": {name: {"base_url": model.base_url, "model": "m", "api_key": None,
                             "api_key_file": str(path)} for name, path in providers.items()}})))
    return cfg


async def test_created_timestamps_on_load_and_reload(
        tmp_path: Path, primary: FakeModelServer,
        reload: Callable[[Services, str], bool]) -> None:
    a = _ring(tmp_path / "a.json", "a1", {"a1": "2026-03-01T08:00:00Z"})
    b = _ring(tmp_path / "b.json", "b1", {"b1": None})  # creation unknown
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"current": "l1", "keys": {"l1": "sk-l1"}}))
    ring = write_keyring(tmp_path / "probe.json", "t1", {"t1": "tok-1"})
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"keyring_file": str(ring), "user": "probe"}]}))
    cfg = _config(tmp_path, primary, primary=a, second=b, third=legacy)
    data = yaml.safe_load(cfg.read_text())
    data["auth"]["tokens_file"] = str(tokens)
    cfg.write_text(yaml.safe_dump(data))
    before = dt.datetime.now(dt.UTC).replace(microsecond=0).timestamp()
    async with running_app(load_settings(str(cfg), environ={})) as h:
        got = _created((await h.client.get("/metrics")).text)
        # The embedded encryption keyring was generated at start, with its creation time.
        assert before <= got.pop("encryption") <= dt.datetime.now(dt.UTC).timestamp()
        assert got == {"provider:primary": _ts("2026-03-01T08:00:00+00:00"),
                       "tokens:probe": _ts("2026-01-01T00:00:00+00:00")}

        # SIGHUP: a rotated key's time replaces the old one; a provider that is gone, and one
        # whose current key has no creation time any more, leave no series behind.
        _ring(a, "a2", {"a1": "2026-03-01T08:00:00Z", "a2": "2026-04-02T09:30:00Z"})
        _ring(b, "b2", {"b1": None, "b2": "2026-05-01T00:00:00Z"})
        tokens.write_text(yaml.safe_dump({"tokens": []}))
        cfg2 = _config(tmp_path, primary, primary=b)
        assert reload(h.services, str(cfg2))
        got = _created((await h.client.get("/metrics")).text)
        assert got.keys() == {"encryption", "provider:primary"}
        assert got["provider:primary"] == _ts("2026-05-01T00:00:00+00:00")

        _ring(b, "b3", {"b2": "2026-05-01T00:00:00Z", "b3": None})
        assert reload(h.services, str(cfg2))
        assert _created((await h.client.get("/metrics")).text).keys() == {"encryption"}


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-21T10:15:00Z", 1795256100.0),
    ("2026-11-21T10:15:00", 1795256100.0),  # no zone: UTC, as the writers mean it
    ("2026-11-21T18:15:00+08:00", 1795256100.0),
    (None, None), ("", None), ("yesterday", None),
])
def test_unix_time(text: str | None, expected: float | None) -> None:
    assert unix_time(text) == expected


def test_one_process_has_no_multiprocess_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    m = Metrics()
    m.active_sessions.set_function(lambda: 7)
    m.set_keyring_current({"encryption": "k1"}, {"encryption": 1700000000.0, "gone": 5.0})
    text = m.render().decode()
    assert "active_sessions 7.0" in text
    assert _created(text) == {"encryption": 1700000000.0}  # only keyrings that are current


_WORKER = """
import sys
from clawbot_app.metrics import Metrics
m = Metrics()
m.http_requests.labels(method="GET", route="/health", status="200").inc(int(sys.argv[1]))
m.active_sessions.set_function(lambda: float(sys.argv[1]))
m.set_keyring_current({"encryption": "k0"}, {"encryption": 1600000000.0})
"""
_SCRAPER = """
import sys
from clawbot_app.metrics import Metrics
m = Metrics()
m.set_keyring_current({"encryption": "k1", "provider:x": "x1"}, {"encryption": 1700000000.0})
m.set_keyring_current({"encryption": "k2"}, {"encryption": 1700000100.0})
sys.stdout.write(m.render().decode())
"""


def test_multiprocess_files_of_exited_workers(tmp_path: Path) -> None:
    """Two worker processes that exited: their counters count, their gauges are reaped; a key
    id the scraping worker replaced is not shown (its file entry stays, at 0)."""
    directory = tmp_path / "metrics"
    prepare_multiprocess_dir(directory)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", _WORKER, str(count)], env=env, check=True)
    pids = {int(p.stem.rsplit("_", 1)[1]) for p in directory.glob("gauge_livesum_*.db")}
    assert len(pids) == 2
    text = subprocess.run([sys.executable, "-W", "error", "-c", _SCRAPER], env=env,
                          check=True, capture_output=True, text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("http_requests_total", (("method", "GET"), ("route", "/health"),
                                            ("status", "200")))] == 7
    assert {k: v for k, v in samples.items()
            if k[0] in ("clawbot_keyring_current_info", CREATED)} == {
        ("clawbot_keyring_current_info", (("key_id", "k2"), ("keyring", "encryption"))): 1,
        (CREATED, (("keyring", "encryption"),)): 1700000100.0}
    assert samples[("active_sessions", ())] == 0  # only the scraping process is alive
    assert not [p for p in directory.glob("gauge_live*.db")
                if int(p.stem.rsplit("_", 1)[1]) in pids]  # the exited workers' were reaped


def test_reap_keeps_live_processes(tmp_path: Path) -> None:
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"gauge_livemax_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / "counter_1.db").write_bytes(b"")
    dead = _dead_pid()
    (tmp_path / f"gauge_livemax_{dead}.db").write_bytes(b"")
    assert reap_dead_workers(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["counter_1.db", f"gauge_livesum_{os.getpid()}.db", f"gauge_livemax_{os.getpid()}.db"])


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_prepare_multiprocess_dir_empties_and_locks_down(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    (directory / "counter_99.db").write_bytes(b"x")
    (directory / "keep.txt").write_text("not ours")
    prepare_multiprocess_dir(directory)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in directory.iterdir()] == ["keep.txt"]
