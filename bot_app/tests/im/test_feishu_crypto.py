"""Feishu event crypto, callback signature and webhook signing, including the published vector."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from clawbot_app.im import feishu_crypto as fc

VEC_KEY = "test key"
VEC_ENCRYPT = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="


def test_published_vector() -> None:
    assert fc.decrypt(VEC_KEY, VEC_ENCRYPT) == "hello world"


def test_encrypt_reproduces_published_ciphertext() -> None:
    iv = base64.b64decode(VEC_ENCRYPT)[:16]
    assert fc.encrypt(VEC_KEY, "hello world", iv=iv) == VEC_ENCRYPT


@pytest.mark.parametrize("text", ["", "a", "x" * 15, "x" * 16, "x" * 17, "飞书事件 ✓" * 20])
def test_round_trip(text: str) -> None:
    cipher = fc.FeishuCipher("my-encrypt-key")
    enc = cipher.encrypt(text)
    assert len(base64.b64decode(enc)) % 16 == 0
    assert cipher.decrypt(enc) == text


def test_wrong_key_or_garbage_rejected() -> None:
    enc = fc.encrypt("right key", json.dumps({"a": 1}) * 3)
    with pytest.raises(fc.FeishuCryptoError):
        fc.decrypt("wrong key", enc)
    for bad in ["***", base64.b64encode(b"0123456789abcdef").decode(), ""]:
        with pytest.raises(fc.FeishuCryptoError):
            fc.decrypt(VEC_KEY, bad)


def test_signature_over_raw_body_bytes() -> None:
    body = b'{"encrypt": "abc",  "x":1}'  # odd spacing: re-serialising would change the bytes
    ts, nonce, key = "1700000000", "nonce-1", "ek"
    expected = hashlib.sha256((ts + nonce + key).encode() + body).hexdigest()
    assert fc.signature(ts, nonce, key, body) == expected
    assert fc.verify_signature(ts, nonce, key, body, expected)
    reserialised = json.dumps(json.loads(body)).encode()
    assert not fc.verify_signature(ts, nonce, key, reserialised, expected)
    assert not fc.verify_signature(ts, nonce, "other", body, expected)
    assert not fc.verify_signature(None, nonce, key, body, expected)
    assert not fc.verify_signature(ts, nonce, key, body, None)


def test_signed_headers() -> None:
    headers = fc.signed_headers("ek", b"{}", timestamp="1", nonce="n")
    assert headers == {
        fc.HEADER_TIMESTAMP: "1",
        fc.HEADER_NONCE: "n",
        fc.HEADER_SIGNATURE: hashlib.sha256(b"1nek{}").hexdigest(),
    }


def test_webhook_sign_key_and_message_reversed() -> None:
    ts, sign = fc.webhook_sign("secret", 1_600_000_000)
    assert ts == "1600000000"
    expected = base64.b64encode(
        hmac.new(b"1600000000\nsecret", b"", hashlib.sha256).digest()).decode()
    assert sign == expected
    dingtalk_style = base64.b64encode(
        hmac.new(b"secret", b"1600000000\nsecret", hashlib.sha256).digest()).decode()
    assert sign != dingtalk_style
