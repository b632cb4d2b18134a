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

import httpx

from clawbot_app.config import ProviderSettings
from clawbot_app.errors import ApiError, UpstreamError, UpstreamTimeout
from clawbot_app.metrics import Metrics

log = logging.getLogger("clawbot_app.providers")

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class Completion:
    text: str
    model: str
    provider: str


@dataclass
class OpenStream:
    provider: str
    model: str
    response: httpx.Response

    async def chunks(self) -> AsyncIterator[tuple[str, str]]:
        """Yield ``(raw_sse_data, delta_text)`` per upstream ``data:`` line."""
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                delta = ""
                if data and data != "[DONE]":
                    try:
                        obj = json.loads(data)
                        delta = obj["choices"][0].get("delta", {}).get("content") or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        delta = ""
                yield data, delta
        finally:
            await self.response.aclose()


def completions_url(p: ProviderSettings) -> str:
    base = p.base_url
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


@lru_cache(maxsize=64)  # keyed by the secret too: a rotated API key gets new header bytes
def _static_parts(base_url: str, secret: str | None) -> tuple[httpx.URL, list[tuple[bytes, bytes]]]:
    url = httpx.URL(base_url)
    headers = [(b"Host", url.netloc), (b"Accept", b"application/json"),
               (b"Content-Type", b"application/json")]
    if secret:
        headers.append((b"Authorization", f"Bearer {secret}".encode()))
    return url, headers


def forget_encoded_headers() -> None:
    """Drop the pre-encoded headers, so that retired API keys do not linger after a reload."""
    _static_parts.cache_clear()


def _request(p: ProviderSettings, messages: list[dict[str, str]], stream: bool) -> httpx.Request:
    """Build the request with pre-encoded parts (cheaper than letting httpx infer them)."""
    url, headers = _static_parts(completions_url(p), p.secret() or None)
    body = json.dumps(_payload(p, messages, stream)).encode()
    return httpx.Request(
        "POST", url, content=body,
        headers=[*headers, (b"Content-Length", str(len(body)).encode())],
        extensions={"timeout": httpx.Timeout(
            p.timeout_seconds, connect=min(5.0, p.timeout_seconds)).as_dict()})


def _payload(p: ProviderSettings, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    return {"model": p.model, "messages": messages, "max_tokens": p.max_tokens,
            "temperature": p.temperature, "stream": stream}


class ShardedClient:
    """Round-robin over several small httpx connection pools (``AsyncHTTPTransport``).

    Profiling the chat benchmark showed two httpx costs worth avoiding on this hot path:
    httpcore's pool scans every connection for every queued request (quadratic in pool size,
    which capped one 100-connection pool at ~100 req/s with 50 concurrent model calls), and the
    ``AsyncClient`` layer (cookie jar, auth and redirect handling: ~20 % of the per-call CPU)
    that model calls do not need. Timeouts still apply per request via the ``timeout``
    extension, and keep-alive connections are reused.
    """

    def __init__(self, shards: int = 32, per_shard: int = 8):
        self._transports = [
            httpx.AsyncHTTPTransport(limits=httpx.Limits(
                max_connections=per_shard, max_keepalive_connections=per_shard,
                keepalive_expiry=30.0))
            for _ in range(shards)]
        self._next = 0

    async def send(self, request: httpx.Request) -> httpx.Response:
        self._next = (self._next + 1) % len(self._transports)
        response = await self._transports[self._next].handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        for t in self._transports:
            await t.aclose()


class ProviderClient:
    def __init__(self, http: ShardedClient, metrics: Metrics):
        self.pool = http
        self.metrics = metrics

    async def _attempts(self, name: str, p: ProviderSettings, stream: bool,
                        messages: list[dict[str, str]]) -> httpx.Response:
        """Send with retries; returns an open response with 2xx status (caller reads it)."""
        last: ApiError = UpstreamError(f"provider '{name}' failed")
        for attempt in range(p.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
            started = time.perf_counter()
            try:
                req = _request(p, messages, stream)
                resp = await self.pool.send(req)
            except httpx.TimeoutException:
                self._observe(name, started, "timeout")
                last = UpstreamTimeout(f"provider '{name}' timed out")
                continue
            except httpx.HTTPError as exc:
                self._observe(name, started, "error")
                last = UpstreamError(f"provider '{name}' unreachable: {type(exc).__name__}")
                continue
            if resp.status_code < 300:
                return resp
            await resp.aclose()
            self._observe(name, started, "error")
            last = UpstreamError(f"provider '{name}' answered HTTP {resp.status_code}")
            if resp.status_code not in _RETRYABLE_STATUS:
                break
        raise last

    def _observe(self, name: str, started: float, outcome: str) -> None:
        self.metrics.model_latency.labels(provider=name).observe(time.perf_counter() - started)
        self.metrics.model_calls.labels(provider=name, outcome=outcome).inc()

    async def complete(self, name: str, p: ProviderSettings,
                       messages: list[dict[str, str]]) -> Completion:
        started = time.perf_counter()
        resp = await self._attempts(name, p, False, messages)
        try:
            await asyncio.wait_for(resp.aread(), p.timeout_seconds)
            body = resp.json()
            text = body["choices"][0]["message"]["content"] or ""
            model = str(body.get("model") or p.model)
        except TimeoutError:
            self._observe(name, started, "timeout")
            raise UpstreamTimeout(f"provider '{name}' timed out") from None
        except (ValueError, KeyError, IndexError, TypeError, httpx.HTTPError):
            self._observe(name, started, "error")
            raise UpstreamError(f"provider '{name}' sent an invalid response") from None
        finally:
            await resp.aclose()
        self._observe(name, started, "success")
        return Completion(text=text, model=model, provider=name)

    async def open_stream(self, name: str, p: ProviderSettings,
                          messages: list[dict[str, str]]) -> OpenStream:
        started = time.perf_counter()
        resp = await self._attempts(name, p, True, messages)
        self._observe(name, started, "success")
        return OpenStream(provider=name, model=p.model, response=resp)
