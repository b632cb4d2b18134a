"""The ``auth.tokens_file`` format: static bearer tokens for the chat API.

A YAML/JSON list (or ``{tokens: [...]}``) of ``{sha256 | token | keyring_file, user, tenant?,
expires_at?, revoked?}``. A ``keyring_file`` entry makes every key listed in that keyring file
(the current one and the previous ones it still keeps) a token of the user. Parsing lives here,
apart from :mod:`clawbot_app.auth`, so that :mod:`clawbot_app.config` can validate the file
without importing the token service (which imports the config).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clawbot_app.db.tokens import TokenRecord, hash_token
from clawbot_app.keyfile import load_secret_keyring

_SECRET_FIELDS = ("sha256", "token", "keyring_file")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class TokensFileError(ValueError):
    """The tokens file cannot be used; the message names the file and entry, never a token."""


@dataclass
class FileTokens:
    records: dict[str, TokenRecord] = field(default_factory=dict)  # sha256 hex -> record
    keyring_ids: dict[str, str] = field(default_factory=dict)  # "tokens:<user>" -> current id
    # "tokens:<user>" -> unix time its current key was created (keyrings whose meta says it)
    keyring_created: dict[str, float] = field(default_factory=dict)


def load_tokens_file(path: str) -> FileTokens:
    """Parse ``auth.tokens_file``; raises :class:`TokensFileError`."""
    full = Path(os.path.expanduser(path))
    entries = _entries(full)
    out = FileTokens()
    for number, entry in enumerate(entries, 1):
        try:
            _add_entry(out, entry)
        except ValueError as exc:  # KeyfileError is one too
            raise TokensFileError(f"{full}: entry {number}: {exc}") from None
    return out


def _entries(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise TokensFileError(f"{path}: cannot read tokens file: {reason}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its text may quote a token: report the line only
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TokensFileError(f"{path}: invalid YAML{where}") from None
    entries = data.get("tokens", []) if isinstance(data, dict) else (data or [])
    if not isinstance(entries, list):
        raise TokensFileError(f"{path}: 'tokens' must be a list")
    return entries


def _add_entry(out: FileTokens, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise ValueError("must be a mapping")
    given = [name for name in _SECRET_FIELDS if entry.get(name) is not None]
    if len(given) != 1:
        raise ValueError("needs exactly one of sha256, token, keyring_file")
    user = entry.get("user")
    if not isinstance(user, str | int) or isinstance(user, bool) or not str(user):
        raise ValueError("'user' is required")
    tenant = entry.get("tenant", user)
    record = TokenRecord(None, str(user), str(tenant), _expiry(entry.get("expires_at")),
                         bool(entry.get("revoked", False)))
    if given[0] == "sha256":
        digest = str(entry["sha256"]).lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError("'sha256' must be 64 hex digits")
        out.records[digest] = record
    elif given[0] == "token":
        out.records[hash_token(str(entry["token"]))] = record
    else:
        ring = load_secret_keyring(os.path.expanduser(str(entry["keyring_file"])))
        for secret in ring.keys.values():
            out.records[hash_token(secret)] = record
        out.keyring_ids[f"tokens:{user}"] = ring.current
        created = ring.current_created
        if created is not None:
            out.keyring_created[f"tokens:{user}"] = created


def _expiry(value: Any) -> dt.datetime | None:
    """Naive UTC datetime (the DB convention) from a YAML timestamp/date or an ISO string."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("'expires_at' must be an ISO 8601 timestamp") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise ValueError("'expires_at' must be an ISO 8601 timestamp")
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
