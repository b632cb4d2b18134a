"""Outbound clients against the fake Feishu/DingTalk servers (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json

import pytest

from clawbot_app.httpclient import HttpClient
from clawbot_app.im import dingtalk_api, feishu_api

from .support import FS_APP_ID, FS_APP_SECRET


@pytest.fixture
async def http():
    client = await HttpClient.open()
    yield client
    await client.aclose()


async def test_tenant_token_good_and_bad_secret(http, feishu_fake):
    token, expire = await feishu_api.fetch_tenant_token(
        http, feishu_fake.base_url, FS_APP_ID, FS_APP_SECRET)
    assert token.startswith("t-") and expire == 7200
    with pytest.raises(feishu_api.FeishuApiError) as err:
        await feishu_api.fetch_tenant_token(http, feishu_fake.base_url, FS_APP_ID, "bad")
    assert err.value.code == 10014


async def test_token_cache_refreshes_shortly_before_expiry(http, feishu_fake):
    feishu_fake.expire = 2  # margin = min(300, expire / 2) = 1 s
    cache = feishu_api.FeishuTokenCache()
    first = await cache.tenant_token(http, feishu_fake.base_url, FS_APP_ID, FS_APP_SECRET)
    assert await cache.tenant_token(http, feishu_fake.base_url, FS_APP_ID, FS_APP_SECRET) == first
    await asyncio.sleep(1.1)
    second = await cache.tenant_token(http, feishu_fake.base_url, FS_APP_ID, FS_APP_SECRET)
    assert second != first
    assert len(feishu_fake.token_requests) == 2
    feishu_fake.expire = 7200


async def test_concurrent_token_requests_coalesce(http, feishu_fake):
    cache = feishu_api.FeishuTokenCache()
    tokens = await asyncio.gather(*[
        cache.tenant_token(http, feishu_fake.base_url, FS_APP_ID, FS_APP_SECRET)
        for _ in range(10)])
    assert len(set(tokens)) == 1
    assert len(feishu_fake.token_requests) == 1


async def test_reply_sends_json_string_content(http, feishu_fake):
    cache = feishu_api.FeishuTokenCache()
    text = 'quote " backslash \\ newline \n 中文'
    data = await feishu_api.reply_text(
        http, cache, api_base=feishu_fake.base_url, app_id=FS_APP_ID, app_secret=FS_APP_SECRET,
        message_id="om_1", text=text)
    assert data["code"] == 0
    assert feishu_fake.replies.items()[0]["text"] == text
    assert json.loads(feishu_api.text_content(text)) == {"text": text}


async def test_reply_refreshes_revoked_token_once(http, feishu_fake):
    cache = feishu_api.FeishuTokenCache()
    await cache.tenant_token(http, feishu_fake.base_url, FS_APP_ID, FS_APP_SECRET)
    feishu_fake.revoke_all_tokens()
    await feishu_api.reply_text(
        http, cache, api_base=feishu_fake.base_url, app_id=FS_APP_ID, app_secret=FS_APP_SECRET,
        message_id="om_2", text="after refresh")
    assert len(feishu_fake.rejected_replies) == 1
    assert len(feishu_fake.token_requests) == 2
    assert feishu_fake.replies.items()[0]["message_id"] == "om_2"


async def test_reply_retries_once_when_throttled(http, feishu_fake):
    feishu_fake.throttle_next = 1
    cache = feishu_api.FeishuTokenCache()
    await feishu_api.reply_text(
        http, cache, api_base=feishu_fake.base_url, app_id=FS_APP_ID, app_secret=FS_APP_SECRET,
        message_id="om_3", text="t", retry_delay=0.01)
    assert len(feishu_fake.replies) == 1
    feishu_fake.throttle_next = 2
    with pytest.raises(feishu_api.FeishuApiError) as err:
        await feishu_api.reply_text(
            http, cache, api_base=feishu_fake.base_url, app_id=FS_APP_ID,
            app_secret=FS_APP_SECRET, message_id="om_4", text="t", retry_delay=0.01)
    assert err.value.code == 99991400 and err.value.status == 429


async def test_session_webhook_reply(http, dingtalk_fake):
    url = f"{dingtalk_fake.base_url}/robot/sendBySession?session=s9"
    await dingtalk_api.send_session_reply(http, url, "hi there")
    assert dingtalk_fake.session_messages.items() == [
        {"session": "s9", "msgtype": "text", "text": "hi there", "at": []}]
    with pytest.raises(dingtalk_api.DingTalkApiError) as err:
        await dingtalk_api.send_session_reply(
            http, f"{dingtalk_fake.base_url}/robot/sendBySession", "x")
    assert err.value.errcode == 300001


async def test_group_robot_signed_webhook(http, dingtalk_fake):
    url = f"{dingtalk_fake.base_url}/robot/send?access_token={dingtalk_fake.robot_token}"
    payload = {"msgtype": "text", "text": {"content": "alert"}}
    await dingtalk_api.send_group_robot(http, url, payload, secret=dingtalk_fake.robot_secret)
    assert dingtalk_fake.robot_messages.items() == [payload]
    with pytest.raises(dingtalk_api.DingTalkApiError) as err:
        await dingtalk_api.send_group_robot(http, url, payload, secret="SECwrong")
    assert err.value.errcode == 310000


def test_session_webhook_origin_policy():
    base = "http://127.0.0.1:5555"
    assert dingtalk_api.webhook_allowed("https://oapi.dingtalk.com/robot/sendBySession?s=1", None)
    assert dingtalk_api.webhook_allowed(f"{base}/robot/sendBySession?s=1", base)
    assert not dingtalk_api.webhook_allowed("https://evil.example/robot/sendBySession", base)
    assert not dingtalk_api.webhook_allowed("http://oapi.dingtalk.com/robot", None)
    assert not dingtalk_api.webhook_allowed("file:///etc/passwd", None)
    assert dingtalk_api.webhook_expired(1000, now_ms=2000)
    assert not dingtalk_api.webhook_expired(3000, now_ms=2000)
    assert not dingtalk_api.webhook_expired(None)
