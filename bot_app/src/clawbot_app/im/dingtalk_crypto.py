"""DingTalk signing and event-subscription crypto.

Three independent mechanisms (see the protocol notes):

* enterprise robot HTTP callback: headers ``timestamp`` (ms) and ``sign`` with
  ``sign = base64(HMAC-SHA256(key=app_secret, msg=timestamp + "\\n" + app_secret))``;
* group robot webhook (outbound): the same HMAC with the robot secret, URL-encoded into the query;
* event subscription (HTTP push): the message crypto shared with WeCom
  (:mod:`clawbot_app.im.msgcrypt`) with the owner key as receive id, and the encrypted
  ``success`` answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

from clawbot_app.im.msgcrypt import (
    PAD_BLOCK,
    MalformedCiphertext,
    MsgCrypt,
    MsgCryptError,
    ReceiveIdMismatch,
    SignatureMismatch,
    StaleTimestamp,
    check_timestamp,
    event_signature,
    pkcs7_pad,
    pkcs7_unpad,
    random_nonce,
)

__all__ = [
    "PAD_BLOCK", "SIGN_WINDOW_MS", "DingTalkCryptoError", "DingTalkEventCrypto",
    "MalformedCiphertext", "OwnerKeyMismatch", "SignatureMismatch", "StaleTimestamp",
    "check_timestamp_ms", "event_signature", "now_ms", "pkcs7_pad", "pkcs7_unpad",
    "random_nonce", "robot_sign", "signed_webhook_url", "verify_robot_sign", "webhook_sign",
]

SIGN_WINDOW_MS = 60 * 60 * 1000
"""Maximum allowed distance between a callback ``timestamp`` and the local clock."""

DingTalkCryptoError = MsgCryptError
"""Base class of every verification/decryption failure (shared with WeCom's crypto)."""

OwnerKeyMismatch = ReceiveIdMismatch
"""The decrypted message was encrypted for another app/corp (owner key = receive id)."""


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


def check_timestamp_ms(
    timestamp: str | None, *, now: int | None = None, window_ms: int = SIGN_WINDOW_MS
) -> int:
    """Parse a millisecond timestamp and ensure it is within ``window_ms`` of ``now`` (at most
    15 digits: a millisecond timestamp reaches the year 33658 with them)."""
    current = now_ms() if now is None else now
    return check_timestamp(timestamp, now=current, window=window_ms, max_digits=15)


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


class DingTalkEventCrypto(MsgCrypt):
    """Encrypt/decrypt/sign DingTalk event-subscription payloads for one app (the receive id is
    the owner key: app key, corp id or suite key)."""

    def __init__(self, token: str, encoding_aes_key: str, owner_key: str) -> None:
        super().__init__(token, encoding_aes_key, owner_key)

    @property
    def owner_key(self) -> str:
        return self.receive_id

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
