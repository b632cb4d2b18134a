"""Starlette application factory, lifespan and SIGHUP reload."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from clawbot_app import api
from clawbot_app.bootstrap import build_services, close_services
from clawbot_app.config import CONFIG_ENV, ConfigError, Settings, load_settings
from clawbot_app.crypto import KeyringError
from clawbot_app.errors import ApiError
from clawbot_app.logging_setup import setup_logging
from clawbot_app.middleware import ObservabilityMiddleware
from clawbot_app.openapi import openapi_json
from clawbot_app.services import Services
from clawbot_app.tokensfile import TokensFileError

log = logging.getLogger("clawbot_app.app")

CHAT_PATHS = ("/api/v1/chat", "/api/chat", "/{prefix:path}/api/v1/chat")


def _im_routes() -> list[BaseRoute]:
    try:
        from clawbot_app.im.routes import routes as im_routes
    except ImportError:
        log.exception("IM routes unavailable")
        return []
    return list(im_routes)


def build_routes() -> list[BaseRoute]:
    hm = ["GET", "HEAD", "POST"]
    routes: list[BaseRoute] = [
        Route("/health", api.health, methods=hm),
        Route("/api/health", api.health, methods=hm),
        Route("/ready", api.ready, methods=["GET", "HEAD"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    routes += _im_routes()
    routes += [Route(p, api.chat, methods=["POST"]) for p in CHAT_PATHS]
    return routes


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return JSONResponse({"error": {"code": code, "message": str(getattr(exc, "detail", ""))}},
                        status_code=status)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection before its body arrived (or sent a body the HTTP parser
    rejected after the headers): nobody reads an answer. 499 ("client closed request", as nginx
    logs it) goes to the access log and metrics only, instead of a 500 with a stack trace."""
    return Response(status_code=499)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return JSONResponse({"error": {"code": "internal_error", "message": "internal error"}},
                        status_code=500)


def reload_settings(services: Services, config_path: str | None) -> bool:
    try:
        new = load_settings(config_path)
        setup_logging(new.logging)
        services.apply_settings(new)  # raises before any change if a file broke meanwhile
    except (ConfigError, KeyringError, TokensFileError) as exc:
        log.error("config reload rejected, keeping the running configuration",
                  extra={"ecs": {"error.message": str(exc)}})
        return False
    log.info("configuration reloaded")
    return True


def create_app(settings: Settings | None = None, config_path: str | None = None,
               install_sighup: bool = True) -> Starlette:
    """Build the app. ``settings`` default: load from ``config_path`` / ``$CLAWBOT_CONFIG``."""
    path = config_path or os.environ.get(CONFIG_ENV) or None
    initial = settings if settings is not None else load_settings(path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await build_services(initial)
        app.state.services = services
        loop = asyncio.get_running_loop()
        hup = False
        if install_sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, reload_settings, services, path)
                hup = True
        # Everything built so far (settings, services, SQLAlchemy and pydantic internals) lives
        # as long as the process: move it out of the collector's generations, so that the
        # full collections that the request garbage triggers do not walk it again. Measured on
        # the chat benchmark: p99 165-210 ms -> 124-132 ms (bot_app/README.md, "Performance").
        gc.collect()
        gc.freeze()
        log.info("clawbot-app started", extra={"ecs": {"service.version": _version()}})
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await close_services(services, timeout=initial.server.graceful_timeout_seconds)
            log.info("clawbot-app stopped")

    routes = build_routes()
    from starlette.exceptions import HTTPException

    app = Starlette(
        routes=routes,
        middleware=[Middleware(ObservabilityMiddleware, routes=lambda: routes)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                            ClientDisconnect: _client_gone, Exception: _internal_error},
        lifespan=lifespan,
    )
    return app


def _version() -> str:
    from clawbot_app import __version__

    return __version__


def factory() -> Starlette:
    """uvicorn ``--factory`` entry point (reads ``$CLAWBOT_CONFIG``)."""
    settings = load_settings(None)
    setup_logging(settings.logging)
    return create_app(settings)
