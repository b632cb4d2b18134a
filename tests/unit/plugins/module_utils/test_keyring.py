"""Unit tests for clawbot.stack's keyring module_utils (plain pytest, run by ansible-test units)."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from datetime import datetime, timedelta, timezone

import pytest
from ansible_collections.clawbot.stack.plugins.module_utils import keyring as kr

NOW = datetime(2026, 11, 21, 10, 15, 0, tzinfo=kr.UTC)
KEY_ID_RE = re.compile(r"^k\d{8}T\d{6}Z-[0-9a-f]{4}$")
SECRET_CURRENT = "Q1VSUkVOVC1TRUNSRVQtMDEyMzQ1Njc4OWFiY2RlZmc="
SECRET_OLD = "T0xELVNFQ1JFVC0wMTIzNDU2Nzg5YWJjZGVmZ2hpams="


def ts(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def v1_doc(current_created=NOW - timedelta(days=10), old_retired=NOW - timedelta(days=10), source="generated",
           fmt="base64", length=32):
    return {
        "version": 1,
        "current": "kcur",
        "keys": {"kcur": SECRET_CURRENT, "kold": SECRET_OLD},
        "meta": {
            "kcur": {"created": ts(current_created), "retired": None, "source": source, "format": fmt,
                     "length": length},
            "kold": {"created": ts(NOW - timedelta(days=200)), "retired": ts(old_retired), "source": "generated",
                     "format": "base64", "length": 32},
        },
    }


def keyring_with_retired(retired_days_ago):
    """Current key plus one retired key per entry of ``retired_days_ago`` (ids r0, r1, ...)."""
    keys = {"kcur": SECRET_CURRENT}
    meta = {"kcur": kr.key_meta(NOW - timedelta(days=1), "generated", "base64", 32)}
    for index, days in enumerate(retired_days_ago):
        key_id = f"r{index}"
        keys[key_id] = f"secret-{index}"
        meta[key_id] = kr.key_meta(NOW - timedelta(days=days + 100), "generated", "base64", 32,
                                   retired=NOW - timedelta(days=days))
    return kr.Keyring("kcur", keys, meta)


# --- generation -------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [16, 32, 33, 512])
def test_generate_hex(length):
    secret = kr.generate_secret("hex", length)
    assert re.fullmatch(r"[0-9a-f]+", secret)
    assert len(bytes.fromhex(secret)) == length


@pytest.mark.parametrize("length", [16, 32, 33, 512])
def test_generate_base64_is_padded_standard_base64(length):
    secret = kr.generate_secret("base64", length)
    assert len(base64.b64decode(secret, validate=True)) == length
    assert len(secret) % 4 == 0


def test_generate_base64_32_is_an_aes256_key():
    assert len(base64.b64decode(kr.generate_secret("base64", 32), validate=True)) == 32


@pytest.mark.parametrize("length", [16, 32, 33, 512])
def test_generate_urlsafe_has_no_padding(length):
    secret = kr.generate_secret("urlsafe", length)
    assert "=" not in secret
    assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) == length


def test_generate_is_random():
    assert kr.generate_secret("base64", 32) != kr.generate_secret("base64", 32)


def test_generate_unknown_format():
    with pytest.raises(kr.KeyringError, match="unknown key format"):
        kr.generate_secret("rot13", 32)


def test_new_key_id_format_and_uniqueness(monkeypatch):
    draws = iter(["a1b2", "a1b2", "0c3d"])
    monkeypatch.setattr(kr.secrets, "token_hex", lambda _n: next(draws))
    assert kr.new_key_id(NOW, set()) == "k20261121T101500Z-a1b2"
    assert kr.new_key_id(NOW, {"k20261121T101500Z-a1b2"}) == "k20261121T101500Z-0c3d"


def test_new_key_id_uses_utc():
    moment = datetime(2026, 11, 21, 12, 15, 0, tzinfo=timezone(timedelta(hours=2)))
    assert kr.new_key_id(moment, set()).startswith("k20261121T101500Z-")
    assert KEY_ID_RE.match(kr.new_key_id(NOW, set()))


def test_same_secret():
    assert kr.same_secret("abc", "abc")
    assert not kr.same_secret("abc", "abd")
    assert not kr.same_secret("abc", None)
    assert kr.same_secret("ключ", "ключ")


# --- time -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["2026-11-21T10:15:00Z", "2026-11-21T10:15:00+00:00", "2026-11-21T12:15:00+02:00",
                                  "2026-11-21T10:15:00"])
def test_parse_time(text):
    assert kr.parse_time(text) == NOW


@pytest.mark.parametrize("value", ["yesterday", "", None, 5])
def test_parse_time_rejects(value):
    with pytest.raises(ValueError):
        kr.parse_time(value)


def test_format_time_and_age():
    assert kr.format_time(NOW) == "2026-11-21T10:15:00Z"
    assert kr.age_days(NOW - timedelta(days=3, hours=12), NOW) == 3.5
    assert kr.age_days(NOW + timedelta(days=1), NOW) == 0.0


def test_utcnow_is_whole_seconds_utc():
    now = kr.utcnow()
    assert now.microsecond == 0
    assert now.utcoffset() == timedelta(0)


# --- parsing and serialising ------------------------------------------------------------------

def test_parse_v1_round_trip():
    doc = v1_doc()
    ring = kr.parse_document(doc, NOW)
    assert ring.current == "kcur"
    assert ring.current_secret == SECRET_CURRENT
    assert not ring.legacy
    assert ring.to_document() == doc


def test_serialise_is_deterministic():
    doc = v1_doc()
    ring = kr.parse_document(doc, NOW)
    assert ring.serialise() == (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    assert ring.serialise() == kr.parse_document(json.loads(ring.serialise()), NOW).serialise()


def test_unknown_top_level_fields_are_kept():
    doc = dict(v1_doc(), comment="managed by ansible")
    assert kr.parse_document(doc, NOW).to_document() == doc


def test_legacy_adoption():
    mtime = NOW - timedelta(days=5)
    doc = {"current": "kcur", "keys": {"kcur": SECRET_CURRENT, "kold": SECRET_OLD, "ktext": "not base64!"}}
    ring = kr.parse_document(doc, mtime)
    assert ring.legacy
    assert ring.meta["kcur"] == kr.key_meta(mtime, "unknown", "base64", 32, None)
    assert ring.meta["kold"] == kr.key_meta(mtime, "unknown", "base64", 32, mtime)
    assert ring.meta["ktext"] == kr.key_meta(mtime, "unknown", "unknown", None, mtime)
    out = ring.to_document()
    assert out["version"] == 1
    assert out["keys"] == doc["keys"]
    assert out["meta"]["kcur"]["created"] == ts(mtime)


def test_v1_key_without_meta_is_adopted():
    doc = v1_doc()
    doc["keys"]["kextra"] = SECRET_OLD
    ring = kr.parse_document(doc, NOW)
    assert ring.legacy
    assert ring.meta["kextra"]["source"] == "unknown"


def test_meta_defaults():
    doc = v1_doc()
    doc["meta"]["kold"] = {"created": ts(NOW - timedelta(days=1)), "retired": ts(NOW)}
    ring = kr.parse_document(doc, NOW)
    assert ring.meta["kold"]["source"] == "unknown"
    assert ring.meta["kold"]["format"] == "unknown"
    assert ring.meta["kold"]["length"] is None


def _break(mutate):
    doc = v1_doc()
    mutate(doc)
    return doc


MALFORMED = [
    ([1, 2], "top level must be a JSON object"),
    (_break(lambda d: d.update(version=2)), "unsupported keyring version 2"),
    (_break(lambda d: d.update(version=True)), "unsupported keyring version"),
    (_break(lambda d: d.pop("keys")), "'keys' must be a non-empty object"),
    (_break(lambda d: d.update(keys={})), "'keys' must be a non-empty object"),
    (_break(lambda d: d.update(keys=[SECRET_CURRENT])), "'keys' must be a non-empty object"),
    (_break(lambda d: d["keys"].update(kold=5)), "secret of key 'kold' must be a non-empty string"),
    (_break(lambda d: d["keys"].update(kold="")), "secret of key 'kold' must be a non-empty string"),
    (_break(lambda d: d["keys"].update({"": SECRET_OLD})), "empty key id"),
    (_break(lambda d: d.pop("current")), "'current' must be the id of a key"),
    (_break(lambda d: d.update(current="nope")), "'current' must be the id of a key"),
    (_break(lambda d: d.update(meta=[])), "'meta' must be an object"),
    (_break(lambda d: d["meta"].update(kgone={"created": ts(NOW)})), "not in 'keys': kgone"),
    (_break(lambda d: d["meta"].update(kold="x")), "meta of key 'kold' must be an object"),
    (_break(lambda d: d["meta"]["kold"].update(created="soon")), "'created' must be a UTC timestamp"),
    (_break(lambda d: d["meta"]["kold"].pop("created")), "'created' must be a UTC timestamp"),
    (_break(lambda d: d["meta"]["kold"].update(retired="later")), "'retired' must be null or a UTC timestamp"),
    (_break(lambda d: d["meta"]["kcur"].update(retired=ts(NOW))), "current but its meta marks it retired"),
    (_break(lambda d: d["meta"]["kold"].update(length="32")), "'length' must be an integer or null"),
    (_break(lambda d: d["meta"]["kold"].update(length=True)), "'length' must be an integer or null"),
    (_break(lambda d: d["meta"]["kold"].update(source=1)), "'source' and 'format' must be strings"),
    (_break(lambda d: d["meta"]["kold"].update(secret=SECRET_OLD)), "unknown field\\(s\\): secret"),
]


@pytest.mark.parametrize(("doc", "message"), MALFORMED)
def test_parse_malformed(doc, message):
    with pytest.raises(kr.KeyringError, match=message) as info:
        kr.parse_document(doc, NOW)
    assert SECRET_CURRENT not in str(info.value)
    assert SECRET_OLD not in str(info.value)


def test_load_missing(tmp_path):
    assert kr.load(str(tmp_path / "nope.json")) == (None, None)


def test_load_valid_uses_mtime_for_legacy(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"current": "a", "keys": {"a": SECRET_CURRENT}}))
    mtime = NOW - timedelta(days=42)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    ring, doc = kr.load(str(path))
    assert doc == {"current": "a", "keys": {"a": SECRET_CURRENT}}
    assert ring.meta["a"]["created"] == mtime


@pytest.mark.parametrize(("content", "message"), [
    (b'{"current": "a", "keys": {"a": "' + SECRET_CURRENT.encode() + b'"', "not valid JSON \\(line 1 column"),
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    (b'{"current": "b", "keys": {"a": "' + SECRET_CURRENT.encode() + b'"}}', "is malformed: 'current'"),
])
def test_load_malformed_names_path_never_secret(tmp_path, content, message):
    path = tmp_path / "keyring.json"
    path.write_bytes(content)
    with pytest.raises(kr.KeyringError, match=message) as info:
        kr.load(str(path))
    assert str(path) in str(info.value)
    assert SECRET_CURRENT not in str(info.value)


def test_load_directory(tmp_path):
    with pytest.raises(kr.KeyringError, match="is not a regular file"):
        kr.load(str(tmp_path))


# --- decisions --------------------------------------------------------------------------------

def ring(**kwargs):
    return kr.parse_document(v1_doc(**kwargs), NOW)


def test_decide_created():
    assert kr.decide(None, kr.Policy(), NOW) == kr.REASON_CREATED
    assert kr.decide(None, kr.Policy(secret="s"), NOW) == kr.REASON_CREATED


def test_decide_nothing_to_do():
    assert kr.decide(ring(), kr.Policy(), NOW) is None


def test_decide_expired_boundary():
    exactly = ring(current_created=NOW - timedelta(days=90))
    assert kr.decide(exactly, kr.Policy(max_age_days=90), NOW) is None
    just_over = ring(current_created=NOW - timedelta(days=90, seconds=1))
    assert kr.decide(just_over, kr.Policy(max_age_days=90), NOW) == kr.REASON_EXPIRED
    assert kr.decide(ring(), kr.Policy(max_age_days=5), NOW) == kr.REASON_EXPIRED


def test_decide_forced():
    assert kr.decide(ring(), kr.Policy(force=True), NOW) == kr.REASON_FORCED


@pytest.mark.parametrize(("fmt", "length"), [("hex", 32), ("urlsafe", 32), ("base64", 64)])
def test_decide_spec_changed(fmt, length):
    assert kr.decide(ring(), kr.Policy(fmt=fmt, length=length), NOW) == kr.REASON_SPEC_CHANGED


def test_decide_spec_only_for_generated_keys():
    assert kr.decide(ring(source="unknown"), kr.Policy(fmt="hex"), NOW) is None
    assert kr.decide(ring(source="external", fmt="external", length=None), kr.Policy(fmt="hex"), NOW) is None


def test_decide_external_secret():
    assert kr.decide(ring(), kr.Policy(secret=SECRET_CURRENT), NOW) is None
    assert kr.decide(ring(), kr.Policy(secret="something else"), NOW) == kr.REASON_NEW_SECRET
    old_and_same = ring(current_created=NOW - timedelta(days=400))
    assert kr.decide(old_and_same, kr.Policy(secret=SECRET_CURRENT), NOW) is None


def test_decide_external_current_is_not_replaced_on_age_alone():
    old_external = ring(current_created=NOW - timedelta(days=400), source="external", fmt="external", length=None)
    assert kr.decide(old_external, kr.Policy(), NOW) is None
    assert kr.decide(old_external, kr.Policy(force=True), NOW) == kr.REASON_FORCED
    assert kr.is_overdue(old_external, NOW, 90)


def test_overdue_and_next_rotation():
    current = ring(current_created=NOW - timedelta(days=10))
    assert not kr.is_overdue(current, NOW, 90)
    assert kr.is_overdue(current, NOW, 9)
    assert kr.next_rotation(current, 90) == ts(NOW + timedelta(days=80))
    assert kr.next_rotation(None, 90) is None
    assert not kr.is_overdue(None, NOW, 90)


# --- rotation and pruning ---------------------------------------------------------------------

def test_new_key_generated_and_external_and_placeholder():
    key_id, secret, meta = kr.new_key(kr.Policy(fmt="hex", length=16), NOW, set())
    assert KEY_ID_RE.match(key_id)
    assert len(secret) == 32
    assert meta == kr.key_meta(NOW, "generated", "hex", 16)
    key_id, secret, meta = kr.new_key(kr.Policy(secret="from-vault"), NOW, set())
    assert secret == "from-vault"
    assert meta == kr.key_meta(NOW, "external", "external", None)
    key_id, secret, meta = kr.new_key(kr.Policy(), NOW, set(), placeholder=True)
    assert (key_id, secret, meta["source"]) == ("(new)", "", "generated")


def test_rotate_retires_old_current_and_leaves_input_alone():
    before = ring()
    after = kr.rotate(before, "knew", "new-secret", kr.key_meta(NOW, "generated", "base64", 32), NOW)
    assert after.current == "knew"
    assert after.meta["kcur"]["retired"] == NOW
    assert after.meta["knew"]["retired"] is None
    assert before.current == "kcur"
    assert before.meta["kcur"]["retired"] is None
    assert "knew" not in before.keys


def test_rotate_from_nothing():
    after = kr.rotate(None, "knew", "s", kr.key_meta(NOW, "generated", "base64", 32), NOW)
    assert after.current == "knew"
    assert list(after.keys) == ["knew"]


def test_prune_keep_previous_newest_retired_first():
    keyring = keyring_with_retired([1, 3, 2, 4])
    removed = kr.prune(keyring, NOW, keep_previous=2)
    assert removed == ["r1", "r3"]
    assert set(keyring.keys) == {"kcur", "r0", "r2"}
    assert set(keyring.meta) == set(keyring.keys)


def test_prune_keep_zero_removes_all_retired():
    keyring = keyring_with_retired([1, 2])
    assert kr.prune(keyring, NOW, keep_previous=0) == ["r0", "r1"]
    assert list(keyring.keys) == ["kcur"]


def test_prune_grace_days():
    keyring = keyring_with_retired([1, 5, 30])
    assert kr.prune(keyring, NOW, keep_previous=10, grace_days=5) == ["r2"]
    assert set(keyring.keys) == {"kcur", "r0", "r1"}  # exactly 5 days is not older than 5 days


def test_prune_grace_and_keep_together():
    keyring = keyring_with_retired([1, 2, 30])
    assert kr.prune(keyring, NOW, keep_previous=1, grace_days=7) == ["r1", "r2"]


def test_prune_nothing():
    keyring = keyring_with_retired([1])
    assert kr.prune(keyring, NOW, keep_previous=2, grace_days=None) == []


# --- secret-free views ------------------------------------------------------------------------

def test_describe_newest_first_without_secrets():
    keyring = keyring_with_retired([2, 1])
    rows = kr.describe(keyring, NOW)
    assert [row["id"] for row in rows] == ["kcur", "r1", "r0"]
    assert rows[0] == {"id": "kcur", "created": ts(NOW - timedelta(days=1)), "retired": None, "age_days": 1.0,
                       "source": "generated", "format": "base64", "length": 32, "current": True}
    assert rows[1]["retired"] == ts(NOW - timedelta(days=1))
    assert rows[1]["current"] is False
    text = json.dumps(rows)
    assert all(secret not in text for secret in keyring.keys.values())


def test_diff_text():
    keyring = ring()
    text = kr.diff_text(keyring)
    assert text == (
        "version: 1\n"
        "current: kcur\n"
        f"kcur created={ts(NOW - timedelta(days=10))} retired=- source=generated\n"
        f"kold created={ts(NOW - timedelta(days=200))} retired={ts(NOW - timedelta(days=10))} source=generated\n"
    )
    assert SECRET_CURRENT not in text
    assert SECRET_OLD not in text
    assert kr.diff_text(None) == ""


def test_diff_text_marks_legacy():
    legacy = kr.parse_document({"current": "a", "keys": {"a": SECRET_CURRENT}}, NOW)
    assert kr.diff_text(legacy).startswith("version: legacy (adopted)\n")


# --- files ------------------------------------------------------------------------------------

def old_file(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_bytes(b'{"old": true}\n')
    return path


def listing(directory):
    return sorted(os.listdir(directory))


def test_atomic_write_creates_0600_file(tmp_path):
    path = tmp_path / "keyring.json"
    kr.atomic_write(str(path), b"data\n")
    assert path.read_bytes() == b"data\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert listing(tmp_path) == ["keyring.json"]


def test_atomic_write_temp_is_private_before_data(tmp_path, monkeypatch):
    path = old_file(tmp_path)
    seen = {}
    real_fsync = os.fsync

    def spy(fd):
        if not seen:  # the first fsync is the temp file's, the second the directory's
            seen["mode"] = stat.S_IMODE(os.fstat(fd).st_mode)
            seen["name"] = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
        return real_fsync(fd)

    monkeypatch.setattr(kr.os, "fsync", spy)
    kr.atomic_write(str(path), b"new\n")
    assert seen["mode"] == 0o600
    assert len(seen["name"]) == 1
    assert seen["name"][0].startswith(".keyring.json.")


def test_atomic_write_calls_prepare_on_temp(tmp_path):
    path = old_file(tmp_path)
    prepared = []

    def prepare(temp):
        with open(temp, "rb") as handle:
            prepared.append((os.path.dirname(temp), os.path.basename(temp), handle.read()))
        os.chmod(temp, 0o640)

    kr.atomic_write(str(path), b"new\n", prepare=prepare)
    assert prepared[0][0] == str(tmp_path)
    assert prepared[0][1].startswith(".keyring.json.") and prepared[0][1].endswith(".tmp")
    assert prepared[0][2] == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("failing", ["replace", "fsync", "fchmod"])
def test_atomic_write_crash_keeps_old_file(tmp_path, monkeypatch, failing):
    path = old_file(tmp_path)

    def boom(*_args, **_kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(kr.os, failing, boom)
    with pytest.raises(kr.KeyringError, match=r"cannot write keyring .*Input/output error"):
        kr.atomic_write(str(path), b"new\n")
    monkeypatch.undo()
    assert path.read_bytes() == b'{"old": true}\n'
    assert listing(tmp_path) == ["keyring.json"]


def test_atomic_write_prepare_failure_keeps_old_file(tmp_path):
    path = old_file(tmp_path)

    class Stop(Exception):
        pass

    def prepare(_temp):
        raise Stop()

    with pytest.raises(Stop):
        kr.atomic_write(str(path), b"new\n", prepare=prepare)
    assert path.read_bytes() == b'{"old": true}\n'
    assert listing(tmp_path) == ["keyring.json"]


def test_atomic_write_directory_sync_failure_after_replace(tmp_path, monkeypatch):
    path = old_file(tmp_path)

    def broken_sync(_directory):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(kr, "fsync_directory", broken_sync)
    with pytest.raises(kr.KeyringError, match="was replaced but syncing its directory failed"):
        kr.atomic_write(str(path), b"new\n")
    assert path.read_bytes() == b"new\n"
    assert listing(tmp_path) == ["keyring.json"]


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(kr.KeyringError, match="cannot create a temporary file"):
        kr.atomic_write(str(tmp_path / "missing" / "keyring.json"), b"x")


def test_remove_stale_temp_files(tmp_path):
    path = tmp_path / "keyring.json"
    for name in (".keyring.json.abc123.tmp", ".keyring.json.zz.tmp", ".other.json.abc.tmp", "keyring.json.tmp",
                 ".keyring.json.lock"):
        (tmp_path / name).write_text("x")
    removed = kr.remove_stale_temp_files(str(path))
    assert sorted(os.path.basename(name) for name in removed) == [".keyring.json.abc123.tmp",
                                                                  ".keyring.json.zz.tmp"]
    assert listing(tmp_path) == [".keyring.json.lock", ".other.json.abc.tmp", "keyring.json.tmp"]


def test_file_lock_is_exclusive_and_private(tmp_path):
    path = str(tmp_path / "keyring.json")
    with kr.FileLock(path) as held:
        assert held.path == str(tmp_path / ".keyring.json.lock")
        assert stat.S_IMODE(os.stat(held.path).st_mode) == 0o600
        with pytest.raises(kr.KeyringError, match=r"cannot lock .* another run holds it"), \
                kr.FileLock(path, timeout=0.2, poll=0.05):
            pass
    with kr.FileLock(path, timeout=0.2):
        pass  # released after the first one ended
