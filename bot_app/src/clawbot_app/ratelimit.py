"""Fixed one-minute window rate limit per tenant (shared through the store)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from clawbot_app.config import Settings
from clawbot_app.db.engine import Database
from clawbot_app.db.schema import tenant_config
from clawbot_app.errors import RateLimited
from clawbot_app.metrics import Metrics
from clawbot_app.store import Store

_TENANT_CACHE_SECONDS = 30.0


class RateLimiter:
    def __init__(self, settings: Settings, store: Store, db: Database, metrics: Metrics):
        self.store = store
        self.db = db
        self.metrics = metrics
        self.apply_settings(settings)
        self._tenant_cache: dict[str, tuple[float, int | None]] = {}

    def apply_settings(self, settings: Settings) -> None:
        self.default_limit = settings.rate_limit.per_tenant_per_minute

    async def _tenant_limit(self, tenant_id: str) -> int:
        now = time.monotonic()
        hit = self._tenant_cache.get(tenant_id)
        if hit is None or hit[0] < now:
            limit: int | None = None
            try:
                async with self.db.engine.connect() as conn:
                    limit = (await conn.execute(
                        sa.select(tenant_config.c.rate_limit)
                        .where(tenant_config.c.tenant_id == tenant_id))).scalar()
            except Exception:  # DB outage: fall back to the configured default
                limit = hit[1] if hit else None
            hit = (now + _TENANT_CACHE_SECONDS, limit)
            self._tenant_cache[tenant_id] = hit
        return hit[1] if hit[1] is not None else self.default_limit

    async def check(self, tenant_id: str) -> None:
        limit = await self._tenant_limit(tenant_id)
        if limit <= 0:
            return
        count, reset_in = await self.store.incr_window(f"tenant:{tenant_id}", 60)
        if count > limit:
            self.metrics.rate_limited.inc()
            raise RateLimited(f"rate limit of {limit} requests per minute exceeded",
                              retry_after=max(1, reset_in))
