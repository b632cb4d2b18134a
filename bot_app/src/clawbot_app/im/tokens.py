"""Access tokens of the platforms' server APIs, cached until shortly before they expire.

Feishu's tenant token and WeCom's ``access_token`` both last ``expire``/``expires_in`` seconds
(7200) and both platforms ask callers to cache them: each key is fetched at most once at a time
(concurrent callers wait for the same fetch) and again only after ``invalidate`` or once
``expire - margin`` has passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

TOKEN_REFRESH_MARGIN_SECONDS = 300

Fetch = Callable[[], Awaitable[tuple[str, int]]]
"""Fetches ``(token, lifetime in seconds)``."""


@dataclass
class _CachedToken:
    token: str
    refresh_at: float


@dataclass
class TokenCache:
    """Tokens per key; a key includes the secret, so a rotated secret never reuses a token."""

    margin_seconds: float = TOKEN_REFRESH_MARGIN_SECONDS
    _tokens: dict[tuple[str, ...], _CachedToken] = field(default_factory=dict)
    _locks: dict[tuple[str, ...], asyncio.Lock] = field(default_factory=dict)

    def invalidate(self, key: tuple[str, ...]) -> None:
        self._tokens.pop(key, None)

    def _fresh(self, key: tuple[str, ...]) -> str | None:
        cached = self._tokens.get(key)
        return cached.token if cached and cached.refresh_at > time.monotonic() else None

    async def get(self, key: tuple[str, ...], fetch: Fetch) -> str:
        token = self._fresh(key)
        if token is not None:
            return token
        async with self._locks.setdefault(key, asyncio.Lock()):
            token = self._fresh(key)
            if token is not None:
                return token
            token, expire = await fetch()
            margin = min(self.margin_seconds, expire / 2)
            self._tokens[key] = _CachedToken(token, time.monotonic() + expire - margin)
            return token
