"""The real ``clawbot-app serve`` process: default start, SIGHUP reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from clawbot_app.db.engine import make_engine
from clawbot_app.db.schema import conversation_log
from tests.fakes.openai_server import FakeModelServer
from tests.support import free_port, wait_port

CLI = shutil.which("clawbot-app") or str(Path(sys.executable).parent / "clawbot-app")


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLAWBOT") and k != "MODEL_API_KEY"}
    env["HOME"] = str(home)
    return env


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path):
        self.port = port
        self.log = log
        self.fh = log.open("wb")
        self.p = subprocess.Popen([CLI, *args], env=env, stdout=self.fh,
                                  stderr=subprocess.STDOUT)
        try:
            wait_port(port, 30)
        except TimeoutError:
            self.p.kill()
            raise AssertionError(f"server did not start: {log.read_text()[-3000:]}") from None
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.fh.close()
        return self.p.returncode


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_embedded_default_start(tmp_path: Path, procs: list[Proc]) -> None:
    env = _clean_env(tmp_path)
    port = 18789
    if not _port_free(port):  # somebody else uses the default port on this machine
        port = free_port()
        env["CLAWBOT__SERVER__PORT"] = str(port)
    proc = Proc(["serve"], env, port, tmp_path / "serve.log")
    procs.append(proc)
    health = httpx.get(f"{proc.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert httpx.get(f"{proc.url}/ready").status_code == 200
    r = httpx.post(f"{proc.url}/api/v1/chat", json={"message": "hi"})
    assert r.status_code == 503
    assert r.json()["error"] == {"code": "no_provider",
                                 "message": "no model provider is configured"}
    data = tmp_path / ".local/share/clawbot-app"
    assert (data / "clawbot.sqlite3").exists() and (data / "keyring.json").exists()
    assert proc.stop() == 0
    lines = proc.log.read_text().splitlines()
    import json

    docs = [json.loads(x) for x in lines if x.startswith("{")]
    assert any(d.get("url.path") == "/api/v1/chat" and d["http.response.status_code"] == 503
               for d in docs)


def _config(path: Path, data: Path, port: int, default: str, primary: str, backup: str,
            routes: list[dict[str, str]] | None = None) -> None:
    path.write_text(yaml.safe_dump({
        "server": {"port": port, "graceful_timeout_seconds": 10},
        "storage": {"data_dir": str(data)},
        "auth": {"cache_ttl_seconds": 5},
        "logging": {"level": "INFO"},
        "models": {"default": default, "routes": routes or [], "providers": {
            "primary": {"base_url": primary, "api_key": "sk-primary", "model": "m-primary",
                        "timeout_seconds": 10},
            "backup": {"base_url": backup, "api_key": "sk-backup", "model": "m-backup",
                       "timeout_seconds": 10}}}}))


def _token(cfg: Path, env: dict[str, str]) -> str:
    out = subprocess.run([CLI, "token", "create", "--config", str(cfg), "--user", "u",
                          "--days", "1"], env=env, capture_output=True, check=True, text=True)
    return out.stdout.strip()


def test_sighup_reload_without_dropping(tmp_path: Path, procs: list[Proc],
                                        primary: FakeModelServer,
                                        backup: FakeModelServer) -> None:
    env = _clean_env(tmp_path)
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    data = tmp_path / "data"
    _config(cfg, data, port, "primary", primary.base_url, backup.base_url)
    token = _token(cfg, env)
    proc = Proc(["serve", "--config", str(cfg)], env, port, tmp_path / "serve.log")
    procs.append(proc)
    hdr = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=proc.url, headers=hdr, timeout=20) as c:
        assert c.post("/api/v1/chat", json={"message": "a"}).json()["model"] == "m-primary"
        primary.fake.latency = 1.0
        results: list[httpx.Response] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=proc.url, headers=hdr, timeout=20) as lc:
                while not stop.is_set():
                    try:
                        results.append(lc.post("/zh/api/v1/chat", json={"message": "load"}))
                    except BaseException as exc:  # noqa: BLE001 - collected and asserted
                        errors.append(exc)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # requests are now in flight on the 1 s primary
        _config(cfg, data, port, "backup", primary.base_url, backup.base_url,
                routes=[{"path_prefix": "/zh/", "provider": "primary"}])
        proc.p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = c.post("/api/v1/chat", json={"message": "b"})
            if r.json().get("model") == "m-backup":
                break
            time.sleep(0.1)
        assert r.status_code == 200 and r.json()["reply"].startswith("backup: b")
        zh = c.post("/zh/api/v1/chat", json={"message": "route"})
        assert zh.json()["reply"].startswith("primary: route")  # new path route is live
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert results and all(r.status_code == 200 for r in results)
    assert proc.p.poll() is None  # still the same process
    assert "configuration reloaded" in proc.log.read_text()


def test_bad_reload_keeps_running_config(tmp_path: Path, procs: list[Proc],
                                         primary: FakeModelServer,
                                         backup: FakeModelServer) -> None:
    env = _clean_env(tmp_path)
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    _config(cfg, tmp_path / "data", port, "primary", primary.base_url, backup.base_url)
    token = _token(cfg, env)
    proc = Proc(["serve", "--config", str(cfg)], env, port, tmp_path / "serve.log")
    procs.append(proc)
    cfg.write_text("models: {default: ghost}\n")
    proc.p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    r = httpx.post(f"{proc.url}/api/v1/chat", json={"message": "x"},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["model"] == "m-primary"
    assert "config reload rejected" in proc.log.read_text()


def test_graceful_shutdown_drains(tmp_path: Path, procs: list[Proc],
                                  primary: FakeModelServer, backup: FakeModelServer) -> None:
    env = _clean_env(tmp_path)
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    data = tmp_path / "data"
    _config(cfg, data, port, "primary", primary.base_url, backup.base_url)
    token = _token(cfg, env)
    proc = Proc(["serve", "--config", str(cfg)], env, port, tmp_path / "serve.log")
    procs.append(proc)
    primary.fake.latency = 1.0
    box: list[httpx.Response] = []
    t = threading.Thread(target=lambda: box.append(httpx.post(
        f"{proc.url}/api/v1/chat", json={"message": "drain-me"},
        headers={"Authorization": f"Bearer {token}"}, timeout=20)))
    t.start()
    time.sleep(0.4)
    assert proc.stop() == 0
    t.join(20)
    assert box and box[0].status_code == 200
    assert box[0].json()["reply"].startswith("primary: drain-me")

    async def count() -> int:
        engine = make_engine(f"sqlite:///{data / 'clawbot.sqlite3'}")
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(
                    sa.select(sa.func.count()).select_from(conversation_log))).scalar())
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 2  # log writer flushed before exit
