"""Keys seen once: IM event ids, message ids, body digests and used signatures.

Replays must stay replays across a restart, so the keys live where a restart does not lose
them: Redis when the deployment has it (``RedisStore.mark_seen``, shared by every instance),
otherwise the service's own database (this module), including the embedded SQLite default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from clawbot_app.db.engine import Database, utcnow
from clawbot_app.db.schema import im_dedupe
from clawbot_app.store import Store

PURGE_EVERY = 500
"""Expired keys are deleted on every PURGE_EVERY-th new key."""


class Dedupe(Protocol):
    async def mark_seen(self, key: str, ttl_seconds: int) -> bool: ...


class DatabaseDedupe:
    """``mark_seen`` on the ``im_dedupe`` table: one row per key (its SHA-256), with an expiry."""

    def __init__(self, db: Database):
        self.db = db
        self._inserted = 0

    async def mark_seen(self, key: str, ttl_seconds: int) -> bool:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        now = utcnow()
        expires = now + dt.timedelta(seconds=ttl_seconds)
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(im_dedupe).values(key_hash=digest, expires_at=expires))
        except IntegrityError:
            # Seen before: first time again only if that entry has expired (one winner).
            async with self.db.engine.begin() as conn:
                result = await conn.execute(
                    sa.update(im_dedupe)
                    .where(im_dedupe.c.key_hash == digest, im_dedupe.c.expires_at <= now)
                    .values(expires_at=expires))
            return result.rowcount == 1
        self._inserted += 1
        if self._inserted % PURGE_EVERY == 0:
            await self.purge(now)
        return True

    async def purge(self, now: dt.datetime | None = None) -> int:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.delete(im_dedupe).where(im_dedupe.c.expires_at <= (now or utcnow())))
        return result.rowcount


def make_dedupe(redis_url: str, store: Store, db: Database) -> Dedupe:
    """Redis (the store) when configured, the database otherwise."""
    return store if redis_url else DatabaseDedupe(db)
