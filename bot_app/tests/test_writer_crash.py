"""``kill -9`` of the real ``clawbot-app serve`` under chat load loses no acknowledged row."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from fakes.openai_provider import FakeModelServer

from tests.serve_support import Proc, Served, serve

LOAD_THREADS = 24
KILL_AFTER_ACKS = 300
REPLAY_WAIT_SECONDS = 30.0


class Load:
    """Chat requests from a few threads; records the session id of every 200 answer."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token
        self.acked: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(n,), daemon=True)
                        for n in range(LOAD_THREADS)]

    def _loop(self, n: int) -> None:
        hdr = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=hdr, timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    r = client.post("/api/v1/chat", json={"message": f"load {n}-{i}"})
                except httpx.HTTPError:
                    continue  # not acknowledged (the server is being killed)
                if r.status_code == 200:
                    with self._lock:
                        self.acked.append(r.json()["session_id"])

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


def _logged_sessions(db: Path) -> tuple[dict[str, set[str]], set[str]]:
    """``{session_id: {roles}}`` of conversation_log, and the dialog_sessions session ids."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        roles: dict[str, set[str]] = {}
        for sid, role in conn.execute("SELECT session_id, role FROM conversation_log"):
            roles.setdefault(sid, set()).add(role)
        sessions = {sid for (sid,) in conn.execute("SELECT session_id FROM dialog_sessions")}
        return roles, sessions
    finally:
        conn.close()


def _missing(db: Path, acked: list[str]) -> list[str]:
    roles, sessions = _logged_sessions(db)
    return [sid for sid in acked
            if roles.get(sid) != {"user", "assistant"} or sid not in sessions]


def _kill_under_load(served: Served) -> list[str]:
    """Run the load, ``kill -9`` the server once KILL_AFTER_ACKS answers came back."""
    with Load(served.proc.url, served.token) as load:
        deadline = time.monotonic() + 30
        while load.count() < KILL_AFTER_ACKS:
            assert time.monotonic() < deadline, "load too slow"
            time.sleep(0.005)
        served.proc.p.kill()  # SIGKILL while requests are in flight
        served.proc.p.wait(10)
    return list(load.acked)


def test_kill_9_under_load_loses_no_acknowledged_row(
        tmp_path: Path, procs: list[Proc], primary: FakeModelServer,
        backup: FakeModelServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(primary.fake, "record", False)
    primary.fake.latency = 0.005
    served = serve(tmp_path, procs, primary, backup, logging={"level": "WARNING"},
                    storage={"replay_interval_seconds": 0.5})
    db = served.data / "clawbot.sqlite3"
    # One request through first: token cached, writer and pool warm.
    assert httpx.post(f"{served.proc.url}/api/v1/chat", json={"message": "warm"},
                      headers={"Authorization": f"Bearer {served.token}"}).status_code == 200

    acked = _kill_under_load(served)
    lost_before_restart = len(_missing(db, acked))
    leftover = sorted(p.name for p in (served.data / "journal").glob("seg-*.jsonl"))

    restarted = Proc(["serve", "--config", str(served.cfg)], served.env, served.proc.port,
                     tmp_path / "serve-2.log")
    procs.append(restarted)
    deadline = time.monotonic() + REPLAY_WAIT_SECONDS
    missing = _missing(db, acked)
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = _missing(db, acked)
    with capsys.disabled():
        print(f"\nkill -9: {len(acked)} requests acknowledged, "
              f"{lost_before_restart} not in the DB at the kill, journal segments left "
              f"{len(leftover)}; after restart {len(acked) - len(missing)} found, "
              f"{len(missing)} lost")
    assert len(acked) >= KILL_AFTER_ACKS
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged requests lost their rows"
    assert not list((served.data / "spool").glob("replay-*.jsonl"))  # replayed and removed
    assert restarted.stop() == 0
    assert not list((served.data / "journal").glob("seg-*.jsonl"))  # clean stop: no journal
