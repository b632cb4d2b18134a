"""Feishu (Lark) event callback endpoint.

Order of checks for every request:

1. body size limit, JSON object (else 413/400);
2. when an Encrypt Key is configured and ``X-Lark-Signature`` is present, the signature over the
   raw body bytes must match (401); ``{"encrypt": ...}`` bodies are decrypted;
3. ``url_verification`` → ``{"challenge": ...}`` once the verification token matches (or, with
   no token configured, once the body was authenticated by signature/decryption);
4. events: with an Encrypt Key the signature is mandatory; with a verification token the token
   (``header.token`` for schema 2.0, ``token`` for 1.0) must match; ``header.app_id`` must be
   ours when both are known (403);
5. dedupe on ``header.event_id``/``uuid`` (duplicates answered 200 without processing);
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

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clawbot_app.im import feishu_api, feishu_crypto
from clawbot_app.im.common import (
    DEDUPE_TTL_SECONDS,
    CallbackError,
    auth_failure,
    chat_error_text,
    get_services,
    handle_error,
    mark_seen,
    max_body_bytes,
    not_configured,
    parse_json_object,
    read_body,
    secret_value,
    spawn,
)
from clawbot_app.im.state import get_state

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
    text = _MENTION_KEY.sub(" ", text)
    return " ".join(text.split())


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
    text = " ".join(_MENTION_KEY.sub(" ", str(text)).split())
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


async def answer_message(services: Any, app: Any, msg: FeishuMessage) -> None:
    """Background part: chat call, then reply to the message through the Open API."""
    try:
        result = await services.chat.reply(
            tenant_id=msg.tenant_id,
            user_id=msg.user_id,
            session_id=msg.session_id,
            message=msg.text,
            path=msg.path,
        )
        answer = str(result.reply)
    except Exception as exc:  # noqa: BLE001 - answer the user with a short notice
        log.warning("feishu chat failed: event_id=%s error=%s", msg.event_id, type(exc).__name__)
        answer = chat_error_text(exc)
    cfg = services.settings.feishu
    app_id = cfg.app_id or ""
    app_secret = secret_value(cfg.app_secret)
    if not (app_id and app_secret):
        log.error(
            "feishu app_id/app_secret not configured; cannot reply (event_id=%s)", msg.event_id
        )
        return
    try:
        await feishu_api.reply_text(
            services.http,
            get_state(app).feishu_tokens,
            api_base=cfg.api_base,
            app_id=app_id,
            app_secret=app_secret,
            message_id=msg.message_id,
            text=answer,
        )
    except Exception as exc:  # noqa: BLE001 - background task: log and give up
        log.warning(
            "feishu reply failed: event_id=%s error=%s code=%s status=%s",
            msg.event_id,
            type(exc).__name__,
            getattr(exc, "code", None),
            getattr(exc, "status", None),
        )


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


def _authenticate(request: Request, cfg: Any, raw: bytes) -> tuple[dict[str, Any], bool, bool]:
    """Parse/verify/decrypt; returns ``(payload, signed, was_encrypted)``."""
    encrypt_key = secret_value(getattr(cfg, "encrypt_key", None))
    signed = False
    provided = request.headers.get(feishu_crypto.HEADER_SIGNATURE)
    if encrypt_key and provided is not None:
        ok = feishu_crypto.verify_signature(
            request.headers.get(feishu_crypto.HEADER_TIMESTAMP),
            request.headers.get(feishu_crypto.HEADER_NONCE),
            encrypt_key,
            raw,
            provided,
        )
        if not ok:
            raise auth_failure(401, "invalid_signature", "X-Lark-Signature mismatch")
        signed = True
    body = parse_json_object(raw)
    if "encrypt" not in body:
        return body, signed, False
    encrypted = body.get("encrypt")
    if not encrypt_key:
        raise CallbackError(503, "not_configured", "feishu: encrypt key not configured")
    if not isinstance(encrypted, str):
        raise CallbackError(400, "bad_request", "encrypt must be a string")
    try:
        plaintext = feishu_crypto.decrypt(encrypt_key, encrypted)
    except feishu_crypto.FeishuCryptoError:
        raise auth_failure(400, "decrypt_failed", "cannot decrypt event") from None
    return parse_json_object(plaintext), signed, True


def _url_verification(cfg: Any, payload: dict[str, Any], authenticated: bool) -> Response:
    token = secret_value(getattr(cfg, "verification_token", None))
    if token:
        if not _tokens_equal(payload.get("token"), token):
            raise auth_failure(401, "invalid_token", "verification token mismatch")
    elif not authenticated:
        raise auth_failure(401, "invalid_signature", "unauthenticated url_verification")
    challenge = payload.get("challenge")
    if not isinstance(challenge, str):
        raise CallbackError(400, "bad_request", "missing challenge")
    return JSONResponse({"challenge": challenge})


async def feishu_callback(request: Request) -> Response:
    services = get_services(request)
    settings = services.settings
    cfg = getattr(settings, "feishu", None)
    try:
        if cfg is None:
            raise not_configured(PLATFORM)
        verification_token = secret_value(getattr(cfg, "verification_token", None))
        encrypt_key = secret_value(getattr(cfg, "encrypt_key", None))
        if not (verification_token or encrypt_key):
            raise not_configured(PLATFORM)
        raw = await read_body(request, max_body_bytes(settings))
        payload, signed, was_encrypted = _authenticate(request, cfg, raw)

        if payload.get("type") == "url_verification":
            return _url_verification(cfg, payload, signed or was_encrypted)

        if encrypt_key and not signed:
            raise auth_failure(401, "invalid_signature", "missing X-Lark-Signature")
        header = payload.get("header")
        is_v2 = payload.get("schema") == "2.0" or isinstance(header, dict)
        header = header if isinstance(header, dict) else {}
        token = header.get("token") if is_v2 else payload.get("token")
        if verification_token and not _tokens_equal(token, verification_token):
            raise auth_failure(401, "invalid_token", "verification token mismatch")
        app_id = getattr(cfg, "app_id", None)
        if is_v2 and app_id and header.get("app_id") and header.get("app_id") != app_id:
            raise auth_failure(403, "app_mismatch", "event is for another app")

        event = payload.get("event")
        event = event if isinstance(event, dict) else {}
        if is_v2:
            event_id, event_type = header.get("event_id"), header.get("event_type")
        else:
            event_id, event_type = payload.get("uuid"), event.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise CallbackError(400, "bad_request", "missing event id")

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
