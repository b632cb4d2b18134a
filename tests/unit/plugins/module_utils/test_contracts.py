"""The contracts the collection shares with the bot service (tests/fixtures/contracts/).

bot_app/tests/test_contracts.py checks the same files against the service, so the two
implementations of the IM crypto and of the keyring format cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ansible_collections.clawbot.stack.plugins.module_utils import im_protocols as p
from ansible_collections.clawbot.stack.plugins.module_utils import keyring as k

CONTRACTS = Path(__file__).resolve().parents[3] / "fixtures" / "contracts"
VECTORS = json.loads((CONTRACTS / "im_vectors.json").read_text())
EXPECTED = json.loads((CONTRACTS / "keyrings" / "expected.json").read_text())


def test_dingtalk_published_vector():
    v = VECTORS["dingtalk_event"]
    crypto = p.DingTalkEventCrypto(v["token"], v["aes_key"], v["owner_key"])
    crypto.verify_signature(v["msg_signature"], v["timestamp"], v["nonce"], v["encrypt"])
    assert crypto.decrypt(v["encrypt"]) == v["plaintext"]


def test_feishu_published_vector():
    v = VECTORS["feishu_decrypt"]
    assert p.feishu_decrypt(v["encrypt_key"], v["encrypt"]) == v["plaintext"]


def test_wecom_published_vectors():
    v = VECTORS["wecom"]
    crypto = p.WeComCrypto(v["token"], v["aes_key"], v["corp_id"])
    for name, field in (("url_verification", "echostr"), ("message", "encrypt")):
        case = v[name]
        crypto.verify_signature(case["msg_signature"], case["timestamp"], case["nonce"], case[field])
        assert crypto.decrypt(case[field]) == case["plaintext"]


def test_signatures_pinned_from_the_docs():
    r = VECTORS["dingtalk_robot_sign"]
    assert p.dingtalk_webhook_sign(r["secret"], r["timestamp"]) == r["sign"]
    f = VECTORS["feishu_signature"]
    assert p.feishu_signature(f["timestamp"], f["nonce"], f["encrypt_key"], f["body"].encode()) == f["signature"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_valid_keyrings_load(name):
    ring, _doc = k.load(str(CONTRACTS / "keyrings" / name))
    assert ring.current == EXPECTED[name]["current"]
    assert sorted(ring.keys) == EXPECTED[name]["ids"]


@pytest.mark.parametrize("name", sorted(p.name for p in (CONTRACTS / "keyrings").glob("invalid-*.json")))
def test_invalid_keyrings_are_refused(name):
    with pytest.raises(k.KeyringError):
        k.load(str(CONTRACTS / "keyrings" / name))
