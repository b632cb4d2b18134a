"""DingTalk signing and event-subscription crypto.

Three independent mechanisms (see the protocol notes):

* enterprise robot HTTP callback: headers ``timestamp`` (ms) and ``sign`` with
  ``sign = base64(HMAC-SHA256(key=app_secret, msg=timestamp + "\\n" + app_secret))``;
* group robot webhook (outbound): the same HMAC with the robot secret, URL-encoded into the query;
* event subscription (HTTP push): AES-256-CBC with PKCS#7 padding to a **32-byte** block,
  plaintext ``random16 || uint32_be(len(msg)) || msg || owner_key`` and a SHA-1 signature over
  the sorted ``[token, timestamp, nonce, encrypt]``.
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
import time
import urllib.parse

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SIGN_WINDOW_MS = 60 * 60 * 1000
"""Maximum allowed distance between a callback ``timestamp`` and the local clock."""

PAD_BLOCK = 32
"""DingTalk pads to 32 bytes (pad values 1..32), not to the AES block size."""

_NONCE_ALPHABET = string.ascii_letters + string.digits


class DingTalkCryptoError(ValueError):
    """Base class of every verification/decryption failure."""


class SignatureMismatch(DingTalkCryptoError):
    """Missing or wrong signature."""


class StaleTimestamp(DingTalkCryptoError):
    """Timestamp missing, malformed, or outside the allowed window."""


class OwnerKeyMismatch(DingTalkCryptoError):
    """The decrypted message was encrypted for another app/corp."""


class MalformedCiphertext(DingTalkCryptoError):
    """Ciphertext or plaintext framing is invalid."""


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- robot callback


def robot_sign(timestamp: str, app_secret: str) -> str:
    """``base64(HMAC-SHA256(app_secret, timestamp + "\\n" + app_secret))`` (not URL-encoded)."""
    mac = hmac.new(
        app_secret.encode("utf-8"),
        f"{timestamp}\n{app_secret}".encode(),
        hashlib.sha256,
    ).digest()
    return base64.b64encode(mac).decode("ascii")


_TIMESTAMP_MS = re.compile(r"[0-9]{1,15}")
"""ASCII digits only (``str.isdigit`` also takes "²" and other digits ``int`` refuses), and no
more than a millisecond timestamp needs (15 digits reach the year 33658)."""


def check_timestamp_ms(
    timestamp: str | None, *, now: int | None = None, window_ms: int = SIGN_WINDOW_MS
) -> int:
    """Parse a millisecond timestamp and ensure it is within ``window_ms`` of ``now``."""
    value = timestamp.strip() if timestamp else ""
    if not _TIMESTAMP_MS.fullmatch(value):
        raise StaleTimestamp("missing or malformed timestamp")
    ts = int(value)
    current = now_ms() if now is None else now
    if abs(current - ts) > window_ms:
        raise StaleTimestamp("timestamp outside the allowed window")
    return ts


def verify_robot_sign(
    timestamp: str | None,
    sign: str | None,
    app_secret: str,
    *,
    now: int | None = None,
    window_ms: int = SIGN_WINDOW_MS,
) -> None:
    """Verify the ``timestamp``/``sign`` headers of a robot callback; raise on failure."""
    check_timestamp_ms(timestamp, now=now, window_ms=window_ms)
    if not sign:
        raise SignatureMismatch("missing sign")
    expected = robot_sign(str(timestamp).strip(), app_secret)
    if not hmac.compare_digest(expected.encode("ascii"), sign.strip().encode("utf-8", "replace")):
        raise SignatureMismatch("sign mismatch")


# --------------------------------------------------------------------------- group robot webhook


def webhook_sign(secret: str, timestamp_ms: int | None = None) -> tuple[str, str]:
    """Return ``(timestamp, urlencoded_sign)`` for a group robot webhook (secret ``SEC...``)."""
    ts = str(now_ms() if timestamp_ms is None else timestamp_ms)
    return ts, urllib.parse.quote_plus(robot_sign(ts, secret))


def signed_webhook_url(
    webhook_url: str, secret: str | None, timestamp_ms: int | None = None
) -> str:
    """Append ``timestamp`` and ``sign`` to a group robot webhook URL (no-op without secret)."""
    if not secret:
        return webhook_url
    ts, sign = webhook_sign(secret, timestamp_ms)
    sep = "&" if "?" in webhook_url else "?"
    return f"{webhook_url}{sep}timestamp={ts}&sign={sign}"


# --------------------------------------------------------------------------- event crypto


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


class DingTalkEventCrypto:
    """Encrypt/decrypt/sign DingTalk event-subscription payloads for one app."""

    def __init__(self, token: str, encoding_aes_key: str, owner_key: str) -> None:
        if not token:
            raise ValueError("token is required")
        if not owner_key:
            raise ValueError("owner key (app key / corp id / suite key) is required")
        if len(encoding_aes_key) != 43:
            raise ValueError("encodingAesKey must be 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("encodingAesKey is not valid base64") from exc
        if len(key) != 32:
            raise ValueError("encodingAesKey must decode to 32 bytes")
        self.token = token
        self.owner_key = owner_key
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
        framed = prefix + struct.pack(">I", len(msg)) + msg + self.owner_key.encode("utf-8")
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
        owner = framed[20 + length :]
        if not hmac.compare_digest(owner, self.owner_key.encode("utf-8")):
            raise OwnerKeyMismatch("owner key mismatch")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedCiphertext("message is not UTF-8") from exc

    def encrypted_reply(
        self,
        plaintext: str = "success",
        *,
        timestamp: str | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """Answer for an event push: ``{"msg_signature","encrypt","timeStamp","nonce"}``."""
        ts = str(now_ms()) if timestamp is None else timestamp
        nn = random_nonce() if nonce is None else nonce
        encrypt = self.encrypt(plaintext)
        return {
            "msg_signature": self.signature(ts, nn, encrypt),
            "encrypt": encrypt,
            "timeStamp": ts,
            "nonce": nn,
        }
