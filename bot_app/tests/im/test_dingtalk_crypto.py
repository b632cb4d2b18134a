"""DingTalk signing and event crypto, including the published vector."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from clawbot_app.im import dingtalk_crypto as dc

VEC_TOKEN = "mryue"
VEC_AES = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
VEC_OWNER = "ding6ccabc44d2c8d38b"
VEC_TS = "1608001896814"
VEC_NONCE = "WL4PK6yA"
VEC_SIG = "03044561471240d4a14bb09372dfcfd4fd0e40cb"
VEC_ENCRYPT = (
    "0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDC"
    "YxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3"
)


@pytest.fixture
def vec() -> dc.DingTalkEventCrypto:
    return dc.DingTalkEventCrypto(VEC_TOKEN, VEC_AES, VEC_OWNER)


def _raw_plaintext(encrypt: str) -> bytes:
    key = base64.b64decode(VEC_AES + "=")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    return dec.update(base64.b64decode(encrypt)) + dec.finalize()


def test_published_vector_decrypts_to_check_url(vec: dc.DingTalkEventCrypto) -> None:
    assert vec.decrypt(VEC_ENCRYPT) == '{"EventType":"check_url"}'
    assert json.loads(vec.decrypt(VEC_ENCRYPT)) == {"EventType": "check_url"}


def test_published_vector_signature(vec: dc.DingTalkEventCrypto) -> None:
    assert vec.signature(VEC_TS, VEC_NONCE, VEC_ENCRYPT) == VEC_SIG
    vec.verify_signature(VEC_SIG, VEC_TS, VEC_NONCE, VEC_ENCRYPT)
    vec.verify_signature(VEC_SIG.upper(), VEC_TS, VEC_NONCE, VEC_ENCRYPT)


def test_encrypt_reproduces_published_ciphertext(vec: dc.DingTalkEventCrypto) -> None:
    prefix = _raw_plaintext(VEC_ENCRYPT)[:16]
    assert vec.encrypt('{"EventType":"check_url"}', random_prefix=prefix) == VEC_ENCRYPT


def test_published_vector_uses_32_byte_padding() -> None:
    raw = _raw_plaintext(VEC_ENCRYPT)
    # 16 + 4 + 25 + 20 = 65 bytes of frame -> padded to 96 with 31 bytes of value 31.
    assert len(raw) == 96 and raw[-1] == 31 and raw[-31:] == bytes([31]) * 31
    unpadder = padding.PKCS7(128).unpadder()
    with pytest.raises(ValueError):
        unpadder.update(raw) + unpadder.finalize()


@pytest.mark.parametrize("length", range(0, 80))
def test_round_trip_every_padding_length(vec: dc.DingTalkEventCrypto, length: int) -> None:
    msg = "x" * length
    enc = vec.encrypt(msg)
    raw = _raw_plaintext(enc)
    assert len(raw) % 32 == 0
    frame = 16 + 4 + length + len(VEC_OWNER)
    assert raw[-1] == 32 - frame % 32
    assert vec.decrypt(enc) == msg


@pytest.mark.parametrize("length", [24, 56, 88])
def test_full_block_of_padding(vec: dc.DingTalkEventCrypto, length: int) -> None:
    """Frame length a multiple of 32 -> a whole extra block of 32 bytes valued 32."""
    enc = vec.encrypt("a" * length)
    raw = _raw_plaintext(enc)
    assert raw[-32:] == bytes([32]) * 32
    assert vec.decrypt(enc) == "a" * length


def test_multibyte_length_counts_bytes(vec: dc.DingTalkEventCrypto) -> None:
    msg = '{"text":"你好，钉钉 👋"}'
    enc = vec.encrypt(msg)
    raw = _raw_plaintext(enc)
    assert int.from_bytes(raw[16:20], "big") == len(msg.encode("utf-8"))
    assert vec.decrypt(enc) == msg


def test_wrong_owner_key_rejected(vec: dc.DingTalkEventCrypto) -> None:
    other = dc.DingTalkEventCrypto(VEC_TOKEN, VEC_AES, "dingotherapp")
    with pytest.raises(dc.OwnerKeyMismatch):
        other.decrypt(VEC_ENCRYPT)
    with pytest.raises(dc.OwnerKeyMismatch):
        vec.decrypt(other.encrypt("hello"))


def test_forged_or_missing_signature_rejected(vec: dc.DingTalkEventCrypto) -> None:
    with pytest.raises(dc.SignatureMismatch):
        vec.verify_signature("0" * 40, VEC_TS, VEC_NONCE, VEC_ENCRYPT)
    with pytest.raises(dc.SignatureMismatch):
        vec.verify_signature(VEC_SIG, VEC_TS, "otherNonce", VEC_ENCRYPT)
    with pytest.raises(dc.SignatureMismatch):
        vec.verify_signature(None, VEC_TS, VEC_NONCE, VEC_ENCRYPT)


@pytest.mark.parametrize("bad", ["not base64!!", base64.b64encode(b"short").decode(), ""])
def test_malformed_ciphertext(vec: dc.DingTalkEventCrypto, bad: str) -> None:
    with pytest.raises(dc.DingTalkCryptoError):
        vec.decrypt(bad)


def test_bad_padding_rejected() -> None:
    assert dc.pkcs7_unpad(dc.pkcs7_pad(b"abc")) == b"abc"
    with pytest.raises(dc.MalformedCiphertext):
        dc.pkcs7_unpad(b"a" * 31 + bytes([33]))
    with pytest.raises(dc.MalformedCiphertext):
        dc.pkcs7_unpad(b"a" * 29 + bytes([1, 3, 3]))
    with pytest.raises(dc.MalformedCiphertext):
        dc.pkcs7_unpad(b"a" * 31 + bytes([0]))


def test_invalid_aes_key_rejected() -> None:
    with pytest.raises(ValueError):
        dc.DingTalkEventCrypto("t", "tooshort", "owner")
    with pytest.raises(ValueError):
        dc.DingTalkEventCrypto("t", "!" * 43, "owner")


def test_encrypted_reply_is_verifiable(vec: dc.DingTalkEventCrypto) -> None:
    reply = vec.encrypted_reply("success")
    assert set(reply) == {"msg_signature", "encrypt", "timeStamp", "nonce"}
    assert "\n" not in reply["encrypt"]
    vec.verify_signature(reply["msg_signature"], reply["timeStamp"], reply["nonce"],
                         reply["encrypt"])
    assert vec.decrypt(reply["encrypt"]) == "success"


def test_robot_sign_matches_reference_formula() -> None:
    secret, ts = "this-is-secret", "1577262236757"
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    ).decode()
    assert dc.robot_sign(ts, secret) == expected
    dc.verify_robot_sign(ts, expected, secret, now=int(ts) + 1000)


def test_robot_sign_rejects_forgery_and_stale() -> None:
    secret = "app-secret"
    now = 1_700_000_000_000
    ts = str(now)
    good = dc.robot_sign(ts, secret)
    with pytest.raises(dc.SignatureMismatch):
        dc.verify_robot_sign(ts, dc.robot_sign(ts, "wrong-secret"), secret, now=now)
    with pytest.raises(dc.SignatureMismatch):
        dc.verify_robot_sign(ts, None, secret, now=now)
    # A valid sign replayed more than one hour later is refused; just inside the window is fine.
    with pytest.raises(dc.StaleTimestamp):
        dc.verify_robot_sign(ts, good, secret, now=now + 3600_001)
    with pytest.raises(dc.StaleTimestamp):
        dc.verify_robot_sign(ts, good, secret, now=now - 3600_001)
    dc.verify_robot_sign(ts, good, secret, now=now + 3599_000)
    with pytest.raises(dc.StaleTimestamp):
        dc.verify_robot_sign("abc", good, secret, now=now)


def test_group_webhook_signing_is_urlencoded() -> None:
    secret = "SECabc"
    ts, sign = dc.webhook_sign(secret, 1_600_000_000_000)
    assert ts == "1600000000000"
    assert urllib.parse.unquote_plus(sign) == dc.robot_sign(ts, secret)
    url = dc.signed_webhook_url("https://oapi.dingtalk.com/robot/send?access_token=T", secret,
                                1_600_000_000_000)
    assert url == (f"https://oapi.dingtalk.com/robot/send?access_token=T&timestamp={ts}"
                   f"&sign={sign}")
    assert dc.signed_webhook_url("https://x/robot/send?access_token=T", None) == (
        "https://x/robot/send?access_token=T")
