"""Typed API errors rendered as ``{"error": {"code", "message"}}``.

A subclass states its HTTP status and error code in the class line:
``class NotFound(ApiError, status=404, code="not_found")``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class MalformedJson(ApiError, status=400, code="malformed_json"):
    """The request body is not a JSON object."""


class Unauthorized(ApiError, status=401, code="unauthorized"):
    """Bearer token missing, unknown, expired or revoked."""


class NotFound(ApiError, status=404, code="not_found"):
    """No such resource."""


class BodyTooLarge(ApiError, status=413, code="body_too_large"):
    """The request body exceeds ``limits.max_body_bytes``."""


class ValidationFailed(ApiError, status=422, code="validation_error"):
    """A field has the wrong type, or the message is empty or too long."""


class RateLimited(ApiError, status=429, code="rate_limited"):
    """The tenant's per-minute limit is used up; carries ``Retry-After``."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class UpstreamError(ApiError, status=502, code="upstream_error"):
    """Every model provider failed (after retries and fallback)."""


class NoProviderError(ApiError, status=503, code="no_provider"):
    """No model provider is configured."""


class Unavailable(ApiError, status=503, code="unavailable"):
    """A backing store (token DB) cannot be reached."""


class UpstreamTimeout(ApiError, status=504, code="upstream_timeout"):
    """The model provider did not answer in time (after retries and fallback)."""
