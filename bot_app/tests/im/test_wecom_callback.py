"""WeCom app callbacks: URL verification, encrypted messages, replies through the fake WeCom."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawbot_app.im import common, msgcrypt, wecom
from clawbot_app.im.builders import (
    build_wecom_message_request,
    build_wecom_url_verification,
    wecom_text_message,
)
from clawbot_app.im.split import PLATFORM_LIMITS
from clawbot_app.logthrottle import LogThrottle

from .support import WC_AGENT_ID, WC_CORP_ID, wait_for

PATHS = ["/wecom/callback", "/api/wecom/callback"]
VECTORS = json.loads(
    (Path(__file__).resolve().parents[3] / "tests/fixtures/contracts/im_vectors.json").read_text()
)


def _url(path: str, params: dict[str, str]) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"


async def _post_message(harness, text: str, *, path: str = "/wecom/callback", **fields):
    xml = wecom_text_message(text=text, corp_id=WC_CORP_ID, **fields)
    params, body = build_wecom_message_request(harness.services.settings, xml)
    return await harness.client.post(_url(path, params), content=body,
                                     headers={"Content-Type": "text/xml"})


def test_official_vectors_verify_and_decrypt() -> None:
    """The callback-crypto samples WeCom publishes (pinned in im_vectors.json)."""
    v = VECTORS["wecom"]
    crypto = msgcrypt.MsgCrypt(v["token"], v["aes_key"], v["corp_id"])
    url = v["url_verification"]
    crypto.verify_signature(url["msg_signature"], url["timestamp"], url["nonce"], url["echostr"])
    assert crypto.decrypt(url["echostr"]) == url["plaintext"]
    msg = v["message"]
    crypto.verify_signature(msg["msg_signature"], msg["timestamp"], msg["nonce"], msg["encrypt"])
    fields = wecom.parse_xml_fields(crypto.decrypt(msg["encrypt"]))
    assert (fields["MsgType"], fields["Content"], fields["FromUserName"]) == (
        "text", "hello", "mycreate")
    assert wecom.check_timestamp_s(msg["timestamp"], now=int(msg["timestamp"]) + 10) > 0
    with pytest.raises(wecom.StaleTimestamp):
        wecom.check_timestamp_s(msg["timestamp"])  # 2014: far outside the window today


@pytest.mark.parametrize("path", PATHS)
async def test_url_verification_answers_the_plaintext(harness, path):
    params = build_wecom_url_verification(harness.services.settings, "echo-123中")
    resp = await harness.client.get(_url(path, params))
    assert resp.status_code == 200
    assert resp.text == "echo-123中"
    assert resp.headers["content-type"].startswith("text/plain")


async def test_url_verification_failures(harness):
    settings_ = harness.services.settings
    good = build_wecom_url_verification(settings_, "x")
    forged = dict(good, msg_signature="0" * 40)
    stale = build_wecom_url_verification(settings_, "x", timestamp=int(time.time()) - 7200)
    other_corp = msgcrypt.MsgCrypt("wc-callback-token", settings_.wecom.encoding_aes_key
                                   .get_secret_value(), "wwsomeoneelse")
    echostr = other_corp.encrypt("x")
    ts = str(int(time.time()))
    wrong_receiver = {"msg_signature": other_corp.signature(ts, "n1", echostr), "timestamp": ts,
                      "nonce": "n1", "echostr": echostr}
    garbage = "A" * 43 + "="  # valid base64, not a valid ciphertext
    signed_garbage = {"msg_signature": other_corp.signature(ts, "n1", garbage), "timestamp": ts,
                      "nonce": "n1", "echostr": garbage}
    answers = {}
    for name, params in [("forged", forged), ("stale", stale), ("receiver", wrong_receiver),
                         ("garbage", signed_garbage), ("no_echostr", {"timestamp": ts})]:
        resp = await harness.client.get(_url("/wecom/callback", params))
        answers[name] = (resp.status_code, resp.json())
    assert answers["forged"][0] == 401 and answers["forged"][1]["error"]["code"] == (
        "invalid_signature")
    assert answers["stale"][0] == 401 and answers["stale"][1]["error"]["code"] == (
        "stale_timestamp")
    # After the signature: one answer whatever failed (no padding or receive-id oracle).
    assert answers["receiver"] == answers["garbage"] == (
        400, {"error": {"code": "invalid_event", "message": "event rejected"}})
    assert answers["no_echostr"][0] == 400
    assert harness.services.failures("wecom") == 4


@pytest.mark.parametrize("path", PATHS)
async def test_text_message_is_answered_with_markdown(harness, wecom_fake, path):
    harness.services.chat.answer = "## Answer\n\n**bold** and `code`"
    resp = await _post_message(harness, "hello bot", path=path, from_user="lisi")
    assert resp.status_code == 200 and resp.content == b""
    await wait_for(lambda: len(wecom_fake.app_messages) == 1)
    assert wecom_fake.app_messages.items() == [{
        "touser": "lisi", "msgtype": "markdown", "agentid": WC_AGENT_ID,
        "markdown": {"content": "## Answer\n\n**bold** and `code`"}}]
    call = harness.services.chat.calls[0]
    assert (call["tenant_id"], call["user_id"], call["session_id"], call["message"]) == (
        f"wecom:{WC_CORP_ID}", "lisi", f"wecom:{WC_AGENT_ID}:lisi", "hello bot")
    assert call["path"] == path


@pytest.mark.parametrize("settings_overrides", [{"im": {"reply_format": {"wecom": "text"}}}])
async def test_text_reply_format(harness, wecom_fake):
    assert (await _post_message(harness, "plain please")).status_code == 200
    await wait_for(lambda: len(wecom_fake.app_messages) == 1)
    sent = wecom_fake.app_messages.items()[0]
    assert sent["msgtype"] == "text" and sent["text"] == {"content": "echo: plain please"}


async def test_redelivery_is_answered_once(harness, wecom_fake):
    xml = wecom_text_message(text="once", corp_id=WC_CORP_ID, msg_id="4561255354251345929")
    params, body = build_wecom_message_request(harness.services.settings, xml)
    for _ in range(3):  # WeCom retries a message it got no answer for within 5 s, 3 times
        resp = await harness.client.post(_url("/wecom/callback", params), content=body)
        assert resp.status_code == 200
    await harness.services.drain()
    assert len(harness.services.chat.calls) == 1
    assert len(wecom_fake.app_messages) == 1


async def test_expired_and_revoked_tokens_are_refreshed(harness, wecom_fake):
    assert (await _post_message(harness, "first")).status_code == 200
    await wait_for(lambda: len(wecom_fake.app_messages) == 1)
    wecom_fake.expire_all_tokens()  # 42001
    assert (await _post_message(harness, "second")).status_code == 200
    await wait_for(lambda: len(wecom_fake.app_messages) == 2)
    wecom_fake.revoke_all_tokens()  # 40014
    assert (await _post_message(harness, "third")).status_code == 200
    await wait_for(lambda: len(wecom_fake.app_messages) == 3)
    assert [r["errcode"] for r in wecom_fake.token_requests.items()] == [0, 0, 0]


async def test_long_answers_arrive_in_numbered_parts_in_order(harness, wecom_fake):
    paragraphs = [f"Paragraph {i}: " + "长文本" * 120 for i in range(6)]
    harness.services.chat.answer = "\n\n".join(paragraphs)
    assert (await _post_message(harness, "长一点")).status_code == 200
    await harness.services.drain()
    sent = [m["markdown"]["content"] for m in wecom_fake.app_messages.items()]
    assert len(sent) > 2
    assert all(len(s.encode()) <= PLATFORM_LIMITS["wecom"] for s in sent)
    assert [s.split("\n", 1)[0] for s in sent] == [f"({i}/{len(sent)})" for i in
                                                   range(1, len(sent) + 1)]
    joined = "".join(s.split("\n", 1)[1] for s in sent)
    assert joined == harness.services.chat.answer


async def test_failed_model_call_gets_a_polite_notice_in_the_users_language(harness, wecom_fake):
    harness.services.chat.error = RuntimeError("provider exploded: sk-secret-key")
    assert (await _post_message(harness, "你好，帮个忙")).status_code == 200
    await wait_for(lambda: len(wecom_fake.app_messages) == 1)
    sent = wecom_fake.app_messages.items()[0]
    assert sent["msgtype"] == "text"
    assert sent["text"]["content"] == "抱歉，助手暂时无法回答，请稍后再试。"


XXE = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
       b"<xml><Encrypt>&e;</Encrypt></xml>")
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
          '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><Content>&b;</Content>'
          "<MsgType>text</MsgType></xml>")


async def test_dtds_and_entities_are_refused_before_and_after_decryption(harness, wecom_fake):
    params, _ = build_wecom_message_request(harness.services.settings, "<xml/>")
    resp = await harness.client.post(_url("/wecom/callback", params), content=XXE)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "malformed_xml"
    params, body = build_wecom_message_request(harness.services.settings, LAUGHS)
    resp = await harness.client.post(_url("/wecom/callback", params), content=body)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_event"
    await harness.services.drain()
    assert harness.services.chat.calls == [] and len(wecom_fake.app_messages) == 0


async def test_forged_message_is_not_decrypted_or_answered(harness, wecom_fake):
    params, body = build_wecom_message_request(
        harness.services.settings, wecom_text_message(text="x", corp_id=WC_CORP_ID))
    for tampered in (dict(params, msg_signature="f" * 40), dict(params, nonce="other")):
        resp = await harness.client.post(_url("/wecom/callback", tampered), content=body)
        assert resp.status_code == 401
    await harness.services.drain()
    assert harness.services.chat.calls == []
    assert harness.services.failures("wecom") == 2


@pytest.mark.parametrize("settings_overrides", [{"wecom": {"token": None}}])
async def test_not_configured(harness):
    resp = await harness.client.get(_url("/wecom/callback", {"echostr": "x"}))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "not_configured"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr"]),
                             st.text(max_size=60)),
       body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                      st.builds(lambda e: f"<xml><Encrypt>{e}</Encrypt></xml>".encode(),
                                st.text(alphabet="AZaz09+/=<&;", max_size=80))))
async def test_any_input_gets_a_4xx_json_answer_never_a_5xx(harness, query, body):
    for method in ("GET", "POST"):
        resp = await harness.client.request(method, _url("/wecom/callback", query), content=body)
        assert resp.status_code in (400, 401, 413), (method, resp.status_code, resp.text)
        assert "error" in resp.json()


@pytest.mark.parametrize("timestamp", ["²", "1" * 5000, "１２３", "-1", "1e9", ""])
async def test_odd_timestamps_under_a_valid_signature_are_401_not_500(harness, timestamp):
    crypto = wecom.crypto_for(harness.services.settings.wecom)
    echostr = crypto.encrypt("x")
    params = {"msg_signature": crypto.signature(timestamp, "n", echostr), "timestamp": timestamp,
              "nonce": "n", "echostr": echostr}
    resp = await harness.client.get(_url("/wecom/callback", params))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "stale_timestamp"


async def test_no_secret_or_message_text_reaches_the_log(harness, wecom_fake, caplog, monkeypatch):
    monkeypatch.setattr(common, "_rejections", LogThrottle(common.log))  # no earlier test's state
    settings_ = harness.services.settings.wecom
    secrets = [settings_.token.get_secret_value(), settings_.encoding_aes_key.get_secret_value(),
               settings_.corp_secret.get_secret_value(), "wecom-token-0000"]
    with caplog.at_level(logging.DEBUG):
        params = build_wecom_url_verification(harness.services.settings, "echo")
        await harness.client.get(_url("/wecom/callback", dict(params, msg_signature="0" * 40)))
        await harness.client.get(_url("/wecom/callback", params))
        await _post_message(harness, "private words 机密")
        await wait_for(lambda: len(wecom_fake.app_messages) == 1)
        wecom_fake.revoke_all_tokens()
        harness.services.chat.error = RuntimeError("boom")
        await _post_message(harness, "second private words")
        await wait_for(lambda: len(wecom_fake.app_messages) == 2)
    text = "\n".join(r.getMessage() + str(r.args) for r in caplog.records
                     if r.name.startswith("clawbot_app"))
    assert "wecom callback rejected" in text  # the log was captured
    for secret in secrets + ["private words", "机密"]:
        assert secret not in text


async def test_concurrent_redeliveries_are_answered_once(harness, wecom_fake):
    xml = wecom_text_message(text="at once", corp_id=WC_CORP_ID, msg_id="7000000000000000001")
    params, body = build_wecom_message_request(harness.services.settings, xml)
    answers = await asyncio.gather(*[
        harness.client.post(_url("/wecom/callback", params), content=body) for _ in range(20)])
    assert {a.status_code for a in answers} == {200}
    await harness.services.drain()
    assert len(harness.services.chat.calls) == 1 and len(wecom_fake.app_messages) == 1


async def test_deep_bodies_are_4xx_or_ignored(harness):
    params, _ = build_wecom_message_request(harness.services.settings, "<xml/>")
    deep = b"<a>" * 5000 + b"</a>" * 5000
    resp = await harness.client.post(_url("/wecom/callback", params), content=deep)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_request"
    deep_inside = "<xml>" + "<a>" * 3000 + "</a>" * 3000 + "<MsgType>text</MsgType></xml>"
    params, body = build_wecom_message_request(harness.services.settings, deep_inside)
    resp = await harness.client.post(_url("/wecom/callback", params), content=body)
    assert resp.status_code == 200  # parsed, nothing to answer (no Content, no sender)
