"""HTTP API against the in-process app (embedded SQLite, in-process store, fake model)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes.openai_provider import FakeModelServer

from clawbot_app.config import Settings
from clawbot_app.db.schema import conversation_log, dialog_sessions
from clawbot_app.db.tokens import revoke_token
from clawbot_app.services import Services
from tests.support import Harness, running_app, settings_dict


def _settings(tmp_path: Path, primary: FakeModelServer, backup: FakeModelServer | None = None,
              **extra: object) -> Settings:
    return Settings.model_validate(settings_dict(
        tmp_path, primary.base_url, backup.base_url if backup else None, **extra))


async def test_health_endpoints(tmp_path: Path) -> None:
    async with running_app(Settings.model_validate(settings_dict(tmp_path))) as h:
        for method in ("GET", "POST"):
            for path in ("/health", "/api/health"):
                r = await h.client.request(method, path)
                assert r.status_code == 200
                body = r.json()
                assert body["status"] == "healthy"
                assert isinstance(body["uptime"], int)
                assert body["version"] == "0.1.0"
        r = await h.client.head("/health")
        assert r.status_code == 200 and r.content == b""


async def test_ready_and_metrics(tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        r = await h.client.get("/ready")
        assert r.status_code == 200
        assert r.json()["checks"]["database"]["status"] == "ok"
        tok = await h.token()
        assert (await h.chat(tok, message="hello")).status_code == 200
        assert (await h.chat(tok, path="/zh/api/v1/chat", message="hi")).status_code == 200
        text = (await h.client.get("/metrics")).text
        assert 'http_requests_total{method="POST",route="/api/v1/chat",status="200"} 1.0' in text
        assert 'route="/{prefix:path}/api/v1/chat"' in text
        assert "/zh/api/v1/chat" not in text  # template, not raw path
        assert 'model_calls_total{outcome="success",provider="primary"} 2.0' in text
        assert 'model_call_duration_seconds_count{provider="primary"} 2.0' in text
        assert "callback_verification_failures_total" in text
        assert "active_sessions 2.0" in text


async def test_chat_success_and_context(tmp_path: Path, primary: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, session={"max_turns": 2})
    async with running_app(settings) as h:
        tok = await h.token()
        r = await h.chat(tok, message="one")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reply"] == "primary: one [n=1]"
        assert body["model"] == "m-primary"
        sid = body["session_id"]
        for i, word in enumerate(["two", "three", "four"]):
            r = await h.chat(tok, message=word, session_id=sid)
            assert r.json()["session_id"] == sid
            # context = last max_turns (2) turns = 4 messages, plus the new one
            assert r.json()["reply"] == f"primary: {word} [n={min(2 * (i + 1), 4) + 1}]"
        sent = primary.fake.requests[-1]["messages"]
        assert [m["content"] for m in sent] == [
            "two", "primary: two [n=3]", "three", "primary: three [n=5]", "four"]
        assert primary.fake.requests[-1]["max_tokens"] == 2048
        assert primary.fake.requests[-1]["temperature"] == 0.7
        other = await h.chat(tok, message="fresh")  # new session: no context
        assert other.json()["reply"] == "primary: fresh [n=1]"


async def test_chat_aliases_and_body_token(tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token()
        for path in ("/api/chat", "/api/v1/chat", "/zh/api/v1/chat", "/a/b/api/v1/chat"):
            r = await h.chat(tok, path=path, message="x")
            assert r.status_code == 200, (path, r.text)
        r = await h.client.post("/api/chat", json={"message": "legacy", "token": tok})
        assert r.status_code == 200
        assert r.json()["reply"].startswith("primary: legacy")


async def test_conversation_log_encrypted(tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token(user="bob", tenant="t1")
        r = await h.chat(tok, message="secret words", user_id="enduser-7")
        sid = r.json()["session_id"]
        await h.services.writer.flush()
        async with h.services.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(conversation_log)
                                       .order_by(conversation_log.c.role.desc()))).all()
            sessions = (await conn.execute(sa.select(dialog_sessions))).all()
        assert [r.role for r in rows] == ["user", "assistant"]
        assert all(r.tenant_id == "t1" and r.user_id == "enduser-7" and r.session_id == sid
                   for r in rows)
        assert all("secret" not in r.content for r in rows)
        kr = h.services.keyring
        assert kr.decrypt(rows[0].key_id, rows[0].content, rows[0].id) == "secret words"
        assert rows[1].model == "m-primary" and rows[1].latency_ms is not None
        assert [(s.tenant_id, s.session_id) for s in sessions] == [("t1", sid)]


async def _error(h: Harness, resp_coro: object, status: int, code: str) -> dict[str, object]:
    r = await resp_coro  # type: ignore[misc]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    return dict(r.headers)


async def test_error_paths(tmp_path: Path, primary: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, limits={"max_message_chars": 10,
                                                     "max_body_bytes": 1024})
    async with running_app(settings) as h:
        tok = await h.token()
        auth = {"Authorization": f"Bearer {tok}"}
        await _error(h, h.client.post("/api/v1/chat", content=b"{nope", headers=auth),
                     400, "malformed_json")
        await _error(h, h.client.post("/api/v1/chat", content=b"[1]", headers=auth),
                     400, "malformed_json")
        await _error(h, h.chat(tok, message=""), 422, "validation_error")
        await _error(h, h.chat(tok, message="   "), 422, "validation_error")
        await _error(h, h.chat(tok), 422, "validation_error")
        await _error(h, h.chat(tok, message=123), 422, "validation_error")
        await _error(h, h.chat(tok, message="x" * 11), 422, "validation_error")
        ok = await h.chat(tok, message="x" * 10)  # exactly at the limit: accepted, not cut
        assert ok.status_code == 200 and "x" * 10 in ok.json()["reply"]
        await _error(h, h.chat(None, message="hi"), 401, "unauthorized")
        await _error(h, h.chat("cb_unknown", message="hi"), 401, "unauthorized")
        await _error(h, h.client.post("/api/v1/chat", json={"message": "hi"},
                                      headers={"Authorization": "Basic abc"}),
                     401, "unauthorized")
        await _error(h, h.client.post("/api/v1/chat", content=b"{" + b" " * 2000 + b"}",
                                      headers=auth), 413, "body_too_large")

        async def chunked():  # no content-length: limit enforced while reading
            for _ in range(5):
                yield b" " * 400

        await _error(h, h.client.post("/api/v1/chat", content=chunked(), headers=auth),
                     413, "body_too_large")
        await _error(h, h.client.get("/nope"), 404, "not_found")


async def test_expired_and_revoked_tokens(tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        expired = await h.token(days=-1)
        r = await h.chat(expired, message="hi")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        tok = await h.token()
        assert (await h.chat(tok, message="hi")).status_code == 200
        from clawbot_app.db.tokens import list_tokens

        tid = [t.id for t in await list_tokens(h.services.db.engine)][-1]
        assert await revoke_token(h.services.db.engine, tid)
        r = await h.chat(tok, message="hi")
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


async def test_token_cache_avoids_db(tmp_path: Path, primary: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, auth={"cache_ttl_seconds": 60})
    async with running_app(settings) as h:
        tok = await h.token()
        calls = 0
        import clawbot_app.auth as auth_mod

        real = auth_mod.lookup_hash

        async def counting(engine, digest):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return await real(engine, digest)

        auth_mod.lookup_hash = counting  # type: ignore[assignment]
        try:
            for _ in range(5):
                assert (await h.chat(tok, message="hi")).status_code == 200
        finally:
            auth_mod.lookup_hash = real  # type: ignore[assignment]
        assert calls == 1


async def test_rate_limit(tmp_path: Path, primary: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, rate_limit={"per_tenant_per_minute": 3})
    async with running_app(settings) as h:
        a1 = await h.token(user="a1", tenant="A")
        a2 = await h.token(user="a2", tenant="A")
        b = await h.token(user="b", tenant="B")
        codes = [(await h.chat(t, message="hi")).status_code for t in (a1, a2, a1)]
        assert codes == [200, 200, 200]
        r = await h.chat(a2, message="hi")  # 4th request of tenant A within the minute
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 61
        assert (await h.chat(b, message="hi")).status_code == 200  # other tenant unaffected
        assert "rate_limited_total 1.0" in (await h.client.get("/metrics")).text


async def test_upstream_failures(tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token()
        primary.fake.fail_next[:] = [500]  # one failure, retried once -> success
        r = await h.chat(tok, message="retry")
        assert r.status_code == 200 and len(primary.fake.requests) == 2
        primary.fake.always_status = 500
        await _error(h, h.chat(tok, message="boom"), 502, "upstream_error")
        primary.fake.always_status = 401  # non-retryable
        n = len(primary.fake.requests)
        await _error(h, h.chat(tok, message="auth"), 502, "upstream_error")
        assert len(primary.fake.requests) == n + 1
        primary.fake.always_status = None
        primary.fake.latency = 2.5  # provider timeout is 2 s
        await _error(h, h.chat(tok, message="slow"), 504, "upstream_timeout")
        text = (await h.client.get("/metrics")).text
        assert 'model_calls_total{outcome="timeout",provider="primary"} 2.0' in text
        assert 'model_calls_total{outcome="error",provider="primary"}' in text


async def test_wrong_provider_key_is_502(tmp_path: Path, primary: FakeModelServer) -> None:
    extra = {"models": {"providers": {"primary": {"api_key": "sk-wrong"}}}}
    async with running_app(_settings(tmp_path, primary, **extra)) as h:
        tok = await h.token()
        await _error(h, h.chat(tok, message="hi"), 502, "upstream_error")


async def test_fallback_provider(tmp_path: Path, primary: FakeModelServer,
                                 backup: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, backup, models={"fallback": "backup"})
    async with running_app(settings) as h:
        tok = await h.token()
        primary.fake.always_status = 503
        r = await h.chat(tok, message="hi")
        assert r.status_code == 200
        assert r.json()["reply"].startswith("backup: hi") and r.json()["model"] == "m-backup"
        backup.fake.always_status = 500
        await _error(h, h.chat(tok, message="hi"), 502, "upstream_error")


async def test_routes(tmp_path: Path, primary: FakeModelServer,
                      backup: FakeModelServer) -> None:
    routes = [{"path_prefix": "/zh/", "provider": "backup"},
              {"regex": r"(?i)^translate\b", "provider": "backup"},
              {"keywords": ["Invoice"], "provider": "backup"}]
    settings = _settings(tmp_path, primary, backup, models={"routes": routes})
    async with running_app(settings) as h:
        tok = await h.token()
        cases = [("/api/v1/chat", "hello", "primary"), ("/zh/api/v1/chat", "hello", "backup"),
                 ("/api/v1/chat", "Translate this", "backup"),
                 ("/api/v1/chat", "my invoice is late", "backup"),
                 ("/en/api/v1/chat", "hello", "primary")]
        for path, msg, who in cases:
            r = await h.chat(tok, path=path, message=msg)
            assert r.json()["reply"].startswith(f"{who}: "), (path, msg, r.text)


async def test_stream_sse(tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token()
        r = await h.chat(tok, message="stream me please", stream=True)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        sid = r.headers["x-session-id"]
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1])
        assert text == "primary: stream me please [n=1]"
        assert primary.fake.requests[-1]["stream"] is True
        r2 = await h.chat(tok, message="next", session_id=sid)  # streamed turn was saved
        assert r2.json()["reply"] == "primary: next [n=3]"
        primary.fake.always_status = 500
        await _error(h, h.chat(tok, message="x", stream=True), 502, "upstream_error")


async def test_no_provider_503(tmp_path: Path) -> None:
    async with running_app(Settings.model_validate(settings_dict(tmp_path))) as h:
        r = await h.client.post("/api/v1/chat", json={"message": "hi"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "no_provider"
        assert "no model provider is configured" in r.json()["error"]["message"]


async def test_spawn_is_drained(tmp_path: Path) -> None:
    import asyncio

    done: list[int] = []

    async def work() -> None:
        await asyncio.sleep(0.2)
        done.append(1)

    async with running_app(Settings.model_validate(settings_dict(tmp_path))) as h:
        h.services.spawn(work())
        assert done == []
    assert done == [1]


@pytest.mark.parametrize("include", [False, True])
async def test_logs_hide_content(tmp_path: Path, primary: FakeModelServer,
                                 caplog: pytest.LogCaptureFixture,
                                 capsys: pytest.CaptureFixture[str], include: bool) -> None:
    import logging

    from clawbot_app.logging_setup import EcsJsonFormatter

    settings = _settings(tmp_path, primary, logging={"level": "INFO",
                                                      "include_content": include})
    caplog.set_level(logging.INFO)
    async with running_app(settings) as h:
        tok = await h.token()
        await h.client.post(
            "/api/v1/chat", json={"message": "topsecretmessage"},
            headers={"Authorization": f"Bearer {tok}", "X-Request-ID": "req-42"})
    fmt = EcsJsonFormatter()
    app_lines = [fmt.format(r) for r in caplog.records]
    access_lines = capsys.readouterr().out.splitlines()
    blob = "\n".join(app_lines + access_lines)
    assert ("topsecretmessage" in blob) is include
    assert "sk-primary" not in blob and tok not in blob
    access = [json.loads(x) for x in access_lines if '"clawbot_app.access"' in x]
    assert access and access[-1]["url.path"] == "/api/v1/chat"
    assert access[-1]["trace.id"] == "req-42"
    assert access[-1]["http.response.status_code"] == 200
    assert access[-1]["event.duration"] > 0
    for key in ("@timestamp", "log.level", "message", "http.request.method"):
        assert key in access[-1]


async def test_tokens_file(tmp_path: Path, primary: FakeModelServer) -> None:
    import hashlib

    import yaml

    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"sha256": hashlib.sha256(b"static-1").hexdigest(), "user": "svc", "tenant": "ops"},
        {"token": "static-old", "user": "svc", "expires_at": "2020-01-01T00:00:00+00:00"},
    ]}))
    async with running_app(_settings(tmp_path, primary,
                                     auth={"tokens_file": str(tokens)})) as h:
        assert (await h.chat("static-1", message="hi")).status_code == 200
        r = await h.chat("static-old", message="hi")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        assert (await h.chat("static-2", message="hi")).status_code == 401


async def test_keyring_rotation_on_reload(tmp_path: Path, primary: FakeModelServer,
                                          reload: Callable[[Services, str], bool]) -> None:
    import yaml

    from clawbot_app.crypto import rotate_keyring_file

    keyring = tmp_path / "keyring.json"
    first = rotate_keyring_file(keyring)
    data = settings_dict(tmp_path, primary.base_url,
                         encryption={"keyring_file": str(keyring)})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    async with running_app(Settings.model_validate(data)) as h:
        tok = await h.token()
        await h.chat(tok, message="under old key")
        second = rotate_keyring_file(keyring)
        assert reload(h.services, str(cfg))  # what SIGHUP does
        await h.chat(tok, message="under new key")
        await h.services.writer.flush()
        async with h.services.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(conversation_log)
                                       .where(conversation_log.c.role == "user"))).all()
        got = {h.services.keyring.decrypt(r.key_id, r.content, r.id): r.key_id for r in rows}
        assert got == {"under old key": first, "under new key": second}
