"""Unit tests for clawbot.stack's im_protocols: published vectors, round trips, padding and tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
import time
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import pytest
from ansible_collections.clawbot.stack.plugins.module_utils import im_protocols as p
from ansible_collections.clawbot.stack.tests.fakes import dingtalk as fake_dingtalk
from ansible_collections.clawbot.stack.tests.fakes import feishu as fake_feishu
from ansible_collections.clawbot.stack.tests.fakes import wecom as fake_wecom
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


# --------------------------------------------------------------------------- WeCom callback crypto

# Official vectors of the WeCom callback crypto docs / WXBizMsgCrypt samples (tests/fixtures/contracts/im_vectors.json).
WC_TOKEN = "QDG6eK"
WC_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
WC_CORP_ID = "wx5823bf96d3bd56c7"
WC_ECHOSTR = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
WC_MSG_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvu"
    "JTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwG"
    "c2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9"
    "EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0"
    "lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")


@pytest.fixture
def wecom_crypto() -> p.WeComCrypto:
    return p.WeComCrypto(WC_TOKEN, WC_AES_KEY, WC_CORP_ID)


def test_wecom_official_url_verification_vector(wecom_crypto: p.WeComCrypto) -> None:
    assert wecom_crypto.signature("1409659589", "263014780", WC_ECHOSTR) == "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
    wecom_crypto.verify_signature("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780", WC_ECHOSTR)
    assert wecom_crypto.decrypt(WC_ECHOSTR) == "1616140317555161061"


def test_wecom_official_message_vector(wecom_crypto: p.WeComCrypto) -> None:
    wecom_crypto.verify_signature("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149",
                                  WC_MSG_ENCRYPT)
    message = wecom_crypto.decrypt(WC_MSG_ENCRYPT)
    assert message.startswith("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>")
    assert "<FromUserName><![CDATA[mycreate]]></FromUserName>" in message
    assert "<Content><![CDATA[hello]]></Content>" in message
    assert "<MsgId>4561255354251345929</MsgId>" in message and "<AgentID>218</AgentID>" in message


def test_wecom_vector_uses_32_byte_padding() -> None:
    key = base64.b64decode(WC_AES_KEY + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(base64.b64decode(WC_MSG_ENCRYPT)) + decryptor.finalize()
    assert padded[-1] == 30 and padded[-30:] == bytes([30]) * 30  # more than one AES block of padding


@pytest.mark.parametrize("message", ["1616140317555161061", "", "企业微信 ünïcode", "<xml/>" * 300])
def test_wecom_round_trip_and_fake_agrees(wecom_crypto: p.WeComCrypto, message: str) -> None:
    encrypted = wecom_crypto.encrypt(message)
    assert wecom_crypto.decrypt(encrypted) == message
    fake = fake_wecom.WeComCipher(WC_TOKEN, WC_AES_KEY, WC_CORP_ID)
    assert fake.decrypt(encrypted) == (message, WC_CORP_ID.encode())
    assert wecom_crypto.decrypt(fake.encrypt(message)) == message


def test_wecom_receive_id_mismatch_and_tampering(wecom_crypto: p.WeComCrypto) -> None:
    other = p.WeComCrypto(WC_TOKEN, WC_AES_KEY, "ww-another-corp")
    with pytest.raises(p.OwnerKeyMismatch, match="corp_id"):
        other.decrypt(WC_ECHOSTR)
    with pytest.raises(p.SignatureMismatch):
        wecom_crypto.verify_signature("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659590", "263014780",
                                      WC_ECHOSTR)
    with pytest.raises(p.MalformedCiphertext):
        wecom_crypto.decrypt(WC_ECHOSTR[:-8] + "AAAAAA==")


def test_wecom_verification_query(wecom_crypto: p.WeComCrypto) -> None:
    before = int(time.time())
    query, message = wecom_crypto.verification_query()
    fields = dict(query)
    assert [name for name, dummy in query] == ["msg_signature", "timestamp", "nonce", "echostr"]
    assert before <= int(fields["timestamp"]) <= int(time.time())  # seconds
    assert fields["nonce"].isdigit() and message.isdigit() and len(message) == 19
    fake = fake_wecom.WeComCipher(WC_TOKEN, WC_AES_KEY, WC_CORP_ID)
    assert fake.signature(fields["timestamp"], fields["nonce"], fields["echostr"]) == fields["msg_signature"]
    assert fake.decrypt(fields["echostr"]) == (message, WC_CORP_ID.encode())
    assert wecom_crypto.verification_query()[1] != message
    pinned, pinned_message = wecom_crypto.verification_query("42", timestamp=1409659589, nonce=263014780)
    assert pinned_message == "42" and dict(pinned)["timestamp"] == "1409659589" and dict(pinned)["nonce"] == "263014780"


@pytest.mark.parametrize(("aes_key", "message"), [
    ("x" * 42, "aes_key must be exactly 43 characters (the WeCom EncodingAESKey)"),
    ("!" * 43, "aes_key is not a base64 EncodingAESKey"),
])
def test_wecom_aes_key_validation(aes_key: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        p.WeComCrypto(WC_TOKEN, aes_key, WC_CORP_ID)


def test_wecom_crypto_needs_token_and_corp_id() -> None:
    with pytest.raises(ValueError, match="token"):
        p.WeComCrypto("", WC_AES_KEY, WC_CORP_ID)
    with pytest.raises(ValueError, match="corp_id"):
        p.WeComCrypto(WC_TOKEN, WC_AES_KEY, "")
