"""AES-256-GCM encryption of conversation content with a rotating keyring file.

The keyring file is a :mod:`clawbot_app.keyfile` file (version 1, or the legacy
``{"current": "<id>", "keys": {"<id>": "<base64 32 bytes>"}}``) whose keys are standard base64
of 32 random bytes. Each encrypted value is stored with its key id, so rows written under an old
key stay readable after rotation as long as the old key is still listed.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clawbot_app.keyfile import (
    KeyfileError,
    KeyMeta,
    SecretKeyring,
    load_secret_keyring,
    locked,
    new_key_id,
    timestamp,
    utc_now,
    write_secret_keyring,
)

if TYPE_CHECKING:
    from clawbot_app.config import Settings

AES_KEY_BYTES = 32


class KeyringError(Exception):
    pass


class KeyringContent(NamedTuple):
    """An encryption keyring file as the service uses it."""

    current: str
    keys: dict[str, bytes]  # key id -> 32-byte key
    created: float | None = None  # unix time the current key was created (None: unknown)


def load_keyring_file(path: Path) -> tuple[str, dict[str, bytes]]:
    """``(current id, {id: 32-byte key})`` from an encryption keyring file."""
    content = load_keyring_content(path)
    return content.current, content.keys


def load_keyring_content(path: Path) -> KeyringContent:
    """:func:`load_keyring_file` with the current key's creation time."""
    try:
        ring = load_secret_keyring(path)
    except KeyfileError as exc:
        raise KeyringError(str(exc)) from None
    return KeyringContent(ring.current, decode_aes_keys(ring), ring.current_created)


def decode_aes_keys(ring: SecretKeyring) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for kid, text in ring.keys.items():
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise KeyringError(f"{ring.path}: key '{kid}' is not valid base64") from None
        if len(raw) != AES_KEY_BYTES:
            raise KeyringError(f"{ring.path}: key '{kid}' must be 32 bytes (AES-256)")
        keys[kid] = raw
    return keys


def rotate_keyring_file(path: Path, lock_timeout: float = 60.0) -> str:
    """Add a fresh key and make it current (old keys stay for reading). Returns the new id.

    Reads version 1 and legacy files and always writes version 1, atomically, under the same
    lock file as the ``key_rotate`` Ansible module.
    """
    try:
        with locked(path, lock_timeout):
            return _rotate_unlocked(path)
    except KeyfileError as exc:
        raise KeyringError(str(exc)) from None


def _rotate_unlocked(path: Path) -> str:
    now = utc_now()
    kid = new_key_id(now)
    secret = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    meta = KeyMeta(created=timestamp(now), retired=None, source="generated", format="base64",
                   length=AES_KEY_BYTES)
    if path.exists():
        ring = load_secret_keyring(path)
        decode_aes_keys(ring)  # never rotate on top of a keyring the service cannot use
        while kid in ring.keys:
            kid = new_key_id(now)
        ring = _adopt_legacy_keys(ring, path).rotated(kid, secret, meta, timestamp(now))
    else:
        ring = SecretKeyring(path=str(path), current=kid, keys={kid: secret}, meta={kid: meta})
    write_secret_keyring(path, ring)
    return kid


def _adopt_legacy_keys(ring: SecretKeyring, path: Path) -> SecretKeyring:
    """Describe keys without metadata (legacy files) as ``key_rotate`` adopts them.

    Their creation time is unknown; the file's modification time stands in for it (and for the
    retirement of keys that are not current).
    """
    mtime = timestamp(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC))
    metas = dict(ring.meta)
    for kid in ring.keys:
        if kid not in metas:
            metas[kid] = KeyMeta(created=mtime, retired=None if kid == ring.current else mtime,
                                 source="unknown", format="base64", length=AES_KEY_BYTES)
    return replace(ring, meta=metas)


def keyring_path(settings: Settings) -> Path:
    if settings.encryption.keyring_file:
        return Path(os.path.expanduser(settings.encryption.keyring_file))
    return settings.storage.data_path / "keyring.json"


class Keyring:
    """Encrypt with the current key; decrypt with whichever key id the row names."""

    def __init__(self, current: str, keys: dict[str, bytes], created: float | None = None):
        self._set(current, keys, created)

    def _set(self, current: str, keys: dict[str, bytes], created: float | None = None) -> None:
        self._aead = {kid: AESGCM(k) for kid, k in keys.items()}
        self.current = current
        self.current_created = created  # unix time, for the metrics (None: unknown)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        if settings.keyring is not None:  # parsed once, by load_settings
            return cls(*settings.keyring)
        path = keyring_path(settings)
        if not path.exists():
            if settings.encryption.keyring_file:
                raise KeyringError(f"keyring file not found: {path}")
            rotate_keyring_file(path)  # embedded default: generate one in the data dir
        return cls(*load_keyring_content(path))

    def reload(self, settings: Settings) -> None:
        if settings.keyring is not None:  # parsed once, by load_settings
            self._set(*settings.keyring)
            return
        path = keyring_path(settings)
        if path.exists():
            self._set(*load_keyring_content(path))

    def encrypt(self, plaintext: str, aad: str) -> tuple[str, str]:
        nonce = os.urandom(12)
        ct = self._aead[self.current].encrypt(nonce, plaintext.encode(), aad.encode())
        return self.current, base64.b64encode(nonce + ct).decode()

    def decrypt(self, key_id: str, blob: str, aad: str) -> str:
        aead = self._aead.get(key_id)
        if aead is None:
            raise KeyringError(f"unknown key id '{key_id}'")
        raw = base64.b64decode(blob)
        return aead.decrypt(raw[:12], raw[12:], aad.encode()).decode()
