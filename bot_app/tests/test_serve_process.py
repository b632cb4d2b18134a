"""The real ``clawbot-app serve`` process: default start, SIGHUP reload, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
import yaml
from fakes.openai_provider import FakeModelServer

from clawbot_app.db.engine import make_engine
from clawbot_app.db.schema import conversation_log
from tests.serve_support import CLI, Proc, clean_env, serve
from tests.support import free_port, keyring_series, write_keyring


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_embedded_default_start(tmp_path: Path, procs: list[Proc]) -> None:
    env = clean_env(tmp_path)
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


def test_sighup_reload_without_dropping(tmp_path: Path, procs: list[Proc],
                                        primary: FakeModelServer,
                                        backup: FakeModelServer) -> None:
    served = serve(tmp_path, procs, primary, backup)
    proc = served.proc
    hdr = {"Authorization": f"Bearer {served.token}"}
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
        served.configure(primary, backup, default="backup",
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
    served = serve(tmp_path, procs, primary, backup)
    proc = served.proc
    served.cfg.write_text("models: {default: ghost}\n")
    proc.p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    r = httpx.post(f"{proc.url}/api/v1/chat", json={"message": "x"},
                   headers={"Authorization": f"Bearer {served.token}"})
    assert r.status_code == 200 and r.json()["model"] == "m-primary"
    assert "config reload rejected" in proc.log.read_text()


def test_graceful_shutdown_drains(tmp_path: Path, procs: list[Proc],
                                  primary: FakeModelServer, backup: FakeModelServer) -> None:
    served = serve(tmp_path, procs, primary, backup)
    proc = served.proc
    primary.fake.latency = 1.0
    box: list[httpx.Response] = []
    t = threading.Thread(target=lambda: box.append(httpx.post(
        f"{proc.url}/api/v1/chat", json={"message": "drain-me"},
        headers={"Authorization": f"Bearer {served.token}"}, timeout=20)))
    t.start()
    time.sleep(0.4)
    assert proc.stop() == 0
    t.join(20)
    assert box and box[0].status_code == 200
    assert box[0].json()["reply"].startswith("primary: drain-me")

    async def count() -> int:
        engine = make_engine(f"sqlite:///{served.data / 'clawbot.sqlite3'}")
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(
                    sa.select(sa.func.count()).select_from(conversation_log))).scalar())
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 2  # log writer flushed before exit


def test_sighup_picks_up_rotated_keys(tmp_path: Path, procs: list[Proc],
                                      primary: FakeModelServer,
                                      backup: FakeModelServer) -> None:
    """What the rotation playbook does: rewrite keyring files, reload, read the metric."""
    model_keys = write_keyring(tmp_path / "model.json", "m1", {"m1": "sk-one"},
                               source="external")
    probe_keys = write_keyring(tmp_path / "probe.json", "t2", {"t1": "tok-a", "t2": "tok-b"})
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"keyring_file": str(probe_keys), "user": "probe", "tenant": "ops"}]}))
    primary.fake.api_key = "sk-one"
    env_key = "sk-env-must-not-win"
    served = serve(tmp_path, procs, primary, backup, env={"MODEL_API_KEY": env_key},
                    auth={"tokens_file": str(tokens)},
                    models={"providers": {"primary": {"api_key": None,
                                                      "api_key_file": str(model_keys)}}})
    url = served.proc.url

    def chat(token: str) -> int:
        return httpx.post(f"{url}/api/v1/chat", json={"message": "hi"}, timeout=20,
                          headers={"Authorization": f"Bearer {token}"}).status_code

    def series() -> set[tuple[str, str]]:
        return keyring_series(httpx.get(f"{url}/metrics").text)

    assert (chat("tok-a"), chat("tok-b"), chat(served.token)) == (200, 200, 200)
    assert set(primary.fake.authorizations) == {"Bearer sk-one"}
    before = series()
    [encryption_before] = [kid for name, kid in before if name == "encryption"]
    assert before == {("encryption", encryption_before), ("provider:primary", "m1"),
                      ("tokens:probe", "t2")}

    write_keyring(model_keys, "m2", {"m1": "sk-one", "m2": "sk-two"}, source="external")
    write_keyring(probe_keys, "t3", {"t2": "tok-b", "t3": "tok-c"})  # t1 pruned
    out = subprocess.run([CLI, "keyring", "rotate", "--config", str(served.cfg)],
                         env=served.env, capture_output=True, text=True, check=True)
    encryption_after = out.stdout.split("'")[1]
    assert encryption_after != encryption_before
    primary.fake.api_key = "sk-two"
    assert chat("tok-b") == 502  # not reloaded yet: the old key goes upstream
    assert primary.fake.authorizations[-1] == "Bearer sk-one"

    served.reload()
    assert chat("tok-a") == 401  # pruned from the keyring
    assert (chat("tok-b"), chat("tok-c"), chat(served.token)) == (200, 200, 200)
    assert primary.fake.authorizations[-3:] == ["Bearer sk-two"] * 3
    assert series() == {("encryption", encryption_after), ("provider:primary", "m2"),
                        ("tokens:probe", "t3")}
    assert served.proc.p.poll() is None  # the same process, reloaded
    log = served.proc.log.read_text()
    for secret in ("sk-one", "sk-two", "tok-a", "tok-b", "tok-c", env_key):
        assert secret not in log
