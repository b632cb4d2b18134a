"""HTTP handlers: health, readiness, metrics, chat."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from clawbot_app import __version__
from clawbot_app.errors import MalformedJson, NoProviderError, ValidationFailed
from clawbot_app.jsonbody import JsonBodyError, loads_object
from clawbot_app.schemas import ID_PATTERN as ID_PATTERN  # re-exported, was defined here
from clawbot_app.schemas import ChatRequest, ChatResponse, validation_message
from clawbot_app.services import Services

log = logging.getLogger("clawbot_app.api")


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def health(request: Request) -> Response:
    s = _services(request)
    return JSONResponse({"status": "healthy", "uptime": int(time.time() - s.started_at),
                         "version": __version__})


async def ready(request: Request) -> Response:
    s = _services(request)
    checks: dict[str, dict[str, str]] = {}

    async def run(name: str, coro: Any) -> None:
        try:
            await asyncio.wait_for(coro, 3.0)
            checks[name] = {"status": "ok"}
        except Exception as exc:
            checks[name] = {"status": "error", "error": type(exc).__name__}

    jobs = [run("database", s.db.ping())]
    if s.settings.storage.redis_url:
        jobs.append(run("redis", s.store.ping()))
    await asyncio.gather(*jobs)
    ok = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                        status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    return Response(_services(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _bearer(request: Request, body: dict[str, Any]) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    token = body.get("token")
    return token if isinstance(token, str) and token else None


async def chat(request: Request) -> Response:
    s = _services(request)
    settings = s.settings  # one snapshot per request: a SIGHUP may swap s.settings meanwhile
    raw = await request.body()
    try:
        body = loads_object(raw)
    except JsonBodyError as exc:
        raise MalformedJson(str(exc)) from None
    if not settings.models.providers or not settings.default_provider:
        raise NoProviderError("no model provider is configured")
    # Credentials before fields: an unauthenticated client learns nothing but 401.
    rec = await s.tokens.authenticate(_bearer(request, body))
    await s.rate_limiter.check(rec.tenant_id)
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(validation_message(exc)) from None
    message = req.message  # ChatService checks it is not blank and within max_message_chars
    session_id = req.session_id
    # A session belongs to the token's tenant and user: its context is looked up under them
    # only. `user_id` in the body labels the end user the token acts for in the conversation
    # log; it never selects whose context is used (see bot_app/README.md, "Sessions").
    end_user = req.user_id
    stream = req.stream
    if settings.logging.include_content:
        log.info("chat request", extra={"ecs": {"message.content": message,
                                                "user.id": end_user or rec.user_id}})
    if stream:
        cs = await s.chat.stream(tenant_id=rec.tenant_id, user_id=rec.user_id,
                                 session_id=session_id, message=message, path=request.url.path,
                                 end_user=end_user)
        return StreamingResponse(cs.events, media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
            "X-Session-Id": cs.session_id, "X-Model": cs.model})
    result = await s.chat.reply(tenant_id=rec.tenant_id, user_id=rec.user_id,
                                session_id=session_id, message=message, path=request.url.path,
                                end_user=end_user)
    if settings.logging.include_content:
        log.info("chat reply", extra={"ecs": {"reply.content": result.reply}})
    return JSONResponse(ChatResponse(reply=result.reply, session_id=result.session_id,
                                     model=result.model).model_dump())
