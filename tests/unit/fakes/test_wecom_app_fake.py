"""The WeCom fake's application API and callback stand-in (tests/fakes/wecom.py): the official vectors
and real HTTP through FakeServer, asserting on what a client sees."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.clawbot.stack.tests.fakes import wecom
from ansible_collections.clawbot.stack.tests.fakes.httpd import FakeServer

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "contracts" / "im_vectors.json").read_text())
WC = VECTORS["wecom"]
CORP_ID = "wwclawbotcorp00001"
CORP_SECRET = "wecom-corp-secret-Zq81xV"
AGENT_ID = 1000002
TOKEN = "wc-callback-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def call_raw(method: str, url: str, body: Any = None) -> tuple[int, str, str]:
    """``(status, body text, content type)``."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read().decode(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Content-Type", "")


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    """``(status, JSON body)``; the text itself when it is not JSON."""
    status, text = call_raw(method, url, body)[:2]
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(clock: Clock) -> Iterator[FakeServer]:
    fake = wecom.FakeWeCom(corp_id=CORP_ID, corp_secret=CORP_SECRET, agent_id=AGENT_ID, clock=clock)
    with FakeServer(fake, max_lifetime=60) as server:
        yield server


def gettoken(api: FakeServer, corpid: str = CORP_ID, secret: str = CORP_SECRET) -> dict[str, Any]:
    status, answer = call("GET", f"{api.base_url}/cgi-bin/gettoken?corpid={corpid}&corpsecret={secret}")
    assert status == 200
    return answer


def send(api: FakeServer, token: str, **fields: Any) -> dict[str, Any]:
    body = {"touser": "zhangsan", "msgtype": "text", "agentid": AGENT_ID, "text": {"content": "hello"}}
    body.update(fields)
    body = {name: value for name, value in body.items() if value is not None}
    status, answer = call("POST", f"{api.base_url}/cgi-bin/message/send?access_token={token}", body)
    assert status == 200
    return answer


# --------------------------------------------------------------------------- official vectors


def test_cipher_official_url_verification_vector() -> None:
    v = WC["url_verification"]
    cipher = wecom.WeComCipher(WC["token"], WC["aes_key"], WC["corp_id"])
    assert cipher.signature(v["timestamp"], v["nonce"], v["echostr"]) == v["msg_signature"]
    assert cipher.decrypt(v["echostr"]) == (v["plaintext"], WC["corp_id"].encode())


def test_cipher_official_message_vector_and_round_trip() -> None:
    v = WC["message"]
    cipher = wecom.WeComCipher(WC["token"], WC["aes_key"], WC["corp_id"])
    assert cipher.signature(v["timestamp"], v["nonce"], v["encrypt"]) == v["msg_signature"]
    message, receive_id = cipher.decrypt(v["encrypt"])
    assert (message, receive_id) == (v["plaintext"], b"wx5823bf96d3bd56c7")
    assert "<Content><![CDATA[hello]]></Content>" in message and "<AgentID>218</AgentID>" in message
    assert cipher.decrypt(cipher.encrypt("企业微信 round trip")) == ("企业微信 round trip", WC["corp_id"].encode())


def test_the_docs_text_message_shape_is_rebuilt_by_the_helper() -> None:
    built = wecom.text_message_xml("wx5823bf96d3bd56c7", "mycreate", "hello", agent_id=218,
                                   msg_id="4561255354251345929", create_time=1409659813)
    assert built == WC["message"]["plaintext"]


# --------------------------------------------------------------------------- gettoken


def test_gettoken_issues_a_token_and_hands_it_out_again_while_valid(api: FakeServer, clock: Clock) -> None:
    first = gettoken(api)
    assert first == {"errcode": 0, "errmsg": "ok", "access_token": "wecom-token-000001", "expires_in": 7200}
    assert gettoken(api)["access_token"] == "wecom-token-000001"
    clock.now += 7200
    assert gettoken(api)["access_token"] == "wecom-token-000002"
    assert api.app.token_requests.items() == [{"corpid": CORP_ID, "errcode": 0}] * 3


@pytest.mark.parametrize(("query", "errcode", "text"), [
    (f"corpid=ww-unknown&corpsecret={CORP_SECRET}", 40013, "invalid corpid, hint: ["),
    (f"corpid={CORP_ID}&corpsecret=wrong-secret", 40001, "invalid credential, hint: ["),
    (f"corpid={CORP_ID}", 41004, "corpsecret missing"),
    ("corpsecret=x", 41002, "corpid missing"),
])
def test_gettoken_errors(api: FakeServer, query: str, errcode: int, text: str) -> None:
    status, answer = call("GET", f"{api.base_url}/cgi-bin/gettoken?{query}")
    assert status == 200
    assert answer["errcode"] == errcode and answer["errmsg"].startswith(text)
    assert answer["errmsg"].endswith(f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}")
    assert "access_token" not in answer
    assert api.app.token_requests.items()[-1]["errcode"] == errcode


def test_fixed_access_token_and_expires_in() -> None:
    fake = wecom.FakeWeCom(corp_id=CORP_ID, corp_secret=CORP_SECRET, access_token="fixed-token", expires_in=60)
    with FakeServer(fake, max_lifetime=60) as server:
        assert gettoken(server) == {"errcode": 0, "errmsg": "ok", "access_token": "fixed-token", "expires_in": 60}


# --------------------------------------------------------------------------- message/send


def test_message_send_accepts_text_and_markdown(api: FakeServer) -> None:
    token = gettoken(api)["access_token"]
    assert send(api, token) == {"errcode": 0, "errmsg": "ok", "invaliduser": "",
                                "msgid": "fake_msgid_000000000001"}
    markdown = {"content": "**alert** 告警"}
    assert send(api, token, msgtype="markdown", text=None, markdown=markdown, touser=None, toparty="2")["errcode"] == 0
    assert send(api, token, agentid=str(AGENT_ID), touser=None, totag="7")["errcode"] == 0
    recorded = api.app.app_messages.items()
    assert [message["msgtype"] for message in recorded] == ["text", "markdown", "text"]
    assert recorded[1]["markdown"] == markdown and recorded[1]["toparty"] == "2"


@pytest.mark.parametrize(("fields", "errcode"), [
    ({"agentid": 1000003}, 40056),
    ({"agentid": None}, 40056),
    ({"touser": None}, 81013),
    ({"touser": "", "toparty": " "}, 81013),
    ({"msgtype": "image"}, 40008),
    ({"text": {"content": ""}}, 44004),
    ({"text": "hello"}, 44004),
    ({"msgtype": "markdown", "markdown": {"content": "x" * 2049}}, 45002),
])
def test_message_send_rejections(api: FakeServer, fields: dict[str, Any], errcode: int) -> None:
    token = gettoken(api)["access_token"]
    answer = send(api, token, **fields)
    assert answer["errcode"] == errcode
    assert f"e={errcode}" in answer["errmsg"]
    assert api.app.app_messages.items() == []


def test_message_send_truncates_text_over_2048_bytes(api: FakeServer) -> None:
    token = gettoken(api)["access_token"]
    long_text = "告" * 700  # 2100 bytes: cut at 2048 bytes, on a character boundary
    assert send(api, token, text={"content": long_text})["errcode"] == 0
    (delivered,) = api.app.app_messages.items()
    assert delivered["text"]["content"] == "告" * 682


def test_message_send_not_json_is_47001(api: FakeServer) -> None:
    token = gettoken(api)["access_token"]
    status, answer = call("POST", f"{api.base_url}/cgi-bin/message/send?access_token={token}", b"{not json")
    assert (status, answer["errcode"]) == (200, 47001)


def test_tokens_unknown_missing_expired_revoked(api: FakeServer, clock: Clock) -> None:
    assert send(api, "forged") == {"errcode": 40014, "errmsg": "invalid access_token"}
    assert call("POST", f"{api.base_url}/cgi-bin/message/send", {"touser": "a"})[0] == 200
    answer = call("POST", f"{api.base_url}/cgi-bin/message/send", {"touser": "a"})[1]
    assert answer["errcode"] == 41001
    token = gettoken(api)["access_token"]
    api.app.expire_all_tokens()
    assert send(api, token)["errcode"] == 42001
    assert send(api, token)["errmsg"].startswith("access_token expired, hint: [")
    fresh = gettoken(api)["access_token"]
    assert fresh != token and send(api, fresh)["errcode"] == 0
    api.app.revoke_all_tokens()
    assert send(api, fresh)["errcode"] == 40014
    newer = gettoken(api)["access_token"]
    clock.now += 7200
    assert send(api, newer)["errcode"] == 42001
    assert len(api.app.app_messages) == 1


def test_agent_get(api: FakeServer) -> None:
    token = gettoken(api)["access_token"]
    status, answer = call("GET", f"{api.base_url}/cgi-bin/agent/get?access_token={token}&agentid={AGENT_ID}")
    assert (status, answer["errcode"], answer["agentid"]) == (200, 0, AGENT_ID)
    assert call("GET", f"{api.base_url}/cgi-bin/agent/get?access_token={token}&agentid=1")[1]["errcode"] == 40056
    assert call("GET", f"{api.base_url}/cgi-bin/agent/get?access_token=x&agentid=1")[1]["errcode"] == 40014


def test_fail_first_and_reset_restore_everything(api: FakeServer) -> None:
    fake = api.app
    token = gettoken(api)["access_token"]
    assert send(api, token)["errcode"] == 0
    fake.fail_first = 1
    assert call("GET", f"{api.base_url}/cgi-bin/gettoken?corpid={CORP_ID}&corpsecret={CORP_SECRET}")[0] == 503
    fake.expire_all_tokens()
    fake.reset()
    assert fake.fail_first == 0
    assert (len(fake.app_messages), len(fake.token_requests), len(fake.robot_messages)) == (0, 0, 0)
    assert send(api, token)["errcode"] == 40014  # tokens are gone with the reset
    assert gettoken(api)["access_token"] == "wecom-token-000001"
    assert call("GET", f"{api.base_url}/cgi-bin/nothing")[0] == 404


def test_robot_webhook_still_served_with_the_app_api(api: FakeServer) -> None:
    url = f"{api.base_url}/cgi-bin/webhook/send?key=wecom-fake-key"
    assert call("POST", url, {"msgtype": "text", "text": {"content": "x"}}) == (200, {"errcode": 0, "errmsg": "ok"})
    assert call("POST", url.replace("wecom-fake-key", "bad"), {"msgtype": "text"})[1]["errcode"] == 93000


# --------------------------------------------------------------------------- the callback stand-in


def verify(server: FakeServer, **overrides: str) -> tuple[int, Any]:
    """``(status, body)``: the body as text for a 200 (the answer must be the bare plaintext), JSON otherwise."""
    query = wecom.verification_query(TOKEN, AES_KEY, CORP_ID, "5718310274913820194")
    query.update(overrides)
    status, text, content_type = call_raw("GET", f"{server.base_url}/wecom/callback?{wecom.query_string(query)}")
    if status == 200:
        assert content_type.startswith("text/plain")
        return status, text
    return status, json.loads(text)


def test_callback_answers_the_official_vector() -> None:
    v = WC["url_verification"]
    callback = wecom.WeComCallback(WC["token"], WC["aes_key"], WC["corp_id"])
    query = {name: v[name] for name in ("msg_signature", "timestamp", "nonce", "echostr")}
    with FakeServer(callback, max_lifetime=60) as server:
        status, answer = call("GET", f"{server.base_url}/wecom/callback?{wecom.query_string(query)}")
    assert (status, answer["error"]["code"]) == (401, "stale_timestamp")  # 2014: outside the 1 h window
    assert callback.verifications.items() == []


def test_callback_verification_good_and_refused() -> None:
    callback = wecom.WeComCallback(TOKEN, AES_KEY, CORP_ID)
    with FakeServer(callback, max_lifetime=60) as server:
        assert verify(server) == (200, "5718310274913820194")
        status, answer = verify(server, msg_signature="0" * 40)
        assert (status, answer["error"]["code"]) == (401, "invalid_signature")
        stale = str(int(time.time()) - 2 * 3600)
        query = wecom.verification_query(TOKEN, AES_KEY, CORP_ID, timestamp=stale)
        status, answer = call("GET", f"{server.base_url}/cb?{wecom.query_string(query)}")
        assert (status, answer["error"]["code"]) == (401, "stale_timestamp")
        other_corp = wecom.verification_query(TOKEN, AES_KEY, "ww-other-corp")
        status, answer = call("GET", f"{server.base_url}/cb?{wecom.query_string(other_corp)}")
        assert (status, answer) == (400, {"error": {"code": "invalid_event", "message": "event rejected"}})
    assert callback.verifications.items() == ["5718310274913820194"]


@pytest.mark.parametrize(("mode", "expected"), [
    ("bad_signature", (401, {"error": {"code": "invalid_signature", "message": "msg_signature mismatch"}})),
    ("wrong_plaintext", (200, "5718310274913820195")),
    ("quoted", (200, '"5718310274913820194"')),
    ("trailing_newline", (200, "5718310274913820194\n")),
])
def test_callback_misbehaving_modes(mode: str, expected: tuple[int, Any]) -> None:
    with FakeServer(wecom.WeComCallback(TOKEN, AES_KEY, CORP_ID, mode), max_lifetime=60) as server:
        assert verify(server) == expected


def test_callback_echo_ciphertext_mode() -> None:
    query = wecom.verification_query(TOKEN, AES_KEY, CORP_ID)
    with FakeServer(wecom.WeComCallback(TOKEN, AES_KEY, CORP_ID, "echo_ciphertext"), max_lifetime=60) as server:
        assert call_raw("GET", f"{server.base_url}/cb?{wecom.query_string(query)}")[:2] == (200, query["echostr"])


def test_callback_decrypts_an_encrypted_post() -> None:
    callback = wecom.WeComCallback(TOKEN, AES_KEY, CORP_ID)
    xml = wecom.text_message_xml(CORP_ID, "lisi", "你好 bot")
    query, body = wecom.encrypted_post(TOKEN, AES_KEY, CORP_ID, xml)
    assert body.startswith(f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[".encode())
    assert body.endswith(b"]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>")
    with FakeServer(callback, max_lifetime=60) as server:
        assert call("POST", f"{server.base_url}/cb?{wecom.query_string(query)}", body) == (200, "")
        tampered = dict(query, nonce=query["nonce"] + "1")
        assert call("POST", f"{server.base_url}/cb?{wecom.query_string(tampered)}", body)[0] == 401
        assert call("POST", f"{server.base_url}/cb?{wecom.query_string(query)}", b"<xml/>")[0] == 401
    assert callback.messages.items() == [xml]
