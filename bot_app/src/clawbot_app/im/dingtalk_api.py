"""Outbound DingTalk calls: replies through a message's ``sessionWebhook``, group robot alerts."""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from clawbot_app.httpclient import HttpClient
from clawbot_app.im.dingtalk_crypto import signed_webhook_url

MAX_TEXT_CHARS = 18000  # DingTalk text messages are limited to ~20000 bytes
MAX_TITLE_CHARS = 64
_DINGTALK_ORIGINS = {"https://oapi.dingtalk.com", "https://api.dingtalk.com"}


class DingTalkApiError(Exception):
    def __init__(self, message: str, *, errcode: int | None = None, status: int | None = None):
        super().__init__(message)
        self.errcode = errcode
        self.status = status


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def webhook_allowed(url: str, api_base: str | None) -> bool:
    """Only post to DingTalk's own hosts (or the configured ``api_base``), never elsewhere.

    ``sessionWebhook`` comes from the callback body; restricting its origin keeps a leaked app
    secret from turning the gateway into a request forwarder to arbitrary hosts.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    allowed = set(_DINGTALK_ORIGINS)
    if api_base:
        allowed.add(_origin(api_base))
    return _origin(url) in allowed


def webhook_expired(expired_time_ms: Any, *, now_ms: int | None = None) -> bool:
    """True when ``sessionWebhookExpiredTime`` (ms) is in the past; unknown → not expired."""
    try:
        expiry = int(expired_time_ms)
    except (TypeError, ValueError):
        return False
    current = int(time.time() * 1000) if now_ms is None else now_ms
    return expiry <= current


def text_message(text: str, at_user_ids: list[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"msgtype": "text", "text": {"content": text[:MAX_TEXT_CHARS]}}
    if at_user_ids:
        payload["at"] = {"atUserIds": at_user_ids, "isAtAll": False}
    return payload


def markdown_message(title: str, text: str, at_user_ids: list[str] | None = None
                     ) -> dict[str, Any]:
    """``msgtype: markdown``; DingTalk shows ``title`` in the conversation list. A mention needs
    the user in ``at.atUserIds`` and ``@userId`` in the text (DingTalk's "message types")."""
    payload: dict[str, Any] = {
        "msgtype": "markdown",
        "markdown": {"title": title[:MAX_TITLE_CHARS] or "Reply", "text": text},
    }
    if at_user_ids:
        payload["at"] = {"atUserIds": at_user_ids, "isAtAll": False}
    return payload


async def post_message(http: HttpClient, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST a robot message; DingTalk reports errors as HTTP 200 with ``errcode != 0``."""
    reply = await http.post_json(url, payload)
    data: dict[str, Any] = reply.data if isinstance(reply.data, dict) else {}
    errcode = data.get("errcode", 0)
    if reply.status != 200 or errcode not in (0, None):
        raise DingTalkApiError(
            f"robot send failed: {data.get('errmsg', '')}",
            errcode=errcode if isinstance(errcode, int) else None,
            status=reply.status,
        )
    return data


async def send_session_reply(
    http: HttpClient, session_webhook: str, text: str
) -> dict[str, Any]:
    return await post_message(http, session_webhook, text_message(text))


async def send_session_message(
    http: HttpClient, session_webhook: str, payload: dict[str, Any]
) -> dict[str, Any]:
    return await post_message(http, session_webhook, payload)


async def send_group_robot(
    http: HttpClient,
    webhook_url: str,
    payload: dict[str, Any],
    *,
    secret: str | None = None,
) -> dict[str, Any]:
    """Send to a group robot webhook, signing the URL when the robot has a ``SEC...`` secret."""
    return await post_message(http, signed_webhook_url(webhook_url, secret), payload)
