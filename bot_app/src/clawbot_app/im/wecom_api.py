"""Outbound WeCom (企业微信) server API calls: ``access_token`` (cached) and app messages.

* ``GET {base}/cgi-bin/gettoken?corpid=ID&corpsecret=SECRET`` →
  ``{"errcode": 0, "access_token", "expires_in": 7200}``; callers must cache it
  (developer.work.weixin.qq.com/document/path/91039).
* ``POST {base}/cgi-bin/message/send?access_token=T`` with ``{"touser", "msgtype", "agentid",
  "text"|"markdown": {"content"}}`` (document/path/90236); content at most 2048 bytes.

Every answer is HTTP 200 with ``errcode``/``errmsg``. A token the platform no longer takes
(40001 invalid credential, 40014 invalid access_token, 42001 access_token expired) is fetched
anew once and the message sent again; 45009 (API frequency limit) is waited out once.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

from clawbot_app.httpclient import HttpClient, JsonReply
from clawbot_app.im.tokens import TokenCache

TOKEN_PATH = "/cgi-bin/gettoken"
SEND_PATH = "/cgi-bin/message/send"
MAX_CONTENT_BYTES = 2048
TOKEN_INVALID_CODES = frozenset({40001, 40014, 42001})
RATE_LIMITED_CODE = 45009


class WeComApiError(Exception):
    def __init__(self, message: str, *, errcode: int | None = None, status: int | None = None):
        super().__init__(message)
        self.errcode = errcode
        self.status = status


def _answer(reply: JsonReply) -> tuple[int | None, dict[str, Any]]:
    data = reply.data if isinstance(reply.data, dict) else {}
    errcode = data.get("errcode")
    return (errcode if isinstance(errcode, int) else None), data


async def fetch_access_token(
    http: HttpClient, api_base: str, corp_id: str, corp_secret: str
) -> tuple[str, int]:
    """``(access_token, expires_in)``; raises :class:`WeComApiError` with the platform's code."""
    query = urllib.parse.urlencode({"corpid": corp_id, "corpsecret": corp_secret})
    reply = await http.get_json(f"{api_base.rstrip('/')}{TOKEN_PATH}?{query}")
    errcode, data = _answer(reply)
    token = data.get("access_token")
    if reply.status != 200 or errcode != 0 or not isinstance(token, str) or not token:
        raise WeComApiError(f"gettoken failed: {str(data.get('errmsg', ''))[:200]}",
                            errcode=errcode, status=reply.status)
    expires = data.get("expires_in")
    return token, expires if isinstance(expires, int) and expires > 0 else 7200


class WeComTokenCache(TokenCache):
    """``access_token`` per ``(api_base, corp_id, corp_secret)`` (:class:`TokenCache`)."""

    @staticmethod
    def _key(api_base: str, corp_id: str, corp_secret: str) -> tuple[str, str, str]:
        return api_base.rstrip("/"), corp_id, corp_secret

    def invalidate_app(self, api_base: str, corp_id: str, corp_secret: str) -> None:
        self.invalidate(self._key(api_base, corp_id, corp_secret))

    async def access_token(
        self, http: HttpClient, api_base: str, corp_id: str, corp_secret: str
    ) -> str:
        return await self.get(
            self._key(api_base, corp_id, corp_secret),
            lambda: fetch_access_token(http, api_base, corp_id, corp_secret),
        )


def message_body(to_user: str, agent_id: int, text: str, *, markdown: bool) -> dict[str, Any]:
    msgtype = "markdown" if markdown else "text"
    return {"touser": to_user, "msgtype": msgtype, "agentid": agent_id,
            msgtype: {"content": text}}


async def send_message(
    http: HttpClient,
    tokens: WeComTokenCache,
    *,
    api_base: str,
    corp_id: str,
    corp_secret: str,
    agent_id: int,
    to_user: str,
    text: str,
    markdown: bool,
    retry_delay: float = 1.0,
) -> dict[str, Any]:
    """Send an app message to ``to_user``; see the module docstring for the retries."""
    body = message_body(to_user, agent_id, text, markdown=markdown)
    url = api_base.rstrip("/") + SEND_PATH
    refreshed = throttled = False
    while True:
        token = await tokens.access_token(http, api_base, corp_id, corp_secret)
        query = urllib.parse.urlencode({"access_token": token})
        reply = await http.post_json(f"{url}?{query}", body)
        errcode, data = _answer(reply)
        if reply.status == 200 and errcode == 0:
            return data
        if errcode in TOKEN_INVALID_CODES and not refreshed:
            refreshed = True
            tokens.invalidate_app(api_base, corp_id, corp_secret)
            continue
        if errcode == RATE_LIMITED_CODE and not throttled:
            throttled = True
            await asyncio.sleep(retry_delay)
            continue
        raise WeComApiError(f"message/send failed: {str(data.get('errmsg', ''))[:200]}",
                            errcode=errcode, status=reply.status)
