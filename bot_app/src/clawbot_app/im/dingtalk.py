"""DingTalk callback endpoint: enterprise robot messages and encrypted event pushes.

* Robot callback: headers ``timestamp``/``sign`` verified against ``app_secret``; the message is
  acknowledged at once and answered in the background through its ``sessionWebhook``.
* Event push (query ``msg_signature``/``signature``, ``timeStamp``/``timestamp``, ``nonce``;
  body ``{"encrypt": ...}``): verified, decrypted (owner key = ``owner_key`` or ``app_key``) and
  answered with the encrypted string ``success`` (the ``check_url`` event included).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clawbot_app.config import DingTalkSettings
from clawbot_app.im import dingtalk_api
from clawbot_app.im.common import (
    CallbackError,
    CallbackServices,
    auth_failure,
    body_digest,
    get_services,
    handle_error,
    mark_seen,
    not_configured,
    parse_json_object,
    rejected_after_auth,
    secret_value,
    spawn,
)
from clawbot_app.im.dingtalk_crypto import (
    SIGN_WINDOW_MS,
    DingTalkCryptoError,
    DingTalkEventCrypto,
    OwnerKeyMismatch,
    SignatureMismatch,
    StaleTimestamp,
    check_timestamp_ms,
    verify_robot_sign,
)
from clawbot_app.im.replies import ReplyPlan, answer_plan, send_in_order

PLATFORM = "dingtalk"
log = logging.getLogger("clawbot_app.im.dingtalk")

SIGN_PAIR_TTL_SECONDS = 2 * SIGN_WINDOW_MS // 1000 + 60
"""A timestamp is accepted within the window either side of now: remember a used pair longer."""


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
    group: bool = False
    staff_id: str = ""


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
        group=str(body.get("conversationType") or "") == "2",
        staff_id=str(body.get("senderStaffId") or ""),
    )


def reply_payloads(msg: RobotMessage, plan: ReplyPlan) -> list[dict[str, Any]]:
    """The session webhook messages for ``plan``; in a group chat the first one @-mentions the
    sender (``at.atUserIds`` and ``@staffId`` in the text, as DingTalk requires both)."""
    mention = [msg.staff_id] if msg.group and msg.staff_id else None
    total = len(plan.texts)
    payloads = []
    for i, text in enumerate(plan.texts, 1):
        at = mention if i == 1 else None
        body = f"{text}\n\n@{msg.staff_id}" if at else text
        if plan.markdown:
            title = plan.title if total == 1 else f"{plan.title} ({i}/{total})"
            payloads.append(dingtalk_api.markdown_message(title, body, at))
        else:
            payloads.append(dingtalk_api.text_message(body, at))
    return payloads


async def answer_robot_message(services: CallbackServices, msg: RobotMessage) -> None:
    """Background part: ask the chat service, post the answer to the session webhook."""
    plan = await answer_plan(services, PLATFORM, tenant_id=msg.tenant_id, user_id=msg.user_id,
                             session_id=msg.session_id, text=msg.text, path=msg.path,
                             ref=f"msg_id={msg.msg_id}")
    if not msg.session_webhook:
        log.warning("dingtalk message without sessionWebhook: msg_id=%s", msg.msg_id)
        return
    if dingtalk_api.webhook_expired(msg.webhook_expires_ms):
        log.warning("dingtalk sessionWebhook expired: msg_id=%s", msg.msg_id)
        return
    api_base = services.settings.dingtalk.api_base
    if not dingtalk_api.webhook_allowed(msg.session_webhook, api_base):
        log.warning("dingtalk sessionWebhook host not allowed: msg_id=%s", msg.msg_id)
        return

    async def send(payload: dict[str, Any]) -> object:
        return await dingtalk_api.send_session_message(services.http, msg.session_webhook,
                                                       payload)

    await send_in_order(PLATFORM, f"msg_id={msg.msg_id}", reply_payloads(msg, plan), send)


async def _robot_callback(
    request: Request, services: CallbackServices, cfg: DingTalkSettings, raw: bytes
) -> Response:
    """Robot message: sign, then single use of the sign, then the body, then dedupe.

    The sign covers only the timestamp, so a captured ``timestamp``/``sign`` pair would carry
    any body for an hour: each pair is accepted once within its validity window (kept in Redis
    or the database). Two messages signed in the same millisecond would share a pair; the second
    is refused like a replay (DingTalk signs per request, so this is its millisecond clock).
    """
    app_secret = secret_value(cfg.app_secret)
    if not app_secret:
        raise not_configured(PLATFORM)
    timestamp, sign = request.headers.get("timestamp"), request.headers.get("sign")
    try:
        verify_robot_sign(timestamp, sign, app_secret)
    except StaleTimestamp as exc:
        raise auth_failure(401, "stale_timestamp", str(exc)) from None
    except SignatureMismatch as exc:
        raise auth_failure(401, "invalid_signature", str(exc)) from None
    pair = body_digest(f"{timestamp}\n{sign}".encode())
    if not await mark_seen(services, f"im:dingtalk:sign:{pair}", SIGN_PAIR_TTL_SECONDS,
                           fail_open=False):
        raise rejected_after_auth("timestamp/sign pair already used (replay)")
    try:
        body = parse_json_object(raw)
    except CallbackError as exc:
        raise rejected_after_auth(exc.reason) from None
    msg = parse_robot_message(body, request.url.path)
    if msg is None:
        log.info("dingtalk robot callback ignored: msgtype=%s", str(body.get("msgtype"))[:32])
        return JSONResponse({})
    # DingTalk's msgId where there is one; the exact body otherwise (a resent message).
    dedupe_key = f"msg:{msg.msg_id}" if msg.msg_id else f"body:{body_digest(raw)}"
    if not await mark_seen(services, f"im:dingtalk:{dedupe_key}"):
        log.info("dingtalk duplicate message ignored: msg_id=%s", msg.msg_id or "-")
        return JSONResponse({})
    spawn(services, answer_robot_message(services, msg))
    return JSONResponse({})


def event_crypto(cfg: DingTalkSettings) -> DingTalkEventCrypto:
    token = secret_value(cfg.token)
    aes_key = secret_value(cfg.aes_key)
    owner = cfg.owner_key or cfg.app_key or ""
    if not (token and aes_key and owner):
        raise not_configured(PLATFORM)
    try:
        return DingTalkEventCrypto(token, aes_key, str(owner))
    except ValueError:
        log.error("dingtalk event crypto misconfigured (token/aes_key/owner key)")
        raise not_configured(PLATFORM) from None


async def _event_push(
    request: Request, services: CallbackServices, cfg: DingTalkSettings, raw: bytes
) -> Response:
    """Encrypted event push. The signature covers the ``encrypt`` string, not the raw body, so
    the body is parsed first (``parse_json_object``: bounded depth, valid Unicode, nothing else
    is read from it); nothing is decrypted before the signature and the timestamp passed, and
    every failure after that is the one ``rejected_after_auth`` answer."""
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
    except SignatureMismatch as exc:
        raise auth_failure(401, "invalid_signature", str(exc)) from None
    except StaleTimestamp as exc:
        raise auth_failure(401, "stale_timestamp", str(exc)) from None
    try:
        plaintext = crypto.decrypt(encrypt)
        event = parse_json_object(plaintext)
    except OwnerKeyMismatch:
        raise rejected_after_auth("owner key mismatch") from None
    except DingTalkCryptoError:
        raise rejected_after_auth("cannot decrypt event") from None
    except CallbackError as exc:
        raise rejected_after_auth(exc.reason) from None
    event_type = str(event.get("EventType"))[:64]
    if await mark_seen(services, f"im:dingtalk:event:{body_digest(encrypt.encode())}"):
        log.info("dingtalk event received: type=%s", event_type)
    else:
        log.info("dingtalk duplicate event ignored: type=%s", event_type)
    return JSONResponse(crypto.encrypted_reply("success"))


async def dingtalk_callback(request: Request) -> Response:
    services = get_services(request)
    settings = services.settings
    cfg = settings.dingtalk
    try:
        raw = await request.body()  # the middleware refuses more than max_body_bytes (413)
        q = request.query_params
        if "msg_signature" in q or "signature" in q:
            return await _event_push(request, services, cfg, raw)
        return await _robot_callback(request, services, cfg, raw)
    except CallbackError as exc:
        return handle_error(services, PLATFORM, request, exc)
