"""Behaviours a mutation review found unguarded: per-tenant rate-limit override, Redis expiry of
rate-limit counters, per-tenant model provider."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from fakes.openai_provider import FakeModelServer

from clawbot_app.config import Settings
from clawbot_app.db.engine import utcnow
from clawbot_app.db.schema import tenant_config
from clawbot_app.store import RedisStore
from tests.conftest import RedisProc
from tests.support import Harness, running_app, settings_dict


def _settings(tmp_path: Path, primary: FakeModelServer, backup: FakeModelServer | None = None,
              **extra: object) -> Settings:
    return Settings.model_validate(settings_dict(
        tmp_path, primary.base_url, backup.base_url if backup else None, **extra))


async def _tenant_row(h: Harness, tenant: str, *, rate_limit: int | None = None,
                      model_provider: str | None = None) -> None:
    """Insert a ``tenant_config`` row. Call before the tenant's first request: the rate limiter
    and the chat service cache what they read for 30 s."""
    now = utcnow()
    async with h.services.db.engine.begin() as conn:
        await conn.execute(sa.insert(tenant_config).values(
            tenant_id=tenant, rate_limit=rate_limit, model_provider=model_provider,
            created_at=now, updated_at=now))


async def _sleep_to_next_window(window: int, margin: float) -> None:
    """Sleep into a fresh fixed window if less than ``margin`` seconds of the current one are
    left, so that the requests of one test step all fall in the same window."""
    left = window - time.time() % window
    if left < margin:
        await asyncio.sleep(left + 0.05)


# -- 1. tenant_config.rate_limit overrides rate_limit.per_tenant_per_minute ------------------

async def test_tenant_rate_limit_override_lower(tmp_path: Path, primary: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, rate_limit={"per_tenant_per_minute": 100})
    async with running_app(settings) as h:
        await _tenant_row(h, "A", rate_limit=2)
        a = await h.token(user="a", tenant="A")
        b = await h.token(user="b", tenant="B")  # no tenant_config row: global limit 100
        await _sleep_to_next_window(60, 5)
        assert [(await h.chat(a, message="hi")).status_code for _ in range(2)] == [200, 200]
        r = await h.chat(a, message="hi")  # 3rd request of A within the minute
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        assert "rate limit of 2 requests per minute" in r.json()["error"]["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 61
        codes = [(await h.chat(b, message="hi")).status_code for _ in range(5)]
        assert codes == [200] * 5  # tenant B keeps the global limit


async def test_tenant_rate_limit_override_higher(tmp_path: Path,
                                                 primary: FakeModelServer) -> None:
    settings = _settings(tmp_path, primary, rate_limit={"per_tenant_per_minute": 2})
    async with running_app(settings) as h:
        await _tenant_row(h, "big", rate_limit=5)
        await _tenant_row(h, "nulled", rate_limit=None)  # row without override: global limit
        big = await h.token(user="u", tenant="big")
        nulled = await h.token(user="v", tenant="nulled")
        await _sleep_to_next_window(60, 5)
        codes = [(await h.chat(big, message="hi")).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]  # exceeds the global 2, stops at its own 5
        codes = [(await h.chat(nulled, message="hi")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


# -- 2. RedisStore.incr_window expires its counter key ---------------------------------------

async def test_redis_incr_window_sets_expiry(redis_server: RedisProc) -> None:
    store = RedisStore(redis_server.url, prefix=f"mg{uuid.uuid4().hex[:8]}:")
    try:
        window = 2
        await _sleep_to_next_window(window, 1.5)
        c1, _ = await store.incr_window("k", window)
        c2, reset = await store.incr_window("k", window)
        assert (c1, c2) == (1, 2) and 1 <= reset <= window + 1
        keys = [k.decode() async for k in store.redis.scan_iter(f"{store.p}rl:k:*")]
        assert len(keys) == 1
        ttl = await store.redis.ttl(keys[0])
        assert 0 < ttl <= window + 1, ttl  # -1 would mean "lives forever"
        await asyncio.sleep(window - time.time() % window + 0.05)  # next window
        c3, _ = await store.incr_window("k", window)
        assert c3 == 1  # count restarts in the next window
        await asyncio.sleep(window + 1.1)  # the first window's key is past its expiry
        assert await store.redis.exists(keys[0]) == 0
    finally:
        await store.close()


# -- 3. tenant_config.model_provider selects the tenant's provider ---------------------------

async def test_tenant_model_provider(tmp_path: Path, primary: FakeModelServer,
                                     backup: FakeModelServer) -> None:
    # README / routing.py: routes first (first match wins), then the tenant's provider, then
    # models.default. A tenant provider that is not configured is ignored.
    routes = [{"keywords": ["invoice"], "provider": "primary"},
              {"path_prefix": "/bk/", "provider": "backup"}]
    settings = _settings(tmp_path, primary, backup, models={"routes": routes})
    async with running_app(settings) as h:
        await _tenant_row(h, "tb", model_provider="backup")
        await _tenant_row(h, "tghost", model_provider="ghost")
        await _tenant_row(h, "tnull", model_provider=None)
        tb = await h.token(user="u1", tenant="tb")
        others = [await h.token(user="u2", tenant="tp"),  # no tenant_config row
                  await h.token(user="u3", tenant="tghost"),
                  await h.token(user="u4", tenant="tnull")]

        async def who(tok: str, message: str, path: str = "/api/v1/chat") -> str:
            r = await h.chat(tok, path=path, message=message)
            assert r.status_code == 200, r.text
            return str(r.json()["reply"]).split(":", 1)[0]

        assert await who(tb, "hello") == "backup"
        r = await h.chat(tb, message="streamed", stream=True)
        assert r.status_code == 200 and '"model": "m-backup"' in r.text
        assert backup.fake.requests[-1]["stream"] is True
        for tok in others:
            assert await who(tok, "hello") == "primary"
        # a matching route beats the tenant's provider, in both directions
        assert await who(tb, "my invoice is late") == "primary"
        assert await who(others[0], "hello", path="/bk/api/v1/chat") == "backup"
