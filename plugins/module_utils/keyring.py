# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keyring files of secrets: parse, decide, rotate, prune, describe and write them atomically.

No AnsibleModule in here so every rule can be unit tested with a controlled clock. Nothing in this
file ever puts a secret into an exception, a summary or a diff: :class:`KeyringError` messages name
paths, key ids and field names only.

File format (version 1; the bot service reads ``current`` and ``keys``)::

    {"version": 1, "current": "<id>", "keys": {"<id>": "<secret>"},
     "meta": {"<id>": {"created": "<UTC>", "retired": "<UTC>|null", "source": "generated|external|unknown",
                       "format": "hex|base64|urlsafe|external|unknown", "length": <bytes>|null}}}

Legacy files (``{"current": id, "keys": {id: base64}}``) are adopted: missing metadata is derived from
the file's modification time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import glob
import hmac
import json
import os
import secrets
import stat
import tempfile
from datetime import datetime, timedelta, timezone

from ansible_collections.clawbot.stack.plugins.module_utils.filelock import FileLock as _FileLock

UTC = timezone.utc  # noqa: UP017 - module_utils run on Python 3.8+, datetime.UTC is 3.11+

FORMAT_VERSION = 1
GENERATED_FORMATS = ("hex", "base64", "urlsafe")
SOURCES = ("generated", "external", "unknown")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
NEW_KEY_PLACEHOLDER = "(new)"
MAX_FILE_BYTES = 16 * 1024 * 1024
KNOWN_FIELDS = ("version", "current", "keys", "meta")

REASON_CREATED = "created"
REASON_EXPIRED = "expired"
REASON_FORCED = "forced"
REASON_SPEC_CHANGED = "spec_changed"
REASON_NEW_SECRET = "new_secret"


class KeyringError(Exception):
    """A problem with a keyring file. The message is safe to show: it never contains a secret."""


# --- time -------------------------------------------------------------------------------------

def utcnow():
    """Now in UTC, whole seconds (the file stores seconds)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment):
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text):
    """An ISO 8601 timestamp as an aware UTC datetime; naive timestamps are taken as UTC.

    Raises ValueError when ``text`` is not a timestamp.
    """
    if not isinstance(text, str):
        raise ValueError("not a string")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def age_days(created, now):
    """Age in days, one decimal, never negative (clock skew between hosts)."""
    return max(0.0, round((now - created).total_seconds() / 86400.0, 1))


# --- keys -------------------------------------------------------------------------------------

def generate_secret(fmt, length):
    """``length`` random bytes rendered as ``fmt`` (hex, base64 with padding, urlsafe without)."""
    raw = secrets.token_bytes(length)
    if fmt == "hex":
        return raw.hex()
    if fmt == "base64":
        return base64.b64encode(raw).decode("ascii")
    if fmt == "urlsafe":
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    raise KeyringError(f"unknown key format {fmt!r} (expected one of {', '.join(GENERATED_FORMATS)})")


def new_key_id(now, taken):
    """``k<UTC time>-<4 hex>``, unique among ``taken``."""
    while True:
        key_id = f"k{now.astimezone(UTC).strftime(ID_TIME_FORMAT)}-{secrets.token_hex(2)}"
        if key_id not in taken:
            return key_id


def same_secret(first, second):
    """Constant-time comparison of two secrets."""
    if first is None or second is None:
        return False
    return hmac.compare_digest(first.encode("utf-8"), second.encode("utf-8"))


def key_meta(created, source, fmt, length, retired=None):
    return {"created": created, "retired": retired, "source": source, "format": fmt, "length": length}


def infer_legacy_format(secret):
    """(format, length) of a key without metadata: base64 and its decoded size when it decodes."""
    try:
        raw = base64.b64decode(secret.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "unknown", None
    if not raw:
        return "unknown", None
    return "base64", len(raw)


# --- the keyring ------------------------------------------------------------------------------

class Keyring:
    """The file's content: ``current`` id, ``keys`` (id -> secret) and ``meta`` (id -> dict of datetimes)."""

    def __init__(self, current=None, keys=None, meta=None, extra=None, legacy=False):
        self.current = current
        self.keys = dict(keys or {})
        self.meta = copy.deepcopy(meta or {})
        self.extra = copy.deepcopy(extra or {})
        self.legacy = legacy

    def copy(self):
        return Keyring(self.current, self.keys, self.meta, self.extra, self.legacy)

    @property
    def current_secret(self):
        return self.keys.get(self.current) if self.current else None

    @property
    def current_meta(self):
        return self.meta.get(self.current) if self.current else None

    def to_document(self):
        doc = copy.deepcopy(self.extra)
        doc["version"] = FORMAT_VERSION
        doc["current"] = self.current
        doc["keys"] = dict(self.keys)
        doc["meta"] = {}
        for key_id, meta in self.meta.items():
            entry = dict(meta)
            entry["created"] = format_time(meta["created"])
            entry["retired"] = format_time(meta["retired"]) if meta["retired"] is not None else None
            doc["meta"][key_id] = entry
        return doc

    def serialise(self):
        return serialise_document(self.to_document())


def serialise_document(doc):
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _parse_meta_entry(key_id, entry, is_current):
    where = f"meta of key '{key_id}'"
    if not isinstance(entry, dict):
        raise KeyringError(f"{where} must be an object")
    try:
        created = parse_time(entry.get("created"))
    except ValueError:
        raise KeyringError(f"{where}: 'created' must be a UTC timestamp like 2026-11-21T10:15:00Z") from None
    retired = entry.get("retired")
    if retired is not None:
        try:
            retired = parse_time(retired)
        except ValueError:
            raise KeyringError(f"{where}: 'retired' must be null or a UTC timestamp") from None
    if is_current and retired is not None:
        raise KeyringError(f"key '{key_id}' is current but its meta marks it retired")
    source = entry.get("source", "unknown")
    fmt = entry.get("format", "unknown")
    length = entry.get("length")
    if not isinstance(source, str) or not isinstance(fmt, str):
        raise KeyringError(f"{where}: 'source' and 'format' must be strings")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise KeyringError(f"{where}: 'length' must be an integer or null")
    unknown = sorted(set(entry) - {"created", "retired", "source", "format", "length"})
    if unknown:
        raise KeyringError("{} has unknown field(s): {}".format(where, ", ".join(unknown)))
    return key_meta(created, source, fmt, length, retired)


def _adopted_meta(secret, is_current, mtime):
    fmt, length = infer_legacy_format(secret)
    return key_meta(mtime, "unknown", fmt, length, None if is_current else mtime)


def parse_document(doc, mtime):
    """A :class:`Keyring` from a parsed JSON document; keys without meta are adopted with ``mtime``."""
    if not isinstance(doc, dict):
        raise KeyringError("the top level must be a JSON object")
    version = doc.get("version")
    if version is not None and (isinstance(version, bool) or version != FORMAT_VERSION):
        raise KeyringError(f"unsupported keyring version {version!r} (this module reads and writes version "
                           f"{FORMAT_VERSION})")
    keys = doc.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise KeyringError("'keys' must be a non-empty object mapping key ids to secrets")
    for key_id, secret in keys.items():
        if not key_id:
            raise KeyringError("'keys' contains an empty key id")
        if not isinstance(secret, str) or not secret:
            raise KeyringError(f"the secret of key '{key_id}' must be a non-empty string")
    current = doc.get("current")
    if not isinstance(current, str) or current not in keys:
        raise KeyringError("'current' must be the id of a key in 'keys'")
    raw_meta = doc.get("meta", {})
    if not isinstance(raw_meta, dict):
        raise KeyringError("'meta' must be an object mapping key ids to metadata")
    orphans = sorted(set(raw_meta) - set(keys))
    if orphans:
        raise KeyringError(f"'meta' describes key(s) that are not in 'keys': {', '.join(orphans)}")
    meta = {}
    for key_id, secret in keys.items():
        is_current = key_id == current
        if key_id in raw_meta:
            meta[key_id] = _parse_meta_entry(key_id, raw_meta[key_id], is_current)
        else:
            meta[key_id] = _adopted_meta(secret, is_current, mtime)
    extra = {name: value for name, value in doc.items() if name not in KNOWN_FIELDS}
    legacy = version is None or set(raw_meta) != set(keys)
    return Keyring(current, keys, meta, extra, legacy)


def load(path):
    """``(keyring, document)`` read from ``path``, or ``(None, None)`` when the file does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise KeyringError(f"cannot read keyring {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise KeyringError(f"keyring {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise KeyringError(f"keyring {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise KeyringError(f"keyring {path} is not UTF-8 text") from None
    except ValueError as exc:
        # json's messages carry only positions (line/column), never the text around them
        raise KeyringError(f"keyring {path} is not valid JSON ({_json_position(exc)})") from None
    mtime = datetime.fromtimestamp(int(info.st_mtime), UTC)
    try:
        return parse_document(doc, mtime), doc
    except KeyringError as exc:
        raise KeyringError(f"keyring {path} is malformed: {exc}") from None


def _json_position(exc):
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if line is None:
        return "cannot be decoded"
    return f"line {line} column {column}"


# --- decisions --------------------------------------------------------------------------------

class Policy:
    """What the caller asked for. ``secret`` set means external-secret mode."""

    def __init__(self, max_age_days=90, force=False, keep_previous=2, grace_days=None, fmt="base64",
                 length=32, secret=None):
        self.max_age_days = max_age_days
        self.force = force
        self.keep_previous = keep_previous
        self.grace_days = grace_days
        self.fmt = fmt
        self.length = length
        self.secret = secret

    @property
    def external(self):
        return self.secret is not None


def is_overdue(keyring, now, max_age_days):
    meta = keyring.current_meta if keyring is not None else None
    if meta is None:
        return False
    return now - meta["created"] > timedelta(days=max_age_days)


def next_rotation(keyring, max_age_days):
    meta = keyring.current_meta if keyring is not None else None
    if meta is None:
        return None
    return format_time(meta["created"] + timedelta(days=max_age_days))


def decide(keyring, policy, now):
    """The rotation reason (one of the REASON_* constants) or None when the current key stays."""
    if keyring is None:
        return REASON_CREATED
    meta = keyring.current_meta
    if policy.external:
        if same_secret(policy.secret, keyring.current_secret):
            return None
        return REASON_NEW_SECRET
    if policy.force:
        return REASON_FORCED
    if meta["source"] == "external":
        # a provider's key cannot be replaced by random bytes on age alone; the caller warns instead
        return None
    if is_overdue(keyring, now, policy.max_age_days):
        return REASON_EXPIRED
    if meta["source"] == "generated" and (meta["format"], meta["length"]) != (policy.fmt, policy.length):
        return REASON_SPEC_CHANGED
    return None


def new_key(policy, now, taken, placeholder=False):
    """``(key_id, secret, meta)`` for the key that becomes current.

    With ``placeholder`` (check mode) nothing random is made: the id is ``(new)`` and the secret empty.
    """
    if policy.external:
        secret, meta = policy.secret, key_meta(now, "external", "external", None)
    else:
        secret = "" if placeholder else generate_secret(policy.fmt, policy.length)
        meta = key_meta(now, "generated", policy.fmt, policy.length)
    key_id = NEW_KEY_PLACEHOLDER if placeholder else new_key_id(now, taken)
    return key_id, secret, meta


def rotate(keyring, key_id, secret, meta, now):
    """A copy of ``keyring`` (None: empty) with ``key_id`` current and the old current retired at ``now``."""
    result = keyring.copy() if keyring is not None else Keyring()
    if result.current is not None:
        result.meta[result.current]["retired"] = now
    result.keys[key_id] = secret
    result.meta[key_id] = dict(meta, retired=None)
    result.current = key_id
    return result


def retired_newest_first(keyring):
    retired = [key_id for key_id in keyring.keys if key_id != keyring.current]
    return sorted(retired, key=lambda key_id: (keyring.meta[key_id]["retired"] or keyring.meta[key_id]["created"],
                                               keyring.meta[key_id]["created"], key_id), reverse=True)


def prune(keyring, now, keep_previous, grace_days=None):
    """Remove retired keys beyond ``keep_previous`` or retired longer than ``grace_days`` ago.

    Modifies ``keyring``; returns the removed ids (newest retired first).
    """
    removed = []
    for position, key_id in enumerate(retired_newest_first(keyring)):
        retired = keyring.meta[key_id]["retired"] or keyring.meta[key_id]["created"]
        too_many = position >= keep_previous
        too_old = grace_days is not None and now - retired > timedelta(days=grace_days)
        if too_many or too_old:
            removed.append(key_id)
    for key_id in removed:
        del keyring.keys[key_id]
        del keyring.meta[key_id]
    return removed


# --- secret-free views ------------------------------------------------------------------------

def ids_newest_first(keyring):
    if keyring is None:
        return []
    return sorted(keyring.keys, key=lambda key_id: (keyring.meta[key_id]["created"], key_id == keyring.current,
                                                    key_id), reverse=True)


def describe(keyring, now):
    """One dict per key, newest first: id, dates, age, source, format, length, current. No secrets."""
    rows = []
    for key_id in ids_newest_first(keyring):
        meta = keyring.meta[key_id]
        rows.append({
            "id": key_id,
            "created": format_time(meta["created"]),
            "retired": format_time(meta["retired"]) if meta["retired"] is not None else None,
            "age_days": age_days(meta["created"], now),
            "source": meta["source"],
            "format": meta["format"],
            "length": meta["length"],
            "current": key_id == keyring.current,
        })
    return rows


def diff_text(keyring):
    """The keyring as diff text: ids and dates only."""
    if keyring is None:
        return ""
    lines = ["version: %s" % ("legacy (adopted)" if keyring.legacy else FORMAT_VERSION),
             f"current: {keyring.current}"]
    for key_id in ids_newest_first(keyring):
        meta = keyring.meta[key_id]
        retired = format_time(meta["retired"]) if meta["retired"] is not None else "-"
        created = format_time(meta["created"])
        lines.append(f"{key_id} created={created} retired={retired} source={meta['source']}")
    return "\n".join(lines) + "\n"


# --- files ------------------------------------------------------------------------------------

def lock_path(path):
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.lock")


def temp_prefix(path):
    return f".{os.path.basename(path)}."


class FileLock(_FileLock):
    """Exclusive flock on the sidecar ``.<name>.lock`` for a read-modify-write of ``path``."""

    error = KeyringError

    def __init__(self, path, timeout=60.0, poll=0.1):
        super().__init__(lock_path(path), timeout, poll)


def remove_stale_temp_files(path):
    """Delete temp files an interrupted run left next to ``path`` (call only while holding the lock)."""
    directory = os.path.dirname(path) or "."
    pattern = os.path.join(glob.escape(directory), glob.escape(temp_prefix(path)) + "*.tmp")
    removed = []
    for leftover in glob.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
            removed.append(leftover)
    return removed


def fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, prepare=None):
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a partial one.

    The temp file lives in the same directory, is 0600 before any byte is written, is fsynced, then
    ``prepare(temp_path)`` sets owner/group/mode, then it is renamed over ``path`` and the directory is
    fsynced. On any failure before the rename the temp file is removed and ``path`` is untouched.
    """
    directory = os.path.dirname(path) or "."
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise KeyringError(f"cannot create a temporary file in {directory}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                fd = None
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if prepare is not None:
                prepare(temp)
            os.replace(temp, path)
            temp = None
        finally:
            if fd is not None:
                os.close(fd)
            if temp is not None:
                _remove_quietly(temp)
    except OSError as exc:
        raise KeyringError(f"cannot write keyring {path}: {exc.strerror or exc.__class__.__name__}") from None
    try:
        fsync_directory(directory)
    except OSError as exc:
        raise KeyringError(f"keyring {path} was replaced but syncing its directory failed: "
                           f"{exc.strerror or exc.__class__.__name__}") from None


def _remove_quietly(path):
    with contextlib.suppress(OSError):
        os.unlink(path)
