"""The DingTalk and Feishu fakes (tests/fakes/) against the published vectors and over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from ansible_collections.clawbot.stack.tests.fakes import dingtalk, feishu
from ansible_collections.clawbot.stack.tests.fakes.httpd import FakeServer

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "contracts" / "im_vectors.json").read_text())


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --------------------------------------------------------------------------- published and pinned vectors


def test_dingtalk_robot_sign_pinned_vector() -> None:
    v = VECTORS["dingtalk_robot_sign"]
    assert dingtalk.robot_sign(v["secret"], v["timestamp"]) == v["sign"]


def test_dingtalk_event_cipher_published_vector() -> None:
    v = VECTORS["dingtalk_event"]
    cipher = dingtalk.EventCipher(v["token"], v["aes_key"], v["owner_key"])
    assert cipher.signature(v["timestamp"], v["nonce"], v["encrypt"]) == v["msg_signature"]
    assert cipher.decrypt(v["encrypt"]) == (v["plaintext"], v["owner_key"].encode())
    assert cipher.decrypt(cipher.encrypt("往返 round trip")) == ("往返 round trip", v["owner_key"].encode())


def test_feishu_decrypt_published_vector() -> None:
    v = VECTORS["feishu_decrypt"]
    assert feishu.decrypt(v["encrypt_key"], v["encrypt"]) == v["plaintext"]


# --------------------------------------------------------------------------- DingTalk over HTTP


@pytest.fixture
def dingtalk_server():
    fake = dingtalk.FakeDingTalk(robot_token="rt", robot_secret="SECsecret")
    with FakeServer(fake, max_lifetime=60) as server:
        yield server


def test_dingtalk_robot_send_verifies_timestamp_and_sign(dingtalk_server: FakeServer) -> None:
    ts = str(int(time.time() * 1000))
    base = f"{dingtalk_server.base_url}/robot/send?access_token=rt&timestamp={ts}"
    message = {"msgtype": "text", "text": {"content": "alert"}}
    good = quote_plus(dingtalk.robot_sign("SECsecret", ts))
    assert post(f"{base}&sign={good}", message) == (200, {"errcode": 0, "errmsg": "ok"})
    assert post(f"{base}&sign={quote_plus(dingtalk.robot_sign('SECother', ts))}", message)[1]["errmsg"] == \
        dingtalk.SIGN_NOT_MATCH
    stale = str(int(ts) - 2 * 3600 * 1000)
    stale_url = f"{dingtalk_server.base_url}/robot/send?access_token=rt&timestamp={stale}"
    assert post(f"{stale_url}&sign={quote_plus(dingtalk.robot_sign('SECsecret', stale))}", message)[1] == \
        {"errcode": 310000, "errmsg": dingtalk.INVALID_TIMESTAMP}
    assert post(f"{dingtalk_server.base_url}/robot/send?access_token=nope", message)[1]["errcode"] == 300005
    assert post(f"{base}&sign={good}", {"msgtype": "image"})[1]["errcode"] == 40035
    assert dingtalk_server.app.robot_messages.items() == [message]


def test_dingtalk_session_webhook(dingtalk_server: FakeServer) -> None:
    url = f"{dingtalk_server.base_url}/robot/sendBySession?session=s1"
    assert post(url, {"msgtype": "text", "text": {"content": "hi"}}) == (200, {"errcode": 0, "errmsg": "ok"})
    assert post(url, {"msgtype": "markdown", "markdown": {"title": "t", "text": "**b**"}})[1]["errcode"] == 0
    assert post(url, b"{broken")[1]["errcode"] == 40035
    assert post(f"{dingtalk_server.base_url}/robot/sendBySession", {"msgtype": "text"})[1]["errcode"] == 300001
    mention = {"msgtype": "markdown", "markdown": {"title": "t", "text": "@u1 hi"},
               "at": {"atUserIds": ["u1"], "isAtAll": False}}
    assert post(url, mention)[1]["errcode"] == 0
    assert dingtalk_server.app.session_messages.items() == [
        {"session": "s1", "msgtype": "text", "text": "hi", "at": []},
        {"session": "s1", "msgtype": "markdown", "title": "t", "text": "**b**", "at": []},
        {"session": "s1", "msgtype": "markdown", "title": "t", "text": "@u1 hi", "at": ["u1"]}]


def test_dingtalk_access_tokens(dingtalk_server: FakeServer) -> None:
    fake = dingtalk_server.app
    assert post(f"{dingtalk_server.base_url}/v1.0/oauth2/accessToken",
                {"appKey": fake.app_key, "appSecret": fake.app_secret}) == \
        (200, {"accessToken": fake.oauth2_token, "expireIn": 7200})
    status, doc = post(f"{dingtalk_server.base_url}/v1.0/oauth2/accessToken", {"appKey": fake.app_key})
    assert (status, doc["code"]) == (400, "invalidClientIdOrSecret")
    with urllib.request.urlopen(f"{dingtalk_server.base_url}/gettoken?appkey={fake.app_key}&appsecret=x",
                                timeout=5) as response:
        assert json.loads(response.read())["errcode"] == 40089


# --------------------------------------------------------------------------- Feishu over HTTP


def test_feishu_token_reply_and_hook() -> None:
    fake = feishu.FakeFeishu(hook_token="hk", hook_secret="hook-secret")
    with FakeServer(fake, max_lifetime=60) as server:
        status, doc = post(f"{server.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                           {"app_id": fake.app_id, "app_secret": fake.app_secret})
        assert (status, doc["code"], doc["expire"]) == (200, 0, 7200)
        token = doc["tenant_access_token"]
        assert post(f"{server.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                    {"app_id": fake.app_id, "app_secret": "no"})[1]["code"] == 10014
        reply = f"{server.base_url}/open-apis/im/v1/messages/om_1/reply"
        message = {"msg_type": "text", "content": json.dumps({"text": "hello"})}
        assert post(reply, message, {"Authorization": f"Bearer {token}"})[1]["code"] == 0
        assert post(reply, message, {"Authorization": "Bearer t-forged"}) == \
            (400, {"code": 99991663, "msg": "Invalid access token for authorization."})
        fake.throttle_next = 1
        assert post(reply, message, {"Authorization": f"Bearer {token}"})[0] == 429
        assert post(reply, {"msg_type": "text", "content": {"text": "not a string"}},
                    {"Authorization": f"Bearer {token}"})[1]["code"] == 230001
        card = {"config": {"wide_screen_mode": True}, "elements": [{"tag": "markdown", "content": "**hi**"}]}
        card_message = {"msg_type": "interactive", "content": json.dumps(card)}
        assert post(reply, card_message, {"Authorization": f"Bearer {token}"})[1]["code"] == 0
        empty_card = {"msg_type": "interactive", "content": json.dumps({"elements": []})}
        assert post(reply, empty_card, {"Authorization": f"Bearer {token}"})[1]["code"] == 230001
        too_long = {"msg_type": "interactive", "content": json.dumps(dict(card, pad="x" * 31_000))}
        assert post(reply, too_long, {"Authorization": f"Bearer {token}"}) == \
            (400, {"code": 230025, "msg": "The length of the message content reaches its limit."})
        assert fake.replies.items() == [
            {"message_id": "om_1", "msg_type": "text", "text": "hello", "card": None, "token": token},
            {"message_id": "om_1", "msg_type": "interactive", "text": "**hi**", "card": card, "token": token}]

        ts = str(int(time.time()))
        hook = f"{server.base_url}/open-apis/bot/v2/hook/hk"
        signed = {"timestamp": ts, "sign": feishu.hook_sign("hook-secret", ts), "msg_type": "text",
                  "content": {"text": "alert"}}
        assert post(hook, signed) == (200, {"code": 0, "msg": "success", "data": {}})
        assert post(hook, dict(signed, sign=feishu.hook_sign("other", ts)))[1]["code"] == 19021
        assert post(f"{server.base_url}/open-apis/bot/v2/hook/nope", signed)[1]["code"] == 19001
        assert fake.hook_messages.items() == [signed]
