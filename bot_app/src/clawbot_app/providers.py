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

from clawbot_app import httpclient, jsonbody
from clawbot_app.config import ProviderSettings
from clawbot_app.errors import ApiError, UpstreamError, UpstreamTimeout
from clawbot_app.httpclient import HttpClient
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
                        obj: Any = jsonbody.loads(data)
                        delta = obj["choices"][0].get("delta", {}).get("content") or ""
                        if not isinstance(delta, str):
                            delta = ""
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
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return headers


def forget_cached_headers() -> None:
    """Drop the cached headers, so that retired API keys do not linger after a reload."""
    _headers.cache_clear()


def _payload(p: ProviderSettings, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    return {"model": p.model, "messages": messages, "max_tokens": p.max_tokens,
            "temperature": p.temperature, "stream": stream}


class ProviderClient:
    def __init__(self, http: HttpClient, metrics: Metrics):
        self.pool = http
        self.metrics = metrics

    async def _attempts(self, name: str, p: ProviderSettings, stream: bool,
                        messages: list[dict[str, str]]) -> aiohttp.ClientResponse:
        """Send with retries; returns an open response with 2xx status (caller reads it)."""
        last: ApiError | None = None
        url = completions_url(p)
        headers = _headers(p.secret() or None)
        body = json.dumps(_payload(p, messages, stream)).encode()
        timeout = httpclient.timeout(p.timeout_seconds)
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
            raw = await asyncio.wait_for(httpclient.read_limited(resp), p.timeout_seconds)
            body: Any = jsonbody.loads(raw)
            text = body["choices"][0]["message"]["content"] or ""
            model = str(body.get("model") or p.model)
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except TimeoutError:
            self._observe(name, started, "timeout")
            raise UpstreamTimeout(f"provider '{name}' timed out") from None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, aiohttp.ClientError):
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
