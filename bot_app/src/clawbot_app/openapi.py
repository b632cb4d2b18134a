"""``GET /openapi.json``: the HTTP API as an OpenAPI 3.1 document.

Every body schema is generated from the pydantic models in :mod:`clawbot_app.schemas` (the same
``ChatRequest`` the chat handler validates with); this module only lays out paths, statuses and
headers. The one value taken from the running configuration is ``message.maxLength``
(``limits.max_message_chars``), so the document describes this server as it runs.
The DingTalk/Feishu callbacks are not listed: their bodies and signatures are the platforms'
protocols, not this API's.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from clawbot_app import __version__
from clawbot_app.schemas import (
    ChatRequest,
    ChatResponse,
    ErrorResponse,
    HealthResponse,
    ReadyResponse,
    StreamEvent,
)

_REF = "#/components/schemas/{model}"
_MODELS = [(ChatRequest, "validation"), (ChatResponse, "serialization"),
           (ErrorResponse, "serialization"), (HealthResponse, "serialization"),
           (ReadyResponse, "serialization"),
           (StreamEvent, "serialization")]

_TRACE = {"$ref": "#/components/headers/X-Trace-Id"}


def _ref(model: type) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _body(description: str, media_type: str, schema: dict[str, Any],
          **headers: Any) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Trace-Id": _TRACE, **headers},
            "content": {media_type: {"schema": schema}}}


def _json(model: type, description: str, **extra: Any) -> dict[str, Any]:
    return _body(description, "application/json", _ref(model), **extra)


def _error(description: str, **headers: Any) -> dict[str, Any]:
    return _json(ErrorResponse, description, **headers)


def _no_body(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Trace-Id": _TRACE}}


def build_document(max_message_chars: int) -> dict[str, Any]:
    _, defs = models_json_schema(_MODELS, ref_template=_REF)
    schemas: dict[str, Any] = defs["$defs"]
    schemas["ChatRequest"]["properties"]["message"]["maxLength"] = max_message_chars

    chat_responses = {
        "200": {
            "description": "The model's answer. With `\"stream\": true`, an event stream "
                           "(the schema describes one event, as OpenAPI 3.1 tools read it): "
                           "the provider's chunks, then `data: [DONE]`.",
            "headers": {
                "X-Trace-Id": _TRACE,
                "X-Session-Id": {"description": "Session id (streamed answers only).",
                                 "schema": {"type": "string"}},
                "X-Model": {"description": "Model that answers (streamed answers only).",
                            "schema": {"type": "string"}},
            },
            "content": {"application/json": {"schema": _ref(ChatResponse)},
                        "text/event-stream": {"schema": _ref(StreamEvent)}},
        },
        "400": _error("`malformed_json`: not a JSON object, not UTF-8, a lone surrogate, or "
                      "nested deeper than 32 levels."),
        "401": _error("`unauthorized`: token missing, unknown, expired or revoked. Checked "
                      "before any field: without a valid token no other 4xx is answered."),
        "413": _error("`body_too_large`: the body exceeds `limits.max_body_bytes`."),
        "422": _error("`validation_error`: a field has the wrong type or form, or the message "
                      "is blank or longer than `limits.max_message_chars`; the message names "
                      "the field."),
        "429": _error("`rate_limited`: the tenant's per-minute limit is used up.",
                      **{"Retry-After": {"description": "Seconds until a retry can pass.",
                                         "required": True,
                                         "schema": {"type": "integer", "minimum": 0}}}),
        "502": _error("`upstream_error`: every model provider failed (after retries and "
                      "fallback)."),
        "503": _error("`no_provider`: no model provider is configured; `unavailable`: the "
                      "token store cannot be reached."),
        "504": _error("`upstream_timeout`: the model provider did not answer in time (after "
                      "retries and fallback)."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clawbot-app",
            "version": __version__,
            "description": "Chat-bot gateway. Errors are `{\"error\": {\"code\", "
                           "\"message\"}}`. Every response carries `X-Trace-Id`.",
        },
        "paths": {
            "/health": {
                "get": {"operationId": "health", "summary": "Liveness",
                        "description": "Also `HEAD`, `POST`, and the alias `/api/health`.",
                        "responses": {"200": _json(HealthResponse, "The process is up.")}},
                "head": {"operationId": "healthHead", "summary": "Liveness, no body",
                         "responses": {"200": _no_body("The process is up.")}},
            },
            "/ready": {
                "get": {"operationId": "ready", "summary": "Readiness",
                        "responses": {
                            "200": _json(ReadyResponse, "The database (and Redis, if "
                                                        "configured) answer."),
                            "503": _json(ReadyResponse, "A backing store does not answer."),
                        }},
                "head": {"operationId": "readyHead", "summary": "Readiness, no body",
                         "responses": {"200": _no_body("Ready."),
                                       "503": _no_body("Not ready.")}},
            },
            "/metrics": {
                "get": {"operationId": "metrics", "summary": "Prometheus metrics",
                        "responses": {"200": _body("Prometheus text exposition format.",
                                                   "text/plain", {"type": "string"})}},
            },
            "/openapi.json": {
                "get": {"operationId": "openapi", "summary": "This document",
                        "responses": {"200": _body("OpenAPI 3.1 document.",
                                                   "application/json", {"type": "object"})}},
            },
            "/api/v1/chat": {
                "post": {
                    "operationId": "chat",
                    "summary": "Send a message, get the model's answer",
                    "description": "Also served at `/api/chat` and `/<prefix>/api/v1/chat` "
                                   "(e.g. `/zh/api/v1/chat`, used by path routing). The token "
                                   "may be sent as a `token` field in the body instead of the "
                                   "header (older clients).",
                    "security": [{"bearerAuth": []}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref(ChatRequest)}}},
                    "responses": chat_responses,
                },
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "A token from `clawbot-app token create` or the tokens file."}},
            "headers": {"X-Trace-Id": {
                "description": "The trace id of a valid `traceparent`, else a valid "
                               "`X-Request-ID` (1-64 of `A-Z a-z 0-9 . _ -`), else generated.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}},
        },
    }


@lru_cache(maxsize=8)
def _rendered(max_message_chars: int) -> bytes:
    return json.dumps(build_document(max_message_chars), separators=(",", ":")).encode()


async def openapi_json(request: Request) -> Response:
    settings = request.app.state.services.settings
    return Response(_rendered(settings.limits.max_message_chars),
                    media_type="application/json")
