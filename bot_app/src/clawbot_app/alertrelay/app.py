"""The relay's HTTP endpoints (Starlette).

* ``POST /alerts/<receiver>``: Alertmanager's webhook JSON, ``Authorization: Bearer <token>``.
  200 when the robot took the message; 502 when it could not be delivered (Alertmanager retries
  5xx answers later); input errors are 4xx and never 5xx: 401 bad or missing token (checked
  first, in constant time), 404 unknown receiver, 413 body over ``max_body_bytes``, 400 not JSON,
  422 not an Alertmanager notification.
* ``GET /health``: ``{"status": "ok"}``.  ``GET /metrics``: Prometheus text format.

Every answer is JSON (``{"error": {"code", "message"}}`` for errors) and counted in
``clawbot_alert_relay_requests_total{status}``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawbot_app.alertrelay.config import LoadedConfig
from clawbot_app.alertrelay.delivery import Delivery, log_fields
from clawbot_app.alertrelay.metrics import RelayMetrics
from clawbot_app.alertrelay.payload import PayloadError, parse_notification
from clawbot_app.alertrelay.platforms import PLATFORMS
from clawbot_app.alertrelay.render import render
from clawbot_app.httpclient import HttpClient

log = logging.getLogger("clawbot_app.alertrelay")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class RelayState:
    """What the endpoints use. ``loaded`` is replaced as a whole on reload (SIGHUP), so a
    request in flight keeps the configuration it started with."""

    loaded: LoadedConfig
    metrics: RelayMetrics = field(default_factory=RelayMetrics)
    http: HttpClient | None = None
    delivery: Delivery | None = None

    async def start(self) -> None:
        self.metrics.declare(self.loaded.config.receivers)
        if self.http is None:
            self.http = await HttpClient.open(limit=64)
        if self.delivery is None:
            self.delivery = Delivery(self.http, self.metrics)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    def replace(self, loaded: LoadedConfig) -> None:
        self.metrics.declare(loaded.config.receivers)
        self.loaded = loaded


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None
          ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Both sides as bytes: compare_digest refuses non-ASCII str, and the header may be anything.
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8"))


async def post_alerts(request: Request) -> Response:
    state: RelayState = request.app.state.relay
    loaded = state.loaded
    config = loaded.config
    if not _authorized(request, loaded.token):
        return error(401, "unauthorized", "missing or wrong bearer token",
                     {"WWW-Authenticate": "Bearer"})
    receiver = config.receiver(request.path_params["receiver"])
    if receiver is None:
        return error(404, "unknown_receiver", "no receiver of that name is configured")
    try:
        notification = parse_notification(await _read_body(request, config.max_body_bytes))
    except _BodyTooLarge:
        return error(413, "body_too_large", f"body over {config.max_body_bytes} bytes")
    except PayloadError as exc:
        if exc.kind == "json":
            return error(400, "malformed_json", str(exc))
        return error(422, "invalid_notification", str(exc))
    spec = PLATFORMS[receiver.platform]
    message = render(notification, language=receiver.language or config.language,
                     style=spec.style, budget_bytes=spec.budget_bytes,
                     max_alerts=config.max_alerts_per_message, external_url=config.external_url)
    if state.delivery is None:  # start() not run: the lifespan did not start
        return error(503, "not_ready", "the relay is starting")
    started = time.monotonic()
    answer = await state.delivery.deliver(receiver, message, config.retry)
    firing, resolved = notification.counts()
    fields = {**log_fields(receiver, answer),
              "event.outcome": "success" if answer.ok else "failure",
              "event.duration": int((time.monotonic() - started) * 1e9),
              "clawbot.alert_relay.status": notification.status,
              "clawbot.alert_relay.firing": firing, "clawbot.alert_relay.resolved": resolved}
    if answer.ok:
        log.info("notification delivered", extra={"ecs": fields})
        return JSONResponse({"status": "sent", "receiver": receiver.name})
    log.error("notification not delivered", extra={"ecs": fields})
    return error(502, "delivery_failed",
                 f"{receiver.platform} robot: {answer.result}"
                 + (f" (code {answer.code})" if answer.code is not None else ""))


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    state: RelayState = request.app.state.relay
    return Response(state.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return error(status, code, str(getattr(exc, "detail", "")))


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it; counted as nginx would log it


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error(500, "internal_error", "internal error")


class CountRequests:
    """ASGI middleware: ``clawbot_alert_relay_requests_total{status}`` for every answer."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], RelayMetrics]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics().requests.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


Hook = Callable[[RelayState], None]


def create_app(state: RelayState, *, on_start: Hook | None = None,
               on_stop: Hook | None = None) -> Starlette:
    """The relay app; its lifespan opens (and closes) the outbound HTTP client.

    ``on_start``/``on_stop`` run inside the lifespan (the server installs its SIGHUP handler
    there). Tests drive ``state.start()``/``state.stop()`` themselves around an ASGI client.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        if on_start is not None:
            on_start(state)
        log.info("alert relay started", extra={"ecs": {
            "clawbot.alert_relay.receivers": [r.name for r in state.loaded.config.receivers]}})
        try:
            yield
        finally:
            if on_stop is not None:
                on_stop(state)
            await state.stop()
            log.info("alert relay stopped")

    app = Starlette(
        routes=[Route("/alerts/{receiver}", post_alerts, methods=["POST"]),
                Route("/health", health, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"])],
        exception_handlers={HTTPException: _http_error, ClientDisconnect: _client_gone,
                            Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.relay = state
    app.add_middleware(CountRequests, metrics=lambda: state.metrics)
    return app

