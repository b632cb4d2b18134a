"""Each robot platform: its message body, its size limit, how it is signed and sent, and how to
read its answer (all three answer errors as HTTP 200 with a code in the body).

Signing and posting reuse the bot's IM code: DingTalk through
:func:`clawbot_app.im.dingtalk_api.send_group_robot` (``timestamp`` + ``sign`` in the URL,
:mod:`clawbot_app.im.dingtalk_crypto`), Feishu with
:func:`clawbot_app.im.feishu_crypto.webhook_sign` (``timestamp`` + ``sign`` in the body), WeCom
(no signing: the ``key`` in the URL is the credential) with the shared
:class:`~clawbot_app.httpclient.HttpClient`. Network errors and timeouts propagate; the caller
(:mod:`.delivery`) counts and retries them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from clawbot_app.alertrelay.config import Receiver
from clawbot_app.alertrelay.render import MARKDOWN, PLAIN, Rendered, Style, truncate_utf8
from clawbot_app.httpclient import HttpClient
from clawbot_app.im import feishu_crypto
from clawbot_app.im.dingtalk_api import DingTalkApiError, send_group_robot

MAX_DETAIL_CHARS = 200

# Size limits (bytes of UTF-8):
# - DingTalk custom robot: message content at most 20000 bytes (DingTalk Open Platform, "Custom
#   robot: send group messages"); 18000 leaves room for the title and the JSON around it, as
#   clawbot_app.im.dingtalk_api.MAX_TEXT_CHARS does for text replies.
# - Feishu custom bot: the request body at most 20 KB (Feishu Open Platform, "Custom bot usage
#   guide", usage limits); the whole JSON body is measured and the text cut to fit.
# - WeCom group robot: markdown.content at most 4096 bytes, UTF-8 (WeCom developer docs, "Group
#   robot configuration"; errcode 40058 beyond).
DINGTALK_TEXT_BYTES = 18000
FEISHU_BODY_BYTES = 20 * 1024
WECOM_MARKDOWN_BYTES = 4096

# Codes that mean "later": the platforms' rate limits (DingTalk 20/min per robot -> 130101
# "send too fast"; Feishu custom bot 11232 "frequency limited", Open API 99991400; WeCom 20/min
# -> 45009 "api freq out of limit") and "system busy" (-1 on DingTalk and WeCom).
_RATE_LIMITED = {"dingtalk": {130101}, "feishu": {11232, 99991400}, "wecom": {45009}}
_BUSY = {"dingtalk": {-1}, "feishu": set(), "wecom": {-1}}


@dataclass(frozen=True)
class Answer:
    """How one attempt ended. ``result`` is the metrics label: ``sent``, ``rate_limited``,
    ``server_error``, ``rejected`` (permanent: bad token, bad signature, keyword, bad body),
    ``network_error`` or ``timeout``. ``detail`` is safe to log (never a token or a sign)."""

    result: str
    retryable: bool
    status: int | None = None
    code: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result == "sent"


def classify(platform: str, status: int, code: int | None, message: str) -> Answer:
    detail = message[:MAX_DETAIL_CHARS]
    if status == 200 and code == 0:
        return Answer("sent", False, status, code)
    if status == 429 or code in _RATE_LIMITED[platform]:
        return Answer("rate_limited", True, status, code, detail)
    if status >= 500 or code in _BUSY[platform]:
        return Answer("server_error", True, status, code, detail)
    return Answer("rejected", False, status, code, detail)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _secret(receiver: Receiver) -> str | None:
    return receiver.secret.get_secret_value() if receiver.secret is not None else None


async def send_dingtalk(http: HttpClient, receiver: Receiver, message: Rendered) -> Answer:
    """``msgtype: markdown``; the URL signed when the robot has a ``SEC...`` secret."""
    payload = {"msgtype": "markdown", "markdown": {"title": message.title, "text": message.text}}
    try:
        await send_group_robot(http, receiver.webhook_url.get_secret_value(), payload,
                               secret=_secret(receiver))
    except DingTalkApiError as exc:
        return classify("dingtalk", exc.status or 0, exc.errcode, str(exc))
    return Answer("sent", False, 200, 0)


def feishu_body(text: str, secret: str | None) -> dict[str, Any]:
    """A ``text`` message (``content`` is an object on custom bot webhooks), signed when the bot
    has a secret: ``timestamp`` (seconds) and ``sign`` in the body."""
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
    if secret:
        timestamp, sign = feishu_crypto.webhook_sign(secret)
        body = {"timestamp": timestamp, "sign": sign, **body}
    return body


def _json_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, ensure_ascii=False).encode("utf-8"))


def fit_feishu_text(text: str, secret: str | None, limit: int = FEISHU_BODY_BYTES) -> str:
    """``text`` cut until the whole JSON body (escapes included) is at most ``limit`` bytes."""
    for _ in range(8):
        excess = _json_size(feishu_body(text, secret)) - limit
        if excess <= 0:
            return text
        text = truncate_utf8(text, len(text.encode("utf-8")) - excess)
    return truncate_utf8(text, limit // 2)


async def send_feishu(http: HttpClient, receiver: Receiver, message: Rendered) -> Answer:
    secret = _secret(receiver)
    body = feishu_body(fit_feishu_text(message.text, secret), secret)
    reply = await http.post_json(receiver.webhook_url.get_secret_value(), body)
    data = reply.data if isinstance(reply.data, dict) else {}
    # Current hooks answer {"code": 0, "msg": ...}; old Lark hooks {"StatusCode": 0, ...}.
    code = _int(data.get("code", data.get("StatusCode")))
    message_text = str(data.get("msg", data.get("StatusMessage", "")))
    return classify("feishu", reply.status, code, message_text)


async def send_wecom(http: HttpClient, receiver: Receiver, message: Rendered) -> Answer:
    body = {"msgtype": "markdown", "markdown": {"content": message.text}}
    reply = await http.post_json(receiver.webhook_url.get_secret_value(), body)
    data = reply.data if isinstance(reply.data, dict) else {}
    return classify("wecom", reply.status, _int(data.get("errcode")), str(data.get("errmsg", "")))


Sender = Callable[[HttpClient, Receiver, Rendered], Awaitable[Answer]]


@dataclass(frozen=True)
class PlatformSpec:
    style: Style
    budget_bytes: int  # the rendered text's budget
    send: Sender


PLATFORMS: dict[str, PlatformSpec] = {
    "dingtalk": PlatformSpec(MARKDOWN, DINGTALK_TEXT_BYTES, send_dingtalk),
    # Plain text: Feishu's text messages render no markdown. The body limit is enforced on send.
    "feishu": PlatformSpec(PLAIN, FEISHU_BODY_BYTES - 512, send_feishu),
    "wecom": PlatformSpec(MARKDOWN, WECOM_MARKDOWN_BYTES, send_wecom),
}
