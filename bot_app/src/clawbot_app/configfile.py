"""The files the configuration is read from: the main YAML file, the ``secrets_file`` merged over
it, and single-password files (``storage.migration_password_file``).

Every problem is a :class:`ConfigError` that names the file and never shows its content.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

SECRETS_KEY = "secrets_file"


class ConfigError(Exception):
    """Configuration is invalid; ``errors`` lists ``(key_path, reason)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {r}" for p, r in errors))


def read_config_file(path: str) -> dict[str, Any]:
    """The main config file's mapping (an empty file is ``{}``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([("<file>", f"cannot read {path}: {_reason(exc)}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([("<file>", f"cannot read {path}: not UTF-8 text")]) from None
    return _mapping(text, path, "<file>", "<root>")


def read_secrets_file(path: str) -> dict[str, Any]:
    """The ``secrets_file`` mapping, merged over the main file by the caller.

    The file (or the file a symlink points to) must be a regular file that "other" can neither
    read nor write, and it cannot name another ``secrets_file``.
    """
    data = _mapping(_read_private(path, SECRETS_KEY), path, SECRETS_KEY, SECRETS_KEY)
    if SECRETS_KEY in data:
        raise ConfigError([(SECRETS_KEY, f"{path}: cannot itself set '{SECRETS_KEY}'")])
    return data


def read_password_file(path: str, key: str) -> str:
    """The one password a file holds (trailing newlines stripped); errors are at ``key``."""
    password = _read_private(path, key).rstrip("\r\n")
    if not password:
        raise ConfigError([(key, f"{path}: the file is empty")])
    if "\n" in password or "\r" in password:
        raise ConfigError([(key, f"{path}: must hold only the password, on one line")])
    return password


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: mappings are merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_private(path: str, key: str) -> str:
    """Text of a file that holds secrets. The checks run on the opened file (``fstat``), so the
    file that is read is the file that was checked; ``O_NONBLOCK`` keeps a FIFO from hanging."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError([(key, f"cannot read {path}: {_reason(exc)}")]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError([(key, f"{path}: not a regular file")])
        if st.st_mode & 0o007:
            target = f" (a symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
            raise ConfigError([(key, f"{path}{target}: mode {stat.S_IMODE(st.st_mode):04o} lets "
                                     "others read or write it; allow only owner and group "
                                     "(e.g. chmod 0600)")])
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError([(key, f"cannot read {path}: {_reason(exc)}")]) from None
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([(key, f"cannot read {path}: not UTF-8 text")]) from None


def _mapping(text: str, path: str, file_key: str, root_key: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message quotes the text: give the line only
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError([(file_key, f"{path}: invalid YAML{where}")]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise ConfigError([(root_key, f"{path}: top level must be a mapping, not {kind}")])
    return loaded


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
