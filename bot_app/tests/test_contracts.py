"""The contracts the service shares with the collection, read from the collection's fixtures.

`tests/fixtures/contracts/` holds the published IM vectors and keyring files that
`tests/unit/plugins/module_utils/test_contracts.py` (ansible-test) checks against the collection's
module_utils; here the same files are checked against the service. The keyring lock is checked
across the two implementations: each side must wait while the other holds it.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from clawbot_app.im import dingtalk_crypto, feishu_crypto
from clawbot_app.keyfile import KeyfileError, load_secret_keyring, locked

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "tests" / "fixtures" / "contracts"
VECTORS = json.loads((CONTRACTS / "im_vectors.json").read_text())
EXPECTED = json.loads((CONTRACTS / "keyrings" / "expected.json").read_text())


COLLECTION_UTILS = "ansible_collections.clawbot.stack.plugins.module_utils"


def _load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / "module_utils" / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _collection_keyring() -> ModuleType:
    """The collection's keyring module_utils (stdlib only), loaded from its file, with the one
    module_utils it imports (filelock) registered under its collection name."""
    name = f"{COLLECTION_UTILS}.filelock"
    sys.modules.setdefault(name, _load(name, "filelock.py"))
    return _load("collection_keyring", "keyring.py")


def test_dingtalk_published_vector() -> None:
    v = VECTORS["dingtalk_event"]
    crypto = dingtalk_crypto.DingTalkEventCrypto(v["token"], v["aes_key"], v["owner_key"])
    crypto.verify_signature(v["msg_signature"], v["timestamp"], v["nonce"], v["encrypt"])
    assert crypto.decrypt(v["encrypt"]) == v["plaintext"]


def test_feishu_published_vector() -> None:
    v = VECTORS["feishu_decrypt"]
    assert feishu_crypto.decrypt(v["encrypt_key"], v["encrypt"]) == v["plaintext"]


def test_signatures_pinned_from_the_docs() -> None:
    r = VECTORS["dingtalk_robot_sign"]
    assert dingtalk_crypto.robot_sign(r["timestamp"], r["secret"]) == r["sign"]
    f = VECTORS["feishu_signature"]
    assert feishu_crypto.signature(f["timestamp"], f["nonce"], f["encrypt_key"],
                                   f["body"].encode()) == f["signature"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_valid_keyrings_load(name: str) -> None:
    ring = load_secret_keyring(CONTRACTS / "keyrings" / name)
    assert ring.current == EXPECTED[name]["current"]
    assert sorted(ring.keys) == EXPECTED[name]["ids"]
    assert all(base64.b64decode(v) for v in ring.keys.values())


@pytest.mark.parametrize("path", sorted((CONTRACTS / "keyrings").glob("invalid-*.json")),
                         ids=lambda p: p.name)
def test_invalid_keyrings_are_refused(path: Path) -> None:
    with pytest.raises(KeyfileError):
        load_secret_keyring(path)


def _held(hold: object, release: threading.Event, acquired: threading.Event) -> threading.Thread:
    def run() -> None:
        with hold:  # type: ignore[attr-defined]
            acquired.set()
            release.wait(10)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert acquired.wait(5)
    return thread


def test_the_service_waits_for_the_collections_lock(tmp_path: Path) -> None:
    keyring = _collection_keyring()
    path = tmp_path / "enc.json"
    release, acquired = threading.Event(), threading.Event()
    thread = _held(keyring.FileLock(str(path), timeout=5), release, acquired)
    started = time.monotonic()
    with pytest.raises(KeyfileError), locked(path, timeout=0.5):
        pass
    assert time.monotonic() - started >= 0.45
    release.set()
    thread.join(5)
    with locked(path, timeout=2):
        pass


def test_the_collection_waits_for_the_services_lock(tmp_path: Path) -> None:
    keyring = _collection_keyring()
    path = tmp_path / "enc.json"
    release, acquired = threading.Event(), threading.Event()
    thread = _held(locked(path, timeout=5), release, acquired)
    started = time.monotonic()
    with pytest.raises(keyring.KeyringError), keyring.FileLock(str(path), timeout=0.5):
        pass
    assert time.monotonic() - started >= 0.45
    release.set()
    thread.join(5)
    with keyring.FileLock(str(path), timeout=2):
        pass
