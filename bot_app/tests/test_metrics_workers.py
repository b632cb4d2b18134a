"""``/metrics`` of ``clawbot-app serve --workers 2``: every worker's values, whichever answers.

Real processes: the uvicorn supervisor, its spawned workers and the multiprocess files.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fakes.openai_provider import FakeModelServer
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.serve_support import CLI, Proc, clean_env, serve
from tests.support import free_port

WORKERS = 2


def _workers(proc: Proc) -> set[int]:
    """Pids of the supervisor's worker processes."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(proc.p.pid)],
                         capture_output=True, text=True, check=False).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line}


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``{sample name: [(labels, value)]}`` of one scrape, on a new connection."""
    with httpx.Client(timeout=10) as client:
        r = client.get(f"{url}/metrics")
    assert r.status_code == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _health_total(samples: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    return sum(v for labels, v in samples.get("http_requests_total", [])
               if labels["route"] == "/health")


def _get(url: str) -> int:
    with httpx.Client(timeout=10) as client:  # a new connection each: any worker may take it
        return client.get(url).status_code


def _send(url: str, count: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(_get, [f"{url}/health"] * count))
    assert codes == [200] * count


def _ready(proc: Proc, metrics_dir: Path) -> bool:
    """All workers run and each has built its metrics (its application startup is done)."""
    pids = _workers(proc)
    started = {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("gauge_livesum_*.db")}
    return len(pids) == WORKERS and pids <= started


def _start(tmp_path: Path, procs: list[Proc]) -> tuple[Proc, Path]:
    env = clean_env(tmp_path)
    port = free_port()
    proc = Proc(["serve", "--port", str(port), "--workers", str(WORKERS)], env, port,
                tmp_path / "serve.log")
    procs.append(proc)
    metrics_dir = tmp_path / ".local/share/clawbot-app/metrics"
    _wait("the workers", lambda: _ready(proc, metrics_dir))
    _wait("a ready worker", lambda: _get(f"{proc.url}/health") == 200)
    return proc, metrics_dir


def test_all_workers_counted_and_restart_keeps_totals(tmp_path: Path, procs: list[Proc]) -> None:
    proc, metrics_dir = _start(tmp_path, procs)
    assert (metrics_dir.stat().st_mode & 0o777) == 0o700
    sent = 1  # the readiness probe above
    for _ in range(5):  # until both workers served a part: otherwise one worker's count is all
        _send(proc.url, 100)
        sent += 100
        per_file = _per_file(metrics_dir, "counter_*.db", "http_requests_total", "/health")
        if len([v for v in per_file.values() if v > 0]) == WORKERS:
            break
    assert len([v for v in per_file.values() if v > 0]) == WORKERS, per_file
    assert sum(per_file.values()) == sent
    for _ in range(10):  # whichever worker answers the scrape
        assert _health_total(_scrape(proc.url)) == sent

    # SIGHUP: uvicorn replaces the workers one by one. The old workers' counter files stay,
    # so totals go on from where they were (no reset for rate()); their gauges go away.
    old = _workers(proc)
    proc.p.send_signal(signal.SIGHUP)
    _wait("new workers", lambda: len(_workers(proc)) == WORKERS and not _workers(proc) & old)
    assert _health_total(_scrape(proc.url)) == sent
    _send(proc.url, 50)
    sent += 50
    for _ in range(10):
        samples = _scrape(proc.url)
        assert _health_total(samples) == sent
        sessions = samples["active_sessions"]
        assert len(sessions) == 1 and "pid" not in sessions[0][0]
    live = {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("gauge_live*_*.db")}
    assert live == _workers(proc)  # the replaced workers' gauge files were reaped
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2 * WORKERS
    assert proc.stop() == 0


def test_rotated_keyring_after_reload_shows_one_key(tmp_path: Path, procs: list[Proc]) -> None:
    proc, _ = _start(tmp_path, procs)
    ring = tmp_path / ".local/share/clawbot-app/keyring.json"
    first = json.loads(ring.read_text())["current"]
    info = _scrape(proc.url)["clawbot_keyring_current_info"]
    assert info == [({"keyring": "encryption", "key_id": first}, 1.0)]
    created = _scrape(proc.url)["clawbot_keyring_current_created_timestamp_seconds"]
    assert [labels for labels, _ in created] == [{"keyring": "encryption"}]
    assert abs(created[0][1] - time.time()) < 120

    time.sleep(1.1)  # key ids and creation times have a resolution of one second
    subprocess.run([CLI, "keyring", "rotate"], env=clean_env(tmp_path), check=True,
                   capture_output=True)
    second = json.loads(ring.read_text())["current"]
    old = _workers(proc)
    proc.p.send_signal(signal.SIGHUP)
    _wait("new workers", lambda: len(_workers(proc)) == WORKERS and not _workers(proc) & old)
    for _ in range(6):
        samples = _scrape(proc.url)
        assert samples["clawbot_keyring_current_info"] == [
            ({"keyring": "encryption", "key_id": second}, 1.0)]
        [(_, value)] = samples["clawbot_keyring_current_created_timestamp_seconds"]
        assert value > created[0][1]
    assert proc.stop() == 0


def test_active_sessions_sum_over_workers(tmp_path: Path, procs: list[Proc],
                                          primary: FakeModelServer,
                                          backup: FakeModelServer) -> None:
    served = serve(tmp_path, procs, primary, backup, server={"workers": WORKERS})
    _wait("the workers", lambda: _ready(served.proc, served.data / "metrics"))
    url = served.proc.url

    def chat(_: int) -> int:
        with httpx.Client(timeout=20) as client:
            return client.post(f"{url}/api/v1/chat", json={"message": "hi"},
                               headers={"Authorization": f"Bearer {served.token}"}).status_code

    sessions = 0
    for _ in range(5):  # until both workers served chats (each chat is a new session)
        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(chat, range(12))) == [200] * 12
        sessions += 12
        chats = _per_file(served.data / "metrics", "counter_*.db", "http_requests_total",
                          "/api/v1/chat")
        if len([v for v in chats.values() if v > 0]) == WORKERS:
            break
    assert len([v for v in chats.values() if v > 0]) == WORKERS, chats
    # Each worker writes its count within SESSIONS_REFRESH_SECONDS (and at a scrape it answers).
    _wait("every worker's session count",
          lambda: _scrape(url)["active_sessions"] == [({}, float(sessions))], timeout=20)
    per_worker = _per_file(served.data / "metrics", "gauge_livesum_*.db", "active_sessions")
    # each worker counts the sessions of the chats it served
    assert {name.replace("gauge_livesum_", "counter_"): v for name, v in per_worker.items()} \
        == chats


def _per_file(metrics_dir: Path, pattern: str, name: str, route: str | None = None
              ) -> dict[str, float]:
    """The value of sample ``name`` (of ``route``) in each worker's file, without merging."""
    out = {}
    for path in sorted(metrics_dir.glob(pattern)):
        out[path.name] = sum(s.value for family in MultiProcessCollector.merge([str(path)])
                             for s in family.samples if s.name == name
                             and (route is None or s.labels.get("route") == route))
    return out
