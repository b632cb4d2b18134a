"""Build requests exactly as DingTalk/Feishu/WeCom would send them (tests, fakes and the benchmark).

``build_feishu_message_request(settings, text=...)`` returns ``(headers, body_bytes)`` for a
signed (and, with an Encrypt Key, encrypted) schema 2.0 ``im.message.receive_v1`` callback that
the running app accepts; POST it to ``/feishu/callback`` with those exact bytes.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from clawbot_app.im import dingtalk_crypto, feishu_crypto, msgcrypt
from clawbot_app.im.common import secret_value


def _cfg(settings: Any, section: str) -> Any:
    return getattr(settings, section, settings)


def feishu_message_event(
    *,
    text: str,
    verification_token: str = "",
    app_id: str = "cli_test",
    event_id: str | None = None,
    message_id: str | None = None,
    chat_id: str = "oc_test_chat",
    open_id: str = "ou_test_user",
    tenant_key: str = "tenant_test",
    chat_type: str = "p2p",
) -> dict[str, Any]:
    """A schema 2.0 ``im.message.receive_v1`` event payload (plaintext)."""
    now_ms = str(int(time.time() * 1000))
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id or uuid.uuid4().hex,
            "event_type": "im.message.receive_v1",
            "create_time": now_ms,
            "token": verification_token,
            "app_id": app_id,
            "tenant_key": tenant_key,
        },
        "event": {
            "sender": {
                "sender_id": {"open_id": open_id, "user_id": "u_test", "union_id": "on_test"},
                "sender_type": "user",
                "tenant_key": tenant_key,
            },
            "message": {
                "message_id": message_id or f"om_{uuid.uuid4().hex}",
                "create_time": now_ms,
                "chat_id": chat_id,
                "chat_type": chat_type,
                "message_type": "text",
                "content": json.dumps({"text": text}, ensure_ascii=False),
                "mentions": [],
            },
        },
    }


def encode_feishu_payload(
    payload: dict[str, Any],
    *,
    encrypt_key: str = "",
    timestamp: str | None = None,
    nonce: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Serialise (encrypting when ``encrypt_key`` is set) and sign like Feishu does."""
    plain = json.dumps(payload, ensure_ascii=False)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if not encrypt_key:
        return headers, plain.encode("utf-8")
    body = json.dumps({"encrypt": feishu_crypto.encrypt(encrypt_key, plain)}).encode("utf-8")
    headers.update(
        feishu_crypto.signed_headers(encrypt_key, body, timestamp=timestamp, nonce=nonce)
    )
    return headers, body


def build_feishu_message_request(
    settings: Any, *, text: str = "hello", event_id: str | None = None, **event_fields: Any
) -> tuple[dict[str, str], bytes]:
    """Headers and raw body of a valid ``im.message.receive_v1`` callback for ``settings``.

    ``settings`` is the app ``Settings`` (or its ``feishu`` section). The body is encrypted and
    signed when an Encrypt Key is configured, otherwise plain JSON carrying the verification
    token. Every call uses a fresh ``event_id`` unless one is given (dedupe would drop repeats).
    """
    cfg = _cfg(settings, "feishu")
    payload = feishu_message_event(
        text=text,
        verification_token=secret_value(getattr(cfg, "verification_token", None)),
        app_id=getattr(cfg, "app_id", None) or "cli_test",
        event_id=event_id,
        **event_fields,
    )
    return encode_feishu_payload(
        payload, encrypt_key=secret_value(getattr(cfg, "encrypt_key", None))
    )


def build_feishu_url_verification(
    settings: Any, *, challenge: str = "challenge-token", encrypted: bool | None = None
) -> tuple[dict[str, str], bytes]:
    cfg = _cfg(settings, "feishu")
    payload = {
        "challenge": challenge,
        "token": secret_value(getattr(cfg, "verification_token", None)),
        "type": "url_verification",
    }
    key = secret_value(getattr(cfg, "encrypt_key", None))
    if encrypted is False or not key:
        return {"Content-Type": "application/json"}, json.dumps(payload).encode()
    return encode_feishu_payload(payload, encrypt_key=key)


def dingtalk_robot_message(
    *,
    text: str,
    session_webhook: str,
    msg_id: str | None = None,
    conversation_id: str = "cid_test_conversation",
    sender_staff_id: str = "staff_test",
    expires_in_ms: int = 3600_000,
    conversation_type: str = "1",
) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "msgtype": "text",
        "text": {"content": text},
        "msgId": msg_id or f"msg{uuid.uuid4().hex}",
        "createAt": now,
        "conversationType": conversation_type,
        "conversationId": conversation_id,
        "senderId": "$:LWCP_v1:$test",
        "senderNick": "Tester",
        "senderStaffId": sender_staff_id,
        "chatbotUserId": "$:LWCP_v1:$bot",
        "chatbotCorpId": "ding_corp_test",
        "robotCode": "ding_robot_test",
        "isInAtList": True,
        "sessionWebhook": session_webhook,
        "sessionWebhookExpiredTime": now + expires_in_ms,
    }


def build_dingtalk_robot_request(
    settings: Any, body: dict[str, Any], *, timestamp_ms: int | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers (``timestamp``/``sign``) and raw body of a robot callback."""
    cfg = _cfg(settings, "dingtalk")
    ts = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    sign = dingtalk_crypto.robot_sign(ts, secret_value(getattr(cfg, "app_secret", None)))
    headers = {"Content-Type": "application/json", "timestamp": ts, "sign": sign}
    return headers, json.dumps(body, ensure_ascii=False).encode("utf-8")


def build_dingtalk_event_request(
    settings: Any,
    event: dict[str, Any],
    *,
    timestamp_ms: int | None = None,
    nonce: str = "nonce123",
) -> tuple[dict[str, str], bytes]:
    """Query params and raw body of an encrypted event push (e.g. ``check_url``)."""
    cfg = _cfg(settings, "dingtalk")
    owner = getattr(cfg, "owner_key", None) or getattr(cfg, "app_key", None) or ""
    crypto = dingtalk_crypto.DingTalkEventCrypto(
        secret_value(getattr(cfg, "token", None)),
        secret_value(getattr(cfg, "aes_key", None)),
        owner,
    )
    ts = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    encrypt = crypto.encrypt(json.dumps(event))
    params = {
        "msg_signature": crypto.signature(ts, nonce, encrypt),
        "timeStamp": ts,
        "nonce": nonce,
    }
    return params, json.dumps({"encrypt": encrypt}).encode("utf-8")


def wecom_text_message(
    *, text: str, corp_id: str, from_user: str = "zhangsan", agent_id: int = 1000002,
    msg_id: str | None = None, created: int | None = None,
) -> str:
    """The plaintext XML of a WeCom app text message (``MsgType`` ``text``)."""
    created = int(time.time()) if created is None else created
    msg_id = msg_id or str(uuid.uuid4().int % 10**19)
    return (
        f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName>"
        f"<FromUserName><![CDATA[{from_user}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId>"
        f"<AgentID>{agent_id}</AgentID></xml>"
    )


def _wecom_crypto(settings: Any) -> msgcrypt.MsgCrypt:
    cfg = _cfg(settings, "wecom")
    return msgcrypt.MsgCrypt(
        secret_value(getattr(cfg, "token", None)),
        secret_value(getattr(cfg, "encoding_aes_key", None)),
        getattr(cfg, "corp_id", None) or "",
    )


def build_wecom_message_request(
    settings: Any, plaintext_xml: str, *, timestamp: int | None = None, nonce: str = "1372623149",
    agent_id: int = 1000002,
) -> tuple[dict[str, str], bytes]:
    """Query params and raw XML body of an encrypted WeCom message callback (POST)."""
    crypto = _wecom_crypto(settings)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    encrypt = crypto.encrypt(plaintext_xml)
    params = {"msg_signature": crypto.signature(ts, nonce, encrypt), "timestamp": ts,
              "nonce": nonce}
    body = (f"<xml><ToUserName><![CDATA[{crypto.receive_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<AgentID><![CDATA[{agent_id}]]></AgentID></xml>")
    return params, body.encode("utf-8")


def build_wecom_url_verification(
    settings: Any, echo: str = "1616140317555161061", *, timestamp: int | None = None,
    nonce: str = "263014780",
) -> dict[str, str]:
    """Query params of WeCom's URL verification (GET) whose decrypted ``echostr`` is ``echo``."""
    crypto = _wecom_crypto(settings)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    echostr = crypto.encrypt(echo)
    return {"msg_signature": crypto.signature(ts, nonce, echostr), "timestamp": ts,
            "nonce": nonce, "echostr": echostr}
