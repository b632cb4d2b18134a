"""Chat orchestration: validation, session context, provider routing/fallback, logging."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from clawbot_app.config import Settings
from clawbot_app.crypto import Keyring
from clawbot_app.db.engine import Database, utcnow
from clawbot_app.db.schema import tenant_config
from clawbot_app.errors import ApiError, NoProviderError, UpstreamError, ValidationFailed
from clawbot_app.logwriter import ConversationWriter, Row
from clawbot_app.metrics import Metrics
from clawbot_app.providers import (
    Completion,
    OpenStream,
    ProviderClient,
    forget_cached_headers,
)
from clawbot_app.routing import select_providers
from clawbot_app.store import Store, _TTLDict

log = logging.getLogger("clawbot_app.chat")

_TENANT_CACHE_SECONDS = 30.0
_Answer = TypeVar("_Answer", Completion, OpenStream)


@dataclass(frozen=True)
class ChatResult:
    reply: str
    model: str
    session_id: str
    provider: str = ""


@dataclass
class ChatStream:
    session_id: str
    model: str
    provider: str
    events: AsyncIterator[bytes]


async def _first_answer(candidates: list[str],
                        call: Callable[[str], Awaitable[_Answer]]) -> _Answer:
    """Try the providers in order (routing, then fallback); raise the last error if all fail."""
    last: ApiError | None = None
    for name in candidates:
        try:
            return await call(name)
        except ApiError as exc:
            log.warning("provider %s failed: %s", name, exc.code)
            last = exc
    raise last or UpstreamError("model call failed")


class ChatService:
    def __init__(self, settings: Settings, store: Store, db: Database, keyring: Keyring,
                 writer: ConversationWriter, providers: ProviderClient, metrics: Metrics):
        self.settings = settings
        self.store = store
        self.db = db
        self.keyring = keyring
        self.writer = writer
        self.providers = providers
        self.metrics = metrics
        self._active = _TTLDict()
        self._tenant_cache: dict[str, tuple[float, str | None]] = {}
        metrics.active_sessions.set_function(self._active_count)

    def apply_settings(self, settings: Settings) -> None:
        self.settings = settings
        forget_cached_headers()

    def _active_count(self) -> float:
        self._active.sweep()
        return float(len(self._active))

    # -- helpers -------------------------------------------------------------------------
    def validate(self, message: object, settings: Settings) -> str:
        if not isinstance(message, str):
            raise ValidationFailed("'message' must be a string")
        if not message.strip():
            raise ValidationFailed("'message' must not be empty")
        limit = settings.limits.max_message_chars
        if len(message) > limit:
            raise ValidationFailed(f"'message' is longer than {limit} characters")
        return message

    async def _tenant_provider(self, tenant_id: str) -> str | None:
        now = time.monotonic()
        hit = self._tenant_cache.get(tenant_id)
        if hit is None or hit[0] < now:
            value: str | None = None
            try:
                async with self.db.engine.connect() as conn:
                    value = (await conn.execute(
                        sa.select(tenant_config.c.model_provider)
                        .where(tenant_config.c.tenant_id == tenant_id))).scalar()
            except Exception:
                value = hit[1] if hit else None
            hit = (now + _TENANT_CACHE_SECONDS, value)
            self._tenant_cache[tenant_id] = hit
        return hit[1]

    async def _prepare(self, settings: Settings, tenant_id: str, user_id: str,
                       session_id: str | None, message: str, path: str
                       ) -> tuple[list[str], str, str, list[dict[str, str]], bool]:
        self.validate(message, settings)
        if not settings.models.providers or not settings.default_provider:
            raise NoProviderError("no model provider is configured")
        candidates = select_providers(settings, path, message,
                                      await self._tenant_provider(tenant_id))
        if not candidates:
            raise NoProviderError("no model provider is configured")
        sid = session_id or uuid.uuid4().hex
        key = f"{tenant_id}:{user_id}:{sid}"
        history = await self.store.get_turns(key) if settings.session.max_turns else []
        context = [{"role": t["role"], "content": t["content"]} for t in history]
        context = context[-2 * settings.session.max_turns:] if settings.session.max_turns else []
        messages = context + [{"role": "user", "content": message}]
        return candidates, sid, key, messages, not history

    async def _finish(self, settings: Settings, tenant_id: str, user_id: str, sid: str,
                      key: str, is_new: bool, message: str, reply: str, model: str,
                      latency_ms: int) -> None:
        """Store the turns under the owner's key; ``user_id`` is who the log rows name."""
        ttl = settings.session.ttl_seconds
        turns = [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
        max_items = 2 * settings.session.max_turns
        if max_items:
            await self.store.append_turns(key, turns, max_items, ttl)
        self._active.set(key, True, ttl)
        now = utcnow()
        # One journal write per request: once submit_many returns, the rows survive a crash.
        rows: list[Row] = []
        if is_new:
            rows.append(("dialog_sessions", {
                "id": str(uuid.uuid4()), "tenant_id": tenant_id, "user_id": user_id,
                "session_id": sid, "created_at": now}))
        for role, content, lat in (("user", message, None), ("assistant", reply, latency_ms)):
            row_id = str(uuid.uuid4())
            kid, blob = self.keyring.encrypt(content, row_id)
            rows.append(("conversation_log", {
                "id": row_id, "tenant_id": tenant_id, "user_id": user_id, "session_id": sid,
                "role": role, "content": blob, "key_id": kid, "model": model,
                "latency_ms": lat, "created_at": now}))
        self.writer.submit_many(rows)

    # -- public API ----------------------------------------------------------------------
    async def reply(self, *, tenant_id: str, user_id: str, session_id: str | None,
                    message: str, path: str = "", end_user: str | None = None) -> ChatResult:
        """``user_id`` owns the session (its context is looked up under tenant and user only);
        ``end_user`` labels the log rows when the caller acts for someone else."""
        settings = self.settings  # snapshot: a SIGHUP reload never changes a running request
        candidates, sid, key, messages, is_new = await self._prepare(
            settings, tenant_id, user_id, session_id, message, path)
        started = time.perf_counter()
        result = await _first_answer(candidates, lambda name: self.providers.complete(
            name, settings.models.providers[name], messages))
        latency_ms = int((time.perf_counter() - started) * 1000)
        await self._finish(settings, tenant_id, end_user or user_id, sid, key, is_new, message,
                           result.text, result.model, latency_ms)
        return ChatResult(reply=result.text, model=result.model, session_id=sid,
                          provider=result.provider)

    async def stream(self, *, tenant_id: str, user_id: str, session_id: str | None,
                     message: str, path: str = "", end_user: str | None = None) -> ChatStream:
        """Open the upstream stream (fallback applies until the first byte)."""
        settings = self.settings
        candidates, sid, key, messages, is_new = await self._prepare(
            settings, tenant_id, user_id, session_id, message, path)
        started = time.perf_counter()
        upstream = await _first_answer(candidates, lambda name: self.providers.open_stream(
            name, settings.models.providers[name], messages))

        async def events() -> AsyncIterator[bytes]:
            parts: list[str] = []
            ok = False
            try:
                async for data, delta in upstream.chunks():
                    parts.append(delta)
                    if data == "[DONE]":
                        ok = True
                    yield f"data: {data}\n\n".encode()
                ok = True
            except Exception as exc:
                log.warning("upstream stream broke: %s", type(exc).__name__)
                err = UpstreamError("upstream stream interrupted").body()
                yield f"event: error\ndata: {json.dumps(err)}\n\n".encode()
            if ok:
                latency_ms = int((time.perf_counter() - started) * 1000)
                await self._finish(settings, tenant_id, end_user or user_id, sid, key, is_new,
                                   message, "".join(parts), upstream.model, latency_ms)

        return ChatStream(session_id=sid, model=upstream.model, provider=upstream.provider,
                          events=events())
