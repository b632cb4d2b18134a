"""Bearer token validation with a short in-process cache of hash lookups.

Tokens come from the ``api_tokens`` table (created with ``clawbot-app token create``) and,
optionally, from ``auth.tokens_file`` (YAML/JSON list of ``{sha256 | token | keyring_file, user,
tenant?, expires_at?}``), reloaded on SIGHUP. A ``keyring_file`` entry makes every key listed in
that keyring file (the current one and the previous ones it still keeps) a token of the user.
"""

from __future__ import annotations

import asyncio
import logging
import time

from clawbot_app.config import Settings
from clawbot_app.db.engine import Database, utcnow
from clawbot_app.db.tokens import TokenRecord, hash_token, lookup_hash
from clawbot_app.errors import Unauthorized, Unavailable
from clawbot_app.tokensfile import FileTokens, TokensFileError, load_tokens_file

log = logging.getLogger("clawbot_app.auth")

_NEGATIVE_TTL = 2.0

__all__ = ["FileTokens", "TokenService", "TokensFileError", "load_tokens_file"]


class TokenService:
    def __init__(self, settings: Settings, db: Database):
        self.db = db
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._inflight: dict[str, asyncio.Future[TokenRecord | None]] = {}
        self._file = FileTokens()
        self._known: dict[str, TokenRecord] = {}
        self.apply_settings(settings)

    @property
    def keyring_ids(self) -> dict[str, str]:
        """Current key id of each ``keyring_file`` entry, by metric label ``tokens:<user>``."""
        return dict(self._file.keyring_ids)

    @property
    def keyring_created(self) -> dict[str, float]:
        """Creation time (unix) of those current keys, where the keyring's meta records it."""
        return dict(self._file.keyring_created)

    @staticmethod
    def read_file(settings: Settings) -> FileTokens:
        """The tokens file as load_settings parsed it; parsed here only for settings that did
        not come through load_settings. Raises :class:`TokensFileError`."""
        if settings.file_tokens is not None:
            return settings.file_tokens
        path = settings.auth.tokens_file
        return load_tokens_file(path) if path else FileTokens()

    def apply_settings(self, settings: Settings, loaded: FileTokens | None = None) -> None:
        """Use ``settings`` with the tokens file ``loaded`` (read now when not given)."""
        if loaded is None:
            loaded = self.read_file(settings)
        self.ttl = settings.auth.cache_ttl_seconds
        self._file = loaded
        self._cache.clear()

    async def _lookup(self, digest: str) -> TokenRecord | None:
        file_record = self._file.records.get(digest)
        if file_record is not None:
            return file_record
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
