"""Bearer token validation with a short in-process cache of hash lookups.

Tokens come from the ``api_tokens`` table (created with ``clawbot-app token create``) and,
optionally, from ``auth.tokens_file`` (YAML/JSON list of ``{sha256 | token | keyring_file, user,
tenant?, expires_at?}``), reloaded on SIGHUP. A ``keyring_file`` entry makes every key listed in
that keyring file (the current one and the previous ones it still keeps) a token of the user.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clawbot_app.config import Settings
from clawbot_app.db.engine import Database, utcnow
from clawbot_app.db.tokens import TokenRecord, hash_token, lookup_hash
from clawbot_app.errors import Unauthorized, Unavailable
from clawbot_app.keyfile import load_secret_keyring

log = logging.getLogger("clawbot_app.auth")

_NEGATIVE_TTL = 2.0
_SECRET_FIELDS = ("sha256", "token", "keyring_file")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class TokensFileError(ValueError):
    """The tokens file cannot be used; the message names the file and entry, never a token."""


@dataclass
class FileTokens:
    records: dict[str, TokenRecord] = field(default_factory=dict)  # sha256 hex -> record
    keyring_ids: dict[str, str] = field(default_factory=dict)  # "tokens:<user>" -> current id


def load_tokens_file(path: str) -> FileTokens:
    """Parse ``auth.tokens_file``; raises :class:`TokensFileError`."""
    full = Path(os.path.expanduser(path))
    entries = _entries(full)
    out = FileTokens()
    for number, entry in enumerate(entries, 1):
        try:
            _add_entry(out, entry)
        except ValueError as exc:  # KeyfileError is one too
            raise TokensFileError(f"{full}: entry {number}: {exc}") from None
    return out


def _entries(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise TokensFileError(f"{path}: cannot read tokens file: {reason}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its text may quote a token: report the line only
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TokensFileError(f"{path}: invalid YAML{where}") from None
    entries = data.get("tokens", []) if isinstance(data, dict) else (data or [])
    if not isinstance(entries, list):
        raise TokensFileError(f"{path}: 'tokens' must be a list")
    return entries


def _add_entry(out: FileTokens, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise ValueError("must be a mapping")
    given = [name for name in _SECRET_FIELDS if entry.get(name) is not None]
    if len(given) != 1:
        raise ValueError("needs exactly one of sha256, token, keyring_file")
    user = entry.get("user")
    if not isinstance(user, str | int) or isinstance(user, bool) or not str(user):
        raise ValueError("'user' is required")
    tenant = entry.get("tenant", user)
    record = TokenRecord(None, str(user), str(tenant), _expiry(entry.get("expires_at")),
                         bool(entry.get("revoked", False)))
    if given[0] == "sha256":
        digest = str(entry["sha256"]).lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError("'sha256' must be 64 hex digits")
        out.records[digest] = record
    elif given[0] == "token":
        out.records[hash_token(str(entry["token"]))] = record
    else:
        ring = load_secret_keyring(os.path.expanduser(str(entry["keyring_file"])))
        for secret in ring.keys.values():
            out.records[hash_token(secret)] = record
        out.keyring_ids[f"tokens:{user}"] = ring.current


def _expiry(value: Any) -> dt.datetime | None:
    """Naive UTC datetime (the DB convention) from a YAML timestamp/date or an ISO string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("'expires_at' must be an ISO 8601 timestamp") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise ValueError("'expires_at' must be an ISO 8601 timestamp")
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


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

    @staticmethod
    def read_file(settings: Settings) -> FileTokens:
        """Parse ``auth.tokens_file``; raises :class:`TokensFileError`."""
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
