"""Bearer token validation with a short in-process cache of hash lookups.

Tokens come from the ``api_tokens`` table (created with ``clawbot-app token create``) and,
optionally, from ``auth.tokens_file`` (YAML/JSON list of ``{sha256 | token, user, tenant,
expires_at?}``), reloaded on SIGHUP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

from clawbot_app.config import Settings
from clawbot_app.db.engine import Database, utcnow
from clawbot_app.db.tokens import TokenRecord, hash_token, lookup_hash
from clawbot_app.errors import Unauthorized, Unavailable

log = logging.getLogger("clawbot_app.auth")

_NEGATIVE_TTL = 2.0


def load_tokens_file(path: str) -> dict[str, TokenRecord]:
    data: Any = yaml.safe_load(Path(os.path.expanduser(path)).read_text(encoding="utf-8"))
    entries = data.get("tokens", []) if isinstance(data, dict) else (data or [])
    out: dict[str, TokenRecord] = {}
    for entry in entries:
        digest = entry.get("sha256") or hash_token(str(entry["token"]))
        exp = entry.get("expires_at")
        if isinstance(exp, str):
            exp = dt.datetime.fromisoformat(exp)
        if isinstance(exp, dt.datetime) and exp.tzinfo is not None:
            exp = exp.astimezone(dt.UTC).replace(tzinfo=None)
        out[digest] = TokenRecord(None, str(entry["user"]),
                                  str(entry.get("tenant", entry["user"])), exp,
                                  bool(entry.get("revoked", False)))
    return out


class TokenService:
    def __init__(self, settings: Settings, db: Database):
        self.db = db
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._inflight: dict[str, asyncio.Future[TokenRecord | None]] = {}
        self._file_tokens: dict[str, TokenRecord] = {}
        self._known: dict[str, TokenRecord] = {}
        self.apply_settings(settings)

    def apply_settings(self, settings: Settings) -> None:
        self.ttl = settings.auth.cache_ttl_seconds
        self._file_tokens = (load_tokens_file(settings.auth.tokens_file)
                             if settings.auth.tokens_file else {})
        self._cache.clear()

    async def _lookup(self, digest: str) -> TokenRecord | None:
        if digest in self._file_tokens:
            return self._file_tokens[digest]
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        fut = self._inflight.get(digest)
        if fut is not None:  # coalesce concurrent lookups of the same token
            try:
                return await asyncio.shield(fut)
            except Exception as exc:
                raise Unavailable("token store unavailable") from exc
        fut = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            rec = await lookup_hash(self.db.engine, digest)
            fut.set_result(rec)
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            known = self._known.get(digest)
            if known is not None:  # DB outage: keep serving the last known good answer
                log.warning("token lookup failed, using last known token record")
                return known
            raise Unavailable("token store unavailable") from exc
        finally:
            self._inflight.pop(digest, None)
        if rec is not None:
            if len(self._known) > 100_000:
                self._known.clear()
            self._known[digest] = rec
        ttl = self.ttl if rec is not None else min(self.ttl, _NEGATIVE_TTL)
        if ttl > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (now + ttl, rec)
        return rec

    async def authenticate(self, token: str | None) -> TokenRecord:
        if not token:
            raise Unauthorized("missing bearer token")
        rec = await self._lookup(hash_token(token))
        if rec is None:
            raise Unauthorized("unknown token")
        if rec.revoked:
            raise Unauthorized("token revoked")
        if rec.expires_at is not None and rec.expires_at <= utcnow():
            raise Unauthorized("token expired")
        return rec
