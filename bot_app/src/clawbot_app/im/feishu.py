"""Feishu (Lark) event callback endpoint.

Order of checks for every request:

1. body size limit (413);
2. with an Encrypt Key configured: ``X-Lark-Signature`` over the raw body bytes is required and
   checked before anything is parsed or decrypted (401). Every failure after that point
   (decryption, padding, JSON, token, app id) gets one answer, ``400 invalid_event`` (see
   ``rejected_after_auth``): no padding or parsing oracle. Without an Encrypt Key, encrypted
   bodies are refused (503) and the verification token authenticates plain bodies;
3. ``url_verification`` → ``{"challenge": ...}`` once the verification token matches (or, with
   no token configured, once the signature did);
4. events: with a verification token the token (``header.token`` for schema 2.0, ``token`` for
   1.0) must match; ``header.app_id`` must be ours when both are known;
5. dedupe on ``header.event_id``/``uuid`` (duplicates answered 200 without processing), kept in
   Redis or the database so it survives a restart;
6. ``im.message.receive_v1`` (and schema 1.0 ``message``) acknowledged at once; the chat call and
   the reply run in the background.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clawbot_app.config import FeishuSettings
from clawbot_app.im import feishu_api, feishu_crypto
from clawbot_app.im.common import (
    DEDUPE_TTL_SECONDS,
    CallbackError,
    CallbackServices,
    auth_failure,
    get_services,
    handle_error,
    mark_seen,
    not_configured,
    parse_json_object,
    rejected_after_auth,
    secret_value,
    spawn,
)
from clawbot_app.im.replies import answer_plan, send_in_order
from clawbot_app.im.state import get_state
from clawbot_app.jsonbody import loads_object

PLATFORM = "feishu"
log = logging.getLogger("clawbot_app.im.feishu")

MESSAGE_EVENT_V2 = "im.message.receive_v1"
MESSAGE_EVENT_V1 = "message"
_MENTION_KEY = re.compile(r"@_user_\d+")


@dataclass(frozen=True)
class FeishuMessage:
    event_id: str
    message_id: str
    text: str
    tenant_id: str
    user_id: str
    session_id: str
    path: str = ""


def _tokens_equal(given: Any, expected: str) -> bool:
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _text_from_content(content: Any, mentions: Any) -> str:
    try:
        data = json.loads(content) if isinstance(content, str) else None
    except ValueError:
        return ""
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        return ""
    keys = {m.get("key") for m in mentions or [] if isinstance(m, dict) and m.get("key")}
    for key in keys:
        text = text.replace(str(key), " ")
    return _tidy(_MENTION_KEY.sub(" ", text))


def _tidy(text: str) -> str:
    """Runs of spaces as one (mentions leave gaps), line breaks kept (a pasted snippet, a
    table), no blank lines at either end."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


def parse_message_v2(
    event_id: str, header: dict[str, Any], event: dict[str, Any]
) -> FeishuMessage | None:
    message = event.get("message")
    sender = event.get("sender")
    if not isinstance(message, dict) or not isinstance(sender, dict):
        return None
    if sender.get("sender_type") not in (None, "user"):
        return None  # ignore messages sent by apps/bots
    if message.get("message_type") != "text":
        return None
    if message.get("chat_type") == "group" and not message.get("mentions"):
        return None  # with "read all group messages" permission: answer only when @-mentioned
    ids = sender.get("sender_id") if isinstance(sender.get("sender_id"), dict) else {}
    user = ids.get("open_id") or ids.get("user_id") or ids.get("union_id")
    message_id = message.get("message_id")
    text = _text_from_content(message.get("content"), message.get("mentions"))
    if not (user and message_id and text):
        return None
    tenant = header.get("tenant_key") or sender.get("tenant_key") or header.get("app_id")
    return _feishu_message(event_id, message_id, text, tenant, user, message.get("chat_id"))


def parse_message_v1(event_id: str, event: dict[str, Any]) -> FeishuMessage | None:
    if event.get("msg_type") not in (None, "text"):
        return None
    text = event.get("text_without_at_bot") or event.get("text") or ""
    text = _tidy(_MENTION_KEY.sub(" ", str(text)))
    user = event.get("open_id") or event.get("user_open_id") or event.get("employee_id")
    message_id = event.get("open_message_id") or event.get("message_id")
    if not (text and user and message_id):
        return None
    tenant = event.get("tenant_key") or event.get("app_id")
    return _feishu_message(event_id, message_id, text, tenant, user, event.get("open_chat_id"))


def _feishu_message(
    event_id: str, message_id: Any, text: str, tenant: Any, user: Any, chat_id: Any
) -> FeishuMessage:
    """One place for how Feishu ids become the gateway's tenant, user and session ids."""
    return FeishuMessage(
        event_id=event_id,
        message_id=str(message_id),
        text=text,
        tenant_id=f"feishu:{tenant or 'default'}",
        user_id=str(user),
        session_id=f"feishu:{chat_id or ''}:{user}",
    )


async def answer_message(services: CallbackServices, app: Starlette, msg: FeishuMessage) -> None:
    """Background part: chat call, then reply to the message through the Open API, one reply
    per part of a long answer, in order."""
    plan = await answer_plan(services, PLATFORM, tenant_id=msg.tenant_id, user_id=msg.user_id,
                             session_id=msg.session_id, text=msg.text, path=msg.path,
                             ref=f"event_id={msg.event_id}")
    cfg = services.settings.feishu
    app_id = cfg.app_id or ""
    app_secret = secret_value(cfg.app_secret)
    if not (app_id and app_secret):
        log.error(
            "feishu app_id/app_secret not configured; cannot reply (event_id=%s)", msg.event_id
        )
        return
    tokens = get_state(app).feishu_tokens

    async def send(text: str) -> object:
        return await feishu_api.reply_text(
            services.http, tokens, api_base=cfg.api_base, app_id=app_id, app_secret=app_secret,
            message_id=msg.message_id, text=text, card=plan.markdown,
        )

    await send_in_order(PLATFORM, f"event_id={msg.event_id}", plan.texts, send)


def event_age_seconds(payload: dict[str, Any], is_v2: bool, now: float | None = None) -> float:
    """Age of the event from ``header.create_time`` (ms, v2) or ``ts`` (s, v1); 0 if unknown."""
    current = time.time() if now is None else now
    try:
        if is_v2:
            created = float(payload["header"]["create_time"]) / 1000.0
        else:
            created = float(payload["ts"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return current - created


def _authenticate(request: Request, cfg: FeishuSettings, raw: bytes) -> tuple[dict[str, Any], bool]:
    """Verify, then parse and decrypt; returns ``(payload, signed)``.

    With an Encrypt Key nothing of the body is parsed or decrypted before its signature
    matched, and every failure after that is the same ``rejected_after_auth`` answer.
    """
    encrypt_key = secret_value(cfg.encrypt_key)
    if not encrypt_key:
        body = parse_json_object(raw)
        if "encrypt" in body:
            raise CallbackError(503, "not_configured", "feishu: encrypt key not configured")
        return body, False
    provided = request.headers.get(feishu_crypto.HEADER_SIGNATURE)
    if provided is None:
        return _unsigned_url_verification(cfg, encrypt_key, raw), False
    if not feishu_crypto.verify_signature(
        request.headers.get(feishu_crypto.HEADER_TIMESTAMP),
        request.headers.get(feishu_crypto.HEADER_NONCE),
        encrypt_key,
        raw,
        provided,
    ):
        raise auth_failure(401, "invalid_signature", "X-Lark-Signature mismatch")
    try:
        body = parse_json_object(raw)
        encrypted = body.get("encrypt")
        if encrypted is None:
            return body, True
        if not isinstance(encrypted, str):
            raise rejected_after_auth("encrypt is not a string")
        plaintext = feishu_crypto.decrypt(encrypt_key, encrypted)
        return parse_json_object(plaintext), True
    except feishu_crypto.FeishuCryptoError:
        raise rejected_after_auth("cannot decrypt event") from None
    except CallbackError as exc:
        raise rejected_after_auth(exc.reason) from None


def _unsigned_url_verification(cfg: FeishuSettings, encrypt_key: str, raw: bytes) -> dict[str, Any]:
    """The one unsigned request accepted while an Encrypt Key is set: Feishu's URL check.

    Feishu sends the URL verification without ``X-Lark-Signature`` (the official lark-oapi
    SDK checks only its token), so it is decrypted without a signature. To leave no padding or
    parsing oracle, anything but an encrypted ``url_verification`` carrying the right
    verification token (a configured one is required) fails with exactly the answer of an
    unsigned request: ``401 invalid_signature``, "missing X-Lark-Signature".
    """
    token = secret_value(cfg.verification_token)
    try:
        if not token:
            raise ValueError("no verification token to check an unsigned URL verification")
        body = loads_object(raw)
        encrypted = body.get("encrypt")
        if not isinstance(encrypted, str):
            raise ValueError("unsigned and not encrypted")
        payload = loads_object(feishu_crypto.decrypt(encrypt_key, encrypted))
        if not (payload.get("type") == "url_verification"
                and _tokens_equal(payload.get("token"), token)
                and isinstance(payload.get("challenge"), str)):
            raise ValueError("unsigned and not a valid url_verification")
    except (ValueError, feishu_crypto.FeishuCryptoError) as exc:
        failure = auth_failure(401, "invalid_signature", "missing X-Lark-Signature")
        failure.reason = f"missing X-Lark-Signature ({exc})"
        raise failure from None
    return payload


def _reject(signed: bool, reason: str, status: int, code: str) -> CallbackError:
    """A signed request gets the one post-verification answer whatever ``reason`` is; an
    unsigned one (verification token only, nothing decrypted) may say what failed."""
    if signed:
        return rejected_after_auth(reason)
    if status in (401, 403):
        return auth_failure(status, code, reason)
    return CallbackError(status, code, reason)


def _url_verification(cfg: FeishuSettings, payload: dict[str, Any], signed: bool) -> Response:
    token = secret_value(cfg.verification_token)
    if token:
        if not _tokens_equal(payload.get("token"), token):
            raise _reject(signed, "verification token mismatch", 401, "invalid_token")
    elif not signed:
        raise auth_failure(401, "invalid_signature", "unauthenticated url_verification")
    challenge = payload.get("challenge")
    if not isinstance(challenge, str):
        raise _reject(signed, "missing challenge", 400, "bad_request")
    return JSONResponse({"challenge": challenge})


async def feishu_callback(request: Request) -> Response:
    services = get_services(request)
    settings = services.settings
    cfg = settings.feishu
    try:
        verification_token = secret_value(cfg.verification_token)
        encrypt_key = secret_value(cfg.encrypt_key)
        if not (verification_token or encrypt_key):
            raise not_configured(PLATFORM)
        raw = await request.body()  # the middleware refuses more than max_body_bytes (413)
        payload, signed = _authenticate(request, cfg, raw)
        # Past this point a signed request is answered 200 or `rejected_after_auth`.
        if payload.get("type") == "url_verification":
            return _url_verification(cfg, payload, signed)

        header = payload.get("header")
        is_v2 = payload.get("schema") == "2.0" or isinstance(header, dict)
        header = header if isinstance(header, dict) else {}
        token = header.get("token") if is_v2 else payload.get("token")
        if verification_token and not _tokens_equal(token, verification_token):
            raise _reject(signed, "verification token mismatch", 401, "invalid_token")
        app_id = cfg.app_id
        if is_v2 and app_id and header.get("app_id") and header.get("app_id") != app_id:
            raise _reject(signed, "event is for another app", 403, "app_mismatch")

        event = payload.get("event")
        event = event if isinstance(event, dict) else {}
        if is_v2:
            event_id, event_type = header.get("event_id"), header.get("event_type")
        else:
            event_id, event_type = payload.get("uuid"), event.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise _reject(signed, "missing event id", 400, "bad_request")

        if event_age_seconds(payload, is_v2) > DEDUPE_TTL_SECONDS:
            # Older than the dedupe memory: a replay we could not recognise. Ack, don't process.
            log.warning("feishu stale event ignored: event_id=%s", event_id)
            return JSONResponse({})
        if not await mark_seen(services, f"im:feishu:event:{event_id}"):
            log.info("feishu duplicate event ignored: event_id=%s", event_id)
            return JSONResponse({})

        msg: FeishuMessage | None = None
        if is_v2 and event_type == MESSAGE_EVENT_V2:
            msg = parse_message_v2(event_id, header, event)
        elif not is_v2 and event_type == MESSAGE_EVENT_V1:
            msg = parse_message_v1(event_id, event)
        if msg is not None:
            msg = dataclasses.replace(msg, path=request.url.path)
        if msg is None:
            log.info("feishu event acknowledged: type=%s event_id=%s", event_type, event_id)
            return JSONResponse({})
        spawn(services, answer_message(services, request.app, msg))
        return JSONResponse({})
    except CallbackError as exc:
        return handle_error(services, PLATFORM, request, exc)
