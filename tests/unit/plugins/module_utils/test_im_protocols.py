"""Unit tests for clawbot.stack's im_protocols: published vectors, round trips, padding and tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import pytest
from ansible_collections.clawbot.stack.plugins.module_utils import im_protocols as p
from ansible_collections.clawbot.stack.tests.fakes import dingtalk as fake_dingtalk
from ansible_collections.clawbot.stack.tests.fakes import feishu as fake_feishu
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Published vector of the official DingTalk-Callback-Crypto repository (see the protocol notes).
DT_TOKEN = "mryue"
DT_AES_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
DT_OWNER_KEY = "ding6ccabc44d2c8d38b"
DT_TIMESTAMP = "1608001896814"
DT_NONCE = "WL4PK6yA"
DT_SIGNATURE = "03044561471240d4a14bb09372dfcfd4fd0e40cb"
DT_ENCRYPT = ("0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDCYxxOK+HZeKju4y"
              "hELOFchzNukR+t8SB/qk4ROMu3")
# Published vector of the Feishu documentation.
FS_KEY = "test key"
FS_ENCRYPT = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="


@pytest.fixture
def crypto() -> p.DingTalkEventCrypto:
    return p.DingTalkEventCrypto(DT_TOKEN, DT_AES_KEY, DT_OWNER_KEY)


def raw_dingtalk_plaintext(encrypt: str) -> bytes:
    """Decrypt without unpadding (to look at the padding itself)."""
    key = base64.b64decode(DT_AES_KEY + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return decryptor.update(base64.b64decode(encrypt)) + decryptor.finalize()


# --------------------------------------------------------------------------- DingTalk event crypto


def test_dingtalk_published_vector_decrypts(crypto: p.DingTalkEventCrypto) -> None:
    assert crypto.decrypt(DT_ENCRYPT) == '{"EventType":"check_url"}'
    assert crypto.decrypt(DT_ENCRYPT) == p.DINGTALK_CHECK_URL_EVENT


def test_dingtalk_published_vector_signature(crypto: p.DingTalkEventCrypto) -> None:
    assert crypto.signature(DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT) == DT_SIGNATURE
    assert p.dingtalk_event_signature(DT_TOKEN, DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT) == DT_SIGNATURE
    crypto.verify_signature(DT_SIGNATURE, DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT)
    crypto.verify_signature(DT_SIGNATURE.upper(), DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT)


def test_dingtalk_published_vector_opens_as_an_envelope(crypto: p.DingTalkEventCrypto) -> None:
    envelope = {"msg_signature": DT_SIGNATURE, "timeStamp": DT_TIMESTAMP, "nonce": DT_NONCE, "encrypt": DT_ENCRYPT}
    assert crypto.open_envelope(envelope) == '{"EventType":"check_url"}'


def test_dingtalk_published_vector_uses_32_byte_padding() -> None:
    padded = raw_dingtalk_plaintext(DT_ENCRYPT)
    pad = padded[-1]
    assert len(padded) % 32 == 0
    assert 16 < pad <= 32  # a 16-byte PKCS#7 unpadder would reject this
    assert padded[-pad:] == bytes([pad]) * pad


@pytest.mark.parametrize(
    "message",
    ["success", "", "x", '{"EventType":"check_url"}', "钉钉事件 ünïcode", "a" * 1000],
)
def test_dingtalk_round_trip(crypto: p.DingTalkEventCrypto, message: str) -> None:
    assert crypto.decrypt(crypto.encrypt(message)) == message


def test_dingtalk_encrypt_is_randomised_but_deterministic_with_a_prefix(crypto: p.DingTalkEventCrypto) -> None:
    assert crypto.encrypt("success") != crypto.encrypt("success")
    assert crypto.encrypt("success", random_prefix=b"0" * 16) == crypto.encrypt("success", random_prefix=b"0" * 16)
    with pytest.raises(ValueError):
        crypto.encrypt("success", random_prefix=b"short")


def test_dingtalk_framing_is_random_length_message_owner_key(crypto: p.DingTalkEventCrypto) -> None:
    padded = raw_dingtalk_plaintext(crypto.encrypt("héllo", random_prefix=b"R" * 16))
    framed = padded[:-padded[-1]]
    assert framed[:16] == b"R" * 16
    assert struct.unpack(">I", framed[16:20])[0] == len("héllo".encode())  # bytes, not characters
    assert framed[20:26] == "héllo".encode()
    assert framed[26:] == DT_OWNER_KEY.encode()


@pytest.mark.parametrize("length", [24, 56, 88])
def test_dingtalk_full_32_byte_pad_block(crypto: p.DingTalkEventCrypto, length: int) -> None:
    # 16 random + 4 length + msg + 20-byte owner key: multiples of 32 need a whole block of padding
    message = "m" * length
    assert (16 + 4 + length + len(DT_OWNER_KEY)) % 32 == 0
    padded = raw_dingtalk_plaintext(crypto.encrypt(message))
    assert padded[-32:] == bytes([32]) * 32
    assert crypto.decrypt(crypto.encrypt(message)) == message


@pytest.mark.parametrize("length", [23, 25, 55, 57])
def test_dingtalk_padding_around_the_block_edge(crypto: p.DingTalkEventCrypto, length: int) -> None:
    message = "m" * length
    padded = raw_dingtalk_plaintext(crypto.encrypt(message))
    expected_pad = 32 - (16 + 4 + length + len(DT_OWNER_KEY)) % 32
    assert padded[-1] == expected_pad
    assert crypto.decrypt(crypto.encrypt(message)) == message


def test_dingtalk_owner_key_mismatch_is_rejected(crypto: p.DingTalkEventCrypto) -> None:
    other = p.DingTalkEventCrypto(DT_TOKEN, DT_AES_KEY, "dingsomeotherapp0000")
    with pytest.raises(p.OwnerKeyMismatch):
        other.decrypt(DT_ENCRYPT)
    with pytest.raises(p.OwnerKeyMismatch):
        crypto.decrypt(other.encrypt("success"))


def test_dingtalk_signature_tampering_is_rejected(crypto: p.DingTalkEventCrypto) -> None:
    tampered = DT_SIGNATURE[:-1] + ("0" if DT_SIGNATURE[-1] != "0" else "1")
    with pytest.raises(p.SignatureMismatch):
        crypto.verify_signature(tampered, DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT)
    with pytest.raises(p.SignatureMismatch):
        crypto.verify_signature(DT_SIGNATURE, str(int(DT_TIMESTAMP) + 1), DT_NONCE, DT_ENCRYPT)
    with pytest.raises(p.SignatureMismatch):
        crypto.verify_signature(DT_SIGNATURE, DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT.replace("0vJ", "1vJ"))
    with pytest.raises(p.SignatureMismatch):
        p.DingTalkEventCrypto("other", DT_AES_KEY, DT_OWNER_KEY).verify_signature(
            DT_SIGNATURE, DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT)
    with pytest.raises(p.SignatureMismatch):
        crypto.verify_signature(None, DT_TIMESTAMP, DT_NONCE, DT_ENCRYPT)


@pytest.mark.parametrize("answer", [
    None,
    "success",
    {"encrypt": 42},
    {"msg_signature": DT_SIGNATURE, "timeStamp": DT_TIMESTAMP, "encrypt": DT_ENCRYPT},  # nonce missing
])
def test_dingtalk_open_envelope_rejects_non_envelopes(crypto: p.DingTalkEventCrypto, answer: object) -> None:
    with pytest.raises(p.ProtocolError):
        crypto.open_envelope(answer)


def test_dingtalk_envelope_round_trip_is_signed(crypto: p.DingTalkEventCrypto) -> None:
    envelope = crypto.envelope("success", timestamp="1700000000000", nonce="abcdEFGH")
    assert set(envelope) == {"msg_signature", "encrypt", "timeStamp", "nonce"}
    assert (envelope["timeStamp"], envelope["nonce"]) == ("1700000000000", "abcdEFGH")
    assert envelope["msg_signature"] == hashlib.sha1(
        "".join(sorted([DT_TOKEN, "1700000000000", "abcdEFGH", envelope["encrypt"]])).encode()).hexdigest()
    assert crypto.open_envelope(envelope) == "success"
    assert "\n" not in envelope["encrypt"]


def test_dingtalk_agrees_with_the_independent_fake(crypto: p.DingTalkEventCrypto) -> None:
    fake = fake_dingtalk.EventCipher(DT_TOKEN, DT_AES_KEY, DT_OWNER_KEY)
    assert fake.decrypt(crypto.encrypt("success")) == ("success", DT_OWNER_KEY.encode())
    assert crypto.decrypt(fake.encrypt("from the fake")) == "from the fake"


@pytest.mark.parametrize("bad", ["not base64 at all!", base64.b64encode(b"x" * 15).decode(), ""])
def test_dingtalk_malformed_ciphertext(crypto: p.DingTalkEventCrypto, bad: str) -> None:
    with pytest.raises(p.MalformedCiphertext):
        crypto.decrypt(bad)


def test_dingtalk_wrong_aes_key_does_not_decrypt() -> None:
    other = p.DingTalkEventCrypto(DT_TOKEN, "B" * 43, DT_OWNER_KEY)
    with pytest.raises(p.ProtocolError):
        other.decrypt(DT_ENCRYPT)


@pytest.mark.parametrize(("aes_key", "message"), [
    (DT_AES_KEY[:-1], "exactly 43 characters"),
    (DT_AES_KEY + "A", "exactly 43 characters"),
    ("!" * 43, "not a base64"),
    (None, "exactly 43 characters"),
])
def test_dingtalk_aes_key_validation_names_the_option(aes_key: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        p.decode_dingtalk_aes_key(aes_key)
    assert "aes_key" in str(raised.value)


def test_dingtalk_crypto_needs_token_and_owner_key() -> None:
    with pytest.raises(ValueError, match="token"):
        p.DingTalkEventCrypto("", DT_AES_KEY, DT_OWNER_KEY)
    with pytest.raises(ValueError, match="owner_key"):
        p.DingTalkEventCrypto(DT_TOKEN, DT_AES_KEY, "")


@pytest.mark.parametrize(("data", "block"), [
    (b"", 32), (b"abc\x00", 32), (b"x" * 31 + b"\x21", 32), (b"ab\x02\x03", 16),
])
def test_pkcs7_unpad_rejects_bad_padding(data: bytes, block: int) -> None:
    with pytest.raises(p.MalformedCiphertext):
        p.pkcs7_unpad(data, block)


def test_pkcs7_pad_lengths() -> None:
    assert p.pkcs7_pad(b"", 32) == bytes([32]) * 32
    assert p.pkcs7_pad(b"x" * 31, 32) == b"x" * 31 + b"\x01"
    assert p.pkcs7_pad(b"x" * 16, 16) == b"x" * 16 + bytes([16]) * 16
    assert p.pkcs7_unpad(p.pkcs7_pad(b"x" * 32, 32), 32) == b"x" * 32


# --------------------------------------------------------------------------- DingTalk robot webhook


def test_dingtalk_webhook_sign_formula() -> None:
    secret, timestamp = "SECexample0secret", "1700000000000"
    expected = base64.b64encode(hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(),
                                         hashlib.sha256).digest()).decode()
    assert p.dingtalk_webhook_sign(secret, timestamp) == expected
    assert p.dingtalk_webhook_sign(secret, int(timestamp)) == expected


def test_dingtalk_signed_webhook_url_is_url_encoded() -> None:
    url = "https://oapi.dingtalk.com/robot/send?access_token=abc"
    secret = "SECexample0secret"
    signed = p.dingtalk_signed_webhook_url(url, secret, timestamp_ms=1700000000000)
    query = signed.split("?", 1)[1]
    assert query.startswith("access_token=abc&timestamp=1700000000000&sign=")
    raw_sign = query.rsplit("sign=", 1)[1]
    assert "+" not in raw_sign and "/" not in raw_sign and "=" not in raw_sign  # all percent-encoded
    assert unquote_plus(raw_sign) == p.dingtalk_webhook_sign(secret, "1700000000000")
    assert dict(parse_qsl(urlsplit(signed).query))["sign"] == p.dingtalk_webhook_sign(secret, "1700000000000")


def test_dingtalk_signed_webhook_url_without_secret_or_query() -> None:
    assert p.dingtalk_signed_webhook_url("https://h/robot/send?access_token=a", None) == \
        "https://h/robot/send?access_token=a"
    signed = p.dingtalk_signed_webhook_url("https://h/robot/send", "SECx", timestamp_ms=5)
    assert signed.startswith("https://h/robot/send?timestamp=5&sign=")


def test_dingtalk_signed_webhook_url_uses_the_current_time_in_ms() -> None:
    before = p.now_ms()
    signed = p.dingtalk_signed_webhook_url("https://h/robot/send?access_token=a", "SECx")
    timestamp = int(dict(parse_qsl(urlsplit(signed).query))["timestamp"])
    assert before <= timestamp <= p.now_ms()
    assert fake_dingtalk.robot_sign("SECx", str(timestamp)) == dict(parse_qsl(urlsplit(signed).query))["sign"]


# --------------------------------------------------------------------------- Feishu event crypto


def test_feishu_published_vector_decrypts() -> None:
    assert p.feishu_decrypt(FS_KEY, FS_ENCRYPT) == "hello world"


def test_feishu_key_is_sha256_of_the_encrypt_key() -> None:
    assert p.feishu_aes_key(FS_KEY) == hashlib.sha256(b"test key").digest()
    with pytest.raises(ValueError):
        p.feishu_aes_key("")


def test_feishu_encrypt_reproduces_the_vector_with_its_iv() -> None:
    iv = base64.b64decode(FS_ENCRYPT)[:16]
    assert p.feishu_encrypt(FS_KEY, "hello world", iv=iv) == FS_ENCRYPT


@pytest.mark.parametrize("message", ["", "x", "a" * 15, "a" * 16, "a" * 17, "a" * 32, '{"challenge":"c"}', "飞书"])
def test_feishu_round_trip_and_16_byte_padding(message: str) -> None:
    encrypted = p.feishu_encrypt(FS_KEY, message)
    raw = base64.b64decode(encrypted)
    assert (len(raw) - 16) % 16 == 0
    assert len(raw) - 16 == (len(message.encode()) // 16 + 1) * 16  # a full block when already aligned
    assert p.feishu_decrypt(FS_KEY, encrypted) == message
    assert fake_feishu.decrypt(FS_KEY, encrypted) == message


def test_feishu_wrong_key_or_malformed_input_is_rejected() -> None:
    with pytest.raises(p.ProtocolError):
        p.feishu_decrypt("another key", FS_ENCRYPT)
    with pytest.raises(p.MalformedCiphertext):
        p.feishu_decrypt(FS_KEY, base64.b64encode(b"x" * 16).decode())
    with pytest.raises(p.MalformedCiphertext):
        p.feishu_decrypt(FS_KEY, "%%%")
    with pytest.raises(ValueError):
        p.feishu_encrypt(FS_KEY, "x", iv=b"short")


def test_feishu_signature_formula_over_raw_bytes() -> None:
    body = b'{"encrypt":"abc"}'
    expected = hashlib.sha256(b"1700000000" + b"nonce1" + b"test key" + body).hexdigest()
    assert p.feishu_signature("1700000000", "nonce1", FS_KEY, body) == expected
    assert p.feishu_verify_signature("1700000000", "nonce1", FS_KEY, body, expected)
    assert p.feishu_verify_signature("1700000000", "nonce1", FS_KEY, body, expected.upper())
    assert not p.feishu_verify_signature("1700000000", "nonce1", FS_KEY, b'{"encrypt": "abc"}', expected)
    assert not p.feishu_verify_signature("1700000001", "nonce1", FS_KEY, body, expected)
    assert not p.feishu_verify_signature(None, "nonce1", FS_KEY, body, expected)
    assert not p.feishu_verify_signature("1700000000", "nonce1", FS_KEY, body, None)


def test_feishu_encrypted_request_is_signed_over_the_exact_body() -> None:
    payload = {"challenge": "c1", "token": "vt", "type": "url_verification"}
    body, headers = p.feishu_encrypted_request(FS_KEY, payload, timestamp=1700000000, nonce="n0nce")
    assert headers[p.FEISHU_HEADER_TIMESTAMP] == "1700000000"
    assert headers[p.FEISHU_HEADER_NONCE] == "n0nce"
    assert headers[p.FEISHU_HEADER_SIGNATURE] == hashlib.sha256(b"1700000000n0nce" + b"test key" + body).hexdigest()
    sent = json.loads(body)
    assert set(sent) == {"encrypt"}
    assert json.loads(p.feishu_decrypt(FS_KEY, sent["encrypt"])) == payload


# --------------------------------------------------------------------------- Feishu custom bot webhook


def test_feishu_webhook_sign_key_and_message_are_reversed() -> None:
    secret, timestamp = "fs-hook-secret", "1700000000"
    expected = base64.b64encode(hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()
    assert p.feishu_webhook_sign(secret, timestamp) == expected
    assert p.feishu_webhook_sign(secret, timestamp) != p.dingtalk_webhook_sign(secret, timestamp)
    assert fake_feishu.hook_sign(secret, timestamp) == expected


def test_feishu_webhook_body() -> None:
    signed = p.feishu_webhook_body("hi", "fs-hook-secret", timestamp_s=1700000000)
    assert signed == {"msg_type": "text", "content": {"text": "hi"}, "timestamp": "1700000000",
                      "sign": p.feishu_webhook_sign("fs-hook-secret", "1700000000")}
    assert p.feishu_webhook_body("hi") == {"msg_type": "text", "content": {"text": "hi"}}
    current = p.feishu_webhook_body("hi", "s")
    assert len(current["timestamp"]) == 10 and current["timestamp"].isdigit()  # seconds, as a string


def test_random_nonce() -> None:
    nonces = {p.random_nonce() for dummy in range(20)}
    assert len(nonces) == 20
    assert all(len(nonce) == 16 and nonce.isalnum() for nonce in nonces)
