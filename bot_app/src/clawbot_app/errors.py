"""Typed API errors rendered as ``{"error": {"code", "message"}}``."""

from __future__ import annotations


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class MalformedJson(ApiError):
    status = 400
    code = "malformed_json"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class BodyTooLarge(ApiError):
    status = 413
    code = "body_too_large"


class ValidationFailed(ApiError):
    status = 422
    code = "validation_error"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class UpstreamError(ApiError):
    status = 502
    code = "upstream_error"


class NoProviderError(ApiError):
    status = 503
    code = "no_provider"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class UpstreamTimeout(ApiError):
    status = 504
    code = "upstream_timeout"
