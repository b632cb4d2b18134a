"""The request builders (also used by the benchmark) produce what the real handlers accept."""

from __future__ import annotations

import json

from clawbot_app.im import feishu_crypto
from clawbot_app.im.builders import build_feishu_message_request

from .support import FS_ENCRYPT_KEY, FS_VERIFICATION_TOKEN, make_settings


def test_feishu_builder_encrypts_and_signs():
    settings = make_settings()
    headers, body = build_feishu_message_request(settings, text="bench")
    assert feishu_crypto.verify_signature(
        headers[feishu_crypto.HEADER_TIMESTAMP], headers[feishu_crypto.HEADER_NONCE],
        FS_ENCRYPT_KEY, body, headers[feishu_crypto.HEADER_SIGNATURE])
    payload = json.loads(feishu_crypto.decrypt(FS_ENCRYPT_KEY, json.loads(body)["encrypt"]))
    assert payload["header"]["event_type"] == "im.message.receive_v1"
    assert payload["header"]["token"] == FS_VERIFICATION_TOKEN
    assert json.loads(payload["event"]["message"]["content"]) == {"text": "bench"}
    _, body2 = build_feishu_message_request(settings, text="bench")
    payload2 = json.loads(feishu_crypto.decrypt(FS_ENCRYPT_KEY, json.loads(body2)["encrypt"]))
    assert payload2["header"]["event_id"] != payload["header"]["event_id"]


def test_feishu_builder_accepts_feishu_section():
    settings = make_settings(feishu={"encrypt_key": None})
    headers, body = build_feishu_message_request(settings.feishu, text="x", event_id="e1")
    assert feishu_crypto.HEADER_SIGNATURE not in headers
    assert json.loads(body)["header"]["event_id"] == "e1"
