"""Property tests: the IM crypto and parsers round-trip, and arbitrary input raises nothing but
the module's own error (never an exception that would become a 500)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawbot_app.im import dingtalk_crypto, feishu_crypto
from clawbot_app.im.dingtalk import parse_robot_message
from clawbot_app.im.feishu import parse_message_v1, parse_message_v2
from clawbot_app.jsonbody import JsonBodyError, loads_object

from .support import DT_AES_KEY, DT_APP_KEY, DT_TOKEN, FS_ENCRYPT_KEY

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DT = dingtalk_crypto.DingTalkEventCrypto(DT_TOKEN, DT_AES_KEY, DT_APP_KEY)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@FAST
@given(st.text())
def test_feishu_round_trip(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # not representable on the wire
    sealed = feishu_crypto.encrypt(FS_ENCRYPT_KEY, text)
    assert feishu_crypto.decrypt(FS_ENCRYPT_KEY, sealed) == text


@FAST
@given(st.text())
def test_dingtalk_round_trip(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert DT.decrypt(DT.encrypt(text)) == text


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_feishu_decrypt_of_anything_raises_only_its_error(data: bytes | str) -> None:
    encrypt = data.decode("latin-1") if isinstance(data, bytes) else data
    try:
        feishu_crypto.decrypt(FS_ENCRYPT_KEY, encrypt)
    except feishu_crypto.FeishuCryptoError:
        pass


@FAST
@given(st.binary(min_size=0, max_size=300))
def test_dingtalk_decrypt_of_anything_raises_only_its_error(data: bytes) -> None:
    import base64
    for encrypt in (base64.b64encode(data).decode(), data.decode("latin-1")):
        try:
            DT.decrypt(encrypt)
        except dingtalk_crypto.DingTalkCryptoError:
            pass


@FAST
@given(st.text(max_size=40) | st.none(), st.text(max_size=60) | st.none())
def test_robot_sign_check_raises_only_its_error(timestamp: str | None, sign: str | None) -> None:
    try:
        dingtalk_crypto.verify_robot_sign(timestamp, sign, "secret")
    except dingtalk_crypto.DingTalkCryptoError:
        pass


@FAST
@given(st.binary(max_size=400))
def test_json_body_of_anything_is_an_object_or_its_error(raw: bytes) -> None:
    try:
        assert isinstance(loads_object(raw), dict)
    except JsonBodyError:
        pass


@FAST
@given(json_values)
def test_json_body_accepts_what_json_writes_when_it_is_valid_unicode(value: object) -> None:
    raw = json.dumps({"v": value})
    try:
        raw.encode("utf-8")
        assert loads_object(raw) == json.loads(raw)
    except UnicodeEncodeError:
        try:
            loads_object(json.dumps({"v": value}, ensure_ascii=True))
        except JsonBodyError:
            pass


@FAST
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_message_parsers_take_any_json_object(body: dict) -> None:
    parse_robot_message(body)
    event = body.get("event") if isinstance(body.get("event"), dict) else body
    header = body.get("header") if isinstance(body.get("header"), dict) else {}
    parse_message_v2("ev", header, event)
    parse_message_v1("ev", event)
