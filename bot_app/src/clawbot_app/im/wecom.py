"""WeCom (企业微信) self-built app callbacks: URL verification and encrypted message events.

Order of checks (developer.work.weixin.qq.com/document/path/90930, "Receive messages"):

* ``GET ?msg_signature&timestamp&nonce&echostr`` (URL verification): the signature over the
  sorted token, timestamp, nonce and ``echostr``, then the timestamp (seconds, within an hour),
  then decryption with the EncodingAESKey and the receive id (the corp id); the answer is the
  decrypted plaintext as ``text/plain``.
* ``POST ?msg_signature&timestamp&nonce`` with ``<xml><ToUserName/><Encrypt/><AgentID/></xml>``:
  the body is parsed with ``defusedxml`` (no DTDs, no entities; the size is bounded by the body
  limit) only to find ``Encrypt``, which the signature covers; nothing is decrypted before the
  signature and the timestamp passed, and every failure after that is the one
  ``rejected_after_auth`` answer. Messages are deduplicated on ``MsgId`` (events on the
  ciphertext), acknowledged at once with an empty body (no passive reply), and answered in the
  background through the app message API (:mod:`clawbot_app.im.wecom_api`).
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET  # noqa: S405 - only for the ParseError type
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from clawbot_app.config import WeComSettings
from clawbot_app.im import wecom_api
from clawbot_app.im.common import (
    CallbackError,
    CallbackServices,
    auth_failure,
    body_digest,
    get_services,
    handle_error,
    mark_seen,
    not_configured,
    rejected_after_auth,
    secret_value,
    spawn,
)
from clawbot_app.im.msgcrypt import (
    MsgCrypt,
    MsgCryptError,
    SignatureMismatch,
    StaleTimestamp,
    check_timestamp,
)
from clawbot_app.im.replies import answer_plan, send_in_order
from clawbot_app.im.state import get_state

PLATFORM = "wecom"
log = logging.getLogger("clawbot_app.im.wecom")

SIGN_WINDOW_SECONDS = 3600
"""Largest distance between a callback's ``timestamp`` and the local clock. WeCom retries a
message three times within seconds; the window bounds a replay to far less than the 12 h the
message ids are remembered."""

@dataclass(frozen=True)
class WeComMessage:
    msg_id: str
    text: str
    user_id: str
    agent_id: int | None
    tenant_id: str
    session_id: str
    path: str = ""


def check_timestamp_s(timestamp: str | None, *, now: float | None = None,
                      window: int = SIGN_WINDOW_SECONDS) -> int:
    """A timestamp in seconds (at most 12 digits) within ``window`` of ``now``."""
    current = int(time.time() if now is None else now)
    return check_timestamp(timestamp, now=current, window=window, max_digits=12)


def crypto_for(cfg: WeComSettings) -> MsgCrypt:
    token = secret_value(cfg.token)
    aes_key = secret_value(cfg.encoding_aes_key)
    if not (token and aes_key and cfg.corp_id):
        raise not_configured(PLATFORM)
    try:
        return MsgCrypt(token, aes_key, cfg.corp_id)
    except ValueError:
        log.error("wecom callback crypto misconfigured (token/encoding_aes_key/corp_id)")
        raise not_configured(PLATFORM) from None


def parse_xml_fields(raw: bytes | str) -> dict[str, str]:
    """The text of the root's child elements; ``ValueError`` for anything but a flat, plain
    XML document (DTDs, entities and external references are refused by defusedxml)."""
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, UnicodeError) as exc:
        raise ValueError(f"malformed XML ({type(exc).__name__})") from None
    return {child.tag: (child.text or "").strip() for child in root if isinstance(child.tag, str)}


def _verify(crypto: MsgCrypt, request: Request, encrypt: str) -> None:
    q = request.query_params
    timestamp = q.get("timestamp")
    try:
        crypto.verify_signature(q.get("msg_signature"), timestamp, q.get("nonce"), encrypt)
        check_timestamp_s(timestamp)
    except SignatureMismatch as exc:
        raise auth_failure(401, "invalid_signature", str(exc)) from None
    except StaleTimestamp as exc:
        raise auth_failure(401, "stale_timestamp", str(exc)) from None


async def _verify_url(request: Request, cfg: WeComSettings) -> Response:
    crypto = crypto_for(cfg)
    echostr = request.query_params.get("echostr")
    if not echostr:
        raise CallbackError(400, "bad_request", "missing echostr")
    _verify(crypto, request, echostr)
    try:
        plaintext = crypto.decrypt(echostr)
    except MsgCryptError as exc:
        raise rejected_after_auth(f"cannot decrypt echostr ({type(exc).__name__})") from None
    log.info("wecom callback URL verified")
    return PlainTextResponse(plaintext)


def parse_message(fields: dict[str, str], corp_id: str, path: str) -> WeComMessage | None:
    """The fields needed to answer a text message, or None when there is nothing to answer."""
    if fields.get("MsgType") != "text":
        return None
    text, user = fields.get("Content", "").strip(), fields.get("FromUserName", "")
    if not (text and user):
        return None
    agent = fields.get("AgentID", "")
    agent_id = int(agent) if agent.isascii() and agent.isdigit() and len(agent) < 12 else None
    return WeComMessage(
        msg_id=fields.get("MsgId", ""),
        text=text,
        user_id=user,
        agent_id=agent_id,
        tenant_id=f"wecom:{corp_id}",
        session_id=f"wecom:{agent_id if agent_id is not None else ''}:{user}",
        path=path,
    )


async def answer_message(services: CallbackServices, app: Starlette, msg: WeComMessage) -> None:
    """Background part: the chat call, then one app message per part of the answer, in order."""
    plan = await answer_plan(services, PLATFORM, tenant_id=msg.tenant_id, user_id=msg.user_id,
                             session_id=msg.session_id, text=msg.text, path=msg.path,
                             ref=f"msg_id={msg.msg_id}")
    cfg = services.settings.wecom
    corp_secret = secret_value(cfg.corp_secret)
    agent_id = cfg.agent_id if cfg.agent_id is not None else msg.agent_id
    if not (cfg.corp_id and corp_secret and agent_id is not None):
        log.error("wecom corp_id/corp_secret/agent_id not configured; cannot reply (msg_id=%s)",
                  msg.msg_id)
        return
    tokens = get_state(app).wecom_tokens

    async def send(text: str) -> object:
        return await wecom_api.send_message(
            services.http, tokens, api_base=cfg.api_base, corp_id=cfg.corp_id or "",
            corp_secret=corp_secret, agent_id=agent_id, to_user=msg.user_id, text=text,
            markdown=plan.markdown,
        )

    await send_in_order(PLATFORM, f"msg_id={msg.msg_id}", plan.texts, send)


async def _message_event(request: Request, services: CallbackServices, cfg: WeComSettings
                         ) -> Response:
    crypto = crypto_for(cfg)
    raw = await request.body()  # the middleware refuses more than max_body_bytes (413)
    try:
        envelope = parse_xml_fields(raw)
    except ValueError as exc:
        raise CallbackError(400, "malformed_xml", str(exc)) from None
    encrypt = envelope.get("Encrypt", "")
    if not encrypt:
        raise CallbackError(400, "bad_request", "missing Encrypt element")
    _verify(crypto, request, encrypt)
    try:
        fields = parse_xml_fields(crypto.decrypt(encrypt))
    except MsgCryptError as exc:
        raise rejected_after_auth(f"cannot decrypt message ({type(exc).__name__})") from None
    except ValueError as exc:
        raise rejected_after_auth(str(exc)) from None
    msg_id = fields.get("MsgId", "")
    key = f"msg:{msg_id}" if msg_id else f"event:{body_digest(encrypt.encode())}"
    if not await mark_seen(services, f"im:wecom:{cfg.corp_id}:{key}"):
        log.info("wecom duplicate message ignored: msg_id=%s", msg_id or "-")
        return Response(b"", 200)
    msg = parse_message(fields, cfg.corp_id or "", request.url.path)
    if msg is None:
        log.info("wecom event acknowledged: type=%s event=%s", fields.get("MsgType", "")[:32],
                 fields.get("Event", "")[:32])
        return Response(b"", 200)
    spawn(services, answer_message(services, request.app, msg))
    return Response(b"", 200)


async def wecom_callback(request: Request) -> Response:
    services = get_services(request)
    cfg = services.settings.wecom
    try:
        if request.method == "GET":
            return await _verify_url(request, cfg)
        return await _message_event(request, services, cfg)
    except CallbackError as exc:
        return handle_error(services, PLATFORM, request, exc)
