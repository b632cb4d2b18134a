"""Ephemeral key/value state: dedupe keys, rate-limit counters, session turns.

``InProcessStore`` (default) keeps everything in this process; ``RedisStore`` shares it between
workers/instances via Redis.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

from clawbot_app.errors import Unavailable


class Store(Protocol):
    async def mark_seen(self, key: str, ttl_seconds: int) -> bool: ...
    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, int]: ...
    async def get_turns(self, key: str) -> list[dict[str, Any]]: ...
    async def append_turns(self, key: str, turns: list[dict[str, Any]], max_items: int,
                           ttl_seconds: int) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class _TTLDict:
    """Dict with per-key expiry, swept lazily (bounded by ``max_items``)."""

    def __init__(self, max_items: int = 200_000):
        self._d: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._max = max_items

    def get(self, key: str) -> Any:
        item = self._d.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._d[key]
            return None
        return item[1]

    def set(self, key: str, value: Any, ttl: float) -> None:
        self._d[key] = (time.monotonic() + ttl, value)
        self._d.move_to_end(key)
        if len(self._d) > self._max:
            self.sweep()
            while len(self._d) > self._max:
                self._d.popitem(last=False)

    def sweep(self) -> None:
        now = time.monotonic()
        for k in [k for k, (exp, _) in self._d.items() if exp <= now]:
            del self._d[k]

    def __len__(self) -> int:
        return len(self._d)


class InProcessStore:
    def __init__(self) -> None:
        self._seen = _TTLDict()
        self._windows = _TTLDict()
        self._turns = _TTLDict()

    async def mark_seen(self, key: str, ttl_seconds: int) -> bool:
        if self._seen.get(key) is not None:
            return False
        self._seen.set(key, True, ttl_seconds)
        return True

    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, int]:
        now = time.time()
        window = int(now // window_seconds)
        full = f"{key}:{window}"
        count = (self._windows.get(full) or 0) + 1
        self._windows.set(full, count, window_seconds + 1)
        reset_in = int((window + 1) * window_seconds - now) + 1
        return count, reset_in

    async def get_turns(self, key: str) -> list[dict[str, Any]]:
        return list(self._turns.get(key) or [])

    async def append_turns(self, key: str, turns: list[dict[str, Any]], max_items: int,
                           ttl_seconds: int) -> None:
        items = (self._turns.get(key) or []) + turns
        self._turns.set(key, items[-max_items:] if max_items else [], ttl_seconds)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def redis_client(url: str, password: str | None = None, **options: Any) -> aioredis.Redis:
    """A client for ``url`` (``redis://[user[:pw]@]host:port/db``, ``rediss://...`` or
    ``unix:///path.sock?username=user``). ``password``, when given, replaces a password in the
    URL and goes with the URL's user name (``AUTH user password``, a Redis ACL user).

    Built like ``Redis.from_url``, except for precedence: there a password in the URL wins over
    a ``password`` argument, here the separate password wins.
    """
    kwargs: dict[str, Any] = {**options, **parse_url(url)}
    if password:
        kwargs["password"] = password
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(**kwargs))


@contextmanager
def _unavailable_when_down() -> Iterator[None]:
    """Redis down, unreachable or timing out: a 503 `unavailable` answer (never a 500 with the
    driver's error; the cause stays in the exception chain for the log)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise Unavailable("session store unavailable") from exc


class RedisStore:
    def __init__(self, url: str, prefix: str = "clawbot:", password: str | None = None):
        self.redis = redis_client(url, password, socket_timeout=3, socket_connect_timeout=3,
                                  max_connections=200, health_check_interval=30)
        self.p = prefix

    async def mark_seen(self, key: str, ttl_seconds: int) -> bool:
        with _unavailable_when_down():
            return bool(await self.redis.set(f"{self.p}seen:{key}", 1, nx=True, ex=ttl_seconds))

    async def incr_window(self, key: str, window_seconds: int) -> tuple[int, int]:
        now = time.time()
        window = int(now // window_seconds)
        full = f"{self.p}rl:{key}:{window}"
        with _unavailable_when_down():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(full)
                pipe.expire(full, window_seconds + 1)
                count, _ = await pipe.execute()
        return int(count), int((window + 1) * window_seconds - now) + 1

    async def get_turns(self, key: str) -> list[dict[str, Any]]:
        with _unavailable_when_down():
            raw = await self.redis.lrange(f"{self.p}turns:{key}", 0, -1)
        return [json.loads(x) for x in raw]

    async def append_turns(self, key: str, turns: list[dict[str, Any]], max_items: int,
                           ttl_seconds: int) -> None:
        k = f"{self.p}turns:{key}"
        with _unavailable_when_down():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(k, *[json.dumps(t) for t in turns])
                pipe.ltrim(k, -max_items if max_items else 1, -1)
                pipe.expire(k, ttl_seconds)
                await pipe.execute()

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


def make_store(redis_url: str, password: str | None = None) -> Store:
    return RedisStore(redis_url, password=password) if redis_url else InProcessStore()
