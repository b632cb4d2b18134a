"""DingTalk callback handler through a Starlette app with real fake-platform servers."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from clawbot_app.im.builders import (
    build_dingtalk_event_request,
    build_dingtalk_robot_request,
    dingtalk_robot_message,
)
from clawbot_app.im.dingtalk_crypto import DingTalkEventCrypto

from .support import DT_AES_KEY, DT_APP_KEY, DT_TOKEN, FakeChat, resend_robot_message, wait_for

PATHS = ["/dingtalk/callback", "/api/dingtalk/callback"]


def _webhook(fake: Any, session: str = "sess-1") -> str:
    return f"{fake.base_url}/robot/sendBySession?session={session}"


@pytest.mark.parametrize("path", PATHS)
async def test_robot_message_answered_through_session_webhook(harness, dingtalk_fake, path):
    settings = harness.services.settings
    body = dingtalk_robot_message(text=" hello bot", session_webhook=_webhook(dingtalk_fake),
                                  conversation_id="cidABC", sender_staff_id="staff42")
    headers, raw = build_dingtalk_robot_request(settings, body)
    resp = await harness.client.post(path, content=raw, headers=headers)
    assert resp.status_code == 200
    assert resp.json() == {}
    await wait_for(lambda: len(dingtalk_fake.session_messages) == 1)
    assert dingtalk_fake.session_messages.items() == [
        {"session": "sess-1", "msgtype": "markdown", "title": "echo: hello bot",
         "text": "echo: hello bot", "at": []}]
    call = harness.services.chat.calls[0]
    assert call["tenant_id"] == "dingtalk:cidABC"
    assert call["user_id"] == "staff42"
    assert call["session_id"] == "dingtalk:cidABC:staff42"
    assert call["message"] == "hello bot"
    assert call["path"] == path
    assert harness.services.failures("dingtalk") == 0


async def test_ack_does_not_wait_for_chat(harness, dingtalk_fake):
    harness.services.chat.delay = 1.5
    body = dingtalk_robot_message(text="slow", session_webhook=_webhook(dingtalk_fake))
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body)
    start = time.monotonic()
    resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
    assert resp.status_code == 200
    assert time.monotonic() - start < 1.0
    await wait_for(lambda: len(dingtalk_fake.session_messages) == 1, timeout=5)


async def test_stale_timestamp_rejected(harness, dingtalk_fake):
    body = dingtalk_robot_message(text="hi", session_webhook=_webhook(dingtalk_fake))
    old = int(time.time() * 1000) - 3600_000 - 5000
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body, timestamp_ms=old)
    resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "stale_timestamp"
    assert harness.services.failures("dingtalk") == 1
    assert harness.services.chat.calls == []


async def test_forged_sign_rejected_and_logged_without_secrets(harness, dingtalk_fake, caplog):
    body = dingtalk_robot_message(text="top secret text", session_webhook=_webhook(dingtalk_fake))
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body)
    headers["sign"] = "Zm9yZ2VkIHNpZ25hdHVyZQ=="
    with caplog.at_level(logging.INFO, logger="clawbot_app.im"):
        resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
    assert resp.status_code == 401
    assert resp.json() == {"error": {"code": "invalid_signature", "message": "sign mismatch"}}
    assert harness.services.failures("dingtalk") == 1
    assert "dingtalk callback rejected" in caplog.text
    secret = harness.services.settings.dingtalk.app_secret.get_secret_value()
    assert secret not in caplog.text and "top secret text" not in caplog.text


async def test_missing_sign_headers_rejected(harness):
    resp = await harness.client.post("/dingtalk/callback", json={"msgtype": "text"})
    assert resp.status_code == 401
    assert harness.services.failures("dingtalk") == 1


async def test_malformed_json_with_valid_sign(harness):
    headers, _ = build_dingtalk_robot_request(harness.services.settings, {})
    resp = await harness.client.post("/dingtalk/callback", content=b"{not json", headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_event"


async def test_duplicate_msg_id_processed_once(harness, dingtalk_fake):
    body = dingtalk_robot_message(text="once", session_webhook=_webhook(dingtalk_fake),
                                  msg_id="msgDUP1")
    assert await resend_robot_message(harness.client, harness.services.settings, body) == \
        [200, 200, 200]
    await harness.services.drain()
    assert len(harness.services.chat.calls) == 1
    assert len(dingtalk_fake.session_messages) == 1


async def test_expired_session_webhook_not_used(harness, dingtalk_fake, caplog):
    body = dingtalk_robot_message(text="late", session_webhook=_webhook(dingtalk_fake),
                                  expires_in_ms=-1000)
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body)
    with caplog.at_level(logging.INFO, logger="clawbot_app.im"):
        resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
        assert resp.status_code == 200
        await harness.services.drain()
    assert len(harness.services.chat.calls) == 1
    assert len(dingtalk_fake.session_messages) == 0
    assert "sessionWebhook expired" in caplog.text


async def test_foreign_session_webhook_host_refused(harness, dingtalk_fake, caplog):
    body = dingtalk_robot_message(text="x", session_webhook="http://127.0.0.1:1/steal")
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body)
    with caplog.at_level(logging.INFO, logger="clawbot_app.im"):
        resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
        assert resp.status_code == 200
        await harness.services.drain()
    assert "host not allowed" in caplog.text
    assert len(dingtalk_fake.session_messages) == 0


async def test_chat_failure_sends_short_notice(harness, dingtalk_fake):
    harness.services.chat = FakeChat(error=RuntimeError("provider down: key sk-123"))
    body = dingtalk_robot_message(text="hi", session_webhook=_webhook(dingtalk_fake))
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body)
    assert (await harness.client.post("/dingtalk/callback", content=raw,
                                      headers=headers)).status_code == 200
    await wait_for(lambda: len(dingtalk_fake.session_messages) == 1)
    text = dingtalk_fake.session_messages.items()[0]["text"]
    assert "unavailable" in text and "sk-123" not in text


async def test_non_text_message_acknowledged_without_chat(harness, dingtalk_fake):
    body = dingtalk_robot_message(text="x", session_webhook=_webhook(dingtalk_fake))
    body["msgtype"] = "picture"
    body.pop("text")
    headers, raw = build_dingtalk_robot_request(harness.services.settings, body)
    resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
    assert resp.status_code == 200
    await harness.services.drain()
    assert harness.services.chat.calls == []


@pytest.mark.parametrize("settings_overrides", [{"dingtalk": {"app_secret": None}}])
async def test_not_configured(harness):
    headers, raw = {"timestamp": "1", "sign": "x"}, b"{}"
    resp = await harness.client.post("/dingtalk/callback", content=raw, headers=headers)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "not_configured"
    assert "platform not configured" in resp.json()["error"]["message"]


# --------------------------------------------------------------------------- event pushes


def _crypto(owner: str = DT_APP_KEY) -> DingTalkEventCrypto:
    return DingTalkEventCrypto(DT_TOKEN, DT_AES_KEY, owner)


def _assert_encrypted_success(resp: Any, owner: str = DT_APP_KEY) -> None:
    assert resp.status_code == 200
    data = resp.json()
    assert set(data) == {"msg_signature", "encrypt", "timeStamp", "nonce"}
    crypto = _crypto(owner)
    crypto.verify_signature(data["msg_signature"], data["timeStamp"], data["nonce"],
                            data["encrypt"])
    assert crypto.decrypt(data["encrypt"]) == "success"


@pytest.mark.parametrize("path", PATHS)
async def test_check_url_answered_with_encrypted_success(harness, path):
    params, raw = build_dingtalk_event_request(harness.services.settings,
                                               {"EventType": "check_url"})
    resp = await harness.client.post(path, params=params, content=raw)
    _assert_encrypted_success(resp)


async def test_event_with_legacy_query_names(harness):
    params, raw = build_dingtalk_event_request(
        harness.services.settings, {"EventType": "user_add_org", "UserId": ["u1"]})
    legacy = {"signature": params["msg_signature"], "timestamp": params["timeStamp"],
              "nonce": params["nonce"]}
    resp = await harness.client.post("/dingtalk/callback", params=legacy, content=raw)
    _assert_encrypted_success(resp)


async def test_event_forged_signature(harness):
    params, raw = build_dingtalk_event_request(harness.services.settings,
                                               {"EventType": "check_url"})
    params["msg_signature"] = "f" * 40
    resp = await harness.client.post("/dingtalk/callback", params=params, content=raw)
    assert resp.status_code == 401
    assert harness.services.failures("dingtalk") == 1


async def test_event_for_another_owner_key(harness):
    other = _crypto("dingSomeoneElse")
    ts = str(int(time.time() * 1000))
    encrypt = other.encrypt(json.dumps({"EventType": "check_url"}))
    params = {"msg_signature": other.signature(ts, "n1", encrypt), "timeStamp": ts, "nonce": "n1"}
    resp = await harness.client.post("/dingtalk/callback", params=params,
                                     content=json.dumps({"encrypt": encrypt}))
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_event"
    assert harness.services.failures("dingtalk") == 1


async def test_event_replayed_after_an_hour(harness):
    old = int(time.time() * 1000) - 2 * 3600_000
    params, raw = build_dingtalk_event_request(harness.services.settings,
                                               {"EventType": "check_url"}, timestamp_ms=old)
    resp = await harness.client.post("/dingtalk/callback", params=params, content=raw)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "stale_timestamp"


async def test_event_missing_encrypt(harness):
    resp = await harness.client.post(
        "/dingtalk/callback", params={"msg_signature": "x", "timeStamp": "1", "nonce": "n"},
        content=b'{"foo": 1}')
    assert resp.status_code == 400


@pytest.mark.parametrize("settings_overrides", [{"dingtalk": {"owner_key": "dingcorp123"}}])
async def test_event_owner_key_setting_overrides_app_key(harness):
    params, raw = build_dingtalk_event_request(harness.services.settings,
                                               {"EventType": "check_url"})
    resp = await harness.client.post("/dingtalk/callback", params=params, content=raw)
    _assert_encrypted_success(resp, owner="dingcorp123")


@pytest.mark.parametrize("settings_overrides", [{"dingtalk": {"token": None}}])
async def test_event_not_configured(harness):
    resp = await harness.client.post(
        "/dingtalk/callback", params={"msg_signature": "x", "timeStamp": "1", "nonce": "n"},
        content=b'{"encrypt": "abc"}')
    assert resp.status_code == 503
