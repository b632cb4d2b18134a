"""DingTalk callback endpoint: enterprise robot messages and encrypted event pushes.

* Robot callback: headers ``timestamp``/``sign`` verified against ``app_secret``; the message is
  acknowledged at once and answered in the background through its ``sessionWebhook``.
* Event push (query ``msg_signature``/``signature``, ``timeStamp``/``timestamp``, ``nonce``;
  body ``{"encrypt": ...}``): verified, decrypted (owner key = ``owner_key`` or ``app_key``) and
  answered with the encrypted string ``success`` (the ``check_url`` event included).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clawbot_app.im import dingtalk_api
from clawbot_app.im.common import (
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
from clawbot_app.im.dingtalk_crypto import (
    DingTalkCryptoError,
    DingTalkEventCrypto,
    OwnerKeyMismatch,
    SignatureMismatch,
    StaleTimestamp,
    check_timestamp_ms,
    verify_robot_sign,
)

PLATFORM = "dingtalk"
log = logging.getLogger("clawbot_app.im.dingtalk")


@dataclass(frozen=True)
class RobotMessage:
    msg_id: str
    text: str
    tenant_id: str
    user_id: str
    session_id: str
    session_webhook: str
    webhook_expires_ms: Any
    path: str = ""


def _extract_text(body: dict[str, Any]) -> str:
    msgtype = body.get("msgtype")
    if msgtype == "text":
        text = body.get("text")
        content = text.get("content") if isinstance(text, dict) else None
        return content.strip() if isinstance(content, str) else ""
    if msgtype == "audio":  # voice messages carry DingTalk's speech recognition result
        content = body.get("content")
        rec = content.get("recognition") if isinstance(content, dict) else None
        return rec.strip() if isinstance(rec, str) else ""
    return ""


def parse_robot_message(body: dict[str, Any], path: str = "") -> RobotMessage | None:
    """The fields needed to answer a robot message, or None when there is nothing to answer."""
    text = _extract_text(body)
    sender = str(body.get("senderStaffId") or body.get("senderId") or "")
    conversation = str(body.get("conversationId") or "")
    if not text or not sender:
        return None
    corp = str(body.get("chatbotCorpId") or body.get("senderCorpId") or "")
    return RobotMessage(
        msg_id=str(body.get("msgId") or ""),
        text=text,
        tenant_id=f"dingtalk:{conversation or corp or 'default'}",
        user_id=sender,
        session_id=f"dingtalk:{conversation}:{sender}",
        session_webhook=str(body.get("sessionWebhook") or ""),
        webhook_expires_ms=body.get("sessionWebhookExpiredTime"),
        path=path,
    )


async def answer_robot_message(services: Any, msg: RobotMessage) -> None:
    """Background part: ask the chat service, post the answer to the session webhook."""
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
        log.warning("dingtalk chat failed: msg_id=%s error=%s", msg.msg_id, type(exc).__name__)
        answer = chat_error_text(exc)
    if not msg.session_webhook:
        log.warning("dingtalk message without sessionWebhook: msg_id=%s", msg.msg_id)
        return
    if dingtalk_api.webhook_expired(msg.webhook_expires_ms):
        log.warning("dingtalk sessionWebhook expired: msg_id=%s", msg.msg_id)
        return
    api_base = getattr(services.settings.dingtalk, "api_base", None)
    if not dingtalk_api.webhook_allowed(msg.session_webhook, api_base):
        log.warning("dingtalk sessionWebhook host not allowed: msg_id=%s", msg.msg_id)
        return
    try:
        await dingtalk_api.send_session_reply(services.http, msg.session_webhook, answer)
    except Exception as exc:  # noqa: BLE001 - background task: log and give up
        log.warning(
            "dingtalk reply failed: msg_id=%s error=%s errcode=%s",
            msg.msg_id,
            type(exc).__name__,
            getattr(exc, "errcode", None),
        )


async def _robot_callback(request: Request, services: Any, cfg: Any, raw: bytes) -> Response:
    app_secret = secret_value(getattr(cfg, "app_secret", None))
    if not app_secret:
        raise not_configured(PLATFORM)
    try:
        verify_robot_sign(request.headers.get("timestamp"), request.headers.get("sign"), app_secret)
    except StaleTimestamp as exc:
        raise auth_failure(401, "stale_timestamp", str(exc)) from None
    except SignatureMismatch as exc:
        raise auth_failure(401, "invalid_signature", str(exc)) from None
    body = parse_json_object(raw)
    msg = parse_robot_message(body, request.url.path)
    if msg is None:
        log.info("dingtalk robot callback ignored: msgtype=%s", body.get("msgtype"))
        return JSONResponse({})
    if msg.msg_id and not await mark_seen(services, f"im:dingtalk:msg:{msg.msg_id}"):
        log.info("dingtalk duplicate message ignored: msg_id=%s", msg.msg_id)
        return JSONResponse({})
    spawn(services, answer_robot_message(services, msg))
    return JSONResponse({})


def event_crypto(cfg: Any) -> DingTalkEventCrypto:
    token = secret_value(getattr(cfg, "token", None))
    aes_key = secret_value(getattr(cfg, "aes_key", None))
    owner = getattr(cfg, "owner_key", None) or getattr(cfg, "app_key", None) or ""
    if not (token and aes_key and owner):
        raise not_configured(PLATFORM)
    try:
        return DingTalkEventCrypto(token, aes_key, str(owner))
    except ValueError:
        log.error("dingtalk event crypto misconfigured (token/aes_key/owner key)")
        raise not_configured(PLATFORM) from None


async def _event_push(request: Request, cfg: Any, raw: bytes) -> Response:
    crypto = event_crypto(cfg)
    q = request.query_params
    signature = q.get("msg_signature") or q.get("signature")
    timestamp = q.get("timeStamp") or q.get("timestamp")
    nonce = q.get("nonce")
    body = parse_json_object(raw)
    encrypt = body.get("encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise CallbackError(400, "bad_request", "missing encrypt field")
    try:
        crypto.verify_signature(signature, timestamp, nonce, encrypt)
        check_timestamp_ms(timestamp)
        plaintext = crypto.decrypt(encrypt)
    except SignatureMismatch as exc:
        raise auth_failure(401, "invalid_signature", str(exc)) from None
    except StaleTimestamp as exc:
        raise auth_failure(401, "stale_timestamp", str(exc)) from None
    except OwnerKeyMismatch as exc:
        raise auth_failure(403, "owner_key_mismatch", str(exc)) from None
    except DingTalkCryptoError:
        raise auth_failure(400, "decrypt_failed", "cannot decrypt event") from None
    try:
        event = json.loads(plaintext)
    except ValueError:
        event = {}
    event_type = event.get("EventType") if isinstance(event, dict) else None
    log.info("dingtalk event received: type=%s", event_type)
    return JSONResponse(crypto.encrypted_reply("success"))


async def dingtalk_callback(request: Request) -> Response:
    services = get_services(request)
    settings = services.settings
    cfg = getattr(settings, "dingtalk", None)
    try:
        if cfg is None:
            raise not_configured(PLATFORM)
        raw = await read_body(request, max_body_bytes(settings))
        q = request.query_params
        if "msg_signature" in q or "signature" in q:
            return await _event_push(request, cfg, raw)
        return await _robot_callback(request, services, cfg, raw)
    except CallbackError as exc:
        return handle_error(services, PLATFORM, request, exc)
