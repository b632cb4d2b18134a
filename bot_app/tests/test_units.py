"""Unit tests: keyring, routing, in-process store, spool encoding."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from clawbot_app.config import Settings
from clawbot_app.crypto import Keyring, KeyringError, load_keyring_file, rotate_keyring_file
from clawbot_app.logwriter import Spool, _decode, _encode
from clawbot_app.routing import select_providers
from clawbot_app.store import InProcessStore


def test_keyring_rotation_keeps_old_rows_readable(tmp_path: Path) -> None:
    path = tmp_path / "kr.json"
    k1 = rotate_keyring_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    kr = Keyring(*load_keyring_file(path))
    kid, blob = kr.encrypt("old secret", "row-1")
    assert kid == k1 and "old secret" not in blob
    k2 = rotate_keyring_file(path)
    settings = Settings.model_validate({"encryption": {"keyring_file": str(path)}})
    kr.reload(settings)
    assert kr.current == k2 != k1
    kid2, blob2 = kr.encrypt("new secret", "row-2")
    assert kid2 == k2
    assert kr.decrypt(k1, blob, "row-1") == "old secret"
    assert kr.decrypt(k2, blob2, "row-2") == "new secret"
    with pytest.raises(InvalidTag):  # ciphertext is bound to its row id
        kr.decrypt(k1, blob, "row-2")
    with pytest.raises(KeyringError):
        kr.decrypt("ghost", blob, "row-1")


def test_keyring_generated_in_data_dir(tmp_path: Path) -> None:
    s = Settings.model_validate({"storage": {"data_dir": str(tmp_path)}})
    kr = Keyring.from_settings(s)
    assert (tmp_path / "keyring.json").exists()
    assert json.loads((tmp_path / "keyring.json").read_text())["current"] == kr.current
    s2 = Settings.model_validate({"encryption": {"keyring_file": str(tmp_path / "none.json")}})
    with pytest.raises(KeyringError):
        Keyring.from_settings(s2)


def test_select_providers() -> None:
    s = Settings.model_validate({"models": {
        "default": "a", "fallback": ["c", "a"],
        "providers": {n: {"base_url": "http://h", "model": n} for n in "abc"},
        "routes": [{"path_prefix": "/zh/", "provider": "b"},
                   {"keywords": ["urgent"], "provider": "c"}]}})
    assert select_providers(s, "/api/v1/chat", "hi") == ["a", "c"]
    assert select_providers(s, "/zh/api/v1/chat", "URGENT") == ["b", "c", "a"]
    assert select_providers(s, "/api/v1/chat", "this is URGENT") == ["c", "a"]
    assert select_providers(s, "/api/v1/chat", "hi", tenant_provider="b") == ["b", "c", "a"]
    assert select_providers(s, "/api/v1/chat", "hi", tenant_provider="zzz") == ["a", "c"]


async def test_in_process_store() -> None:
    st = InProcessStore()
    assert await st.mark_seen("x", 1) is True
    assert await st.mark_seen("x", 1) is False
    await asyncio.sleep(1.05)
    assert await st.mark_seen("x", 1) is True
    counts = [(await st.incr_window("t", 60))[0] for _ in range(3)]
    assert counts == [1, 2, 3]
    await st.append_turns("s", [{"role": "user", "content": str(i)} for i in range(7)], 4, 60)
    assert [t["content"] for t in await st.get_turns("s")] == ["3", "4", "5", "6"]


def test_spool_roundtrip(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool")
    now = dt.datetime(2026, 1, 2, 3, 4, 5, 678)
    row = ("conversation_log", {"id": "1", "content": "c", "created_at": now})
    sp.append([row, row])
    assert stat.S_IMODE(os.stat(sp.path).st_mode) == 0o600
    assert sp.pending_rows() == 2
    files = sp.claim()
    assert len(files) == 1 and not sp.path.exists()
    lines = files[0].read_text().splitlines()
    assert _decode(lines[0]) == row and _decode(_encode(row)) == row
