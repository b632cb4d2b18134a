"""Keyring files: v1 and legacy loading, safe errors, atomic v1 writing by ``keyring rotate``."""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from clawbot_app import keyfile
from clawbot_app.cli import main
from clawbot_app.crypto import Keyring, KeyringError, load_keyring_file, rotate_keyring_file
from clawbot_app.keyfile import KeyfileError, KeyMeta, load_secret_keyring

AES_OLD = base64.b64encode(b"o" * 32).decode()
AES_NEW = base64.b64encode(b"n" * 32).decode()
V1 = {
    "version": 1,
    "current": "k20261121T101500Z-a1b2",
    "keys": {"k20261121T101500Z-a1b2": AES_NEW, "k20260801T000000Z-0c3d": AES_OLD},
    "meta": {
        "k20261121T101500Z-a1b2": {"created": "2026-11-21T10:15:00Z", "retired": None,
                                   "source": "generated", "format": "base64", "length": 32},
        "k20260801T000000Z-0c3d": {"created": "2026-08-01T00:00:00Z",
                                   "retired": "2026-11-21T10:15:00Z", "source": "generated",
                                   "format": "base64", "length": 32},
    },
}
LEGACY = {"current": "k20260801000000ab12", "keys": {"k20260801000000ab12": AES_OLD}}


def _write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_load_v1(tmp_path: Path) -> None:
    ring = load_secret_keyring(_write(tmp_path / "kr.json", V1))
    assert ring.version == 1 and ring.path == str(tmp_path / "kr.json")
    assert ring.current == "k20261121T101500Z-a1b2" and ring.current_secret == AES_NEW
    assert dict(ring.keys) == V1["keys"]
    assert ring.meta["k20260801T000000Z-0c3d"] == KeyMeta(
        created="2026-08-01T00:00:00Z", retired="2026-11-21T10:15:00Z", source="generated",
        format="base64", length=32)
    assert AES_NEW not in repr(ring) and AES_OLD not in repr(ring)
    current, keys = load_keyring_file(tmp_path / "kr.json")
    assert current == "k20261121T101500Z-a1b2"
    assert keys == {"k20261121T101500Z-a1b2": b"n" * 32, "k20260801T000000Z-0c3d": b"o" * 32}


def test_load_legacy_and_external_secret(tmp_path: Path) -> None:
    ring = load_secret_keyring(_write(tmp_path / "legacy.json", LEGACY))
    assert (ring.version, ring.current, ring.meta) == (0, "k20260801000000ab12", {})
    assert load_keyring_file(tmp_path / "legacy.json") == ("k20260801000000ab12",
                                                          {"k20260801000000ab12": b"o" * 32})
    external = {"version": 1, "current": "k1", "keys": {"k1": "sk-live-XYZ"},
                "meta": {"k1": {"created": "2026-01-01T00:00:00Z", "retired": None,
                                "source": "external", "format": None, "length": None}}}
    ring = load_secret_keyring(_write(tmp_path / "model.json", external))
    assert ring.current_secret == "sk-live-XYZ" and ring.meta["k1"].source == "external"
    with pytest.raises(KeyringError) as ei:  # not an AES key: refused as encryption keyring
        load_keyring_file(tmp_path / "model.json")
    assert "key 'k1' is not valid base64" in str(ei.value) and "sk-live" not in str(ei.value)


SECRET = "TOPSECRET-value-42"


@pytest.mark.parametrize("doc, reason", [
    ("{not json " + SECRET, "not valid JSON (line 1)"),
    ([SECRET], "must be a JSON object"),
    ({"current": "k1"}, "'keys' must be a non-empty object"),
    ({"current": "k1", "keys": {}}, "'keys' must be a non-empty object"),
    ({"current": "k2", "keys": {"k1": SECRET}}, "'current' must name a key in 'keys'"),
    ({"current": SECRET, "keys": {"k1": SECRET}}, "'current' must name a key in 'keys'"),
    ({"version": 2, "current": "k1", "keys": {"k1": SECRET}}, "unsupported keyring version"),
    ({"version": "1", "current": "k1", "keys": {"k1": SECRET}}, "unsupported keyring version"),
    ({"current": "k1", "keys": {"k1": 42}}, "key 'k1' must be a non-empty string"),
    ({"current": "k1", "keys": {"k1": ""}}, "key 'k1' must be a non-empty string"),
    ({"current": "k1", "keys": {"k1": SECRET, SECRET + " x": "v"}},
     "key id #2 is not a valid key id"),
    ({"version": 1, "current": "k1", "keys": {"k1": SECRET}, "meta": [SECRET]},
     "'meta' must be an object"),
    ({"version": 1, "current": "k1", "keys": {"k1": SECRET}, "meta": {"k1": SECRET}},
     "meta of key 'k1' must be an object"),
    ({"version": 1, "current": "k1", "keys": {"k1": SECRET}, "meta": {"k1": {"length": "32"}}},
     "meta of key 'k1': 'length' must be a positive integer"),
    ({"version": 1, "current": "k1", "keys": {"k1": SECRET}, "meta": {"k1": {"created": 5}}},
     "meta of key 'k1': 'created' must be a string"),
])
def test_malformed_files_name_path_not_secret(tmp_path: Path, doc: Any, reason: str) -> None:
    path = _write(tmp_path / "bad.json", doc)
    with pytest.raises(KeyfileError) as ei:
        load_secret_keyring(path)
    message = str(ei.value)
    assert message.startswith(f"{path}: ") and reason in message, message
    assert SECRET not in message


def test_unreadable_and_wrong_aes_length(tmp_path: Path) -> None:
    with pytest.raises(KeyfileError) as ei:
        load_secret_keyring(tmp_path / "absent.json")
    assert str(ei.value) == f"{tmp_path / 'absent.json'}: cannot read keyring: " \
                            "No such file or directory"
    _write(tmp_path / "accent.json", {"current": "k1", "keys": {"k1": "clé-secrète"}})
    with pytest.raises(KeyringError, match="key 'k1' is not valid base64"):
        load_keyring_file(tmp_path / "accent.json")
    short = base64.b64encode(b"s" * 16).decode()
    _write(tmp_path / "short.json", {"current": "k1", "keys": {"k1": short}})
    with pytest.raises(KeyringError) as ei2:
        load_keyring_file(tmp_path / "short.json")
    assert str(ei2.value) == f"{tmp_path / 'short.json'}: key 'k1' must be 32 bytes (AES-256)"
    assert short not in str(ei2.value)


def _iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_rotate_legacy_file_writes_v1(tmp_path: Path) -> None:
    legacy = {"current": "k20260801000000ab12",
              "keys": {"k20260801000000ab12": AES_OLD, "k20260101000000cd34": AES_NEW}}
    path = _write(tmp_path / "keyring.json", legacy)
    written = dt.datetime(2026, 8, 1, tzinfo=dt.UTC).timestamp()
    os.utime(path, (written, written))
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    kid = rotate_keyring_file(path)
    after = dt.datetime.now(dt.UTC)
    doc = json.loads(path.read_text())
    assert set(doc) == {"version", "current", "keys", "meta"}
    assert doc["version"] == 1 and doc["current"] == kid
    assert {k: doc["keys"][k] for k in legacy["keys"]} == legacy["keys"]  # old keys kept
    assert len(base64.b64decode(doc["keys"][kid], validate=True)) == 32
    assert set(doc["meta"]) == set(doc["keys"])
    new = doc["meta"][kid]
    assert (new["retired"], new["source"], new["format"], new["length"]) == \
        (None, "generated", "base64", 32)
    assert before <= _iso(new["created"]) <= after and new["created"].endswith("Z")
    # legacy keys are adopted like key_rotate does: the file's mtime stands in for creation
    assert doc["meta"]["k20260801000000ab12"] == {
        "created": "2026-08-01T00:00:00Z", "retired": new["created"],  # old current: retired now
        "source": "unknown", "format": "base64", "length": 32}
    assert doc["meta"]["k20260101000000cd34"] == {
        "created": "2026-08-01T00:00:00Z", "retired": "2026-08-01T00:00:00Z",
        "source": "unknown", "format": "base64", "length": 32}
    assert kid.startswith("k") and kid[9] == "T" and kid[16:18] == "Z-"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Keyring(*load_keyring_file(path)).current == kid


def test_rotate_v1_keeps_metadata(tmp_path: Path) -> None:
    path = _write(tmp_path / "keyring.json", V1)
    os.chmod(path, 0o644)
    kid = rotate_keyring_file(path)
    doc = json.loads(path.read_text())
    assert list(doc["keys"]) == [*V1["keys"], kid]
    assert doc["meta"]["k20260801T000000Z-0c3d"] == V1["meta"]["k20260801T000000Z-0c3d"]
    previous = doc["meta"]["k20261121T101500Z-a1b2"]
    assert previous["created"] == "2026-11-21T10:15:00Z"
    assert previous["retired"] == doc["meta"][kid]["created"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_rotate_refuses_broken_keyring(tmp_path: Path) -> None:
    bad = {"current": "k1", "keys": {"k1": "bm90IDMyIGJ5dGVz"}}
    path = _write(tmp_path / "keyring.json", bad)
    with pytest.raises(KeyringError, match="must be 32 bytes"):
        rotate_keyring_file(path)
    assert json.loads(path.read_text()) == bad


def test_write_protocol_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0600 before the first byte, fsync of file and directory around the rename."""
    path = _write(tmp_path / "keyring.json", LEGACY)
    events: list[str] = []
    real_fchmod, real_fsync, real_replace = os.fchmod, os.fsync, os.replace

    def fchmod(fd: int, mode: int) -> None:
        events.append(f"fchmod {oct(mode)} size={os.fstat(fd).st_size}")
        real_fchmod(fd, mode)

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        assert Path(src).parent == tmp_path and stat.S_IMODE(os.stat(src).st_mode) == 0o600
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fchmod", fchmod)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    rotate_keyring_file(path)
    assert events == ["fchmod 0o600 size=0", "fsync file", "replace", "fsync dir"]
    assert json.loads(path.read_text())["version"] == 1


def test_rotate_crash_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "keyring.json", V1)
    original = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(keyfile.os, "replace", crash)
    with pytest.raises(OSError, match="Input/output error"):
        rotate_keyring_file(path)
    assert path.read_bytes() == original
    # no temp file left (the sidecar lock file is shared with the key_rotate module)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keyring.json.lock", "keyring.json"]


def test_rotate_waits_for_the_lock_of_another_rotation(tmp_path: Path) -> None:
    path = _write(tmp_path / "keyring.json", V1)
    original = path.read_bytes()
    fd = os.open(tmp_path / ".keyring.json.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what key_rotate holds while it rewrites the file
        with pytest.raises(KeyringError, match="still locked after 0.2 seconds"):
            rotate_keyring_file(path, lock_timeout=0.2)
        assert path.read_bytes() == original
    finally:
        os.close(fd)
    kid = rotate_keyring_file(path, lock_timeout=0.2)
    assert json.loads(path.read_text())["current"] == kid


def test_keyring_rotate_cli_writes_v1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "enc.json", LEGACY)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"storage": {"data_dir": str(tmp_path / "data")},
                               "encryption": {"keyring_file": str(path)}}))
    assert main(["keyring", "rotate", "--config", str(cfg)]) == 0
    kid = json.loads(path.read_text())["current"]
    assert f"new current key '{kid}' in {path}" in capsys.readouterr().out
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and set(doc["keys"]) == {"k20260801000000ab12", kid}
