"""Pure-ASGI middleware: trace id, body size limit, access log (ECS) and HTTP metrics."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawbot_app.errors import BodyTooLarge

_getrandbits = random.getrandbits  # trace ids need uniqueness, not secrecy
_NO_BODY = frozenset(("GET", "HEAD", "OPTIONS"))


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, routes: Callable[[], list[BaseRoute]]):
        self.app = app
        self._routes = routes
        self._children: dict[tuple[Any, str, str, int], tuple[Any, Any]] = {}

        @lru_cache(maxsize=2048)
        def template(method: str, path: str) -> str:
            scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            for route in self._routes():
                match, _ = route.matches(scope)
                if match != Match.NONE:
                    return str(getattr(route, "path", path))
            return "<unmatched>"

        self.template = template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter_ns()
        services = scope["app"].state.services
        clen = traceparent = request_id = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                clen = value
            elif name == b"traceparent":
                traceparent = value
            elif name == b"x-request-id" and request_id is None:
                request_id = value
        trace_id = trace_id_from(traceparent, request_id)
        scope.setdefault("state", {})["trace_id"] = trace_id
        trace_header = (b"x-trace-id", trace_id.encode("latin-1"))
        status = 500
        limit = services.settings.limits.max_body_bytes

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), trace_header]
            await send(message)

        try:
            if clen is not None and clen.isdigit() and int(clen) > limit:
                await _send_json(send_wrapper, BodyTooLarge(
                    f"request body exceeds {limit} bytes"))
                return
            if clen is None and scope["method"] in _NO_BODY:
                await self.app(scope, receive, send_wrapper)
            else:
                await self.app(scope, _limited_receive(receive, limit), send_wrapper)
        finally:
            duration_ns = time.perf_counter_ns() - started
            method = scope["method"]
            route = self.template(method, scope["path"])
            metrics = services.metrics
            key = (metrics, method, route, status)
            children = self._children.get(key)
            if children is None:
                children = (
                    metrics.http_requests.labels(method=method, route=route, status=str(status)),
                    metrics.http_latency.labels(method=method, route=route))
                if len(self._children) > 10_000:
                    self._children.clear()
                self._children[key] = children
            children[0].inc()
            children[1].observe(duration_ns / 1e9)
            client = scope.get("client")  # the forwarded client behind a trusted proxy
            services.access_log.log(method, scope["path"], route, status, duration_ns, trace_id,
                                    client[0] if client else None)


# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; an all-zero trace id is invalid.
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?")
# X-Request-ID comes from the client: it is echoed in a header and logged, so only a short token.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def trace_id_from(traceparent: bytes | None, request_id: bytes | None) -> str:
    """The trace id of a request: a valid ``traceparent``'s trace id, else a valid
    ``X-Request-ID``, else a new random one."""
    if traceparent is not None:
        m = _TRACEPARENT.fullmatch(traceparent)
        if m is not None and m.group(1) != b"0" * 32:
            return m.group(1).decode("ascii")
    if request_id is not None and _REQUEST_ID.fullmatch(request_id):
        return request_id.decode("ascii")
    return f"{_getrandbits(128):032x}"


def _limited_receive(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"request body exceeds {limit} bytes")
        return message

    return wrapped


async def _send_json(send: Send, err: BodyTooLarge) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
