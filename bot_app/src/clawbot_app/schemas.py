"""Request and response models of the HTTP API: the chat handler validates with them and
``GET /openapi.json`` (:mod:`clawbot_app.openapi`) is generated from them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

ID_REGEX = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
ID_PATTERN = re.compile(ID_REGEX)
"""``session_id`` and ``user_id``: printable ASCII that is safe in a header, a key and a log."""

ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ - (starting with a letter or digit)"

# Anchored for JSON Schema (``pattern`` is a search there). Pydantic checks it with Rust's regex
# crate, where ``$`` is the end of the text only, so "abc\n" does not pass.
Id = Annotated[str, StringConstraints(pattern=f"^{ID_REGEX}$")]


class ChatRequest(BaseModel):
    """Body of ``POST /api/v1/chat``. Unknown fields are ignored."""

    # strict: no coercion, "true" is not a boolean and 1 is not a string, as before the model.
    model_config = ConfigDict(extra="ignore", strict=True)

    message: str = Field(
        min_length=1,
        description="The user's message: at least one non-whitespace character and at most "
                    "`limits.max_message_chars` characters (never cut; longer is 422).")
    session_id: Id | None = Field(
        default=None,
        description=f"Continue this session of the token's user ({ID_RULE}). Omitted: a new "
                    "session; its id is in the answer.")
    user_id: Id | None = Field(
        default=None,
        description=f"End user the token acts for ({ID_RULE}); labels the conversation log "
                    "rows, never selects whose session is used.")
    stream: bool = Field(
        default=False,
        description="Answer as `text/event-stream` (the provider's SSE chunks).")
    token: str | None = Field(
        default=None,
        description="Bearer token in the body, for older clients; the `Authorization` header "
                    "is preferred and wins when both are sent.")


class ChatResponse(BaseModel):
    reply: str
    session_id: str = Field(description="Send it back to continue the session.")
    model: str = Field(description="Model that answered (the provider's model name).")


class StreamEvent(BaseModel):
    """One server-sent event of a streamed answer (``stream: true``)."""

    event: Literal["message", "error"] = Field(
        default="message",
        description="`error` once, last, when the upstream stream breaks after the start.")
    data: str = Field(
        description="`message`: one provider chunk as sent (OpenAI `chat.completion.chunk` "
                    "JSON), or `[DONE]` at the end. `error`: an ErrorResponse as JSON.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `validation_error`.",
                      examples=["validation_error"])
    message: str = Field(description="Human-readable reason; names the field on a 422.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["healthy"]
    uptime: int = Field(description="Seconds since the process started.")
    version: str


class CheckResult(BaseModel):
    status: Literal["ok", "error"]
    error: str | None = Field(default=None, description="Exception type when `error`.")


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckResult] = Field(
        description="`database`, and `redis` when Redis is configured.")


_MUST_BE = {"message": "a string", "session_id": ID_RULE, "user_id": ID_RULE,
            "stream": "a boolean", "token": "a string"}


def validation_message(exc: ValidationError) -> str:
    """One message for the first failing field, naming it (fields are checked in the order
    of the model, so ``message`` comes first as it always did)."""
    err = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    if field == "message" and err["type"] == "string_too_short":
        return "'message' must not be empty"
    rule = _MUST_BE.get(field)
    if rule is None:
        return f"'{field}': {err['msg']}"
    return f"'{field}' must be {rule}"
