"""The message crypto DingTalk's event subscription and WeCom's callbacks share.

Both platforms derive it from the same design (WeCom's ``WXBizMsgCrypt`` samples):

* key = ``base64decode(EncodingAESKey + "=")`` (43 characters → 32 bytes), IV = ``key[:16]``,
  AES-256-CBC with PKCS#7 padding to a **32-byte** block (pad values 1..32);
* plaintext = ``random16 || uint32_be(len(msg)) || msg || receive_id``, lengths in bytes; the
  receive id is DingTalk's owner key (app key, corp id or suite key) or WeCom's corp id, and is
  checked on decryption;
* signature = ``sha1_hex("".join(sorted([token, timestamp, nonce, encrypt])))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import string
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PAD_BLOCK = 32
"""Both platforms pad to 32 bytes (pad values 1..32), not to the AES block size."""

_NONCE_ALPHABET = string.ascii_letters + string.digits


class MsgCryptError(ValueError):
    """Base class of every verification/decryption failure."""


class SignatureMismatch(MsgCryptError):
    """Missing or wrong signature."""


class ReceiveIdMismatch(MsgCryptError):
    """The decrypted message was encrypted for another app/corp."""


class MalformedCiphertext(MsgCryptError):
    """Ciphertext or plaintext framing is invalid."""


class StaleTimestamp(MsgCryptError):
    """Timestamp missing, malformed, or outside the allowed window."""


def check_timestamp(timestamp: str | None, *, now: int, window: int, max_digits: int) -> int:
    """``timestamp`` as an int when it is at most ``max_digits`` ASCII digits (``str.isdigit``
    also takes "²" and other digits ``int`` refuses) within ``window`` of ``now`` (same unit:
    DingTalk counts milliseconds, WeCom seconds); :class:`StaleTimestamp` otherwise."""
    value = timestamp.strip() if timestamp else ""
    if not re.fullmatch(f"[0-9]{{1,{max_digits}}}", value):
        raise StaleTimestamp("missing or malformed timestamp")
    ts = int(value)
    if abs(now - ts) > window:
        raise StaleTimestamp("timestamp outside the allowed window")
    return ts


def pkcs7_pad(data: bytes, block: int = PAD_BLOCK) -> bytes:
    pad = block - (len(data) % block)
    return data + bytes([pad]) * pad


def pkcs7_unpad(data: bytes, block: int = PAD_BLOCK) -> bytes:
    if not data:
        raise MalformedCiphertext("empty plaintext")
    pad = data[-1]
    if pad < 1 or pad > block or pad > len(data):
        raise MalformedCiphertext("bad padding")
    if data[-pad:] != bytes([pad]) * pad:
        raise MalformedCiphertext("bad padding")
    return data[:-pad]


def event_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """``sha1_hex("".join(sorted([token, timestamp, nonce, encrypt])))``."""
    joined = "".join(sorted([token, timestamp, nonce, encrypt]))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()  # noqa: S324 - protocol mandated


def random_nonce(length: int = 8) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


class MsgCrypt:
    """Encrypt/decrypt/sign messages for one app (``receive_id``: owner key or corp id)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not token:
            raise ValueError("token is required")
        if not receive_id:
            raise ValueError("receive id (app key / corp id / suite key) is required")
        if len(encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey must be 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("EncodingAESKey is not valid base64") from exc
        if len(key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes")
        self.token = token
        self.receive_id = receive_id
        self._key = key
        self._iv = key[:16]

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._iv))

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return event_signature(self.token, timestamp, nonce, encrypt)

    def verify_signature(
        self, signature: str | None, timestamp: str | None, nonce: str | None, encrypt: str
    ) -> None:
        if not signature or timestamp is None or nonce is None:
            raise SignatureMismatch("missing signature parameters")
        expected = self.signature(timestamp, nonce, encrypt)
        if not hmac.compare_digest(
            expected.encode("ascii"), signature.strip().lower().encode("utf-8", "replace")
        ):
            raise SignatureMismatch("msg_signature mismatch")

    def encrypt(self, plaintext: str, *, random_prefix: bytes | None = None) -> str:
        prefix = os.urandom(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise ValueError("random prefix must be 16 bytes")
        msg = plaintext.encode("utf-8")
        framed = prefix + struct.pack(">I", len(msg)) + msg + self.receive_id.encode("utf-8")
        enc = self._cipher().encryptor()
        raw = enc.update(pkcs7_pad(framed)) + enc.finalize()
        return base64.b64encode(raw).decode("ascii")

    def decrypt(self, encrypt: str) -> str:
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedCiphertext("encrypt is not valid base64") from exc
        if not raw or len(raw) % 16:
            raise MalformedCiphertext("ciphertext length is not a multiple of the AES block")
        dec = self._cipher().decryptor()
        framed = pkcs7_unpad(dec.update(raw) + dec.finalize())
        if len(framed) < 20:
            raise MalformedCiphertext("plaintext too short")
        (length,) = struct.unpack(">I", framed[16:20])
        if 20 + length > len(framed):
            raise MalformedCiphertext("message length exceeds plaintext")
        msg = framed[20 : 20 + length]
        receive_id = framed[20 + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode("utf-8")):
            raise ReceiveIdMismatch("receive id mismatch")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedCiphertext("message is not UTF-8") from exc
