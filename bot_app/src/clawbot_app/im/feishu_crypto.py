"""Feishu (Lark) event crypto, callback signature and custom-bot webhook signing.

* Encrypted callbacks: ``{"encrypt": B64}``; key = SHA-256(encrypt_key), raw = b64decode,
  IV = raw[:16], AES-256-CBC over raw[16:], standard 16-byte PKCS#7.
* ``X-Lark-Signature`` = sha256_hex(timestamp + nonce + encrypt_key + raw_body_bytes) -- always
  computed over the raw body bytes as received.
* Custom bot webhook: sign = base64(HMAC-SHA256(key=timestamp + "\\n" + secret, msg=b"")).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HEADER_TIMESTAMP = "X-Lark-Request-Timestamp"
HEADER_NONCE = "X-Lark-Request-Nonce"
HEADER_SIGNATURE = "X-Lark-Signature"


class FeishuCryptoError(ValueError):
    """Decryption or signature failure."""


class FeishuCipher:
    """AES-256-CBC cipher keyed by SHA-256 of the app's Encrypt Key."""

    def __init__(self, encrypt_key: str) -> None:
        if not encrypt_key:
            raise ValueError("encrypt key is required")
        self._key = hashlib.sha256(encrypt_key.encode("utf-8")).digest()

    def decrypt(self, encrypt: str) -> str:
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FeishuCryptoError("encrypt is not valid base64") from exc
        if len(raw) < 32 or len(raw) % 16:
            raise FeishuCryptoError("ciphertext has an invalid length")
        dec = Cipher(algorithms.AES(self._key), modes.CBC(raw[:16])).decryptor()
        padded = dec.update(raw[16:]) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
            return plain.decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise FeishuCryptoError("decryption failed") from exc

    def encrypt(self, plaintext: str, *, iv: bytes | None = None) -> str:
        iv = os.urandom(16) if iv is None else iv
        if len(iv) != 16:
            raise ValueError("iv must be 16 bytes")
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode("ascii")


def decrypt(encrypt_key: str, encrypt: str) -> str:
    return FeishuCipher(encrypt_key).decrypt(encrypt)


def encrypt(encrypt_key: str, plaintext: str, *, iv: bytes | None = None) -> str:
    return FeishuCipher(encrypt_key).encrypt(plaintext, iv=iv)


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """``sha256_hex(timestamp + nonce + encrypt_key + raw_body)``."""
    digest = hashlib.sha256()
    digest.update((timestamp + nonce + encrypt_key).encode("utf-8"))
    digest.update(body)
    return digest.hexdigest()


def verify_signature(
    timestamp: str | None,
    nonce: str | None,
    encrypt_key: str,
    body: bytes,
    provided: str | None,
) -> bool:
    """Constant-time check of ``X-Lark-Signature``; False when any header is missing."""
    if timestamp is None or nonce is None or not provided:
        return False
    expected = signature(timestamp, nonce, encrypt_key, body)
    return hmac.compare_digest(
        expected.encode("ascii"), provided.strip().lower().encode("utf-8", "replace")
    )


def signed_headers(
    encrypt_key: str, body: bytes, *, timestamp: str | None = None, nonce: str | None = None
) -> dict[str, str]:
    """Headers Feishu would send with ``body`` (used by tests, fakes and the benchmark)."""
    ts = str(int(time.time())) if timestamp is None else timestamp
    nn = os.urandom(8).hex() if nonce is None else nonce
    return {
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nn,
        HEADER_SIGNATURE: signature(ts, nn, encrypt_key, body),
    }


def webhook_sign(secret: str, timestamp_s: int | None = None) -> tuple[str, str]:
    """Return ``(timestamp, sign)`` for a custom bot webhook body (timestamp in seconds)."""
    ts = str(int(time.time()) if timestamp_s is None else timestamp_s)
    mac = hmac.new(f"{ts}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return ts, base64.b64encode(mac).decode("ascii")
