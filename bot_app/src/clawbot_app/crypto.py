"""AES-256-GCM encryption of conversation content with a rotating keyring file.

Keyring file format: ``{"current": "<id>", "keys": {"<id>": "<base64 32 bytes>"}}``. Each
encrypted value is stored with its key id, so rows written under an old key stay readable after
rotation as long as the old key is still listed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from clawbot_app.config import Settings


class KeyringError(Exception):
    pass


def load_keyring_file(path: Path) -> tuple[str, dict[str, bytes]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyringError(f"cannot read keyring: {exc.strerror}") from None
    except ValueError:
        raise KeyringError("keyring is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise KeyringError("keyring must be {\"current\": id, \"keys\": {id: base64}}")
    keys: dict[str, bytes] = {}
    for kid, b64 in data["keys"].items():
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, TypeError):
            raise KeyringError(f"key '{kid}' is not valid base64") from None
        if len(raw) != 32:
            raise KeyringError(f"key '{kid}' must be 32 bytes (AES-256)")
        keys[str(kid)] = raw
    current = data.get("current")
    if not isinstance(current, str) or current not in keys:
        raise KeyringError("'current' must name a key in 'keys'")
    return current, keys


def write_keyring_file(path: Path, current: str, keys: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"current": current, "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(tmp, path)


def new_key_id() -> str:
    return time.strftime("k%Y%m%d%H%M%S") + secrets.token_hex(2)


def rotate_keyring_file(path: Path) -> str:
    """Add a fresh key and make it current (old keys stay for reading). Returns the new id."""
    keys: dict[str, bytes] = {}
    if path.exists():
        _, keys = load_keyring_file(path)
    kid = new_key_id()
    while kid in keys:
        kid = new_key_id()
    keys[kid] = AESGCM.generate_key(bit_length=256)
    write_keyring_file(path, kid, keys)
    return kid


def keyring_path(settings: Settings) -> Path:
    if settings.encryption.keyring_file:
        return Path(os.path.expanduser(settings.encryption.keyring_file))
    return settings.storage.data_path / "keyring.json"


class Keyring:
    """Encrypt with the current key; decrypt with whichever key id the row names."""

    def __init__(self, current: str, keys: dict[str, bytes]):
        self._set(current, keys)

    def _set(self, current: str, keys: dict[str, bytes]) -> None:
        self.current = current
        self._aead = {kid: AESGCM(k) for kid, k in keys.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        path = keyring_path(settings)
        if not path.exists():
            if settings.encryption.keyring_file:
                raise KeyringError(f"keyring file not found: {path}")
            rotate_keyring_file(path)  # embedded default: generate one in the data dir
        return cls(*load_keyring_file(path))

    def reload(self, settings: Settings) -> None:
        path = keyring_path(settings)
        if path.exists():
            self._set(*load_keyring_file(path))

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
