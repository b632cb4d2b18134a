"""Unit tests for clawbot.stack's release module_utils (plain pytest, run by ansible-test units)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat

import pytest
from ansible_collections.clawbot.stack.plugins.module_utils import release as rel

NOW = "2026-12-02T10:00:00Z"
A, B, C, D = "0.1.0-aaaaaaaaaaaa", "0.2.0-bbbbbbbbbbbb", "0.3.0-cccccccccccc", "0.4.0-dddddddddddd"


# --- wheel names and ids ----------------------------------------------------------------------

@pytest.mark.parametrize(("filename", "version"), [
    ("clawbot_app-0.1.0-py3-none-any.whl", "0.1.0"),
    ("clawbot_app-1!2.0rc1.post3.dev4+g1234.abc-py3-none-any.whl", "1!2.0rc1.post3.dev4+g1234.abc"),
    ("Clawbot.App-2.0-1-py3-none-any.whl", "2.0"),
    ("clawbot_app-2026.12.2-py3-none-manylinux_2_17_x86_64.whl", "2026.12.2"),
])
def test_wheel_file_names(filename, version):
    assert rel.parse_wheel_filename("/dist/" + filename)[1] == version
    assert rel.RELEASE_ID_RE.match(rel.make_release_id(version, "0123456789abcdef" * 4))


@pytest.mark.parametrize("filename", [
    "clawbot_app-0.1.0.tar.gz",
    "clawbot_app-0.1.0-py3-any.whl",
    "clawbot_app--py3-none-any.whl",
    "clawbot_app-0.1.0-1-2-py3-none-any.whl",
    "clawbot_app-v1.0-py3-none-any.whl",
    "clawbot_app-1.0.0-beta-py3-none-any.whl",
    "clawbot_app-1.0_1-py3-none-any.whl",
    "clawbot_app-1.0.0RC1-py3-none-any.whl",
    "clawbot-app-1.0.0-py3-none-any.whl",
    "clawbot_app_extra-1.0.0-py3-none-any.whl",
    "clawbot_app-../x-py3-none-any.whl",
])
def test_bad_wheel_file_names(filename):
    with pytest.raises(rel.ReleaseError, match=r"^wheel: "):
        rel.parse_wheel_filename(filename)


def test_digest_covers_wheel_then_constraints(tmp_path):
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"wheel bytes")
    constraints = tmp_path / "c.txt"
    constraints.write_bytes(b"x==1\n")
    assert rel.artifact_digest(str(wheel)) == hashlib.sha256(b"wheel bytes").hexdigest()
    assert rel.artifact_digest(str(wheel), str(constraints)) == hashlib.sha256(b"wheel bytesx==1\n").hexdigest()
    assert rel.make_release_id("0.1.0", "ab" * 32) == "0.1.0-abababababab"
    assert rel.version_of("1!2.0+x.y-0123456789ab") == "1!2.0+x.y"
    assert rel.version_of("latest") is None


# --- messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("see https://user:pa55@host.example/simple/ now", "see https://host.example/simple/ now"),
    ("http://token@h:8080/x and HTTPS://a:b@c/d", "http://h:8080/x and HTTPS://c/d"),
    ("Looking in indexes: https://deploy:****@pypi.example/simple", "Looking in indexes: https://pypi.example/simple"),
    ("no url user@host here", "no url user@host here"),
    (None, None),
])
def test_redact(text, expected):
    assert rel.redact(text) == expected


@pytest.mark.parametrize(("output", "expected"), [
    ("ERROR: Could not find a version that satisfies the requirement redis>=9 (from clawbot-app) (from versions: "
     "none)\nERROR: No matching distribution found for redis>=9\n", "no matching distribution found for redis>=9"),
    ("ERROR: Could not find a version that satisfies the requirement httpx==0.99 (from versions: 0.27.0)\n",
     "no matching distribution found for httpx==0.99"),
    ("ERROR: Cannot install clawbot-app==0.1.0 because these package versions have conflicting dependencies.\n\n"
     "The conflict is caused by:\n    clawbot-app 0.1.0 depends on clawbot_dep\n    The user requested (constraint) "
     "clawbot-dep==2.0\n\nTo fix this you could try to:\n",
     "conflicting dependencies (clawbot-app 0.1.0 depends on clawbot_dep; The user requested (constraint) "
     "clawbot-dep==2.0)"),
    ("ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/x'\n",
     "Could not install packages due to an OSError: [Errno 13] Permission denied: '/x'"),
    ("something else\n", None),
])
def test_pip_problem(output, expected):
    assert rel.pip_problem(output) == expected


def test_no_space_and_tail():
    assert rel.is_no_space("OSError: [Errno 28] No space left on device: '/opt/x'")
    assert not rel.is_no_space("[Errno 2] No such file or directory")
    text = "\n".join(f"line {n} https://u:p@h/x" for n in range(40))
    lines = rel.tail(text).splitlines()
    assert lines[0] == "line 25 https://h/x"
    assert len(lines) == rel.OUTPUT_TAIL_LINES
    assert rel.version_printed("0.2.0\n", "0.2.0")
    assert rel.version_printed("clawbot-app 0.2.0\n", "0.2.0")
    assert not rel.version_printed("0.2.0.post1\n", "0.2.0")


def test_pip_argv():
    argv = rel.pip_install_argv("/r/venv/bin/python", "/d/w.whl", constraints="/d/c.txt",
                                index_url="https://i/simple", extra_index_urls=["https://e1", "https://e2"],
                                ca_bundle="/ca.pem", proxy="http://p:3128")
    assert argv == ["/r/venv/bin/python", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                    "--progress-bar", "off", "--index-url", "https://i/simple", "--extra-index-url", "https://e1",
                    "--extra-index-url", "https://e2", "--cert", "/ca.pem", "--proxy", "http://p:3128",
                    "--constraint", "/d/c.txt", "/d/w.whl"]
    offline = rel.pip_install_argv("/py", "/w.whl", wheelhouse="/wh")
    assert offline[-4:] == ["--no-index", "--find-links", "/wh", "/w.whl"]


# --- history, ordering, pruning ---------------------------------------------------------------

def test_newest_first_and_prune():
    entries = {A: {"seq": 1}, B: {"seq": 3}, C: {"seq": 2}}
    ordered = rel.newest_first([A, B, C, D], entries, {D: 5.0})
    assert ordered == [B, C, A, D]  # unknown to the history: older than every known one
    assert rel.plan_prune(ordered, 2, (B, None)) == [A, D]
    assert rel.plan_prune(ordered, 2, (B, D)) == [C, A]  # protected although the oldest
    assert rel.plan_prune(ordered, 3, (A, D)) == [C]
    assert rel.plan_prune(ordered, 10, (A,)) == []


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": 2, "releases": {}}',
                                     b'{"version": 1, "releases": []}', b"\xff\xfe"])
def test_bad_history_is_an_empty_one(tmp_path, content):
    path = tmp_path / "releases.json"
    path.write_bytes(content)
    entries, sequence, problem = rel.load_history(str(path))
    assert (entries, sequence) == ({}, 0)
    assert "not a valid history file" in problem


def test_history_round_trip(tmp_path):
    layout = rel.Layout(str(tmp_path))
    assert rel.load_history(layout.history) == ({}, 0, None)
    entries = {A: {"version": "0.1.0", "installed": NOW, "activated": NOW, "seq": 4}, "junk": {"seq": 9}}
    rel.write_history(layout, entries, 4, os.getuid(), os.getgid())
    loaded, sequence, problem = rel.load_history(layout.history)
    assert problem is None
    assert sequence == 4
    assert loaded == {A: entries[A]}
    assert stat.S_IMODE(os.stat(layout.history).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["releases.json"]


# --- the layout on disk -----------------------------------------------------------------------

def make_release(root, release_id, marker=True):
    path = root / "releases" / release_id / "venv" / "bin"
    path.mkdir(parents=True)
    (path / "clawbot-app").write_text("#!/bin/sh\n")
    if marker:
        (root / "releases" / release_id / ".complete").write_text(json.dumps({"release_id": release_id}))


def test_scan(tmp_path):
    layout = rel.Layout(str(tmp_path))
    make_release(tmp_path, A)
    make_release(tmp_path, B, marker=False)
    make_release(tmp_path, C)
    (tmp_path / "releases" / C / ".complete").write_text(json.dumps({"release_id": D}))  # copied by hand
    make_release(tmp_path, D)
    (tmp_path / "releases" / D / ".complete").write_text(json.dumps({"release_id": D, "python": "/gone/python3.9"}))
    (tmp_path / "releases" / ".partial-x").mkdir()
    (tmp_path / "releases" / "notes").mkdir()
    (tmp_path / ".previous-0123").symlink_to("releases/x")
    (tmp_path / "current").symlink_to(f"releases/{A}")
    (tmp_path / "previous").symlink_to(str(tmp_path / "releases" / B))
    state = rel.scan(layout)
    assert sorted(state.complete) == [A]
    assert sorted(state.incomplete) == [B, C, D]
    assert "interpreter /gone/python3.9" in state.incomplete[D]
    assert state.leftovers == [str(tmp_path / ".previous-0123"), str(tmp_path / "releases" / ".partial-x")]
    assert (state.current.release_id, state.previous.release_id) == (A, B)  # absolute links are understood


def test_scan_of_a_foreign_current(tmp_path):
    (tmp_path / "current").symlink_to("/opt/old-venv")
    state = rel.scan(rel.Layout(str(tmp_path)))
    assert state.current.exists
    assert state.current.release_id is None
    assert state.current.target == "/opt/old-venv"
    assert not rel.scan(rel.Layout(str(tmp_path / "missing"))).root_exists


def test_plan_present_previous_rules(tmp_path):
    layout = rel.Layout(str(tmp_path))
    for release_id in (A, B, C):
        make_release(tmp_path, release_id)
    (tmp_path / "current").symlink_to(f"releases/{B}")
    (tmp_path / "previous").symlink_to(f"releases/{A}")
    state = rel.scan(layout)
    to_c = rel.plan_present(state, C, 3, {}, 0, NOW)
    assert (to_c.current, to_c.previous, to_c.switch, to_c.install) == (C, B, True, False)
    to_a = rel.plan_present(state, A, 3, {}, 0, NOW)
    assert (to_a.current, to_a.previous) == (A, B)
    same = rel.plan_present(state, B, 3, {}, 0, NOW)
    assert (same.switch, same.install, same.changed, same.previous) == (False, False, False, A)
    new = rel.plan_present(state, D, 2, {}, 0, NOW)
    assert (new.install, new.current, new.previous, new.prune) == (True, D, B, [C, A])
    assert new.entries[D] == {"version": "0.4.0", "installed": NOW, "activated": NOW, "seq": 1}


def test_plan_present_when_current_is_broken(tmp_path):
    layout = rel.Layout(str(tmp_path))
    make_release(tmp_path, A)
    make_release(tmp_path, B, marker=False)
    (tmp_path / "current").symlink_to(f"releases/{B}")
    (tmp_path / "previous").symlink_to(f"releases/{A}")
    state = rel.scan(layout)
    rebuild = rel.plan_present(state, B, 3, {}, 0, NOW)
    assert (rebuild.install, rebuild.switch, rebuild.previous) == (True, False, A)
    assert rebuild.remove == [layout.release(B)]
    other = rel.plan_present(state, C, 3, {}, 0, NOW)
    assert other.remove == []  # the live (if broken) release is not deleted under the service
    assert other.previous == A  # an incomplete old current never becomes previous


# --- files ------------------------------------------------------------------------------------

def test_replace_link_and_discard(tmp_path):
    make_release(tmp_path, A)
    make_release(tmp_path, B)
    current = str(tmp_path / "current")
    rel.replace_link(current, f"releases/{A}", os.getuid(), os.getgid())
    rel.replace_link(current, f"releases/{B}", os.getuid(), os.getgid())
    assert os.readlink(current) == f"releases/{B}"
    assert sorted(os.listdir(tmp_path)) == ["current", "releases"]
    rel.discard(str(tmp_path / "releases" / A))
    assert os.listdir(tmp_path / "releases") == [B]
    stale = tmp_path / ".current-abc"
    stale.symlink_to("releases/nothing")
    rel.discard(str(stale))
    assert not os.path.lexists(stale)


def test_settle_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    os.chmod(tree / "sub" / "f", 0o666)
    os.chmod(tree / "sub", 0o777)
    (tree / "link").symlink_to("/nonexistent")
    rel.settle_tree(str(tree), os.getuid(), os.getgid())
    assert stat.S_IMODE(os.stat(tree / "sub" / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tree / "sub").st_mode) == 0o755
    assert os.readlink(tree / "link") == "/nonexistent"


def test_lock(tmp_path):
    path = str(tmp_path / ".lock")
    with rel.Lock(path, timeout=0):
        with pytest.raises(rel.ReleaseError, match="cannot lock"), rel.Lock(path, timeout=0):
            pass
        with pytest.raises(rel.ReleaseError, match="cannot lock"), rel.Lock(path, timeout=0, shared=True):
            pass
    first, second = rel.Lock(path, timeout=0, shared=True), rel.Lock(path, timeout=0, shared=True)
    with first, second, open(path) as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with rel.Lock(str(tmp_path / "missing" / ".lock"), shared=True):
        pass  # nothing deployed: check mode has nothing to wait for
    assert sorted(os.listdir(tmp_path)) == [".lock"]
