"""Unit tests for the clawbot.stack.bot_release module, run in-process (plain pytest, run by ansible-test units).

Installs are real: ``python -m venv`` and pip installing a small wheel built here, offline from a
wheelhouse. Tests about switching, rollback and pruning use releases laid out by hand (a marker and a
``bin/clawbot-app`` shell script) so they run no pip; a spy on ``run_command`` shows what ran.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.clawbot.stack.plugins.module_utils import release as rel
from ansible_collections.clawbot.stack.plugins.modules import bot_release

NOW = "2026-12-02T10:00:00Z"


# --- running the module in-process ------------------------------------------------------------

class AnsibleExitJson(Exception):
    def __init__(self, result):
        super().__init__("exit_json")
        self.result = result


class AnsibleFailJson(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


class Spy:
    """The argv of every command the module ran."""

    def __init__(self):
        self.calls = []

    def argv0s(self):
        return [os.path.basename(argv[0]) for argv in self.calls]

    def ran(self, word):
        return [argv for argv in self.calls if word in argv]


@pytest.fixture(autouse=True)
def harness(monkeypatch):
    warnings = []
    spy = Spy()
    real_run_command = basic.AnsibleModule.run_command

    def exit_json(_self, **kwargs):
        kwargs.setdefault("changed", False)
        raise AnsibleExitJson(kwargs)

    def fail_json(_self, msg="", **kwargs):
        kwargs.update(failed=True, msg=msg)
        raise AnsibleFailJson(kwargs)

    def run_command(self, args, *more, **kwargs):
        spy.calls.append([str(arg) for arg in args])
        return real_run_command(self, args, *more, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda _self, warning, **_kw: warnings.append(warning))
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(bot_release, "utcnow_text", lambda: NOW)
    return warnings, spy


@pytest.fixture
def warnings(harness):
    return harness[0]


@pytest.fixture
def spy(harness):
    return harness[1]


def module_args_of(args, check, diff):
    """The task's arguments; None stands for an option the task leaves out."""
    return dict({key: value for key, value in args.items() if value is not None},
                _ansible_check_mode=check, _ansible_diff=diff)


def run(args, check=False, diff=False):
    module_args = module_args_of(args, check, diff)
    with patch_module_args(module_args), pytest.raises(AnsibleExitJson) as info:
        bot_release.main()
    return info.value.result


def run_fail(args, check=False, diff=False):
    module_args = module_args_of(args, check, diff)
    with patch_module_args(module_args), pytest.raises(AnsibleFailJson) as info:
        bot_release.main()
    return info.value.result


# --- artifacts --------------------------------------------------------------------------------

FAKE_MAIN = '''import os
import sys

PRINTED = {printed!r}


def main():
    args = sys.argv[1:]
    if args == ["--version"]:
        print(PRINTED)
        return 0
    if args[:3] == ["config", "check", "--config"] and len(args) == 4:
        with open(args[3]) as handle:
            text = handle.read()
        if "invalid" in text:
            print("configuration invalid (" + args[3] + "; 1 error(s)):", file=sys.stderr)
            print("  server.port: not a port", file=sys.stderr)
            return 1
        print("configuration OK (" + args[3] + ")")
        return 0
    return 2
'''


def build_wheel(dest, version, printed=None, requires=("clawbot_dep",), name="clawbot_app", filename=None):
    """A pure-Python wheel with a ``clawbot-app`` console script (what bot_app's wheel looks like to pip)."""
    dist = f"{name}-{version}.dist-info"
    files = {"clawbot_fake.py": FAKE_MAIN.format(printed=printed or version)} if name == "clawbot_app" else {
        f"{name}.py": "VALUE = 1\n"}
    files[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {req}\n" for req in requires) + "\n")
    files[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if name == "clawbot_app":
        files[f"{dist}/entry_points.txt"] = "[console_scripts]\nclawbot-app = clawbot_fake:main\n"
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, filename or f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for member in sorted(files):
            info = zipfile.ZipInfo(member, date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, files[member])
    return path


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def expected_id(version, wheel, constraints=None):
    """The spec, computed independently: version + first 12 hex of sha256(wheel bytes + constraints bytes)."""
    data = read(wheel) + (read(constraints) if constraints else b"")
    return f"{version}-{hashlib.sha256(data).hexdigest()[:12]}"


def python_with_venv():
    for candidate in ("/usr/bin/python3", getattr(sys, "_base_executable", None), sys.executable):
        if candidate and os.access(candidate, os.X_OK) and subprocess.run(
                [candidate, "-c", "import ensurepip, venv"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


PYTHON = python_with_venv()
needs_venv = pytest.mark.skipif(PYTHON is None, reason="no Python with the venv and ensurepip modules")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "clawbot"


@pytest.fixture
def dist(tmp_path):
    """Wheelhouse (the dependency), constraints pinning it, and a dist directory for the app's wheels."""
    wheelhouse = tmp_path / "wheelhouse"
    build_wheel(str(wheelhouse), "1.0", name="clawbot_dep", requires=())
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("clawbot-dep==1.0\n")
    return {"wheelhouse": str(wheelhouse), "constraints": str(constraints), "dir": str(tmp_path / "dist")}


def args_for(root, dist, wheel, **extra):
    args = {"root": str(root), "wheel": wheel, "wheelhouse": dist["wheelhouse"], "constraints": dist["constraints"],
            "python": PYTHON or "/usr/bin/python3"}
    args.update(extra)
    return args


# --- releases laid out by hand ----------------------------------------------------------------

FAKE_SCRIPT = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "{printed}"; exit 0; fi
if [ "$1" = config ] && [ "$2" = check ] && [ "$3" = --config ]; then
  content=$(cat "$4") || exit 1
  case "$content" in *invalid*)
    echo "configuration invalid ($4; 1 error(s)):" >&2; echo "  server.port: not a port" >&2; exit 1;; esac
  case "$content" in *uid=*)
    want=${{content#*uid=}}; want=${{want%%[!0-9]*}}
    [ "$(id -u)" = "$want" ] || {{ echo "running as uid $(id -u), not $want" >&2; exit 1; }};; esac
  echo "configuration OK ($4)"; exit 0
fi
exit 2
"""


def fake_release(root, release_id, marker=True, printed=None):
    """A release directory as the module leaves it, without pip (the script stands in for the venv)."""
    version = release_id.rsplit("-", 1)[0]
    path = root / "releases" / release_id
    (path / "venv" / "bin").mkdir(parents=True)
    os.chmod(root, 0o755)
    script = path / "venv" / "bin" / "clawbot-app"
    script.write_text(FAKE_SCRIPT.format(printed=printed or version))
    script.chmod(0o755)
    if marker:
        (path / ".complete").write_text(json.dumps({"release_id": release_id, "version": version}))
    return path


def link(root, name, release_id):
    target = root / name
    if target.is_symlink():
        target.unlink()
    target.symlink_to(f"releases/{release_id}")


def write_history(root, order):
    """History where ``order`` (oldest first) were installed/made current in that order."""
    entries = {release_id: {"version": release_id.rsplit("-", 1)[0], "installed": NOW, "activated": NOW,
                            "seq": index + 1} for index, release_id in enumerate(order)}
    (root / "releases.json").write_text(json.dumps({"version": 1, "sequence": len(order), "releases": entries}))


def deployed(root, ids, current, previous=None, history=True):
    for release_id in ids:
        fake_release(root, release_id)
    link(root, "current", current)
    if previous:
        link(root, "previous", previous)
    if history:
        write_history(root, ids)


def target(root, name):
    path = root / name
    return os.readlink(path) if path.is_symlink() else None


def snapshot(root):
    """Every path under root with its type, link target and mtime: proves nothing was touched."""
    if not root.exists():
        return None
    out = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            out[os.path.relpath(path, root)] = (stat.S_IFMT(info.st_mode), info.st_mtime_ns,
                                                os.readlink(path) if os.path.islink(path) else None)
    return out


def releases_on_disk(root):
    return sorted(os.listdir(root / "releases"))


A, B, C, D = "0.1.0-aaaaaaaaaaaa", "0.2.0-bbbbbbbbbbbb", "0.3.0-cccccccccccc", "0.4.0-dddddddddddd"


# --- installing (real venv and pip) -----------------------------------------------------------

@needs_venv
def test_first_install_then_idempotent(root, dist, spy, tmp_path):
    wheel = build_wheel(dist["dir"], "0.1.0")
    config = tmp_path / "config.yaml"
    config.write_text("server: {port: 18789}\n")
    release_id = expected_id("0.1.0", wheel, dist["constraints"])
    args = args_for(root, dist, wheel, config=str(config))

    result = run(args, diff=True)

    assert result["changed"] is True
    assert result["installed"] is True
    assert result["switched"] is True
    assert result["config_checked"] is True
    assert result["release_id"] == release_id
    assert result["version"] == "0.1.0"
    assert result["release_path"] == str(root / "releases" / release_id)
    assert result["venv_path"] == str(root / "releases" / release_id / "venv")
    assert result["current_release_id"] == release_id
    assert result["previous_release_id"] is None
    assert result["releases"] == [release_id]
    assert result["pruned"] == []
    assert result["removed_partial"] == []
    assert result["diff"]["before"] == "current: (none)\nprevious: (none)\nreleases: (none)\n"
    assert result["diff"]["after"] == f"current: {release_id}\nprevious: (none)\nreleases: {release_id}\n"
    # layout: relative link, marker, the venv built in place (its scripts name their final path)
    assert target(root, "current") == f"releases/{release_id}"
    assert not (root / "previous").exists()
    assert sorted(os.listdir(root)) == [".lock", "current", "releases", "releases.json"]
    assert releases_on_disk(root) == [release_id]
    release = root / "releases" / release_id
    marker = json.loads((release / ".complete").read_text())
    assert marker["release_id"] == release_id
    assert marker["version"] == "0.1.0"
    assert marker["wheel"] == "clawbot_app-0.1.0-py3-none-any.whl"
    assert marker["wheel_sha256"] == hashlib.sha256(read(wheel)).hexdigest()
    shebang = (release / "venv" / "bin" / "clawbot-app").read_text().splitlines()[0]
    assert shebang == f"#!{release}/venv/bin/python"
    assert subprocess.run([str(root / "current" / "venv" / "bin" / "clawbot-app"), "--version"],
                          capture_output=True, text=True, check=True).stdout.strip() == "0.1.0"
    site = subprocess.run([str(release / "venv" / "bin" / "python"), "-c", "import clawbot_dep; print('ok')"],
                          capture_output=True, text=True, check=True)
    assert site.stdout.strip() == "ok"  # the dependency came from the wheelhouse
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    for directory, dirnames, filenames in os.walk(release):
        for name in dirnames + filenames:
            info = os.lstat(os.path.join(directory, name))
            assert (info.st_uid, info.st_gid) == (0, 0)
            assert stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o022, os.path.join(directory, name)
    history = json.loads((root / "releases.json").read_text())
    assert history["releases"][release_id] == {"version": "0.1.0", "installed": NOW, "activated": NOW, "seq": 1}
    pip = spy.ran("pip")[0]
    assert pip[pip.index("install") + 1:] == [
        "--no-input", "--disable-pip-version-check", "--progress-bar", "off", "--no-index", "--find-links",
        dist["wheelhouse"], "--constraint", dist["constraints"], wheel]
    assert [argv[1:] for argv in spy.calls if argv[0].endswith("clawbot-app")] == [
        ["--version"], ["config", "check", "--config", str(config)]]

    # the same artifact again: nothing runs, nothing changes
    before = snapshot(root)
    spy.calls.clear()
    again = run(args)
    assert again["changed"] is False
    assert (again["installed"], again["switched"]) == (False, False)
    assert again["current_release_id"] == release_id
    assert spy.calls == []
    assert snapshot(root) == before
    check = run(args, check=True, diff=True)
    assert check["changed"] is False
    assert check["diff"]["before"] == check["diff"]["after"]


@needs_venv
def test_upgrade_makes_old_current_previous(root, dist):
    deployed(root, [A], current=A)
    wheel = build_wheel(dist["dir"], "0.2.0")
    release_id = expected_id("0.2.0", wheel, dist["constraints"])
    result = run(args_for(root, dist, wheel), diff=True)
    assert result["installed"] is True
    assert result["switched"] is True
    assert result["current_release_id"] == release_id
    assert result["previous_release_id"] == A
    assert result["releases"] == [release_id, A]
    assert target(root, "current") == f"releases/{release_id}"
    assert target(root, "previous") == f"releases/{A}"
    assert result["diff"]["before"] == f"current: {A}\nprevious: (none)\nreleases: {A}\n"
    assert result["diff"]["after"] == f"current: {release_id}\nprevious: {A}\nreleases: {release_id}, {A}\n"
    # and back
    back = run({"root": str(root), "state": "rollback"})
    assert (back["current_release_id"], back["previous_release_id"]) == (A, release_id)
    assert target(root, "current") == f"releases/{A}"


def test_constraints_are_part_of_the_release_id(root, dist, tmp_path):
    wheel = build_wheel(dist["dir"], "0.2.0")
    first = run(args_for(root, dist, wheel), check=True)["release_id"]
    (tmp_path / "constraints.txt").write_text("clawbot-dep==1.1\n")
    second = run(args_for(root, dist, wheel), check=True)["release_id"]
    without = run(args_for(root, dist, wheel, constraints=None), check=True)["release_id"]
    assert len({first, second, without}) == 3
    assert without == f"0.2.0-{hashlib.sha256(read(wheel)).hexdigest()[:12]}"
    assert second == expected_id("0.2.0", wheel, str(tmp_path / "constraints.txt"))


@needs_venv
def test_interrupted_runs_are_cleaned_up_and_rebuilt(root, dist, warnings):
    wheel = build_wheel(dist["dir"], "0.2.0")
    release_id = expected_id("0.2.0", wheel, dist["constraints"])
    deployed(root, [A], current=A)
    leftover = root / "releases" / f".partial-{release_id}-0a1b2c3d"
    (leftover / "venv" / "lib").mkdir(parents=True)
    (leftover / "venv" / "lib" / "half.py").write_text("x = 1\n")
    broken = fake_release(root, release_id, marker=False)  # interrupted before its marker
    (broken / "venv" / "garbage").write_text("from the interrupted run\n")
    stale_link = root / ".current-0123456789ab"
    stale_link.symlink_to(f"releases/{release_id}")

    result = run(args_for(root, dist, wheel))

    assert result["installed"] is True
    assert result["current_release_id"] == release_id
    assert sorted(result["removed_partial"]) == sorted([str(stale_link), str(leftover), str(broken)])
    assert any("leftover" in warning for warning in warnings)
    assert releases_on_disk(root) == sorted([A, release_id])
    assert not (broken / "venv" / "garbage").exists()
    assert (broken / ".complete").exists()
    assert not stale_link.is_symlink()


@needs_venv
def test_pip_failure_names_the_package_and_changes_nothing(root, dist):
    deployed(root, [A], current=A)
    wheel = build_wheel(dist["dir"], "0.2.0", requires=("clawbot_dep", "clawbot_missing"))
    result = run_fail(args_for(root, dist, wheel))
    assert "pip could not install clawbot_app-0.2.0-py3-none-any.whl from wheelhouse" in result["msg"]
    assert "no matching distribution found for clawbot_missing" in result["msg"]
    assert "current was not changed" in result["msg"]
    assert "pip's last lines" in result["msg"]
    assert target(root, "current") == f"releases/{A}"
    assert releases_on_disk(root) == [A]  # the release being built is gone, no .partial left
    assert result["current_release_id"] == A
    assert result["release_id"] == expected_id("0.2.0", wheel, dist["constraints"])


@needs_venv
def test_version_mismatch_fails_the_smoke_test(root, dist):
    deployed(root, [A], current=A, previous=None)
    wheel = build_wheel(dist["dir"], "0.3.0", printed="0.2.9")
    result = run_fail(args_for(root, dist, wheel))
    assert "smoke test of release 0.3.0-" in result["msg"]
    assert "printed '0.2.9', expected the version 0.3.0" in result["msg"]
    assert target(root, "current") == f"releases/{A}"
    assert not (root / "previous").exists()
    assert releases_on_disk(root) == [A]


# --- switching to existing releases, rollback, pruning (no pip) --------------------------------

@pytest.fixture
def existing(root, dist):
    """A wheel whose release already exists complete (laid out by hand), B current."""
    wheel = build_wheel(dist["dir"], "0.1.0")
    release_id = expected_id("0.1.0", wheel, dist["constraints"])
    deployed(root, [release_id, B], current=B, previous=release_id)
    return wheel, release_id


def test_switch_back_to_existing_release_without_reinstall(root, dist, existing, spy):
    wheel, release_id = existing
    result = run(args_for(root, dist, wheel), diff=True)
    assert result["changed"] is True
    assert result["installed"] is False
    assert result["switched"] is True
    assert (result["current_release_id"], result["previous_release_id"]) == (release_id, B)
    assert target(root, "current") == f"releases/{release_id}"
    assert target(root, "previous") == f"releases/{B}"
    assert spy.argv0s() == ["clawbot-app"]  # the smoke test only: no venv, no pip
    assert result["releases"] == [release_id, B]
    assert result["diff"]["before"] == f"current: {B}\nprevious: {release_id}\nreleases: {B}, {release_id}\n"
    assert result["diff"]["after"] == f"current: {release_id}\nprevious: {B}\nreleases: {release_id}, {B}\n"
    assert run(args_for(root, dist, wheel))["changed"] is False


def test_foreign_current_is_replaced_with_a_warning(root, dist, warnings, spy):
    wheel = build_wheel(dist["dir"], "0.1.0")
    release_id = expected_id("0.1.0", wheel, dist["constraints"])
    fake_release(root, release_id)
    (root / "current").symlink_to("/opt/clawbot-legacy/venv")  # a deployment from before this module
    result = run(args_for(root, dist, wheel, constraints=dist["constraints"]), diff=True)
    assert result["switched"] is True
    assert (result["current_release_id"], result["previous_release_id"]) == (release_id, None)
    assert "current: -> /opt/clawbot-legacy/venv (not a release)\n" in result["diff"]["before"]
    assert any("/opt/clawbot-legacy/venv, which is not a release of this module" in warning for warning in warnings)
    assert target(root, "current") == f"releases/{release_id}"
    assert not (root / "previous").exists()


def test_relative_paths_are_taken_from_the_working_directory(root, dist, monkeypatch):
    wheel = build_wheel(dist["dir"], "0.1.0")
    release_id = expected_id("0.1.0", wheel, dist["constraints"])
    fake_release(root, release_id)
    monkeypatch.chdir(os.path.dirname(wheel))
    result = run(args_for(root, dist, os.path.basename(wheel)))
    assert result["release_id"] == release_id
    assert result["invocation"]["module_args"]["wheel"] == wheel


def test_config_check_failure_keeps_current(root, dist, existing, tmp_path):
    wheel, _release_id = existing
    config = tmp_path / "config.yaml"
    config.write_text("invalid: true\n")
    result = run_fail(args_for(root, dist, wheel, config=str(config)))
    assert f"clawbot-app config check --config {config} exited with 1" in result["msg"]
    assert "server.port: not a port" in result["msg"]
    assert target(root, "current") == f"releases/{B}"


def test_missing_config_skips_the_check(root, dist, existing, tmp_path, spy):
    wheel, _release_id = existing
    result = run(args_for(root, dist, wheel, config=str(tmp_path / "not-yet.yaml")))
    assert result["config_checked"] is False
    assert spy.ran("check") == []


@pytest.fixture
def shared_root():
    """A root every user can traverse (pytest's tmp_path is private to root)."""
    base = tempfile.mkdtemp(prefix="bot-release-test-", dir="/tmp")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_config_check_runs_as_smoke_user(shared_root, dist, spy):
    from pathlib import Path
    root = Path(shared_root) / "clawbot"
    nobody = pwd.getpwnam("nobody")
    wheel = build_wheel(dist["dir"], "0.1.0")
    release_id = expected_id("0.1.0", wheel, dist["constraints"])
    deployed(root, [release_id, B], current=B)
    config = Path(shared_root) / "config.yaml"
    config.write_text(f"requires uid={nobody.pw_uid}\n")
    os.chmod(config, 0o600)  # unreadable for the service user: the check must fail
    result = run_fail(args_for(root, dist, wheel, config=str(config), smoke_user="nobody"))
    assert "as nobody exited with 1" in result["msg"]
    assert "Permission denied" in result["msg"]
    assert target(root, "current") == f"releases/{B}"
    os.chmod(config, 0o644)
    result = run(args_for(root, dist, wheel, config=str(config), smoke_user="nobody"))
    assert result["config_checked"] is True
    assert result["current_release_id"] == release_id
    check = spy.ran("check")[-1]
    assert check[1:5] == [f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--init-groups", "--"]


def test_rollback_swaps_current_and_previous(root, spy):
    deployed(root, [A, B], current=B, previous=A)
    result = run({"root": str(root), "state": "rollback"}, diff=True)
    assert result["changed"] is True
    assert result["switched"] is True
    assert result["installed"] is False
    assert (result["release_id"], result["version"]) == (A, "0.1.0")
    assert result["release_path"] == str(root / "releases" / A)
    assert (result["current_release_id"], result["previous_release_id"]) == (A, B)
    assert (target(root, "current"), target(root, "previous")) == (f"releases/{A}", f"releases/{B}")
    assert result["diff"]["after"].startswith(f"current: {A}\nprevious: {B}\n")
    assert spy.calls == [[str(root / "releases" / A / "venv" / "bin" / "clawbot-app"), "--version"]]
    assert result["releases"] == [A, B]
    again = run({"root": str(root), "state": "rollback"})
    assert (again["current_release_id"], again["previous_release_id"]) == (B, A)


def test_rollback_without_previous_fails(root):
    deployed(root, [A], current=A)
    before = snapshot(root)
    result = run_fail({"root": str(root), "state": "rollback"})
    assert "cannot roll back: there is no previous release" in result["msg"]
    assert f"current is {A}" in result["msg"]
    after = snapshot(root)
    assert after.pop(".lock")[0] == stat.S_IFREG  # the run waited for its turn, then changed nothing
    assert after == before


def test_rollback_to_incomplete_previous_fails(root):
    deployed(root, [A, B], current=B, previous=A)
    (root / "releases" / A / ".complete").unlink()
    result = run_fail({"root": str(root), "state": "rollback"})
    assert f"the previous release {A} is unusable" in result["msg"]
    assert "marker" in result["msg"]
    assert target(root, "current") == f"releases/{B}"
    assert (root / "releases" / A).is_dir()  # the target of previous is never deleted behind its back


def test_rollback_to_missing_previous_fails(root):
    deployed(root, [B], current=B)
    link(root, "previous", A)
    result = run_fail({"root": str(root), "state": "rollback"})
    assert f"the previous release {A} is unusable: its directory does not exist" in result["msg"]


def test_rollback_when_nothing_is_deployed(root):
    result = run_fail({"root": str(root), "state": "rollback"})
    assert "nothing is deployed" in result["msg"]
    assert not root.exists()


def test_rollback_check_mode(root):
    deployed(root, [A, B], current=B, previous=A)
    before = snapshot(root)
    result = run({"root": str(root), "state": "rollback"}, check=True)
    assert result["changed"] is True
    assert (result["current_release_id"], result["previous_release_id"]) == (A, B)
    assert snapshot(root) == before


def test_pruning_keeps_the_newest(root, dist):
    wheel = build_wheel(dist["dir"], "0.5.0")
    new = expected_id("0.5.0", wheel, dist["constraints"])
    deployed(root, [A, B, C, D], current=D, previous=C)
    fake_release(root, new)  # installed, never current: the history does not know it
    result = run(args_for(root, dist, wheel))
    assert result["pruned"] == [B, A]
    assert result["releases"] == [new, D, C]
    assert releases_on_disk(root) == sorted([C, D, new])
    history = json.loads((root / "releases.json").read_text())
    assert sorted(history["releases"]) == sorted([C, D, new])
    assert history["releases"][new]["seq"] == 5


def test_pruning_never_deletes_current_or_previous(root, dist):
    wheel = build_wheel(dist["dir"], "0.5.0")
    current = expected_id("0.5.0", wheel, dist["constraints"])
    fake_release(root, current)
    deployed(root, [A, B, C], current=current, previous=A)
    write_history(root, [A, B, C, current])  # A, the previous one, is the oldest
    result = run(args_for(root, dist, wheel, keep_releases=2))
    assert result["changed"] is True
    assert result["switched"] is False
    assert result["pruned"] == [C, B]
    assert releases_on_disk(root) == sorted([A, current])
    assert target(root, "previous") == f"releases/{A}"
    assert run(args_for(root, dist, wheel, keep_releases=2))["changed"] is False


def test_pruning_without_history_uses_marker_times(root, dist, warnings):
    wheel = build_wheel(dist["dir"], "0.5.0")
    new = expected_id("0.5.0", wheel, dist["constraints"])
    deployed(root, [A, B, C, new], current=C, previous=B, history=False)
    for age, release_id in enumerate([new, C, B, A]):
        moment = 1_800_000_000 - age * 1000
        os.utime(root / "releases" / release_id / ".complete", (moment, moment))
    (root / "releases.json").write_text("{not json")
    result = run(args_for(root, dist, wheel))
    assert result["pruned"] == [A]
    assert result["releases"] == [new, C, B]
    assert any("not a valid history file" in warning for warning in warnings)
    assert json.loads((root / "releases.json").read_text())["version"] == 1


# --- check mode and diff ----------------------------------------------------------------------

def test_check_mode_on_a_fresh_host_touches_nothing(root, dist, spy):
    wheel = build_wheel(dist["dir"], "0.1.0")
    release_id = expected_id("0.1.0", wheel, dist["constraints"])
    result = run(args_for(root, dist, wheel), check=True, diff=True)
    assert result["changed"] is True
    assert (result["installed"], result["switched"]) == (True, True)
    assert result["release_id"] == result["current_release_id"] == release_id
    assert result["releases"] == [release_id]
    assert result["diff"] == {"before_header": str(root / "current"), "after_header": str(root / "current"),
                              "before": "current: (none)\nprevious: (none)\nreleases: (none)\n",
                              "after": f"current: {release_id}\nprevious: (none)\nreleases: {release_id}\n"}
    assert not root.exists()
    assert spy.calls == []


def test_check_mode_predicts_cleanup_switch_and_prune(root, dist, spy):
    wheel = build_wheel(dist["dir"], "0.5.0")
    new = expected_id("0.5.0", wheel, dist["constraints"])
    deployed(root, [A, B, C, D], current=D, previous=C)
    (root / "releases" / ".partial-x-1234").mkdir()
    fake_release(root, "0.0.1-eeeeeeeeeeee", marker=False)
    before = snapshot(root)
    result = run(args_for(root, dist, wheel), check=True, diff=True)
    assert result["changed"] is True
    assert (result["installed"], result["switched"]) == (True, True)
    assert (result["current_release_id"], result["previous_release_id"]) == (new, D)
    assert result["pruned"] == [B, A]
    assert result["removed_partial"] == [str(root / "releases" / ".partial-x-1234"),
                                         str(root / "releases" / "0.0.1-eeeeeeeeeeee")]
    assert result["diff"]["after"] == f"current: {new}\nprevious: {D}\nreleases: {new}, {D}, {C}\n"
    assert snapshot(root) == before
    assert spy.calls == []
    # the real run does what check mode said
    fake_release(root, new)
    real = run(args_for(root, dist, wheel))
    assert {key: real[key] for key in ("pruned", "current_release_id", "previous_release_id", "removed_partial")} == \
        {key: result[key] for key in ("pruned", "current_release_id", "previous_release_id", "removed_partial")}


# --- failures that change nothing -------------------------------------------------------------

@pytest.mark.parametrize(("filename", "message"), [
    ("clawbot_app.whl", "is not a valid wheel file name"),
    ("clawbot_app-0.1.0.whl", "is not a valid wheel file name"),
    ("clawbot_app-0.1.0-py3-none-any.zip", "the file name must end with .whl"),
    ("other_app-0.1.0-py3-none-any.whl", "is a wheel of 'other_app', not of clawbot_app"),
    ("clawbot_app-latest-py3-none-any.whl", "has the version 'latest', which is not a normalized PEP 440"),
    ("clawbot_app-0.1.0-x1-py3-none-any.whl", "invalid build tag"),
])
def test_bad_wheel_file_name(root, dist, filename, message):
    wheel = build_wheel(dist["dir"], "0.1.0", filename=filename)
    result = run_fail(args_for(root, dist, wheel))
    assert result["msg"].startswith("wheel: ")
    assert message in result["msg"]
    assert not root.exists()


def test_not_a_wheel(root, dist, tmp_path):
    fake = tmp_path / "clawbot_app-0.1.0-py3-none-any.whl"
    fake.write_text("not a zip\n")
    assert "is not a wheel (not a zip archive)" in run_fail(args_for(root, dist, str(fake)))["msg"]
    renamed = build_wheel(dist["dir"], "0.1.0", filename="clawbot_app-0.1.1-py3-none-any.whl")
    result = run_fail(args_for(root, dist, renamed))
    assert "says version 0.1.1 in its file name but '0.1.0' in its METADATA" in result["msg"]
    missing = run_fail(args_for(root, dist, str(tmp_path / "clawbot_app-9.9.9-py3-none-any.whl")))
    assert missing["msg"] == f"wheel: {tmp_path / 'clawbot_app-9.9.9-py3-none-any.whl'} does not exist"
    assert not root.exists()


def fake_commands(monkeypatch, spy, pip_result):
    """run_command that fakes venv creation and answers pip with ``pip_result``."""
    def run_command(_self, args, *more, **kwargs):
        args = [str(arg) for arg in args]
        spy.calls.append(args)
        if args[1:3] == ["-m", "venv"]:
            os.makedirs(os.path.join(args[3], "bin"))
            return 0, "", ""
        if args[1:4] == ["-m", "pip", "install"]:
            return pip_result
        raise AssertionError(f"unexpected command {args}")

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)


def test_no_space_left(root, dist, monkeypatch, spy):
    deployed(root, [A], current=A)
    fake_commands(monkeypatch, spy, (1, "Processing ./clawbot_app-0.2.0-py3-none-any.whl\n",
                                     "ERROR: Could not install packages due to an OSError: [Errno 28] No space "
                                     "left on device\n"))
    wheel = build_wheel(dist["dir"], "0.2.0")
    result = run_fail(args_for(root, dist, wheel))
    assert result["msg"].startswith(f"no space left on device under {root} (pip install of clawbot_app-0.2.0")
    assert releases_on_disk(root) == [A]
    assert target(root, "current") == f"releases/{A}"


def test_index_credentials_never_appear(root, dist, monkeypatch, spy):
    deployed(root, [A], current=A)
    fake_commands(monkeypatch, spy, (1, "Looking in indexes: https://deploy:****@pypi.example.invalid/simple\n",
                                     "ERROR: Could not find a version that satisfies the requirement clawbot-dep==1.0 "
                                     "(from versions: none)\nERROR: No matching distribution found for "
                                     "clawbot-dep==1.0\n"))
    wheel = build_wheel(dist["dir"], "0.2.0")
    url = "https://deploy:s3cr3t-token@pypi.example.invalid/simple"
    args = args_for(root, dist, wheel, wheelhouse=None, index_url=url, proxy="http://px:pxpass@proxy.invalid:3128",
                    extra_index_urls=["https://u:extra-pass@extra.example.invalid/simple"],
                    ca_bundle=dist["constraints"])
    result = run_fail(args)
    assert "no matching distribution found for clawbot-dep==1.0" in result["msg"]
    assert "from the package index" in result["msg"]
    assert "https://pypi.example.invalid/simple" in result["msg"]
    text = json.dumps(result)
    for secret in ("s3cr3t-token", "deploy:", "pxpass", "extra-pass"):
        assert secret not in text
    assert result["invocation"]["module_args"]["index_url"] == "https://pypi.example.invalid/simple"
    pip = spy.ran("pip")[0]
    assert pip[pip.index("--index-url") + 1] == url  # pip itself gets the credentials
    assert pip[pip.index("--extra-index-url") + 1] == "https://u:extra-pass@extra.example.invalid/simple"
    assert pip[pip.index("--cert") + 1] == dist["constraints"]
    assert pip[pip.index("--proxy") + 1] == "http://px:pxpass@proxy.invalid:3128"
    assert "--no-index" not in pip
    assert releases_on_disk(root) == [A]


def test_venv_failure(root, dist, tmp_path):
    python = tmp_path / "python3"
    python.write_text("#!/bin/sh\necho 'The virtual environment was not created successfully because ensurepip is "
                      "not available.' >&2\nexit 1\n")
    python.chmod(0o755)
    wheel = build_wheel(dist["dir"], "0.1.0")
    result = run_fail(args_for(root, dist, wheel, python=str(python)))
    assert f"cannot create the virtualenv {root}/releases/0.1.0-" in result["msg"]
    assert "install python3-venv" in result["msg"]
    assert releases_on_disk(root) == []
    assert not (root / "current").exists()


def test_another_run_holds_the_lock(root, dist):
    deployed(root, [A], current=A)
    wheel = build_wheel(dist["dir"], "0.2.0")
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = run_fail(args_for(root, dist, wheel, lock_timeout=0))
    assert f"cannot lock {root / '.lock'} within 0 seconds" in result["msg"]
    assert target(root, "current") == f"releases/{A}"


def test_current_that_is_not_a_link(root, dist):
    (root / "current").mkdir(parents=True)
    wheel = build_wheel(dist["dir"], "0.1.0")
    result = run_fail(args_for(root, dist, wheel))
    assert f"{root / 'current'} is not a symbolic link" in result["msg"]


@pytest.mark.parametrize(("args", "message"), [
    ({"keep_releases": 1}, "keep_releases must be >= 2"),
    ({"lock_timeout": -1}, "lock_timeout must be >= 0"),
    ({"index_url": "https://pypi.example.invalid/simple"}, "mutually exclusive: wheelhouse|index_url"),
    ({"extra_index_urls": ["https://x.invalid/simple"]}, "wheelhouse and extra_index_urls are mutually exclusive"),
    ({"python": "/nonexistent/python3"}, "python: /nonexistent/python3 does not exist or is not executable"),
    ({"constraints": "/nonexistent/constraints.txt"}, "constraints: /nonexistent/constraints.txt does not exist"),
    ({"wheelhouse": "/nonexistent/wheelhouse"}, "wheelhouse: /nonexistent/wheelhouse does not exist"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle: /nonexistent/ca.pem does not exist"),
    ({"owner": "no-such-user-br"}, "owner 'no-such-user-br' does not exist"),
    ({"group": "no-such-group-br"}, "group 'no-such-group-br' does not exist"),
    ({"smoke_user": "no-such-user-br"}, "smoke_user 'no-such-user-br' does not exist"),
    ({"wheel": None}, "state is present but all of the following are missing: wheel"),
])
def test_bad_options_fail_before_touching_anything(root, dist, args, message):
    wheel = build_wheel(dist["dir"], "0.1.0")
    result = run_fail(dict(args_for(root, dist, wheel), **args))
    assert message in result["msg"]
    assert not root.exists()


# --- documentation matches the argument spec ---------------------------------------------------

def test_documentation_matches_argument_spec():
    doc = yaml.safe_load(bot_release.DOCUMENTATION)
    spec = bot_release.argument_spec()
    options = doc["options"]
    assert set(options) == set(spec)
    for name, option in options.items():
        assert option["type"] == spec[name]["type"], name
        assert option.get("default") == spec[name].get("default"), name
        assert option.get("required", False) == spec[name].get("required", False), name
        assert option.get("choices") == spec[name].get("choices"), name
        assert option.get("elements") == spec[name].get("elements"), name
        assert option["description"], name
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "full"
    assert yaml.safe_load(bot_release.EXAMPLES)


def test_return_documentation_covers_results(root):
    deployed(root, [A, B], current=B, previous=A)
    result = run({"root": str(root), "state": "rollback"})
    returned = yaml.safe_load(bot_release.RETURN)
    assert set(returned) == set(result) - {"changed", "invocation"}
    assert rel.RELEASE_ID_RE.match(returned["release_id"]["sample"])
