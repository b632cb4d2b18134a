"""Keyring files of secrets: one loader and one atomic writer for every kind of key.

The same file format holds the AES-256 encryption keys, API tokens and externally issued
secrets (a model provider's API key). Version 1, written by ``clawbot-app keyring rotate`` and
by the ``clawbot.stack.key_rotate`` Ansible module::

    {"version": 1, "current": "<id>", "keys": {"<id>": "<secret text>"},
     "meta": {"<id>": {"created": "...Z", "retired": null, "source": "generated",
                       "format": "base64", "length": 32}}}

The legacy format ``{"current": "<id>", "keys": {"<id>": "<secret text>"}}`` is still read.
Error messages name the file and the key id, never a secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
# Key ids end up in error messages and metric labels: a conservative charset keeps a secret
# pasted in the wrong place from being echoed there.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
_META_TEXT_FIELDS = ("created", "retired", "source", "format")


class KeyfileError(ValueError):
    """A keyring file cannot be used; ``str()`` is ``"<path>: <reason>"`` (no secrets)."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class KeyMeta:
    created: str | None = None
    retired: str | None = None
    source: str | None = None
    format: str | None = None
    length: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "retired": self.retired, "source": self.source,
                "format": self.format, "length": self.length}


@dataclass(frozen=True)
class SecretKeyring:
    """The parsed file. ``keys`` maps key id to secret text and is kept out of ``repr``."""

    path: str
    current: str
    keys: Mapping[str, str] = field(repr=False)
    meta: Mapping[str, KeyMeta] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def current_secret(self) -> str:
        return self.keys[self.current]

    @property
    def current_created(self) -> float | None:
        """Unix time of the current key's ``created`` meta (None: no meta or not a time)."""
        return unix_time(self.meta.get(self.current, KeyMeta()).created)

    def rotated(self, key_id: str, secret: str, meta: KeyMeta, now: str) -> SecretKeyring:
        """A copy with ``key_id`` as the new current key; the old current is retired ``now``."""
        if key_id in self.keys:
            raise KeyfileError(self.path, f"key id '{key_id}' is already in the keyring")
        metas = dict(self.meta)
        old = metas.get(self.current, KeyMeta())
        metas[self.current] = replace(old, retired=old.retired or now)
        metas[key_id] = meta
        return replace(self, current=key_id, keys={**self.keys, key_id: secret}, meta=metas,
                       version=FORMAT_VERSION)

    def to_document(self) -> dict[str, Any]:
        """The version 1 JSON document (every key gets a ``meta`` entry)."""
        return {"version": FORMAT_VERSION, "current": self.current, "keys": dict(self.keys),
                "meta": {kid: self.meta.get(kid, KeyMeta()).as_dict() for kid in self.keys}}


def load_secret_keyring(path: str | os.PathLike[str]) -> SecretKeyring:
    """Read and validate a keyring file (version 1 or legacy)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyfileError(path, f"cannot read keyring: {exc.strerror or type(exc).__name__}"
                           ) from None
    except UnicodeDecodeError:
        raise KeyfileError(path, "keyring is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyfileError(path, f"keyring is not valid JSON (line {exc.lineno})") from None
    return parse_secret_keyring(path, data)


def parse_secret_keyring(path: str | os.PathLike[str], data: Any) -> SecretKeyring:
    if not isinstance(data, dict):
        raise KeyfileError(path, "keyring must be a JSON object")
    version = _version(path, data)
    keys = _keys(path, data.get("keys"))
    current = data.get("current")
    if not isinstance(current, str) or current not in keys:
        raise KeyfileError(path, "'current' must name a key in 'keys'")
    meta = _meta(path, data.get("meta"), keys) if version else {}
    return SecretKeyring(path=str(path), current=current, keys=keys, meta=meta,
                         version=version)


def _version(path: str | os.PathLike[str], data: dict[str, Any]) -> int:
    if "version" not in data:
        return 0  # legacy: {"current", "keys"}
    version = data["version"]
    if type(version) is not int or version != FORMAT_VERSION:
        raise KeyfileError(path, f"unsupported keyring version (this bot reads "
                                 f"{FORMAT_VERSION} and the legacy format without 'version')")
    return version


def _keys(path: str | os.PathLike[str], raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not raw:
        raise KeyfileError(path, "'keys' must be a non-empty object of key id to secret text")
    keys: dict[str, str] = {}
    for position, (kid, secret) in enumerate(raw.items(), 1):
        if not _KEY_ID.fullmatch(kid):
            raise KeyfileError(path, f"key id #{position} is not a valid key id "
                                     f"(letters, digits and ._:@+- up to 128 characters)")
        if not isinstance(secret, str) or not secret:
            raise KeyfileError(path, f"key '{kid}' must be a non-empty string")
        keys[kid] = secret
    return keys


def _meta(path: str | os.PathLike[str], raw: Any, keys: Mapping[str, str]
          ) -> dict[str, KeyMeta]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KeyfileError(path, "'meta' must be an object of key id to key metadata")
    metas: dict[str, KeyMeta] = {}
    for kid in keys:  # metadata of keys no longer listed is dropped
        entry = raw.get(kid)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise KeyfileError(path, f"meta of key '{kid}' must be an object")
        for name in _META_TEXT_FIELDS:
            if entry.get(name) is not None and not isinstance(entry[name], str):
                raise KeyfileError(path, f"meta of key '{kid}': '{name}' must be a string")
        length = entry.get("length")
        if length is not None and (type(length) is not int or length < 1):
            raise KeyfileError(path, f"meta of key '{kid}': 'length' must be a positive integer")
        metas[kid] = KeyMeta(**{name: entry.get(name) for name in _META_TEXT_FIELDS},
                             length=length)
    return metas


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def timestamp(moment: dt.datetime) -> str:
    """``2026-11-21T10:15:00Z`` (the format of ``created`` / ``retired``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_time(text: str | None) -> float | None:
    """Seconds since the epoch of a ``created`` / ``retired`` value (ISO 8601; no zone: UTC),
    None when it is missing or not a time."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def new_key_id(moment: dt.datetime) -> str:
    """``k20261121T101500Z-a1b2``: creation time (UTC) plus a random suffix."""
    return moment.astimezone(dt.UTC).strftime("k%Y%m%dT%H%M%SZ-") + secrets.token_hex(2)


def write_secret_keyring(path: Path, ring: SecretKeyring) -> None:
    """Write ``ring`` as a version 1 file, atomically (see :func:`write_private_file`)."""
    text = json.dumps(ring.to_document(), indent=2) + "\n"
    write_private_file(path, text.encode("utf-8"))


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part.

    The temporary file lives in the same directory (same file system for the rename), is mode
    0600 before any byte is written, and keeps the owner of the file it replaces where the
    process may set it (root). Content and directory entry are fsynced.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    previous = _stat_or_none(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            if previous is not None:
                _keep_owner(fh.fileno(), previous)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


@contextlib.contextmanager
def locked(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold the exclusive ``flock`` on ``.<name>.lock`` next to ``path``.

    ``clawbot.stack.key_rotate`` takes the same lock for its read-modify-write, so a rotation by
    the CLI and one by Ansible cannot lose each other's new key.
    """
    lock = path.parent / f".{path.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise KeyfileError(lock, f"cannot open lock file: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise KeyfileError(lock, f"still locked after {timeout:g} seconds "
                                             "(another rotation is running)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _keep_owner(fd: int, previous: os.stat_result) -> None:
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) == (previous.st_uid, previous.st_gid):
        return
    try:
        os.fchown(fd, previous.st_uid, previous.st_gid)
    except PermissionError:  # only root may give files away; a member may still set the group
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, previous.st_gid)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
