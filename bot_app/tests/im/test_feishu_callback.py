"""Feishu callback handler through a Starlette app with a real fake Open API server."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import pytest

from clawbot_app.im import feishu_crypto
from clawbot_app.im.builders import (
    build_feishu_message_request,
    build_feishu_url_verification,
    encode_feishu_payload,
    feishu_message_event,
)

from .support import FS_APP_ID, FS_ENCRYPT_KEY, FS_VERIFICATION_TOKEN, FakeChat, wait_for

PATHS = ["/feishu/callback", "/api/feishu/callback", "/feishu/verify"]
PLAIN = {"feishu": {"encrypt_key": None}}


async def _post(harness: Any, headers: dict[str, str], body: bytes, path: str = "/feishu/callback"):
    return await harness.client.post(path, content=body, headers=headers)


# --------------------------------------------------------------------------- url verification


@pytest.mark.parametrize("path", PATHS)
async def test_encrypted_url_verification(harness, path):
    headers, body = build_feishu_url_verification(harness.services.settings, challenge="c-123")
    assert b"encrypt" in body
    resp = await _post(harness, headers, body, path)
    assert resp.status_code == 200
    assert resp.json() == {"challenge": "c-123"}


async def test_encrypted_url_verification_without_signature_headers(harness):
    """Feishu's URL check may come unsigned; decrypting + the token authenticate it."""
    payload = {"challenge": "c-9", "token": FS_VERIFICATION_TOKEN, "type": "url_verification"}
    body = json.dumps({"encrypt": feishu_crypto.encrypt(FS_ENCRYPT_KEY, json.dumps(payload))})
    resp = await _post(harness, {}, body.encode())
    assert resp.status_code == 200 and resp.json() == {"challenge": "c-9"}


@pytest.mark.parametrize("settings_overrides", [PLAIN])
async def test_plain_url_verification(harness):
    headers, body = build_feishu_url_verification(harness.services.settings, challenge="plain")
    resp = await _post(harness, headers, body)
    assert resp.status_code == 200 and resp.json() == {"challenge": "plain"}


@pytest.mark.parametrize("encrypted", [True, False])
async def test_url_verification_wrong_token(harness, encrypted):
    payload = {"challenge": "c", "token": "wrong-token", "type": "url_verification"}
    headers, body = encode_feishu_payload(
        payload, encrypt_key=FS_ENCRYPT_KEY if encrypted else "")
    resp = await _post(harness, headers, body)
    if encrypted:  # signed: past the signature every failure is the same answer
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "invalid_event"
    else:  # unsigned while an Encrypt Key is set: only a valid encrypted URL check passes
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_signature"
    assert harness.services.failures("feishu") == 1


@pytest.mark.parametrize("settings_overrides", [PLAIN])
async def test_plain_url_verification_wrong_token(harness):
    payload = {"challenge": "c", "token": "wrong-token", "type": "url_verification"}
    headers, body = encode_feishu_payload(payload)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_token"


async def test_url_verification_forged_signature(harness):
    headers, body = build_feishu_url_verification(harness.services.settings)
    headers[feishu_crypto.HEADER_SIGNATURE] = "0" * 64
    resp = await _post(harness, headers, body)
    assert resp.status_code == 401
    assert harness.services.failures("feishu") == 1


# --------------------------------------------------------------------------- messages (v2)


@pytest.mark.parametrize("path", PATHS)
async def test_message_v2_encrypted_replied_via_open_api(harness, feishu_fake, path):
    headers, body = build_feishu_message_request(
        harness.services.settings, text="@_user_1 hello there", message_id="om_abc",
        chat_id="oc_chat1", open_id="ou_user1", tenant_key="tk1")
    resp = await _post(harness, headers, body, path)
    assert resp.status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 1)
    reply = feishu_fake.replies.items()[0]
    assert reply["message_id"] == "om_abc"
    assert reply["text"] == "echo: hello there"
    assert reply["token"].startswith("t-fake")
    assert harness.services.chat.calls == [{
        "tenant_id": "feishu:tk1", "user_id": "ou_user1", "session_id": "feishu:oc_chat1:ou_user1",
        "message": "hello there", "path": path}]
    assert len(feishu_fake.token_requests) == 1
    assert feishu_fake.token_requests.items()[0] == {
        "app_id": FS_APP_ID, "app_secret": harness.services.settings.feishu.app_secret
        .get_secret_value()}


async def test_ack_is_immediate_and_chat_runs_after(harness, feishu_fake):
    harness.services.chat.delay = 1.5
    headers, body = build_feishu_message_request(harness.services.settings, text="slow")
    start = time.monotonic()
    resp = await _post(harness, headers, body)
    assert resp.status_code == 200
    assert time.monotonic() - start < 1.0
    assert len(feishu_fake.replies) == 0
    await wait_for(lambda: len(feishu_fake.replies) == 1, timeout=5)


async def test_tenant_token_cached_across_messages(harness, feishu_fake):
    for i in range(3):
        headers, body = build_feishu_message_request(harness.services.settings, text=f"m{i}")
        assert (await _post(harness, headers, body)).status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 3)
    assert len(feishu_fake.token_requests) == 1
    assert len({r["token"] for r in feishu_fake.replies.items()}) == 1


async def test_redelivery_is_deduplicated(harness, feishu_fake):
    """At-least-once: Feishu re-sends the same event_id with fresh nonce/timestamp/signature."""
    event_id = uuid.uuid4().hex
    for _ in range(3):
        headers, body = build_feishu_message_request(
            harness.services.settings, text="only once", event_id=event_id, message_id="om_dup")
        resp = await _post(harness, headers, body)
        assert resp.status_code == 200
    await harness.services.drain()
    assert len(harness.services.chat.calls) == 1
    assert len(feishu_fake.replies) == 1


async def test_forged_signature_rejected(harness, feishu_fake):
    headers, body = build_feishu_message_request(harness.services.settings, text="x")
    headers[feishu_crypto.HEADER_SIGNATURE] = feishu_crypto.signature(
        headers[feishu_crypto.HEADER_TIMESTAMP], headers[feishu_crypto.HEADER_NONCE],
        "not-the-key", body)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_signature"
    assert harness.services.failures("feishu") == 1
    await harness.services.drain()
    assert harness.services.chat.calls == []


async def test_signature_checked_over_raw_bytes(harness):
    headers, body = build_feishu_message_request(harness.services.settings, text="x")
    reformatted = json.dumps(json.loads(body), indent=2).encode()  # same JSON, other bytes
    resp = await _post(harness, headers, reformatted)
    assert resp.status_code == 401


async def test_missing_signature_rejected_when_encrypt_key_set(harness):
    headers, body = build_feishu_message_request(harness.services.settings, text="x")
    for name in (feishu_crypto.HEADER_SIGNATURE, feishu_crypto.HEADER_TIMESTAMP,
                 feishu_crypto.HEADER_NONCE):
        headers.pop(name)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 401
    assert harness.services.failures("feishu") == 1


async def test_wrong_verification_token_in_event(harness):
    payload = feishu_message_event(text="x", verification_token="bad", app_id=FS_APP_ID)
    headers, body = encode_feishu_payload(payload, encrypt_key=FS_ENCRYPT_KEY)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_event"


@pytest.mark.parametrize("settings_overrides", [PLAIN])
async def test_wrong_verification_token_in_plain_event(harness):
    payload = feishu_message_event(text="x", verification_token="bad", app_id=FS_APP_ID)
    headers, body = encode_feishu_payload(payload)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_token"


async def test_event_for_another_app(harness):
    payload = feishu_message_event(text="x", verification_token=FS_VERIFICATION_TOKEN,
                                   app_id="cli_other")
    headers, body = encode_feishu_payload(payload, encrypt_key=FS_ENCRYPT_KEY)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_event"
    assert harness.services.failures("feishu") == 1


async def test_undecryptable_body(harness):
    body = json.dumps({"encrypt": feishu_crypto.encrypt("another key", "{}")}).encode()
    headers = feishu_crypto.signed_headers(FS_ENCRYPT_KEY, body)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_event"


@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b""])
async def test_malformed_json_unsigned_is_refused_before_parsing(harness, raw):
    resp = await _post(harness, {}, raw)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_signature"


@pytest.mark.parametrize("settings_overrides", [PLAIN])
@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b"", b"[" * 5000, b'{"a": "\\ud800"}'])
async def test_malformed_json_plain(harness, raw):
    resp = await _post(harness, {}, raw)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "malformed_json"


async def test_non_message_event_acknowledged(harness, feishu_fake):
    payload = feishu_message_event(text="x", verification_token=FS_VERIFICATION_TOKEN,
                                   app_id=FS_APP_ID)
    payload["header"]["event_type"] = "im.chat.member.bot.added_v1"
    payload["event"] = {"chat_id": "oc_1"}
    headers, body = encode_feishu_payload(payload, encrypt_key=FS_ENCRYPT_KEY)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 200
    await harness.services.drain()
    assert harness.services.chat.calls == []


async def test_chat_error_replied_with_notice(harness, feishu_fake):
    harness.services.chat = FakeChat(error=TimeoutError())
    headers, body = build_feishu_message_request(harness.services.settings, text="hi")
    assert (await _post(harness, headers, body)).status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 1)
    assert "unavailable" in feishu_fake.replies.items()[0]["text"]


@pytest.mark.parametrize("settings_overrides", [{"feishu": {"app_secret": "wrong-secret"}}])
async def test_bad_app_secret_no_reply(harness, feishu_fake, caplog):
    headers, body = build_feishu_message_request(harness.services.settings, text="hi")
    with caplog.at_level(logging.INFO, logger="clawbot_app.im"):
        assert (await _post(harness, headers, body)).status_code == 200
        await harness.services.drain()
    assert len(feishu_fake.token_requests) == 1
    assert len(feishu_fake.replies) == 0
    assert "code=10014" in caplog.text
    assert "wrong-secret" not in caplog.text


@pytest.mark.parametrize(
    "settings_overrides",
    [{"feishu": {"verification_token": None, "encrypt_key": None}}])
async def test_not_configured(harness):
    resp = await _post(harness, {}, b"{}")
    assert resp.status_code == 503
    assert resp.json()["error"]["message"] == "feishu: platform not configured"


# --------------------------------------------------------------------------- plain mode, v1


@pytest.mark.parametrize("settings_overrides", [PLAIN])
async def test_plain_v2_message(harness, feishu_fake):
    headers, body = build_feishu_message_request(harness.services.settings, text="plain hi")
    assert b"encrypt" not in body and feishu_crypto.HEADER_SIGNATURE not in headers
    assert (await _post(harness, headers, body)).status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 1)
    assert feishu_fake.replies.items()[0]["text"] == "echo: plain hi"


@pytest.mark.parametrize("settings_overrides", [PLAIN])
async def test_plain_v2_wrong_token(harness):
    payload = feishu_message_event(text="x", verification_token="nope", app_id=FS_APP_ID)
    headers, body = encode_feishu_payload(payload)
    resp = await _post(harness, headers, body)
    assert resp.status_code == 401
    assert harness.services.failures("feishu") == 1


def _v1_message(token: str, uuid_: str, text: str = "@_user_1 hi v1") -> dict[str, Any]:
    return {
        "ts": str(time.time()), "uuid": uuid_, "token": token, "type": "event_callback",
        "event": {
            "type": "message", "app_id": FS_APP_ID, "tenant_key": "tk-v1",
            "root_id": "", "parent_id": "", "open_chat_id": "oc_v1", "chat_type": "group",
            "msg_type": "text", "open_id": "ou_v1", "open_message_id": "om_v1",
            "is_mention": True, "text": "<at open_id=\"ou_bot\">@bot</at> hi v1",
            "text_without_at_bot": text,
        },
    }


@pytest.mark.parametrize("encrypted", [False, True])
async def test_schema_v1_message(harness, feishu_fake, encrypted):
    payload = _v1_message(FS_VERIFICATION_TOKEN, uuid.uuid4().hex)
    headers, body = encode_feishu_payload(
        payload, encrypt_key=FS_ENCRYPT_KEY if encrypted else "")
    if not encrypted:  # plain body while an encrypt key is set: must still be signed
        headers.update(feishu_crypto.signed_headers(FS_ENCRYPT_KEY, body))
    assert (await _post(harness, headers, body)).status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 1)
    assert feishu_fake.replies.items()[0] == {
        "message_id": "om_v1", "msg_type": "interactive", "text": "echo: hi v1",
        "card": {"config": {"wide_screen_mode": True},
                 "elements": [{"tag": "markdown", "content": "echo: hi v1"}]},
        "token": feishu_fake.replies.items()[0]["token"]}
    call = harness.services.chat.calls[0]
    assert (call["tenant_id"], call["user_id"], call["session_id"]) == (
        "feishu:tk-v1", "ou_v1", "feishu:oc_v1:ou_v1")


@pytest.mark.parametrize("settings_overrides", [PLAIN])
async def test_schema_v1_dedupe_and_token(harness, feishu_fake):
    uid = uuid.uuid4().hex
    for _ in range(2):
        headers, body = encode_feishu_payload(_v1_message(FS_VERIFICATION_TOKEN, uid))
        assert (await _post(harness, headers, body)).status_code == 200
    headers, body = encode_feishu_payload(_v1_message("bad-token", uuid.uuid4().hex))
    assert (await _post(harness, headers, body)).status_code == 401
    await harness.services.drain()
    assert len(harness.services.chat.calls) == 1
    assert len(feishu_fake.replies) == 1


async def test_group_message_without_mention_ignored(harness, feishu_fake):
    payload = feishu_message_event(text="chatter", verification_token=FS_VERIFICATION_TOKEN,
                                   app_id=FS_APP_ID, chat_type="group")
    headers, body = encode_feishu_payload(payload, encrypt_key=FS_ENCRYPT_KEY)
    assert (await _post(harness, headers, body)).status_code == 200
    payload = feishu_message_event(text="@_user_1 question",
                                   verification_token=FS_VERIFICATION_TOKEN,
                                   app_id=FS_APP_ID, chat_type="group")
    payload["event"]["message"]["mentions"] = [
        {"key": "@_user_1", "id": {"open_id": "ou_bot"}, "name": "bot", "tenant_key": "tk"}]
    headers, body = encode_feishu_payload(payload, encrypt_key=FS_ENCRYPT_KEY)
    assert (await _post(harness, headers, body)).status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 1)
    await harness.services.drain()
    assert [c["message"] for c in harness.services.chat.calls] == ["question"]


async def test_replay_older_than_dedupe_window_not_processed(harness, feishu_fake):
    payload = feishu_message_event(text="old", verification_token=FS_VERIFICATION_TOKEN,
                                   app_id=FS_APP_ID)
    payload["header"]["create_time"] = str(int((time.time() - 13 * 3600) * 1000))
    headers, body = encode_feishu_payload(payload, encrypt_key=FS_ENCRYPT_KEY)
    assert (await _post(harness, headers, body)).status_code == 200
    await harness.services.drain()
    assert harness.services.chat.calls == []


async def test_a_long_answer_arrives_as_numbered_cards_in_order(harness, feishu_fake):
    code = "```python\n" + "".join(f"print({i})  # 注释 <b>\n" for i in range(900)) + "```"
    harness.services.chat.answer = "# Script\n\nRun this:\n\n" + code + "\n\nDone."
    headers, body = build_feishu_message_request(harness.services.settings, text="long one",
                                                 message_id="om_long")
    assert (await _post(harness, headers, body)).status_code == 200
    await harness.services.drain()
    replies = feishu_fake.replies.items()
    assert len(replies) > 1 and {r["msg_type"] for r in replies} == {"interactive"}
    texts = [r["card"]["elements"][0]["content"] for r in replies]
    assert [t.split("\n", 1)[0] for t in texts] == [f"({i}/{len(texts)})"
                                                    for i in range(1, len(texts) + 1)]
    assert texts[0].startswith(f"(1/{len(texts)})\n**Script**\n")
    for text in texts:  # every card's code block is closed, and "<" is not a card tag outside
        assert text.count("```") % 2 == 0
    assert texts[-1].rstrip().endswith("Done.")
    assert all(r["message_id"] == "om_long" for r in replies)
