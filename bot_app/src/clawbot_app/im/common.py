"""Helpers shared by the DingTalk and Feishu callback handlers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse

from clawbot_app.config import Settings
from clawbot_app.errors import ApiError
from clawbot_app.httpclient import HttpClient
from clawbot_app.jsonbody import JsonBodyError, loads_object
from clawbot_app.logthrottle import LogThrottle
from clawbot_app.metrics import Metrics

log = logging.getLogger("clawbot_app.im")
_rejections = LogThrottle(log)

DEFAULT_MAX_BODY_BYTES = 65536
DEDUPE_TTL_SECONDS = 12 * 60 * 60
"""Feishu retries for up to ~7 h (15 s, 5 min, 1 h, 6 h); keep event ids longer than that."""


class CallbackError(ApiError):
    """An :class:`~clawbot_app.errors.ApiError` whose status and code are chosen per instance.

    ``verification`` marks failures of authentication (counted in
    ``callback_verification_failures_total``); ``reason`` is what the log says, which may be more
    than ``message``, what the client sees.
    """

    def __init__(self, status: int, code: str, message: str, *, verification: bool = False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.verification = verification
        self.reason = message


def not_configured(platform: str) -> CallbackError:
    return CallbackError(503, "not_configured", f"{platform}: platform not configured")


def auth_failure(status: int, code: str, message: str) -> CallbackError:
    return CallbackError(status, code, message, verification=True)


def rejected_after_auth(reason: str) -> CallbackError:
    """The one answer for every failure after a request's signature was verified.

    Whatever went wrong past that point (decryption, padding, framing, JSON, token, app id,
    owner key, a replayed signature), the client sees the same status, code and message, so no
    answer tells an attacker anything about the plaintext. ``reason`` goes to the log only.
    """
    exc = CallbackError(400, "invalid_event", "event rejected", verification=True)
    exc.reason = reason
    return exc


def secret_value(value: Any) -> str:
    """Plain string of a ``SecretStr``/``str``/``None`` setting (``""`` when unset)."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


class ChatReply(Protocol):
    @property
    def reply(self) -> str: ...


class Chat(Protocol):
    async def reply(self, *, tenant_id: str, user_id: str, session_id: str | None,
                    message: str, path: str = "") -> ChatReply: ...


class SeenKeys(Protocol):
    async def mark_seen(self, key: str, ttl_seconds: int) -> bool: ...


class CallbackServices(Protocol):
    """What the callbacks use of :class:`clawbot_app.services.Services` (tests pass a smaller
    container with the same attributes)."""

    settings: Settings
    http: HttpClient
    chat: Chat
    dedupe: SeenKeys
    metrics: Metrics

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


def get_services(request: Request) -> CallbackServices:
    return request.app.state.services


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object under ``clawbot_app.jsonbody``'s rules (depth, valid Unicode), else 400."""
    try:
        return loads_object(raw)
    except JsonBodyError as exc:
        raise CallbackError(400, "malformed_json", str(exc)) from None


def body_digest(raw: bytes) -> str:
    """Dedupe key for a message without a platform id: SHA-256 of the exact body bytes."""
    return hashlib.sha256(raw).hexdigest()


def count_verification_failure(services: CallbackServices, platform: str) -> None:
    try:
        services.metrics.callback_verification_failures.labels(platform=platform).inc()
    except Exception:  # noqa: BLE001 - metrics must never break a callback
        log.debug("could not count verification failure", exc_info=True)


def handle_error(
    services: CallbackServices, platform: str, request: Request, exc: CallbackError
) -> JSONResponse:
    """Log (no secrets, no content), count verification failures, build the JSON error.

    The counter is exact; the log line is throttled per platform, status and reason
    (``LogThrottle``), so a flood of forged requests writes one line per kind every 10 s.
    """
    client = request.client.host if request.client else "-"
    if exc.verification:
        count_verification_failure(services, platform)
        _rejections.log(
            logging.WARNING,
            f"{platform}:{exc.status}:{exc.reason}",
            "%s callback rejected: status=%s code=%s reason=%s client=%s path=%s",
            platform,
            exc.status,
            exc.code,
            exc.reason,
            client,
            request.url.path,
        )
    else:
        _rejections.log(
            logging.INFO,
            f"{platform}:{exc.status}:{exc.code}",
            "%s callback refused: status=%s code=%s client=%s path=%s",
            platform,
            exc.status,
            exc.code,
            client,
            request.url.path,
        )
    return JSONResponse(exc.body(), status_code=exc.status)


async def mark_seen(
    services: CallbackServices, key: str, ttl_seconds: int = DEDUPE_TTL_SECONDS, *,
    fail_open: bool = True
) -> bool:
    """True the first time ``key`` is seen within ``ttl_seconds``.

    When the store fails: ``fail_open`` (messages) processes the event anyway rather than drop
    it; ``fail_open=False`` (single-use signatures) refuses it rather than accept a replay.

    ``services.dedupe`` keeps the keys where they survive a restart: Redis when configured,
    the database otherwise (the embedded default).
    """
    try:
        result = await services.dedupe.mark_seen(key, ttl_seconds)
    except Exception:  # noqa: BLE001 - decided by fail_open, logged
        log.warning("dedupe store failed; %s", "processing event anyway" if fail_open
                    else "refusing the request", exc_info=True)
        return fail_open
    return bool(result)


def spawn(services: CallbackServices, coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` after the response; the services track it and drain it on shutdown."""
    services.spawn(coro)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
