"""OpenAI-compatible ``/v1/chat/completions`` client with retries and timeouts."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp

from clawbot_app import __version__
from clawbot_app.config import ProviderSettings
from clawbot_app.errors import ApiError, UpstreamError, UpstreamTimeout
from clawbot_app.metrics import Metrics

log = logging.getLogger("clawbot_app.providers")

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a completion far larger than any max_tokens allows
USER_AGENT = f"clawbot-app/{__version__}"


@dataclass
class Completion:
    text: str
    model: str
    provider: str


@dataclass
class OpenStream:
    provider: str
    model: str
    response: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[tuple[str, str]]:
        """Yield ``(raw_sse_data, delta_text)`` per upstream ``data:`` line.

        A line longer than aiohttp's read buffer raises ``ValueError``: the caller ends the
        stream with an error event, as for any other broken upstream.
        """
        try:
            async for raw in self.response.content:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                delta = ""
                if data and data != "[DONE]":
                    try:
                        obj = json.loads(data)
                        delta = obj["choices"][0].get("delta", {}).get("content") or ""
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        delta = ""
                yield data, delta
        finally:
            self.response.release()


def completions_url(p: ProviderSettings) -> str:
    base = p.base_url
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


@lru_cache(maxsize=64)  # keyed by the secret too: a rotated API key gets a new header set
def _headers(secret: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "Content-Type": "application/json",
               "User-Agent": USER_AGENT}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return headers


def forget_encoded_headers() -> None:
    """Drop the cached headers, so that retired API keys do not linger after a reload."""
    _headers.cache_clear()


def _payload(p: ProviderSettings, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    return {"model": p.model, "messages": messages, "max_tokens": p.max_tokens,
            "temperature": p.temperature, "stream": stream}


def _timeout(p: ProviderSettings) -> aiohttp.ClientTimeout:
    """Connect within min(5 s, timeout); each read within ``timeout_seconds``."""
    return aiohttp.ClientTimeout(total=None, connect=min(5.0, p.timeout_seconds),
                                 sock_read=p.timeout_seconds)


class ModelHttp:
    """The connection pool for model calls: one aiohttp session, keep-alive, no redirects.

    Profiling the chat benchmark (50 concurrent calls to a 100 ms model on 2 cores) put the
    httpx/httpcore/anyio stack at 0.78 ms of CPU per model call against 0.27 ms for aiohttp's
    client (C parser, no anyio layer), about a quarter of the whole request's CPU; see
    bot_app/README.md, "Performance". Redirects are not followed, so an API key is never sent
    to another origin. Created inside the running loop (``await ModelHttp.open()``).
    """

    def __init__(self, session: aiohttp.ClientSession):
        self.session = session

    @classmethod
    async def open(cls, *, limit: int = 512, keepalive_seconds: float = 30.0) -> ModelHttp:
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=keepalive_seconds,
                                         ttl_dns_cache=300)
        return cls(aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                         trust_env=False, raise_for_status=False))

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        return await self.session.post(url, data=body, headers=headers, timeout=timeout,
                                       allow_redirects=False)

    async def aclose(self) -> None:
        await self.session.close()


async def _read_limited(resp: aiohttp.ClientResponse, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The whole body, refusing one larger than ``limit`` bytes (a provider's bug or attack)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ValueError("response too large")
    if resp.content_length is not None:
        return await resp.read()
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise ValueError("response too large")
        parts.append(chunk)
    return b"".join(parts)


class ProviderClient:
    def __init__(self, http: ModelHttp, metrics: Metrics):
        self.pool = http
        self.metrics = metrics

    async def _attempts(self, name: str, p: ProviderSettings, stream: bool,
                        messages: list[dict[str, str]]) -> aiohttp.ClientResponse:
        """Send with retries; returns an open response with 2xx status (caller reads it)."""
        last: ApiError | None = None
        url = completions_url(p)
        headers = _headers(p.secret() or None)
        body = json.dumps(_payload(p, messages, stream)).encode()
        timeout = _timeout(p)
        for attempt in range(p.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
            started = time.perf_counter()
            try:
                resp = await self.pool.post(url, body, headers, timeout)
            except TimeoutError:
                self._observe(name, started, "timeout")
                last = UpstreamTimeout(f"provider '{name}' timed out")
                continue
            except aiohttp.ClientError as exc:
                self._observe(name, started, "error")
                last = UpstreamError(f"provider '{name}' unreachable: {type(exc).__name__}")
                continue
            if resp.status < 300:
                return resp
            resp.release()
            self._observe(name, started, "error")
            last = UpstreamError(f"provider '{name}' answered HTTP {resp.status}")
            if resp.status not in _RETRYABLE_STATUS:
                break
        raise last or UpstreamError(f"provider '{name}' failed")

    def _observe(self, name: str, started: float, outcome: str) -> None:
        self.metrics.model_latency.labels(provider=name).observe(time.perf_counter() - started)
        self.metrics.model_calls.labels(provider=name, outcome=outcome).inc()

    async def complete(self, name: str, p: ProviderSettings,
                       messages: list[dict[str, str]]) -> Completion:
        started = time.perf_counter()
        resp = await self._attempts(name, p, False, messages)
        try:
            body = json.loads(await asyncio.wait_for(_read_limited(resp), p.timeout_seconds))
            text = body["choices"][0]["message"]["content"] or ""
            model = str(body.get("model") or p.model)
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except TimeoutError:
            self._observe(name, started, "timeout")
            raise UpstreamTimeout(f"provider '{name}' timed out") from None
        except (ValueError, KeyError, IndexError, TypeError, aiohttp.ClientError):
            self._observe(name, started, "error")
            raise UpstreamError(f"provider '{name}' sent an invalid response") from None
        finally:
            resp.release()
        self._observe(name, started, "success")
        return Completion(text=text, model=model, provider=name)

    async def open_stream(self, name: str, p: ProviderSettings,
                          messages: list[dict[str, str]]) -> OpenStream:
        started = time.perf_counter()
        resp = await self._attempts(name, p, True, messages)
        self._observe(name, started, "success")
        return OpenStream(provider=name, model=p.model, response=resp)
