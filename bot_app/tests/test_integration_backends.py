"""Integration with a real Redis and a real MariaDB (started by session fixtures)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes.openai_provider import FakeModelServer

from clawbot_app.config import Settings
from clawbot_app.db.schema import conversation_log, dialog_sessions
from clawbot_app.store import RedisStore
from tests.conftest import MariaDB, RedisProc
from tests.support import running_app, settings_dict


def _settings(tmp_path: Path, primary: FakeModelServer, **storage: object) -> Settings:
    return Settings.model_validate(settings_dict(
        tmp_path, primary.base_url, storage={**storage, "replay_interval_seconds": 0.2}))


async def test_redis_store_primitives(redis_server: RedisProc) -> None:
    store = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:6]}:")
    try:
        assert await store.mark_seen("evt-1", 60) is True
        assert await store.mark_seen("evt-1", 60) is False
        assert await store.mark_seen("evt-2", 60) is True
        assert await store.mark_seen("short", 1) is True
        await asyncio.sleep(1.2)
        assert await store.mark_seen("short", 1) is True  # expired -> seen again
        c1, _ = await store.incr_window("k", 60)
        c2, reset = await store.incr_window("k", 60)
        assert (c1, c2) == (1, 2) and 1 <= reset <= 61
        await store.append_turns("s", [{"role": "user", "content": str(i)} for i in range(5)],
                                 4, 30)
        assert [t["content"] for t in await store.get_turns("s")] == ["1", "2", "3", "4"]
        ttl = await store.redis.ttl(f"{store.p}turns:s")
        assert 0 < ttl <= 30
    finally:
        await store.close()


async def test_redis_backed_app(tmp_path: Path, primary: FakeModelServer,
                                redis_server: RedisProc) -> None:
    settings = Settings.model_validate(settings_dict(
        tmp_path, primary.base_url, storage={"redis_url": redis_server.url},
        rate_limit={"per_tenant_per_minute": 2}, session={"ttl_seconds": 120}))
    tenant = f"rt-{uuid.uuid4().hex[:6]}"
    async with running_app(settings) as h:
        r = await h.client.get("/ready")
        assert r.status_code == 200 and r.json()["checks"]["redis"]["status"] == "ok"
        tok = await h.token(tenant=tenant)
        r1 = await h.chat(tok, message="a")
        sid = r1.json()["session_id"]
        r2 = await h.chat(tok, message="b", session_id=sid)
        assert r2.json()["reply"] == "primary: b [n=3]"  # context came from Redis
        r3 = await h.chat(tok, message="c", session_id=sid)
        assert r3.status_code == 429 and int(r3.headers["Retry-After"]) >= 1
        redis = h.services.store.redis  # type: ignore[attr-defined]
        keys = [k.decode() async for k in redis.scan_iter(f"clawbot:turns:{tenant}:*")]
        assert len(keys) == 1 and 0 < await redis.ttl(keys[0]) <= 120
        assert await h.services.store.mark_seen(f"feishu:{uuid.uuid4()}", 60) is True


async def test_ready_reports_redis_down(tmp_path: Path, primary: FakeModelServer) -> None:
    from tests.support import free_port

    settings = _settings(tmp_path, primary, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running_app(settings) as h:
        r = await h.client.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["redis"]["status"] == "error"


class _PrivateRedis:
    """A redis-server of one test, to stop and start under a running app."""

    def __init__(self, workdir: Path) -> None:
        import shutil

        from tests.support import free_port

        self.port = free_port()
        self.argv = [str(shutil.which("redis-server")), "--port", str(self.port), "--bind",
                     "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from tests.support import wait_port

        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_port(self.port, 15)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[_PrivateRedis]:
    redis = _PrivateRedis(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def test_redis_down_answers_503_json_and_recovers(tmp_path: Path, primary: FakeModelServer,
                                                       private_redis: _PrivateRedis) -> None:
    """Redis stopped under a running app: the chat answers 503 `unavailable` (never a 500 with
    the driver's error), and answers again once Redis is back on its port."""
    async with running_app(_settings(tmp_path, primary, redis_url=private_redis.url)) as h:
        tok = await h.token(tenant=f"rd-{uuid.uuid4().hex[:6]}")
        first = await h.chat(tok, message="a")
        assert first.status_code == 200, first.text
        private_redis.stop()
        down = await h.chat(tok, message="b", session_id=first.json()["session_id"])
        assert (down.status_code, down.json()) == (
            503, {"error": {"code": "unavailable", "message": "session store unavailable"}})
        private_redis.start()
        again = await h.chat(tok, message="c")
        assert again.status_code == 200, again.text


async def test_a_redis_restart_between_requests_fails_no_request(
        tmp_path: Path, primary: FakeModelServer, private_redis: _PrivateRedis) -> None:
    """Pooled connections go stale when Redis restarts (a data-host reboot, a failover): the next
    requests must not fail on them. Several connections are in the pool (concurrent chats)."""
    async with running_app(_settings(tmp_path, primary, redis_url=private_redis.url)) as h:
        tok = await h.token(tenant=f"rr-{uuid.uuid4().hex[:6]}")
        warm = await asyncio.gather(*(h.chat(tok, message=f"w{i}") for i in range(8)))
        assert {r.status_code for r in warm} == {200}
        private_redis.stop()
        private_redis.start()
        after = [await h.chat(tok, message=f"a{i}") for i in range(12)]
        assert [r.status_code for r in after] == [200] * 12, [r.text for r in after]


async def test_mariadb_chat_and_tokens(tmp_path: Path, primary: FakeModelServer,
                                       mariadb: MariaDB) -> None:
    settings = _settings(tmp_path, primary, database_url=mariadb.url)
    tenant = f"mt-{uuid.uuid4().hex[:6]}"
    async with running_app(settings) as h:
        assert (await h.client.get("/ready")).status_code == 200
        tok = await h.token(tenant=tenant)
        r = await h.chat(tok, message="über 中文 ✓")
        assert r.status_code == 200, r.text
        await h.services.writer.flush()
        async with h.services.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(conversation_log)
                                       .where(conversation_log.c.tenant_id == tenant))).all()
        assert len(rows) == 2
        user = next(x for x in rows if x.role == "user")
        assert h.services.keyring.decrypt(user.key_id, user.content, user.id) == "über 中文 ✓"
        expired = await h.token(tenant=tenant, days=-0.001)
        assert (await h.chat(expired, message="x")).status_code == 401


async def test_db_outage_spools_and_replays(tmp_path: Path, primary: FakeModelServer,
                                            mariadb: MariaDB) -> None:
    settings = _settings(tmp_path, primary, database_url=mariadb.url)
    tenant = f"out-{uuid.uuid4().hex[:6]}"
    async with running_app(settings) as h:
        tok = await h.token(tenant=tenant)
        assert (await h.chat(tok, message="before")).status_code == 200  # warms token cache
        await h.services.writer.flush()
        mariadb.stop()
        try:
            assert (await h.client.get("/ready")).status_code == 503
            for i in range(3):
                r = await h.chat(tok, message=f"during-{i}")
                assert r.status_code == 200, r.text
            await h.services.writer.flush()
            spool = h.services.writer.spool
            assert spool.pending_rows() == 9  # 3 x (dialog session + user + assistant rows)
            for f in spool.pending_files():
                assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
                assert "during" not in f.read_text()  # spool holds ciphertext only
        finally:
            mariadb.start()
        deadline = time.monotonic() + 20
        while spool.pending_files() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        assert not spool.pending_files()
        assert (await h.client.get("/ready")).status_code == 200
        async with h.services.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(conversation_log)
                                       .where(conversation_log.c.tenant_id == tenant))).all()
        texts = sorted(h.services.keyring.decrypt(r.key_id, r.content, r.id)
                       for r in rows if r.role == "user")
        assert texts == ["before", "during-0", "during-1", "during-2"]
        async with h.services.db.engine.connect() as conn:
            n_sessions = (await conn.execute(
                sa.select(sa.func.count()).select_from(dialog_sessions)
                .where(dialog_sessions.c.tenant_id == tenant))).scalar()
        assert n_sessions == 4
        assert "conversation_log_replayed_total 9.0" in (await h.client.get("/metrics")).text
