"""The service's one outbound HTTP client: model calls and the IM platforms' APIs.

One aiohttp session (keep-alive pool, system CA store, no proxy from the environment) serves
every outbound call. Profiling the chat benchmark (50 concurrent calls to a 100 ms model on
2 cores) put httpx/httpcore/anyio at 0.78 ms of CPU per call against 0.27 ms for aiohttp's
client (C parser, no anyio layer), about a quarter of a whole chat request's CPU; see
bot_app/README.md, "Performance".

Redirects are never followed: an API key or an access token is only ever sent to the URL it
was configured for. Bodies are read with a size limit, so a broken or hostile upstream cannot
make the service buffer without bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

from clawbot_app import __version__
from clawbot_app.jsonbody import JsonBodyError, loads

USER_AGENT = f"clawbot-app/{__version__}"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # far above any completion or platform API answer
DEFAULT_TIMEOUT_SECONDS = 30.0


class ResponseTooLarge(ValueError):
    """The upstream answered more than ``MAX_RESPONSE_BYTES``."""


@dataclass(frozen=True)
class JsonReply:
    status: int
    data: object  # the parsed JSON body; None when it is not JSON (or not valid Unicode)


def timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Connect within min(5 s, ``seconds``); each read within ``seconds``."""
    return aiohttp.ClientTimeout(total=None, connect=min(5.0, seconds), sock_read=seconds)


async def read_limited(resp: aiohttp.ClientResponse, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The whole body, refusing one larger than ``limit`` bytes.

    Counted as it is read, after decompression: a declared ``Content-Length`` is only the
    compressed size, so a small gzip body could otherwise inflate without bound.
    """
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise ResponseTooLarge(f"response of {declared} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"response over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _json_reply(resp: aiohttp.ClientResponse) -> JsonReply:
    """The status and the parsed body (None when it is not JSON), read within the size limit."""
    raw = await read_limited(resp)
    try:
        data = loads(raw)
    except JsonBodyError:
        data = None
    return JsonReply(resp.status, data)


class HttpClient:
    """Created inside the running loop (``await HttpClient.open()``), closed at shutdown."""

    def __init__(self, session: aiohttp.ClientSession):
        self.session = session

    @classmethod
    async def open(cls, *, limit: int = 512, keepalive_seconds: float = 30.0) -> HttpClient:
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=keepalive_seconds,
                                         ttl_dns_cache=300)
        return cls(aiohttp.ClientSession(connector=connector, trust_env=False,
                                         headers={"User-Agent": USER_AGENT}))

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """Send and return the open response (the caller reads and releases it)."""
        return await self.session.post(url, data=body, headers=headers, timeout=timeout,
                                       allow_redirects=False)

    async def post_json(self, url: str, payload: object, *,
                        headers: dict[str, str] | None = None,
                        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> JsonReply:
        """POST ``payload`` as JSON; the status and the parsed answer (None if not JSON).

        Raises ``aiohttp.ClientError``, ``TimeoutError`` or :class:`ResponseTooLarge`.
        """
        body = json.dumps(payload, ensure_ascii=False).encode()
        all_headers = {"Content-Type": "application/json; charset=utf-8",
                       "Accept": "application/json", **(headers or {})}
        async with await self.post(url, body, all_headers, timeout(timeout_seconds)) as resp:
            return await _json_reply(resp)

    async def get_json(self, url: str, *, headers: dict[str, str] | None = None,
                       timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> JsonReply:
        """GET ``url``; the status and the parsed answer (None if not JSON). Raises like
        :meth:`post_json`."""
        all_headers = {"Accept": "application/json", **(headers or {})}
        async with self.session.get(url, headers=all_headers, timeout=timeout(timeout_seconds),
                                    allow_redirects=False) as resp:
            return await _json_reply(resp)

    async def aclose(self) -> None:
        await self.session.close()
