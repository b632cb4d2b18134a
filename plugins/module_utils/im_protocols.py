# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DingTalk, Feishu (Lark) and WeCom signing and event crypto, as the platforms send and expect it.

DingTalk:

* group robot webhook: ``sign = base64(HMAC-SHA256(key=secret, msg=timestamp_ms + "\\n" + secret))``,
  URL-encoded into the query next to ``timestamp``;
* event subscription (HTTP push): AES-256-CBC with key ``b64decode(encodingAesKey + "=")``, IV = key[:16],
  PKCS#7 padding to a **32-byte** block, plaintext ``random16 || uint32_be(len(msg)) || msg || ownerKey``,
  signature ``sha1_hex("".join(sorted([token, timestamp, nonce, encrypt])))``.

Feishu / Lark:

* encrypted events ``{"encrypt": B64}``: key = SHA-256(encrypt_key), IV = first 16 raw bytes, AES-256-CBC,
  standard 16-byte PKCS#7;
* ``X-Lark-Signature = sha256_hex(timestamp + nonce + encrypt_key + raw_body_bytes)``;
* custom bot webhook: ``sign = base64(HMAC-SHA256(key=timestamp_s + "\\n" + secret, msg=b""))``.

WeCom (WeChat Work) app callbacks use the scheme DingTalk's event crypto was copied from (WeCom's
WXBizMsgCrypt): the same key, IV, 32-byte padding and framing, with the CorpID as the trailing receive id,
and ``msg_signature = sha1_hex("".join(sorted([token, timestamp, nonce, encrypt_or_echostr])))``. The URL
verification is ``GET callback?msg_signature=&timestamp=(seconds)&nonce=&echostr=`` and the answer is the
decrypted echostr message, bare.

The AES parts need the ``cryptography`` package; callers check :data:`HAS_CRYPTOGRAPHY` first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import string
import struct
import time
import traceback
from urllib.parse import quote_plus

try:
    from cryptography.hazmat.backends import default_backend
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

DINGTALK_PAD_BLOCK = 32
"""DingTalk pads to 32 bytes (pad values 1..32), not to the AES block size."""
AES_BLOCK = 16
ENCODING_AES_KEY_LENGTH = 43
DINGTALK_AES_KEY_LENGTH = ENCODING_AES_KEY_LENGTH
DINGTALK_CHECK_URL_EVENT = '{"EventType":"check_url"}'
DINGTALK_SUCCESS = "success"

FEISHU_HEADER_TIMESTAMP = "X-Lark-Request-Timestamp"
FEISHU_HEADER_NONCE = "X-Lark-Request-Nonce"
FEISHU_HEADER_SIGNATURE = "X-Lark-Signature"

_NONCE_ALPHABET = string.ascii_letters + string.digits


class ProtocolError(ValueError):
    """A signature, padding or framing check failed."""


class SignatureMismatch(ProtocolError):
    """Missing or wrong signature."""


class OwnerKeyMismatch(ProtocolError):
    """The message was encrypted for another app (DingTalk ownerKey)."""


class MalformedCiphertext(ProtocolError):
    """Ciphertext, padding or plaintext framing is invalid (usually: another key)."""


def random_nonce(length=16):
    return "".join(secrets.choice(_NONCE_ALPHABET) for dummy in range(length))


def now_ms():
    return int(time.time() * 1000)


def pkcs7_pad(data, block):
    pad = block - (len(data) % block)
    return data + bytes([pad]) * pad


def pkcs7_unpad(data, block):
    if not data:
        raise MalformedCiphertext("empty plaintext")
    pad = data[-1]
    if pad < 1 or pad > block or pad > len(data) or data[-pad:] != bytes([pad]) * pad:
        raise MalformedCiphertext("bad padding")
    return data[:-pad]


def _aes_cbc(key, iv):
    return Cipher(algorithms.AES(key), modes.CBC(iv), backend=default_backend())


def _aes_encrypt(key, iv, padded):
    encryptor = _aes_cbc(key, iv).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def _aes_decrypt(key, iv, raw):
    decryptor = _aes_cbc(key, iv).decryptor()
    return decryptor.update(raw) + decryptor.finalize()


def _b64decode(text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise MalformedCiphertext("encrypt is not valid base64") from None


def _hmac_sha256_b64(key, msg):
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode("ascii")


def _digests_equal(expected, provided):
    if not isinstance(provided, str):
        return False
    return hmac.compare_digest(expected.encode("ascii"), provided.strip().lower().encode("utf-8", "replace"))


# --------------------------------------------------------------------------- DingTalk


def dingtalk_webhook_sign(secret, timestamp_ms):
    """``base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret))`` (not URL-encoded)."""
    ts = str(timestamp_ms)
    return _hmac_sha256_b64(secret.encode("utf-8"), (f"{ts}\n{secret}").encode())


def dingtalk_signed_webhook_url(webhook_url, secret, timestamp_ms=None):
    """``webhook_url`` with ``timestamp`` and URL-encoded ``sign`` appended (unchanged without secret)."""
    if not secret:
        return webhook_url
    ts = str(now_ms() if timestamp_ms is None else timestamp_ms)
    separator = "&" if "?" in webhook_url else "?"
    return f"{webhook_url}{separator}timestamp={ts}&sign={quote_plus(dingtalk_webhook_sign(secret, ts))}"


def dingtalk_event_signature(token, timestamp, nonce, encrypt):
    """``sha1_hex("".join(sorted([token, timestamp, nonce, encrypt])))``."""
    joined = "".join(sorted([token, str(timestamp), str(nonce), encrypt]))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()  # nosec - SHA-1 is what DingTalk mandates


def decode_encoding_aes_key(aes_key, label="the DingTalk encodingAesKey"):
    """The 32-byte AES key of a 43-character EncodingAESKey; ValueError naming ``aes_key`` otherwise."""
    if not isinstance(aes_key, str) or len(aes_key) != ENCODING_AES_KEY_LENGTH:
        raise ValueError(f"aes_key must be exactly {ENCODING_AES_KEY_LENGTH} characters ({label})")
    try:
        key = base64.b64decode(aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"aes_key is not a base64 {label.split()[-1]}") from None
    if len(key) != 32:
        raise ValueError("aes_key must decode to 32 bytes")
    return key


def decode_dingtalk_aes_key(aes_key):
    """The 32-byte AES key of a 43-character DingTalk encodingAesKey; ValueError naming ``aes_key`` otherwise."""
    return decode_encoding_aes_key(aes_key, "the DingTalk encodingAesKey")


def decode_wecom_aes_key(aes_key):
    """The 32-byte AES key of a 43-character WeCom EncodingAESKey; ValueError naming ``aes_key`` otherwise."""
    return decode_encoding_aes_key(aes_key, "the WeCom EncodingAESKey")


class _BizMsgCrypto:
    """The WXBizMsgCrypt scheme shared by WeCom callbacks and DingTalk events: AES-256-CBC, key =
    b64decode(EncodingAESKey + "="), IV = key[:16], 32-byte PKCS#7, plaintext = random16 ||
    uint32_be(len(msg)) || msg || receive id, SHA-1 signature over the sorted four strings."""

    _receive_id_option = "receive_id"

    def __init__(self, token, key, receive_id):
        if not token:
            raise ValueError("token is required")
        if not receive_id:
            raise ValueError(f"{self._receive_id_option} is required")
        self.token = token
        self._receive_id = receive_id
        self._key = key

    def signature(self, timestamp, nonce, encrypt):
        return dingtalk_event_signature(self.token, timestamp, nonce, encrypt)

    def verify_signature(self, signature, timestamp, nonce, encrypt):
        if not signature or timestamp is None or nonce is None or not isinstance(encrypt, str):
            raise SignatureMismatch("missing signature parameters")
        if not _digests_equal(self.signature(timestamp, nonce, encrypt), signature):
            raise SignatureMismatch("msg_signature mismatch")

    def encrypt(self, plaintext, random_prefix=None):
        prefix = os.urandom(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise ValueError("random prefix must be 16 bytes")
        msg = plaintext.encode("utf-8")
        framed = prefix + struct.pack(">I", len(msg)) + msg + self._receive_id.encode("utf-8")
        raw = _aes_encrypt(self._key, self._key[:16], pkcs7_pad(framed, DINGTALK_PAD_BLOCK))
        return base64.b64encode(raw).decode("ascii")

    def decrypt(self, encrypt):
        raw = _b64decode(encrypt)
        if not raw or len(raw) % AES_BLOCK:
            raise MalformedCiphertext("ciphertext length is not a multiple of the AES block")
        framed = pkcs7_unpad(_aes_decrypt(self._key, self._key[:16], raw), DINGTALK_PAD_BLOCK)
        if len(framed) < 20:
            raise MalformedCiphertext("plaintext too short")
        length = struct.unpack(">I", framed[16:20])[0]
        if 20 + length > len(framed):
            raise MalformedCiphertext("message length exceeds plaintext")
        if not hmac.compare_digest(framed[20 + length:], self._receive_id.encode("utf-8")):
            raise OwnerKeyMismatch(f"{self._receive_id_option} mismatch")
        try:
            return framed[20:20 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedCiphertext("message is not UTF-8") from None


class DingTalkEventCrypto(_BizMsgCrypto):
    """Encrypt, decrypt and sign DingTalk event-subscription payloads for one app."""

    _receive_id_option = "owner_key"

    def __init__(self, token, aes_key, owner_key):
        if not token:
            raise ValueError("token is required")
        if not owner_key:
            raise ValueError("owner_key is required")
        super().__init__(token, decode_dingtalk_aes_key(aes_key), owner_key)

    @property
    def owner_key(self):
        return self._receive_id

    def envelope(self, plaintext, timestamp=None, nonce=None):
        """``{"msg_signature","encrypt","timeStamp","nonce"}`` around ``plaintext``.

        The shape of a DingTalk answer; a push carries the same fields, the first three in the query.
        """
        ts = str(now_ms() if timestamp is None else timestamp)
        nn = random_nonce() if nonce is None else nonce
        encrypted = self.encrypt(plaintext)
        return {"msg_signature": self.signature(ts, nn, encrypted), "encrypt": encrypted, "timeStamp": ts, "nonce": nn}

    def open_envelope(self, answer):
        """Verify and decrypt an envelope (a DingTalk-style answer); ProtocolError when it is not one."""
        if not isinstance(answer, dict) or not isinstance(answer.get("encrypt"), str):
            raise MalformedCiphertext("not an encrypted DingTalk envelope")
        self.verify_signature(answer.get("msg_signature"), answer.get("timeStamp"), answer.get("nonce"),
                              answer["encrypt"])
        return self.decrypt(answer["encrypt"])


# --------------------------------------------------------------------------- Feishu / Lark


def feishu_aes_key(encrypt_key):
    if not encrypt_key:
        raise ValueError("encrypt_key is required")
    return hashlib.sha256(encrypt_key.encode("utf-8")).digest()


def feishu_encrypt(encrypt_key, plaintext, iv=None):
    iv = os.urandom(16) if iv is None else iv
    if len(iv) != 16:
        raise ValueError("iv must be 16 bytes")
    padded = pkcs7_pad(plaintext.encode("utf-8"), AES_BLOCK)
    return base64.b64encode(iv + _aes_encrypt(feishu_aes_key(encrypt_key), iv, padded)).decode("ascii")


def feishu_decrypt(encrypt_key, encrypt):
    raw = _b64decode(encrypt)
    if len(raw) < 32 or len(raw) % AES_BLOCK:
        raise MalformedCiphertext("ciphertext has an invalid length")
    plain = pkcs7_unpad(_aes_decrypt(feishu_aes_key(encrypt_key), raw[:16], raw[16:]), AES_BLOCK)
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedCiphertext("message is not UTF-8") from None


def feishu_signature(timestamp, nonce, encrypt_key, body):
    """``sha256_hex(timestamp + nonce + encrypt_key + raw_body_bytes)``."""
    digest = hashlib.sha256()
    digest.update((f"{timestamp}{nonce}{encrypt_key}").encode())
    digest.update(body)
    return digest.hexdigest()


def feishu_verify_signature(timestamp, nonce, encrypt_key, body, provided):
    """Constant-time check of ``X-Lark-Signature``; False when a header is missing."""
    if timestamp is None or nonce is None or not provided:
        return False
    return _digests_equal(feishu_signature(timestamp, nonce, encrypt_key, body), provided)


def feishu_encrypted_request(encrypt_key, payload, timestamp=None, nonce=None):
    """``(raw_body_bytes, headers)`` for ``payload`` sent encrypted and signed the way Feishu does."""
    body = json.dumps({"encrypt": feishu_encrypt(encrypt_key, json.dumps(payload, separators=(",", ":")))},
                      separators=(",", ":")).encode("utf-8")
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nn = random_nonce() if nonce is None else nonce
    headers = {
        FEISHU_HEADER_TIMESTAMP: ts,
        FEISHU_HEADER_NONCE: nn,
        FEISHU_HEADER_SIGNATURE: feishu_signature(ts, nn, encrypt_key, body),
    }
    return body, headers


def feishu_webhook_sign(secret, timestamp_s):
    """``base64(HMAC-SHA256(key=timestamp + "\\n" + secret, msg=b""))`` (key and message reversed vs DingTalk)."""
    return _hmac_sha256_b64((f"{timestamp_s}\n{secret}").encode(), b"")


def feishu_webhook_body(text, secret=None, timestamp_s=None):
    """Custom bot text message, signed with ``timestamp`` (seconds, string) and ``sign`` when ``secret`` is set."""
    body = {"msg_type": "text", "content": {"text": text}}
    if secret:
        ts = str(int(time.time()) if timestamp_s is None else timestamp_s)
        body["timestamp"] = ts
        body["sign"] = feishu_webhook_sign(secret, ts)
    return body


# --------------------------------------------------------------------------- WeCom


WECOM_ECHO_DIGITS = 19
"""WeCom's own echostr messages are decimal strings of about 19 digits."""


class WeComCrypto(_BizMsgCrypto):
    """Encrypt, decrypt and sign WeCom (WXBizMsgCrypt) callback payloads for one app of a corp."""

    _receive_id_option = "corp_id"

    def __init__(self, token, aes_key, corp_id):
        if not token:
            raise ValueError("token is required")
        if not corp_id:
            raise ValueError("corp_id is required")
        super().__init__(token, decode_wecom_aes_key(aes_key), corp_id)

    @property
    def corp_id(self):
        return self._receive_id

    def verification_query(self, message=None, timestamp=None, nonce=None):
        """``(query, message)``: the URL verification WeCom sends (query parameters as a list of pairs,
        ``timestamp`` in seconds) and the plaintext a correct callback answers with."""
        msg = random_digits(WECOM_ECHO_DIGITS) if message is None else message
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nn = random_digits(10) if nonce is None else str(nonce)
        echostr = self.encrypt(msg)
        query = [("msg_signature", self.signature(ts, nn, echostr)), ("timestamp", ts), ("nonce", nn),
                 ("echostr", echostr)]
        return query, msg


def random_digits(length):
    """A random decimal string of ``length`` digits without a leading zero."""
    first = str(1 + secrets.randbelow(9))
    return first + "".join(str(secrets.randbelow(10)) for dummy in range(length - 1))
