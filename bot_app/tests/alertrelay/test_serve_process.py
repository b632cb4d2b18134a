"""The real programs: ``clawbot-app alert-relay`` under uvicorn and ``python3 -m fakes.robots``
(as Molecule runs them), SIGHUP reload and a clean SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.alertrelay.support import (
    DT_SECRET,
    DT_TOKEN,
    FS_SECRET,
    FS_TOKEN,
    SECRETS,
    TOKEN,
    WC_KEY,
    notification,
    receivers,
    write_config,
)
from tests.serve_support import CLI, clean_env
from tests.support import free_port, wait_port

FAKES = Path(__file__).resolve().parents[3] / "tests" / "fakes"


def _start(args: list[str], log: Path, port: int, cwd: Path, env: dict[str, str]
           ) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 30)
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"{args[0]} did not start: {log.read_text()[-3000:]}") from None
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def robots_program(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The fake robots program from a copy of the ``fakes`` package, as in a container."""
    workdir = tmp_path / "robots"
    shutil.copytree(FAKES, workdir / "fakes", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    record = tmp_path / "robots.jsonl"
    proc = _start([sys.executable, "-m", "fakes.robots", "--port", str(port), "--record",
                   str(record), "--dingtalk-token", DT_TOKEN, "--dingtalk-secret", DT_SECRET,
                   "--feishu-token", FS_TOKEN, "--feishu-secret", FS_SECRET, "--wecom-key",
                   WC_KEY], tmp_path / "robots.log", port, workdir, dict(os.environ))
    yield f"http://127.0.0.1:{port}", record
    _stop(proc)


def test_relay_program_delivers_reloads_and_stops_cleanly(
        tmp_path: Path, robots_program: tuple[str, Path]) -> None:
    base, record = robots_program
    port = free_port()
    path = write_config(tmp_path, receivers(base, base, base),
                        listen={"host": "127.0.0.1", "port": port})
    check = subprocess.run([CLI, "alert-relay", "--check", "--config", str(path)],
                           capture_output=True, text=True, env=clean_env(tmp_path))
    assert check.returncode == 0, check.stderr
    log = tmp_path / "relay.log"
    relay = _start([CLI, "alert-relay", "--config", str(path)], log, port, tmp_path,
                   clean_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        for name in ("ops-dingtalk", "ops-feishu", "ops-wecom"):
            answer = httpx.post(f"{url}/alerts/{name}", json=notification(), headers=auth)
            assert answer.status_code == 200, answer.text
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        assert [(r["platform"], r["accepted"]) for r in lines] == [
            ("dingtalk", True), ("feishu", True), ("wecom", True)]

        # SIGHUP: a new token file is read; a broken config is refused and the old one kept.
        (tmp_path / "token").write_text("a-rotated-token-0123456789\n")
        relay.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.post(f"{url}/alerts/ops-wecom", json=notification(),
                         headers=auth).status_code != 401:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        new_auth = {"Authorization": "Bearer a-rotated-token-0123456789"}
        data = yaml.safe_load(path.read_text())
        data["receivers"][0]["secret"] = "not-a-dingtalk-secret"
        path.write_text(yaml.safe_dump(data))
        relay.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reload rejected" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answer = httpx.post(f"{url}/alerts/ops-dingtalk", json=notification(), headers=new_auth)
        assert answer.status_code == 200, answer.text
        metrics = httpx.get(f"{url}/metrics").text
        assert 'clawbot_alert_relay_config_reloads_total{outcome="ok"} 1.0' in metrics
        assert 'clawbot_alert_relay_config_reloads_total{outcome="rejected"} 1.0' in metrics
        assert ('clawbot_alert_relay_notifications_total{outcome="sent",platform="dingtalk",'
                'receiver="ops-dingtalk"} 2.0') in metrics
    finally:
        code = _stop(relay)
    assert code == 0, log.read_text()[-2000:]
    text = log.read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    messages = [e["message"] for e in entries]
    assert "notification delivered" in messages and "alert relay stopped" in messages
    assert all(e["log.logger"] for e in entries)
    for secret in SECRETS:
        assert secret not in text


def test_serving_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, [])
    out = subprocess.run([CLI, "alert-relay", "--config", str(path)], capture_output=True,
                         text=True, env=clean_env(tmp_path), timeout=30)
    assert out.returncode == 2
    assert "receivers: List should have at least 1 item" in out.stderr
