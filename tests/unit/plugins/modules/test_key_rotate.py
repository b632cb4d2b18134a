"""Unit tests for the clawbot.stack.key_rotate module, run in-process (plain pytest, run by ansible-test units)."""

from __future__ import annotations

import functools
import grp
import json
import os
import pwd
import re
import socket
import stat
from datetime import datetime, timedelta

import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.clawbot.stack.plugins.module_utils import keyring as kr
from ansible_collections.clawbot.stack.plugins.module_utils.webclient import HttpResult
from ansible_collections.clawbot.stack.plugins.modules import key_rotate
from ansible_collections.clawbot.stack.tests.fakes.openai_provider import FakeModel, FakeModelServer

NOW = datetime(2026, 11, 21, 10, 15, 0, tzinfo=kr.UTC)
KEY_ID_RE = re.compile(r"^k20261121T101500Z-[0-9a-f]{4}$")
GOOD_KEY = "sk-test-GOOD-4f1c2b7e9a0d4e6f8b3c"
BAD_KEY = "sk-test-BAD-0a9b8c7d6e5f4a3b2c1d"
OLD_KEY = "sk-test-OLD-11112222333344445555"
SECRET_A = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
SECRET_B = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="
SECRET_C = "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M="
SECRET_D = "RERERERERERERERERERERERERERERERERERERERERA="


# --- running the module in-process ------------------------------------------------------------

class AnsibleExitJson(Exception):
    def __init__(self, result):
        super().__init__("exit_json")
        self.result = result


class AnsibleFailJson(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


@pytest.fixture(autouse=True)
def module_harness(monkeypatch):
    """exit_json/fail_json raise with the raw result (before Ansible's own no_log masking); fixed clock."""
    warnings = []

    def exit_json(_self, **kwargs):
        kwargs.setdefault("changed", False)
        raise AnsibleExitJson(kwargs)

    def fail_json(_self, msg="", **kwargs):
        kwargs.update(failed=True, msg=msg)
        raise AnsibleFailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda _self, warning, **_kw: warnings.append(warning))
    monkeypatch.setattr(key_rotate, "utcnow", lambda: NOW)
    return warnings


def run(args, check=False, diff=False):
    """Run the module; returns the result dict. Raises AnsibleFailJson on failure."""
    module_args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(module_args), pytest.raises(AnsibleExitJson) as info:
        key_rotate.main()
    return info.value.result


def run_fail(args, check=False, diff=False):
    module_args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(module_args), pytest.raises(AnsibleFailJson) as info:
        key_rotate.main()
    return info.value.result


# --- files ------------------------------------------------------------------------------------

def ts(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(secret, created_days_ago, retired_days_ago=None, source="generated", fmt="base64", length=32):
    return dict(secret=secret, created=NOW - timedelta(days=created_days_ago),
                retired=None if retired_days_ago is None else NOW - timedelta(days=retired_days_ago),
                source=source, format=fmt, length=length)


def write_keyring(path, current, entries, mode=0o600):
    """A v1 keyring; ``entries`` maps id -> entry(...)."""
    doc = {"version": 1, "current": current, "keys": {}, "meta": {}}
    for key_id, item in entries.items():
        doc["keys"][key_id] = item["secret"]
        doc["meta"][key_id] = {"created": ts(item["created"]),
                               "retired": ts(item["retired"]) if item["retired"] else None,
                               "source": item["source"], "format": item["format"], "length": item["length"]}
    path.write_bytes((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    os.chmod(path, mode)
    return path


def read_doc(path):
    return json.loads(path.read_text())


def dir_listing(path):
    return sorted(os.listdir(path.parent))


def assert_no_secret(result, *secrets, warnings=()):
    text = json.dumps(result) + json.dumps(list(warnings))
    for secret in secrets:
        assert secret not in text


def file_secrets(path):
    return list(read_doc(path)["keys"].values())


@pytest.fixture
def keyring_path(tmp_path):
    return tmp_path / "keyring.json"


@pytest.fixture
def fresh(keyring_path):
    """Current key 10 days old plus one retired 10 days ago."""
    return write_keyring(keyring_path, "kcur", {
        "kcur": entry(SECRET_A, 10),
        "kold": entry(SECRET_B, 100, 10),
    })


@pytest.fixture
def expired(keyring_path):
    return write_keyring(keyring_path, "kcur", {
        "kcur": entry(SECRET_A, 100),
        "kold": entry(SECRET_B, 200, 100),
    })


# --- creation, idempotence, check mode, diff --------------------------------------------------

def test_creates_missing_keyring(keyring_path):
    result = run({"path": str(keyring_path)})
    assert result["changed"] is True
    assert result["rotated"] is True
    assert result["reason"] == "created"
    assert result["would_rotate"] is True
    assert KEY_ID_RE.match(result["current_key_id"])
    assert result["key_ids"] == [result["current_key_id"]]
    assert result["removed_key_ids"] == []
    assert result["keys"] == [{"id": result["current_key_id"], "created": "2026-11-21T10:15:00Z", "retired": None,
                               "age_days": 0.0, "source": "generated", "format": "base64", "length": 32,
                               "current": True}]
    assert result["current_age_days"] == 0.0
    assert result["overdue"] is False
    assert result["next_rotation"] == "2027-02-19T10:15:00Z"
    assert result["verified"] is None
    assert result["adopted"] is False
    assert result["path"] == str(keyring_path)
    doc = read_doc(keyring_path)
    assert doc["version"] == 1
    assert doc["current"] == result["current_key_id"]
    assert len(kr.base64.b64decode(doc["keys"][doc["current"]], validate=True)) == 32
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    assert keyring_path.read_bytes() == (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    assert dir_listing(keyring_path) == [".keyring.json.lock", "keyring.json"]
    assert stat.S_IMODE(os.stat(keyring_path.parent / ".keyring.json.lock").st_mode) == 0o600
    assert_no_secret(result, *file_secrets(keyring_path))


def test_second_run_is_idempotent(keyring_path):
    first = run({"path": str(keyring_path)})
    content = keyring_path.read_bytes()
    second = run({"path": str(keyring_path)})
    assert second["changed"] is False
    assert second["rotated"] is False
    assert second["reason"] is None
    assert second["current_key_id"] == first["current_key_id"]
    assert keyring_path.read_bytes() == content


def test_check_mode_create_writes_nothing(keyring_path):
    result = run({"path": str(keyring_path)}, check=True, diff=True)
    assert result["changed"] is True
    assert result["rotated"] is True
    assert result["reason"] == "created"
    assert result["current_key_id"] == "(new)"
    assert result["key_ids"] == ["(new)"]
    assert result["diff"]["before"] == ""
    assert "current: (new)\n" in result["diff"]["after"]
    assert os.listdir(keyring_path.parent) == []


def test_check_mode_rotation_writes_nothing(expired):
    content = expired.read_bytes()
    stamp = expired.stat().st_mtime_ns
    result = run({"path": str(expired)}, check=True)
    assert result["changed"] is True
    assert result["rotated"] is True
    assert result["reason"] == "expired"
    assert result["current_key_id"] == "(new)"
    assert result["key_ids"] == ["(new)", "kcur", "kold"]
    assert result["overdue"] is False
    assert expired.read_bytes() == content
    assert expired.stat().st_mtime_ns == stamp
    assert dir_listing(expired) == ["keyring.json"]  # no lock file either


def test_check_mode_unchanged(fresh):
    result = run({"path": str(fresh)}, check=True)
    assert result["changed"] is False
    assert result["current_key_id"] == "kcur"


def test_diff_lists_ids_and_dates_never_secrets(expired, module_harness):
    result = run({"path": str(expired), "keep_previous": 1}, diff=True)
    new_id = result["current_key_id"]
    assert result["diff"]["before_header"] == str(expired)
    assert result["diff"]["before"] == (
        "version: 1\n"
        "current: kcur\n"
        f"kcur created={ts(NOW - timedelta(days=100))} retired=- source=generated\n"
        f"kold created={ts(NOW - timedelta(days=200))} retired={ts(NOW - timedelta(days=100))} source=generated\n"
    )
    assert result["diff"]["after"] == (
        "version: 1\n"
        f"current: {new_id}\n"
        f"{new_id} created=2026-11-21T10:15:00Z retired=- source=generated\n"
        f"kcur created={ts(NOW - timedelta(days=100))} retired=2026-11-21T10:15:00Z source=generated\n"
    )
    assert result["removed_key_ids"] == ["kold"]
    assert_no_secret(result, SECRET_A, SECRET_B, *file_secrets(expired), warnings=module_harness)


def test_diff_shows_mode_change(fresh):
    os.chmod(fresh, 0o644)
    result = run({"path": str(fresh)}, check=True, diff=True)
    assert "mode: 0644\n" in result["diff"]["before"]
    assert "mode: 0600\n" in result["diff"]["after"]
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


# --- rotation rules ---------------------------------------------------------------------------

def test_expired_key_rotates_and_old_one_is_kept(expired):
    result = run({"path": str(expired)})
    assert result["changed"] is True
    assert result["reason"] == "expired"
    new_id = result["current_key_id"]
    assert KEY_ID_RE.match(new_id)
    assert result["key_ids"] == [new_id, "kcur", "kold"]
    doc = read_doc(expired)
    assert doc["current"] == new_id
    assert doc["keys"]["kcur"] == SECRET_A
    assert doc["keys"]["kold"] == SECRET_B
    assert doc["meta"]["kcur"]["retired"] == "2026-11-21T10:15:00Z"
    assert doc["meta"][new_id] == {"created": "2026-11-21T10:15:00Z", "retired": None, "source": "generated",
                                   "format": "base64", "length": 32}
    rows = {row["id"]: row for row in result["keys"]}
    assert rows["kcur"]["age_days"] == 100.0
    assert rows["kcur"]["retired"] == "2026-11-21T10:15:00Z"
    assert rows["kcur"]["current"] is False
    assert rows[new_id]["current"] is True
    assert_no_secret(result, *file_secrets(expired))


def test_max_age_days_controls_expiry(fresh):
    assert run({"path": str(fresh), "max_age_days": 11})["changed"] is False
    result = run({"path": str(fresh), "max_age_days": 9})
    assert result["reason"] == "expired"
    assert result["next_rotation"] == "2026-11-30T10:15:00Z"


def test_force_rotates_every_time(fresh):
    first = run({"path": str(fresh), "force": True})
    assert first["reason"] == "forced"
    assert first["changed"] is True
    second = run({"path": str(fresh), "force": True})
    assert second["reason"] == "forced"
    assert second["current_key_id"] != first["current_key_id"]
    assert second["key_ids"][:3] == [second["current_key_id"], first["current_key_id"], "kcur"]
    assert second["removed_key_ids"] == ["kold"]  # keep_previous=2


@pytest.mark.parametrize(("args", "check"), [
    ({"format": "hex"}, lambda s: re.fullmatch(r"[0-9a-f]{64}", s)),
    ({"length": 64}, lambda s: len(kr.base64.b64decode(s, validate=True)) == 64),
    ({"format": "urlsafe", "length": 16}, lambda s: re.fullmatch(r"[A-Za-z0-9_-]{22}", s)),
])
def test_spec_change_rotates(fresh, args, check):
    result = run(dict(args, path=str(fresh)))
    assert result["reason"] == "spec_changed"
    doc = read_doc(fresh)
    assert check(doc["keys"][doc["current"]])
    assert doc["meta"][doc["current"]]["format"] == args.get("format", "base64")
    assert doc["meta"][doc["current"]]["length"] == args.get("length", 32)
    assert run(dict(args, path=str(fresh)))["changed"] is False


@pytest.mark.parametrize(("fmt", "length", "pattern"), [
    ("hex", 16, r"[0-9a-f]{32}"),
    ("base64", 32, r"[A-Za-z0-9+/]{43}="),
    ("urlsafe", 32, r"[A-Za-z0-9_-]{43}"),
    ("hex", 512, r"[0-9a-f]{1024}"),
])
def test_format_and_length_of_created_key(keyring_path, fmt, length, pattern):
    result = run({"path": str(keyring_path), "format": fmt, "length": length})
    doc = read_doc(keyring_path)
    assert re.fullmatch(pattern, doc["keys"][doc["current"]])
    assert result["keys"][0]["format"] == fmt
    assert result["keys"][0]["length"] == length


# --- pruning ----------------------------------------------------------------------------------

@pytest.fixture
def many_retired(keyring_path):
    return write_keyring(keyring_path, "kcur", {
        "kcur": entry(SECRET_A, 5),
        "kr1": entry(SECRET_B, 40, 5),
        "kr2": entry(SECRET_C, 80, 40),
        "kr3": entry(SECRET_D, 120, 80),
    })


def test_keep_previous_prunes_without_rotation(many_retired):
    result = run({"path": str(many_retired)})
    assert result["changed"] is True
    assert result["rotated"] is False
    assert result["reason"] is None
    assert result["removed_key_ids"] == ["kr3"]
    assert result["key_ids"] == ["kcur", "kr1", "kr2"]
    assert set(read_doc(many_retired)["keys"]) == {"kcur", "kr1", "kr2"}
    assert run({"path": str(many_retired)})["changed"] is False


def test_keep_previous_lowered(many_retired):
    result = run({"path": str(many_retired), "keep_previous": 0})
    assert result["removed_key_ids"] == ["kr1", "kr2", "kr3"]
    assert read_doc(many_retired)["keys"] == {"kcur": SECRET_A}


def test_grace_days_removes_keys_retired_long_ago(many_retired):
    result = run({"path": str(many_retired), "keep_previous": 10, "grace_days": 30})
    assert result["removed_key_ids"] == ["kr2", "kr3"]
    assert set(read_doc(many_retired)["keys"]) == {"kcur", "kr1"}


def test_grace_days_zero_on_rotation(expired):
    result = run({"path": str(expired), "force": True, "grace_days": 0})
    # the key retired just now is not older than 0 days; the one retired 100 days ago is
    assert result["removed_key_ids"] == ["kold"]
    assert result["key_ids"] == [result["current_key_id"], "kcur"]


def test_grace_expiry_over_time(monkeypatch, many_retired):
    assert run({"path": str(many_retired), "keep_previous": 5, "grace_days": 90})["changed"] is False
    monkeypatch.setattr(key_rotate, "utcnow", lambda: NOW + timedelta(days=11))
    result = run({"path": str(many_retired), "keep_previous": 5, "grace_days": 90})
    assert result["removed_key_ids"] == ["kr3"]


def test_check_mode_pruning(many_retired):
    content = many_retired.read_bytes()
    result = run({"path": str(many_retired), "keep_previous": 1}, check=True)
    assert result["changed"] is True
    assert result["removed_key_ids"] == ["kr2", "kr3"]
    assert many_retired.read_bytes() == content


# --- legacy and malformed files ---------------------------------------------------------------

def write_legacy(path, days_ago, keys=None):
    path.write_text(json.dumps({"current": "k20240101120000ab12",
                                "keys": keys or {"k20240101120000ab12": SECRET_A, "k20230101120000cd34": SECRET_B}}))
    os.chmod(path, 0o600)
    stamp = (NOW - timedelta(days=days_ago)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_legacy_file_is_adopted(keyring_path):
    write_legacy(keyring_path, 10, {"k20240101120000ab12": SECRET_A, "k20230101120000cd34": SECRET_B,
                                    "kweird": "not base64 at all"})
    result = run({"path": str(keyring_path)}, diff=True)
    assert result["changed"] is True
    assert result["adopted"] is True
    assert result["rotated"] is False
    assert result["reason"] is None
    assert result["current_key_id"] == "k20240101120000ab12"
    assert result["current_age_days"] == 10.0
    assert result["diff"]["before"].startswith("version: legacy (adopted)\n")
    assert result["diff"]["after"].startswith("version: 1\n")
    doc = read_doc(keyring_path)
    mtime = ts(NOW - timedelta(days=10))
    assert doc["version"] == 1
    assert doc["keys"] == {"k20240101120000ab12": SECRET_A, "k20230101120000cd34": SECRET_B,
                           "kweird": "not base64 at all"}
    assert doc["meta"]["k20240101120000ab12"] == {"created": mtime, "retired": None, "source": "unknown",
                                                  "format": "base64", "length": 32}
    assert doc["meta"]["k20230101120000cd34"]["retired"] == mtime
    assert doc["meta"]["kweird"]["format"] == "unknown"
    assert doc["meta"]["kweird"]["length"] is None
    assert_no_secret(result, SECRET_A, SECRET_B, "not base64 at all")
    second = run({"path": str(keyring_path)})
    assert second["changed"] is False
    assert second["adopted"] is False


def test_legacy_file_older_than_max_age_rotates(keyring_path):
    write_legacy(keyring_path, 100)
    result = run({"path": str(keyring_path), "keep_previous": 5})
    assert result["reason"] == "expired"
    assert result["adopted"] is True
    assert result["key_ids"][1:] == ["k20240101120000ab12", "k20230101120000cd34"]


def test_legacy_file_check_mode(keyring_path):
    write_legacy(keyring_path, 10)
    content = keyring_path.read_bytes()
    result = run({"path": str(keyring_path)}, check=True)
    assert result["changed"] is True
    assert result["adopted"] is True
    assert keyring_path.read_bytes() == content


@pytest.mark.parametrize(("content", "message"), [
    (b'{"current": "a", "keys": {"a": "' + SECRET_A.encode() + b'"', "is not valid JSON"),
    (b'{"current": "b", "keys": {"a": "' + SECRET_A.encode() + b'"}}', "'current' must be the id of a key"),
    (b'{"version": 7, "current": "a", "keys": {"a": "' + SECRET_A.encode() + b'"}}', "unsupported keyring version"),
    (b'["' + SECRET_A.encode() + b'"]', "top level must be a JSON object"),
])
@pytest.mark.parametrize("mode", ["normal", "check", "report_only"])
def test_malformed_file_fails_and_is_untouched(keyring_path, content, message, mode):
    keyring_path.write_bytes(content)
    os.chmod(keyring_path, 0o644)
    stamp = keyring_path.stat().st_mtime_ns
    args = {"path": str(keyring_path), "force": True, "report_only": mode == "report_only"}
    result = run_fail(args, check=mode == "check")
    assert message in result["msg"]
    assert str(keyring_path) in result["msg"]
    assert SECRET_A not in json.dumps(result)
    assert keyring_path.read_bytes() == content
    assert keyring_path.stat().st_mtime_ns == stamp
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o644
    assert not [name for name in dir_listing(keyring_path) if name.endswith(".tmp")]


# --- atomicity and locking --------------------------------------------------------------------

@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_crash_during_write_keeps_old_file(expired, monkeypatch, failing):
    content = expired.read_bytes()

    def crash(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    real = getattr(kr.os, failing)
    monkeypatch.setattr(kr.os, failing, crash)
    result = run_fail({"path": str(expired)})
    monkeypatch.setattr(kr.os, failing, real)
    assert "cannot write keyring" in result["msg"]
    assert "No space left on device" in result["msg"]
    assert expired.read_bytes() == content
    assert dir_listing(expired) == [".keyring.json.lock", "keyring.json"]
    assert_no_secret(result, SECRET_A, SECRET_B)
    # the next run works
    assert run({"path": str(expired)})["reason"] == "expired"


def test_leftover_temp_file_from_killed_run(expired, module_harness):
    leftover = expired.parent / ".keyring.json.k1ll3d.tmp"
    leftover.write_text('{"half": ')
    result = run({"path": str(expired)})
    assert result["reason"] == "expired"
    assert not leftover.exists()
    assert dir_listing(expired) == [".keyring.json.lock", "keyring.json"]
    assert any("temporary file" in warning for warning in module_harness)


def test_leftover_temp_file_is_kept_in_check_mode(expired):
    leftover = expired.parent / ".keyring.json.k1ll3d.tmp"
    leftover.write_text('{"half": ')
    run({"path": str(expired)}, check=True)
    assert leftover.exists()


def test_waits_for_the_lock(expired, monkeypatch):
    monkeypatch.setattr(key_rotate, "FileLock", functools.partial(kr.FileLock, timeout=0.2, poll=0.05))
    content = expired.read_bytes()
    with kr.FileLock(str(expired)):
        result = run_fail({"path": str(expired)})
    assert "another run holds it" in result["msg"]
    assert expired.read_bytes() == content


def test_symlink_is_followed(tmp_path):
    real = tmp_path / "real.json"
    link = tmp_path / "keyring.json"
    link.symlink_to(real)
    result = run({"path": str(link)})
    assert result["path"] == str(real)
    assert link.is_symlink()
    assert read_doc(real)["current"] == result["current_key_id"]


# --- owner, group, mode -----------------------------------------------------------------------

def test_wrong_mode_is_fixed_and_reported(fresh):
    os.chmod(fresh, 0o644)
    content = fresh.read_bytes()
    result = run({"path": str(fresh)})
    assert result["changed"] is True
    assert result["rotated"] is False
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert fresh.read_bytes() == content
    assert run({"path": str(fresh)})["changed"] is False


def test_wrong_mode_check_mode(fresh):
    os.chmod(fresh, 0o644)
    assert run({"path": str(fresh)}, check=True)["changed"] is True
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_wrong_mode_fixed_together_with_rotation(expired):
    os.chmod(expired, 0o644)
    run({"path": str(expired)})
    assert stat.S_IMODE(expired.stat().st_mode) == 0o600


@pytest.mark.parametrize(("mode", "expected"), [("0640", 0o640), ("u=rw,g=r,o=", 0o640), (0o400, 0o400),
                                                ("600", 0o600)])
def test_mode_option(keyring_path, mode, expected):
    run({"path": str(keyring_path), "mode": mode})
    assert stat.S_IMODE(keyring_path.stat().st_mode) == expected
    run({"path": str(keyring_path), "mode": mode, "force": True})
    assert stat.S_IMODE(keyring_path.stat().st_mode) == expected
    assert run({"path": str(keyring_path), "mode": mode})["changed"] is False


def test_mode_null_keeps_existing_permissions(expired):
    os.chmod(expired, 0o640)
    result = run({"path": str(expired), "mode": None})
    assert result["rotated"] is True
    assert stat.S_IMODE(expired.stat().st_mode) == 0o640


def test_owner_and_group_numeric_and_by_name(keyring_path):
    uid, gid = os.getuid(), os.getgid()
    result = run({"path": str(keyring_path), "owner": str(uid), "group": str(gid)})
    assert result["changed"] is True
    info = keyring_path.stat()
    assert (info.st_uid, info.st_gid) == (uid, gid)
    by_name = {"path": str(keyring_path), "owner": pwd.getpwuid(uid).pw_name, "group": grp.getgrgid(gid).gr_name}
    assert run(by_name)["changed"] is False
    assert run(dict(by_name, force=True))["changed"] is True
    assert (keyring_path.stat().st_uid, keyring_path.stat().st_gid) == (uid, gid)


def test_owner_change(fresh):
    other = next(entry for entry in pwd.getpwall() if entry.pw_uid != os.getuid())
    content = fresh.read_bytes()
    args = {"path": str(fresh), "owner": str(other.pw_uid)}
    if os.getuid() != 0:  # only root may give a file away: the module fails and the keyring stays as it was
        result = run_fail(args)
        assert "chown failed" in result["msg"]
        assert fresh.read_bytes() == content
        return
    result = run(args, diff=True)
    assert result["changed"] is True
    assert fresh.stat().st_uid == other.pw_uid
    assert f"owner: {other.pw_uid}\n" in result["diff"]["after"]
    assert fresh.read_bytes() == content
    run({"path": str(fresh), "force": True})  # no owner given: the rewritten file keeps the owner
    assert fresh.stat().st_uid == other.pw_uid
    assert fresh.read_bytes() != content


# --- report_only and fail_on_overdue ----------------------------------------------------------

def test_report_only_overdue(expired):
    os.chmod(expired, 0o644)
    content = expired.read_bytes()
    result = run({"path": str(expired), "report_only": True})
    assert result["changed"] is False
    assert result["rotated"] is False
    assert result["overdue"] is True
    assert result["would_rotate"] is True
    assert result["reason"] == "expired"
    assert result["current_key_id"] == "kcur"
    assert result["current_age_days"] == 100.0
    assert result["next_rotation"] == ts(NOW - timedelta(days=10))
    assert result["removed_key_ids"] == []
    assert expired.read_bytes() == content
    assert stat.S_IMODE(expired.stat().st_mode) == 0o644  # not even the mode
    assert dir_listing(expired) == ["keyring.json"]  # no lock file
    assert_no_secret(result, SECRET_A, SECRET_B)


def test_report_only_fresh(fresh):
    result = run({"path": str(fresh), "report_only": True, "fail_on_overdue": True})
    assert result["overdue"] is False
    assert result["would_rotate"] is False
    assert result["reason"] is None


def test_report_only_missing_file(keyring_path):
    result = run({"path": str(keyring_path), "report_only": True, "fail_on_overdue": True})
    assert result["would_rotate"] is True
    assert result["reason"] == "created"
    assert result["current_key_id"] is None
    assert result["keys"] == []
    assert result["overdue"] is False
    assert not keyring_path.exists()


def test_report_only_fail_on_overdue(expired):
    content = expired.read_bytes()
    result = run_fail({"path": str(expired), "report_only": True, "fail_on_overdue": True})
    assert "kcur" in result["msg"]
    assert "100.0 days" in result["msg"]
    assert "max_age_days is 90" in result["msg"]
    assert result["overdue"] is True
    assert expired.read_bytes() == content
    assert_no_secret(result, SECRET_A, SECRET_B)


def test_fail_on_overdue_normal_mode_rotates_instead(expired):
    result = run({"path": str(expired), "fail_on_overdue": True})
    assert result["rotated"] is True
    assert result["overdue"] is False


# --- external secrets -------------------------------------------------------------------------

def test_external_secret_creates_keyring(keyring_path):
    result = run({"path": str(keyring_path), "secret": OLD_KEY, "format": "hex", "length": 64})
    assert result["reason"] == "created"
    assert result["verified"] is None
    assert result["keys"][0]["source"] == "external"
    assert result["keys"][0]["format"] == "external"
    assert result["keys"][0]["length"] is None
    doc = read_doc(keyring_path)
    assert doc["keys"][doc["current"]] == OLD_KEY
    assert_no_secret(result, OLD_KEY)


@pytest.fixture
def external(keyring_path):
    return write_keyring(keyring_path, "kext", {
        "kext": entry(OLD_KEY, 30, source="external", fmt="external", length=None),
    })


def test_same_external_secret_is_no_change(external):
    content = external.read_bytes()
    result = run({"path": str(external), "secret": OLD_KEY, "format": "hex"}, diff=True)
    assert result["changed"] is False
    assert result["reason"] is None
    assert result["verified"] is None
    assert external.read_bytes() == content
    assert_no_secret(result, OLD_KEY)


def test_new_external_secret_without_verification(external):
    result = run({"path": str(external), "secret": GOOD_KEY}, diff=True)
    assert result["changed"] is True
    assert result["reason"] == "new_secret"
    assert result["verified"] is None
    assert result["key_ids"][1] == "kext"
    doc = read_doc(external)
    assert doc["keys"][doc["current"]] == GOOD_KEY
    assert doc["keys"]["kext"] == OLD_KEY
    assert_no_secret(result, OLD_KEY, GOOD_KEY)


def test_new_external_secret_replaces_generated_key(fresh):
    result = run({"path": str(fresh), "secret": GOOD_KEY})
    assert result["reason"] == "new_secret"
    assert read_doc(fresh)["meta"]["kcur"]["retired"] == "2026-11-21T10:15:00Z"


def test_overdue_external_secret_warns(keyring_path, module_harness):
    write_keyring(keyring_path, "kext", {"kext": entry(OLD_KEY, 120, source="external", fmt="external",
                                                       length=None)})
    content = keyring_path.read_bytes()
    result = run({"path": str(keyring_path), "secret": OLD_KEY})
    assert result["changed"] is False
    assert result["overdue"] is True
    assert result["would_rotate"] is False
    assert any("rotate it in the vault" in warning and "kext" in warning for warning in module_harness)
    assert keyring_path.read_bytes() == content
    assert_no_secret(result, OLD_KEY, warnings=module_harness)
    # without secret, an outside key is not replaced by random bytes either
    result = run({"path": str(keyring_path)})
    assert result["changed"] is False
    assert result["overdue"] is True


def test_overdue_external_secret_fail_on_overdue(keyring_path):
    write_keyring(keyring_path, "kext", {"kext": entry(OLD_KEY, 120, source="external", fmt="external",
                                                       length=None),
                                         "kgone": entry(SECRET_B, 300, 200)})
    content = keyring_path.read_bytes()
    result = run_fail({"path": str(keyring_path), "secret": OLD_KEY, "fail_on_overdue": True, "keep_previous": 0})
    assert "kext is overdue: 120.0 days old" in result["msg"]
    assert keyring_path.read_bytes() == content  # the pruning did not happen either


def test_force_and_secret_are_mutually_exclusive(keyring_path):
    result = run_fail({"path": str(keyring_path), "force": True, "secret": GOOD_KEY})
    assert "force" in result["msg"]
    assert "secret" in result["msg"]
    assert "mutually exclusive" in result["msg"]
    assert GOOD_KEY not in json.dumps(result)
    assert not keyring_path.exists()


# --- verification against a fake OpenAI-compatible provider -----------------------------------

@pytest.fixture
def provider(monkeypatch):
    """The fake OpenAI-compatible provider (tests/fakes/openai_provider.py), accepting GOOD_KEY only."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeModelServer(FakeModel(api_key=GOOD_KEY, model="gpt-test"), max_lifetime=120) as server:
        yield server


def seen(provider):
    """``[(path, Authorization header)]`` of the requests the provider got."""
    return [(call.path, call.authorization) for call in provider.fake.calls]


@pytest.mark.parametrize(("suffix", "expected_path"), [
    ("", "/v1/models"),
    ("/", "/v1/models"),
    ("/v1", "/v1/models"),
    ("/v1/", "/v1/models"),
    ("/openai", "/openai/v1/models"),
    ("/openai/v1", "/openai/v1/models"),
])
def test_new_secret_verified_then_switched(external, provider, suffix, expected_path):
    base = provider.base_url
    result = run({"path": str(external), "secret": GOOD_KEY, "verify_url": base + suffix})
    assert result["changed"] is True
    assert result["reason"] == "new_secret"
    assert result["verified"] is True
    assert seen(provider) == [(expected_path, f"Bearer {GOOD_KEY}")]
    doc = read_doc(external)
    assert doc["keys"][doc["current"]] == GOOD_KEY
    assert_no_secret(result, GOOD_KEY, OLD_KEY)
    # same secret again: no request, no change
    again = run({"path": str(external), "secret": GOOD_KEY, "verify_url": base + suffix})
    assert again["changed"] is False
    assert again["verified"] is None
    assert len(seen(provider)) == 1


def test_verification_when_creating(keyring_path, provider):
    result = run({"path": str(keyring_path), "secret": GOOD_KEY, "verify_url": provider.base_url})
    assert result["reason"] == "created"
    assert result["verified"] is True
    assert len(seen(provider)) == 1


def test_rejected_secret_fails_and_changes_nothing(external, provider):
    os.chmod(external, 0o644)
    content = external.read_bytes()
    result = run_fail({"path": str(external), "secret": BAD_KEY, "verify_url": provider.base_url, "keep_previous": 0})
    assert "secret" in result["msg"]
    assert "HTTP 401" in result["msg"]
    assert "Incorrect API key provided" in result["msg"]
    assert "was not changed" in result["msg"]
    assert result["status"] == 401
    assert BAD_KEY not in json.dumps(result)
    assert seen(provider) == [("/v1/models", f"Bearer {BAD_KEY}")]
    assert external.read_bytes() == content
    assert stat.S_IMODE(external.stat().st_mode) == 0o644
    assert dir_listing(external) == [".keyring.json.lock", "keyring.json"]


def test_rejected_secret_echoed_by_provider_is_masked(external, provider):
    # a provider that puts the whole key in its message (OpenAI itself shows only its ends)
    provider.fake.respond_next.append((401, {"error": {"message": f"Incorrect API key provided: {BAD_KEY}",
                                                       "type": "invalid_request_error", "code": "invalid_api_key"}}))
    result = run_fail({"path": str(external), "secret": BAD_KEY, "verify_url": provider.base_url})
    assert "Incorrect API key provided: ********" in result["msg"]
    assert BAD_KEY not in json.dumps(result)


def test_answer_without_data_list_is_not_accepted(external, provider):
    provider.fake.models_body = {"object": "list"}
    content = external.read_bytes()
    result = run_fail({"path": str(external), "secret": GOOD_KEY, "verify_url": provider.base_url})
    assert "cannot verify secret" in result["msg"]
    assert "HTTP 200" in result["msg"]
    assert external.read_bytes() == content


def test_provider_down_fails(external):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    content = external.read_bytes()
    result = run_fail({"path": str(external), "secret": GOOD_KEY, "verify_url": f"http://127.0.0.1:{port}/v1",
                       "verify_timeout": 2})
    assert "cannot verify the new secret" in result["msg"]
    assert "refused" in result["msg"]
    assert GOOD_KEY not in json.dumps(result)
    assert external.read_bytes() == content


def test_verification_options_reach_the_request(external, monkeypatch, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    calls = []

    def fake_request(method, url, **kwargs):
        calls.append((method, url, kwargs))
        return HttpResult(200, {}, b'{"object": "list", "data": []}', url)

    monkeypatch.setattr(key_rotate, "request", fake_request)
    result = run({"path": str(external), "secret": GOOD_KEY, "verify_url": "https://llm.example.invalid/v1",
                  "verify_timeout": 3.5, "validate_certs": False, "ca_path": str(ca_file)})
    assert result["verified"] is True
    method, url, kwargs = calls[0]
    assert (method, url) == ("GET", "https://llm.example.invalid/v1/models")
    assert kwargs["headers"] == {"Authorization": f"Bearer {GOOD_KEY}"}
    assert kwargs["timeout"] == 3.5
    assert kwargs["validate_certs"] is False
    assert kwargs["ca_path"] == str(ca_file)


def test_no_verification_in_check_mode(external, provider):
    content = external.read_bytes()
    result = run({"path": str(external), "secret": BAD_KEY, "verify_url": provider.base_url}, check=True)
    assert result["changed"] is True
    assert result["reason"] == "new_secret"
    assert result["verified"] is None
    assert result["current_key_id"] == "(new)"
    assert seen(provider) == []
    assert external.read_bytes() == content


def test_no_verification_in_report_only(external, provider):
    result = run({"path": str(external), "secret": BAD_KEY, "verify_url": provider.base_url, "report_only": True})
    assert result["would_rotate"] is True
    assert result["reason"] == "new_secret"
    assert result["verified"] is None
    assert seen(provider) == []


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    ({"max_age_days": 0}, "max_age_days must be >= 1, got 0"),
    ({"keep_previous": -1}, "keep_previous must be >= 0, got -1"),
    ({"grace_days": -1}, "grace_days must be >= 0, got -1"),
    ({"length": 15}, "length must be between 16 and 512, got 15"),
    ({"length": 513}, "length must be between 16 and 512, got 513"),
    ({"verify_timeout": 0}, "verify_timeout must be > 0"),
    ({"format": "rot13"}, "format"),
    ({"mode": "rw-r--r--"}, "mode must be an octal mode"),
    ({"mode": "0999"}, "mode must be an octal mode"),
    ({"mode": "017777"}, "mode must be an octal mode"),
    ({"mode": 0o17777}, "mode must be between"),
    ({"owner": "no-such-user-kr"}, "owner 'no-such-user-kr' does not exist"),
    ({"group": "no-such-group-kr"}, "group 'no-such-group-kr' does not exist"),
    ({"secret": ""}, "secret must not be empty"),
    ({"secret": GOOD_KEY + "\n", "verify_url": "https://api.example.invalid/v1"}, "secret contains line breaks"),
    ({"secret": "ключ", "verify_url": "https://api.example.invalid/v1"}, "secret contains characters"),
    ({"verify_url": "https://api.example.invalid/v1"}, "verify_url requires secret"),
    ({"secret": GOOD_KEY, "verify_url": "ftp://example.invalid"}, "verify_url must be an http:// or https:// URL"),
    ({"secret": GOOD_KEY, "verify_url": "https://user:pw@/v1?key=1"}, "verify_url must be an http"),
    ({"secret": GOOD_KEY, "verify_url": "https://api.example.invalid", "ca_path": "/nonexistent/ca.pem"},
     "ca_path /nonexistent/ca.pem is not a file"),
])
def test_bad_input_fails_before_touching_anything(fresh, args, message):
    content = fresh.read_bytes()
    result = run_fail(dict(args, path=str(fresh)))
    assert message in result["msg"]
    assert fresh.read_bytes() == content
    assert dir_listing(fresh) == ["keyring.json"]
    assert GOOD_KEY not in json.dumps(result)
    assert "pw@" not in result["msg"]


def test_missing_directory_fails(tmp_path):
    result = run_fail({"path": str(tmp_path / "nope" / "keyring.json")})
    assert "directory" in result["msg"]
    assert str(tmp_path / "nope") in result["msg"]
    assert "does not exist" in result["msg"]
    assert not (tmp_path / "nope").exists()


def test_path_is_a_directory(tmp_path):
    (tmp_path / "keyring.json").mkdir()
    result = run_fail({"path": str(tmp_path / "keyring.json")})
    assert "is a directory" in result["msg"]


def test_path_is_required():
    result = run_fail({})
    assert "path" in result["msg"]


# --- documentation matches the argument spec ---------------------------------------------------

def test_documentation_matches_argument_spec():
    doc = yaml.safe_load(key_rotate.DOCUMENTATION)
    spec = key_rotate.argument_spec()
    options = doc["options"]
    assert set(options) == set(spec)
    for name, option in options.items():
        assert option["type"] == spec[name]["type"], name
        assert option.get("default") == spec[name].get("default"), name
        assert option.get("required", False) == spec[name].get("required", False), name
        assert option.get("choices") == spec[name].get("choices"), name
        assert option.get("aliases") == spec[name].get("aliases"), name
        assert option["description"], name
    assert {name for name, option in spec.items() if option.get("no_log")} == {"secret"}
    assert "never logged" in " ".join(options["secret"]["description"])
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "full"


def test_return_documentation_covers_results(keyring_path):
    returned = yaml.safe_load(key_rotate.RETURN)
    result = run({"path": str(keyring_path)})
    assert set(returned) == set(result) - {"changed"}
    assert set(returned["keys"]["contains"]) == set(result["keys"][0])
    assert yaml.safe_load(key_rotate.EXAMPLES)
