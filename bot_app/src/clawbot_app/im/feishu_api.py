"""Outbound Feishu Open API calls: tenant access token (cached) and message replies."""

from __future__ import annotations

import asyncio
import json
import logging

from clawbot_app.httpclient import HttpClient, JsonReply
from clawbot_app.im.tokens import TokenCache

log = logging.getLogger("clawbot_app.im.feishu")

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
REPLY_PATH = "/open-apis/im/v1/messages/{message_id}/reply"
MAX_TEXT_CHARS = 30000
# Codes meaning "the tenant token is invalid/expired": refresh it once and retry.
_TOKEN_INVALID_CODES = {99991661, 99991663, 99991664, 99991668}
_RATE_LIMITED_CODE = 99991400


class FeishuApiError(Exception):
    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


def _json(reply: JsonReply) -> dict[str, object]:
    if reply.data is None:
        raise FeishuApiError("non-JSON response", status=reply.status)
    if not isinstance(reply.data, dict):
        raise FeishuApiError("unexpected response", status=reply.status)
    return reply.data


async def fetch_tenant_token(
    http: HttpClient, api_base: str, app_id: str, app_secret: str
) -> tuple[str, int]:
    """``POST {base}/open-apis/auth/v3/tenant_access_token/internal`` → ``(token, expire)``."""
    resp = await http.post_json(
        api_base.rstrip("/") + TOKEN_PATH, {"app_id": app_id, "app_secret": app_secret}
    )
    data = _json(resp)
    code = data.get("code")
    token = data.get("tenant_access_token")
    if resp.status != 200 or code != 0 or not isinstance(token, str) or not token:
        raise FeishuApiError(
            f"tenant token request failed: {data.get('msg', '')}",
            code=code if isinstance(code, int) else None,
            status=resp.status,
        )
    expire = data.get("expire")
    return token, int(expire) if isinstance(expire, int) and expire > 0 else 7200


class FeishuTokenCache(TokenCache):
    """Tenant tokens per ``(api_base, app_id, app_secret)`` (:class:`TokenCache`)."""

    @staticmethod
    def _key(api_base: str, app_id: str, app_secret: str) -> tuple[str, str, str]:
        return api_base.rstrip("/"), app_id, app_secret

    def invalidate_app(self, api_base: str, app_id: str, app_secret: str) -> None:
        self.invalidate(self._key(api_base, app_id, app_secret))

    async def tenant_token(
        self, http: HttpClient, api_base: str, app_id: str, app_secret: str
    ) -> str:
        return await self.get(
            self._key(api_base, app_id, app_secret),
            lambda: fetch_tenant_token(http, api_base, app_id, app_secret),
        )


def text_content(text: str) -> str:
    """Feishu ``content`` for ``msg_type=text``: a JSON-encoded string."""
    return json.dumps({"text": text[:MAX_TEXT_CHARS]}, ensure_ascii=False)


def card_content(markdown: str) -> str:
    """Feishu ``content`` for ``msg_type=interactive``: a message card (JSON-encoded string)
    with one ``markdown`` element. Card bodies are limited to 30 KB ("Send message" docs)."""
    card = {"config": {"wide_screen_mode": True},
            "elements": [{"tag": "markdown", "content": markdown}]}
    return json.dumps(card, ensure_ascii=False)


def message_body(text: str, *, card: bool) -> dict[str, str]:
    if card:
        return {"msg_type": "interactive", "content": card_content(text)}
    return {"msg_type": "text", "content": text_content(text)}


async def reply_text(
    http: HttpClient,
    tokens: FeishuTokenCache,
    *,
    api_base: str,
    app_id: str,
    app_secret: str,
    message_id: str,
    text: str,
    card: bool = False,
    retry_delay: float = 1.0,
) -> dict[str, object]:
    """Reply to ``message_id`` with a text message or a markdown card; refresh the token once
    if it is rejected, wait once when throttled."""
    url = api_base.rstrip("/") + REPLY_PATH.format(message_id=message_id)
    body = message_body(text, card=card)
    refreshed = False
    throttled = False
    while True:
        token = await tokens.tenant_token(http, api_base, app_id, app_secret)
        resp = await http.post_json(url, body, headers={"Authorization": f"Bearer {token}"})
        try:
            data = _json(resp)
        except FeishuApiError:
            data = {}
        code = data.get("code")
        if resp.status == 200 and code == 0:
            return data
        if code in _TOKEN_INVALID_CODES and not refreshed:
            refreshed = True
            tokens.invalidate_app(api_base, app_id, app_secret)
            continue
        if (resp.status == 429 or code == _RATE_LIMITED_CODE) and not throttled:
            throttled = True
            await asyncio.sleep(retry_delay)
            continue
        raise FeishuApiError(
            f"reply failed: {data.get('msg', '')}",
            code=code if isinstance(code, int) else None,
            status=resp.status,
        )
