"""The IM callbacks as an attacker would try them.

* No oracle: every failure after a signature matched (and every failure of an unsigned request
  while an Encrypt Key is set) is the same status and the same bytes, whatever broke: padding,
  framing, JSON, token, app id, owner key. The ciphertexts here are built with `cryptography`
  directly, not with the code under test.
* Replays: a DingTalk timestamp/sign pair is single-use; a message without msgId is deduped by
  its body; dedupe survives a restart on the database and works through Redis.
* Floods are counted exactly and logged once per kind per interval.
* Poison headers (odd digits, huge timestamps) are 401s, not 500s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from clawbot_app.db import migrate
from clawbot_app.db.engine import Database
from clawbot_app.dedupe import DatabaseDedupe
from clawbot_app.im import common, dingtalk_crypto, feishu_crypto
from clawbot_app.im.builders import (
    dingtalk_robot_message,
    encode_feishu_payload,
    feishu_message_event,
)
from clawbot_app.logthrottle import LogThrottle
from clawbot_app.store import RedisStore

from .support import (
    DT_AES_KEY,
    DT_APP_KEY,
    DT_TOKEN,
    FS_APP_ID,
    FS_ENCRYPT_KEY,
    FS_VERIFICATION_TOKEN,
    TestServices,
    resend_robot_message,
)

# ----------------------------------------------------------------- independent Feishu cipher


def _feishu_cbc(plaintext: bytes, *, pad: bool = True) -> str:
    key = hashlib.sha256(FS_ENCRYPT_KEY.encode()).digest()
    iv = os.urandom(16)
    if pad:
        padder = padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(plaintext) + enc.finalize()).decode()


def _feishu_bad_padding() -> str:
    # 32 bytes whose last byte decrypts to a padding value the unpadder must refuse.
    key = hashlib.sha256(FS_ENCRYPT_KEY.encode()).digest()
    iv = os.urandom(16)
    block = b"A" * 31 + b"\x00"
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(block) + enc.finalize()).decode()


def _signed(body: bytes) -> dict[str, str]:
    ts, nonce = str(int(time.time())), "n0nce"
    sig = hashlib.sha256((ts + nonce + FS_ENCRYPT_KEY).encode() + body).hexdigest()
    return {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": sig}


def _event(**header: Any) -> bytes:
    base = feishu_message_event(text="hi", verification_token=FS_VERIFICATION_TOKEN,
                                app_id=FS_APP_ID)
    base["header"].update(header)
    return json.dumps(base).encode()


FEISHU_BROKEN = {
    "bad padding": lambda: _feishu_bad_padding(),
    "not base64": lambda: "%%%not-base64%%%",
    "short": lambda: base64.b64encode(b"x" * 20).decode(),
    "good padding, not JSON": lambda: _feishu_cbc(b"\x00\x01garbage"),
    "good padding, not UTF-8": lambda: _feishu_cbc(b"\xff\xfe\xfd"),
    "JSON array": lambda: _feishu_cbc(b"[1, 2]"),
    "deep JSON": lambda: _feishu_cbc(b"[" * 3000 + b"]" * 3000),
    "lone surrogate": lambda: _feishu_cbc(b'{"type": "url_verification", "token": "\\ud800"}'),
    "wrong token": lambda: _feishu_cbc(_event(token="nope")),
    "other app": lambda: _feishu_cbc(_event(app_id="cli_other")),
    "no event id": lambda: _feishu_cbc(_event(event_id="")),
}


async def _post(harness: Any, body: bytes, headers: dict[str, str] | None = None,
                path: str = "/feishu/callback", params: dict[str, str] | None = None) -> Any:
    return await harness.client.post(path, content=body, headers=headers or {}, params=params)


async def test_feishu_signed_failures_are_indistinguishable(harness) -> None:
    answers = {}
    for name, make in FEISHU_BROKEN.items():
        body = json.dumps({"encrypt": make()}).encode()
        resp = await _post(harness, body, _signed(body))
        answers[name] = (resp.status_code, resp.content)
    assert len(set(answers.values())) == 1, answers
    status, content = next(iter(answers.values()))
    assert status == 400 and json.loads(content)["error"]["code"] == "invalid_event"
    assert harness.services.chat.calls == []


async def test_feishu_unsigned_failures_are_indistinguishable(harness) -> None:
    answers = {}
    for name, make in FEISHU_BROKEN.items():
        resp = await _post(harness, json.dumps({"encrypt": make()}).encode())
        answers[name] = (resp.status_code, resp.content)
    for name, raw in {"plain event": _event(), "not JSON": b"{x", "deep": b"[" * 5000}.items():
        resp = await _post(harness, raw)
        answers[name] = (resp.status_code, resp.content)
    assert len(set(answers.values())) == 1, answers
    status, content = next(iter(answers.values()))
    assert status == 401 and json.loads(content)["error"]["code"] == "invalid_signature"
    # The one unsigned request that passes: Feishu's encrypted URL check with the right token.
    check = {"type": "url_verification", "token": FS_VERIFICATION_TOKEN, "challenge": "ch-1"}
    resp = await _post(harness, json.dumps({"encrypt": _feishu_cbc(json.dumps(check).encode())})
                       .encode())
    assert resp.status_code == 200 and resp.json() == {"challenge": "ch-1"}


async def test_feishu_signature_is_checked_before_the_body_is_read(harness) -> None:
    body = json.dumps({"encrypt": _feishu_bad_padding()}).encode()
    headers = _signed(body)
    headers["X-Lark-Signature"] = "0" * 64
    resp = await _post(harness, body, headers)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_signature"


# ----------------------------------------------------------------- independent DingTalk cipher


def _dingtalk_cbc(framed: bytes, *, pad_to: int = 32) -> str:
    key = base64.b64decode(DT_AES_KEY + "=")
    n = pad_to - len(framed) % pad_to
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(framed + bytes([n]) * n) + enc.finalize()).decode()


def _frame(msg: bytes, owner: bytes = DT_APP_KEY.encode()) -> bytes:
    return os.urandom(16) + struct.pack(">I", len(msg)) + msg + owner


DINGTALK_BROKEN = {
    "other owner": lambda: _dingtalk_cbc(_frame(b'{"EventType":"check_url"}', b"dingOther")),
    "length past the end": lambda: _dingtalk_cbc(os.urandom(16) + struct.pack(">I", 999) + b"x"),
    "16-byte padding": lambda: _dingtalk_cbc(_frame(b'{"EventType":"x"}'), pad_to=16)
    if len(_frame(b'{"EventType":"x"}')) % 32 < 16 else _dingtalk_cbc(b"\x00" * 20, pad_to=16),
    "not JSON": lambda: _dingtalk_cbc(_frame(b"not json")),
    "not UTF-8": lambda: _dingtalk_cbc(_frame(b"\xff\xfe")),
    "deep JSON": lambda: _dingtalk_cbc(_frame(b"[" * 3000)),
}


async def test_dingtalk_event_failures_after_the_signature_are_indistinguishable(harness) -> None:
    answers = {}
    for name, make in DINGTALK_BROKEN.items():
        encrypt = make()
        ts, nonce = str(int(time.time() * 1000)), "nonce1"
        sig = hashlib.sha1("".join(sorted([DT_TOKEN, ts, nonce, encrypt])).encode()).hexdigest()
        resp = await _post(harness, json.dumps({"encrypt": encrypt}).encode(),
                           path="/dingtalk/callback",
                           params={"msg_signature": sig, "timeStamp": ts, "nonce": nonce})
        answers[name] = (resp.status_code, resp.content)
    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values()))[0] == 400


# ----------------------------------------------------------------- DingTalk robot replays


def _independent_robot_sign(ts: str) -> str:
    """DingTalk's documented robot callback sign, computed here from the docs, not the code."""
    import hmac
    secret = b"dt-app-secret-0123456789"
    return base64.b64encode(hmac.new(secret, ts.encode() + b"\n" + secret, "sha256").digest()
                            ).decode()


def test_signatures_match_vectors_pinned_by_hand() -> None:
    """Pinned values, computed once by hand from the platforms' docs (not by the code):
    DingTalk robot sign = base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret));
    X-Lark-Signature = sha256_hex(timestamp + nonce + encrypt_key + raw body)."""
    assert dingtalk_crypto.robot_sign("1700000000000", "dt-app-secret-0123456789") == \
        "2Zq7Bz/ShnIR7F2qNy/qsXELZw9UoccLflZxKhd2Uvk="
    assert feishu_crypto.signature("1700000000", "n0nce", "fs-encrypt-key", b'{"a":1}') == \
        "d6b7f0f24d400417b85fe54cd047dd234786078463e3411f5d39e5fbd05afc9d"
    assert _independent_robot_sign("1700000000000") == \
        "2Zq7Bz/ShnIR7F2qNy/qsXELZw9UoccLflZxKhd2Uvk="


async def test_a_captured_timestamp_and_sign_carry_one_body_only(harness, dingtalk_fake) -> None:
    ts = str(int(time.time() * 1000))
    headers = {"timestamp": ts, "sign": _independent_robot_sign(ts),
               "Content-Type": "application/json"}
    hook = f"{dingtalk_fake.base_url}/robot/sessionhook?x=1"
    statuses = []
    for text in ("first", "forged second", "forged third"):
        body = dingtalk_robot_message(text=text, session_webhook=hook)
        resp = await harness.client.post("/dingtalk/callback", content=json.dumps(body),
                                         headers=headers)
        statuses.append(resp.status_code)
    assert statuses == [200, 400, 400]
    await harness.services.drain()
    assert [c["message"] for c in harness.services.chat.calls] == ["first"]


async def test_a_message_without_msg_id_is_processed_once(harness, dingtalk_fake) -> None:
    hook = f"{dingtalk_fake.base_url}/robot/sessionhook?x=1"
    body = dingtalk_robot_message(text="no id", session_webhook=hook)
    del body["msgId"]
    assert await resend_robot_message(harness.client, harness.services.settings, body) == \
        [200, 200, 200]
    await harness.services.drain()
    assert len(harness.services.chat.calls) == 1


@pytest.mark.parametrize("timestamp", ["²", "1" * 5000, "１２３", "-1", "1e12", ""])
async def test_odd_timestamps_are_401_not_500(harness, timestamp: str) -> None:
    # Raw UTF-8 bytes on the wire; the server sees them as Latin-1 text, as Starlette decodes.
    resp = await harness.client.post("/dingtalk/callback", content=b"{}", headers=[
        (b"timestamp", timestamp.encode("utf-8")), (b"sign", b"x")])
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "stale_timestamp"


# ----------------------------------------------------------------- dedupe that survives


async def _database(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dedupe.db'}"
    migrate.upgrade(url)
    return Database(url)


async def test_database_dedupe_survives_a_restart_and_expires(tmp_path: Path) -> None:
    first = await _database(tmp_path)
    assert await DatabaseDedupe(first).mark_seen("k1", 60) is True
    assert await DatabaseDedupe(first).mark_seen("k1", 60) is False
    await first.close()
    second = await _database(tmp_path)  # a new process: new engine, same file
    dedupe = DatabaseDedupe(second)
    assert await dedupe.mark_seen("k1", 60) is False
    assert await dedupe.mark_seen("k2", 0) is True
    assert await dedupe.mark_seen("k2", 60) is True  # expired entry: first time again
    assert await dedupe.mark_seen("k2", 60) is False
    await second.close()


async def _feishu_event_twice(harness: Any, dedupe_for_second: Any) -> None:
    headers, body = encode_feishu_payload(_event_dict(), encrypt_key=FS_ENCRYPT_KEY)
    resp = await _post(harness, body, headers)
    assert resp.status_code == 200
    await harness.services.drain()
    # "Restart": a fresh app and services with the same settings and a new dedupe handle.
    services = TestServices(settings=harness.services.settings, http=harness.services.http,
                            dedupe=dedupe_for_second)
    harness.app.state.services = services
    resp = await _post(harness, body, headers)
    assert resp.status_code == 200
    await services.drain()
    assert services.chat.calls == []


def _event_dict() -> dict[str, Any]:
    return json.loads(_event(event_id=f"ev-{os.urandom(6).hex()}"))


async def test_feishu_replay_after_restart_on_the_database(harness, tmp_path: Path) -> None:
    db = await _database(tmp_path)
    harness.services.dedupe = DatabaseDedupe(db)
    await _feishu_event_twice(harness, DatabaseDedupe(await _database(tmp_path)))
    assert len(harness.services.chat.calls) == 1
    await db.close()


async def test_feishu_replay_through_redis(harness, redis_server) -> None:
    store = RedisStore(redis_server.url, prefix=f"t{os.urandom(4).hex()}:")
    harness.services.dedupe = store
    await _feishu_event_twice(harness, RedisStore(redis_server.url, prefix=store.p))
    assert len(harness.services.chat.calls) == 1
    await store.close()


# ----------------------------------------------------------------- floods


async def test_a_flood_of_forgeries_is_counted_exactly_and_logged_once(
        harness, caplog, monkeypatch) -> None:
    monkeypatch.setattr(common, "_rejections", LogThrottle(common.log))  # no earlier test's state
    body = json.dumps({"encrypt": _feishu_bad_padding()}).encode()
    headers = _signed(body)
    headers["X-Lark-Signature"] = "f" * 64
    with caplog.at_level(logging.INFO, logger="clawbot_app.im"):
        for _ in range(300):
            resp = await _post(harness, body, headers)
            assert resp.status_code == 401
    assert harness.services.failures("feishu") == 300
    lines = [r for r in caplog.records if "callback rejected" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
