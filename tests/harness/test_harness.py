"""Self-tests of the test harness: the parts whose mistakes would hide real failures."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from molecule_output import RunTranscript, is_noise, plain, recap_changed
from run_molecule import LONG_FIRST, column_labels, configured_sequence, discover_scenarios, run_order
from sanity_guard import skipped_tests

HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parents[1]

CONVERGED = """
  PLAY RECAP *********************************************************************
  clawbot-molecule-common    : ok=41   changed=0    unreachable=0    failed=0    skipped=9    rescued=0    ignored=0
"""
DRIFTED = """
PLAY RECAP *********************************************************************
host-a                     : ok=12   changed=0    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
host-b                     : ok=12   changed=2    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0
"""


def test_recap_changed_reads_a_converged_run_as_zero() -> None:
    assert recap_changed(CONVERGED) == 0


def test_recap_changed_adds_changes_over_all_hosts() -> None:
    assert recap_changed(DRIFTED) == 2


def test_recap_changed_without_recap_is_unknown_not_zero() -> None:
    assert recap_changed("ERROR! the playbook could not be found") is None


def test_demo_and_molecule_start_containers_with_the_same_capabilities() -> None:
    base = yaml.safe_load((ROOT / ".config/molecule/config.yml").read_text())
    molecule_caps = set(base["platforms"][0]["capabilities"])
    script = (HARNESS / "systemd-container.sh").read_text()
    listed = re.search(r"caps=\(([^)]*)\)", script)
    assert listed is not None
    assert set(listed.group(1).split()) == molecule_caps
    # SYS_TIME would let a container move this machine's clock (timedatectl set-timezone does).
    assert not molecule_caps & {"ALL", "SYS_RESOURCE", "SYS_TIME"}


def test_collection_artifact_ships_no_tests_or_build_output(tmp_path: Path) -> None:
    galaxy = shutil.which("ansible-galaxy")
    assert galaxy, "ansible-galaxy must be on PATH (make puts .venv/bin there)"
    subprocess.run([galaxy, "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (artifact,) = tmp_path.glob("clawbot-stack-*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    assert any(n.startswith("roles/") for n in names)
    forbidden = ("molecule/", "tests/", ".venv/", ".cache/", ".collections/", "build/", "dist/")
    leaked = [n for n in names if n.startswith(forbidden) or "__pycache__" in n or ".egg-info" in n
              or "/tests/" in n or ".ruff_cache" in n]
    assert leaked == []


def _molecule_run(scenario: str, actions: list[tuple[str, str, str]]) -> list[str]:
    """Output of a `molecule test` run: (action, body, outcome) per action; outcome "" = none printed."""
    lines = ["INFO     Found config file /x/.config/molecule/config.yml\n",
             "CRITICAL 'molecule/default/molecule.yml' glob failed.  Exiting.\n",
             f"INFO     [{scenario} > discovery] scenario test matrix: destroy, syntax\n"]
    for action, body, outcome in actions:
        lines.append(f"INFO     [{scenario} > {action}] Executing\n")
        lines.extend(f"{line}\n" for line in body.splitlines())
        if outcome:
            lines.append(f"INFO     [{scenario} > {action}] Executed: {outcome}\n")
    return lines


def _transcript(scenario: str, lines: list[str]) -> RunTranscript:
    transcript = RunTranscript(scenario)
    for n, line in enumerate(lines):
        if not is_noise(line):
            transcript.feed(line, float(n))
    transcript.finish(float(len(lines)))
    return transcript


SEQUENCE = ["destroy", "syntax", "create", "prepare", "check", "converge", "idempotence", "check",
            "verify", "destroy"]


def _full_run(converged_check_body: str) -> list[str]:
    steps = [(name, "", "Successful") for name in SEQUENCE]
    steps[4] = ("check", "PLAY RECAP ***\nh : ok=9 changed=5 unreachable=0 failed=0", "Successful")
    steps[7] = ("check", converged_check_body, "Successful")
    return _molecule_run("web", steps)


def test_transcript_labels_the_two_check_runs_and_passes_a_converged_host() -> None:
    transcript = _transcript("web", _full_run(CONVERGED))
    assert [a.label for a in transcript.actions] == [
        "destroy", "syntax", "create", "prepare", "check-fresh", "converge", "idempotence",
        "check-converged", "verify", "destroy-final"]
    # changed=5 on the fresh host is expected; only the converged host must report 0.
    assert transcript.verdict(0, SEQUENCE) is None


def test_transcript_fails_check_mode_that_would_change_a_converged_host() -> None:
    verdict = _transcript("web", _full_run(DRIFTED)).verdict(0, SEQUENCE)
    assert verdict is not None and "changed=2" in verdict


def test_transcript_fails_a_converged_check_without_recap() -> None:
    assert _transcript("web", _full_run("ERROR! no play")).verdict(0, SEQUENCE) == \
        "check-converged: no PLAY RECAP found"


def test_transcript_names_the_failed_action_not_the_destroy_after_it() -> None:
    steps = [("destroy", "", "Successful"), ("syntax", "", "Successful"), ("create", "", "Successful"),
             ("prepare", "", "Successful"), ("check", "", "Successful"),
             ("converge", "fatal: [h]: FAILED! => {}", "Failed"), ("destroy", "", "Successful")]
    transcript = _transcript("web", _molecule_run("web", steps))
    assert transcript.verdict(1, SEQUENCE) == "converge failed"
    failed = transcript.failed_action()
    assert failed is not None and "fatal: [h]: FAILED! => {}\n" in failed.lines


def test_transcript_reads_the_failed_result_line_molecule_colours_anyway() -> None:
    lines = _molecule_run("web", [("destroy", "", "Successful"), ("converge", "", "")])
    lines.append(plain("ERROR    [web > converge] \x1b[31mExecuted: Failed\x1b[0m\n"))
    transcript = _transcript("web", lines)
    assert transcript.actions[-1].outcome == "Failed"
    assert transcript.verdict(1, SEQUENCE) == "converge failed"


def test_transcript_blames_the_running_action_when_molecule_dies_without_a_result() -> None:
    steps = [("destroy", "", "Successful"), ("create", "Traceback ...", "")]
    assert _transcript("web", _molecule_run("web", steps)).verdict(1, SEQUENCE) == "create failed"


def test_transcript_fails_a_run_that_skipped_part_of_the_sequence() -> None:
    steps = [(name, "", "Successful") for name in SEQUENCE if name != "idempotence"]
    verdict = _transcript("web", _molecule_run("web", steps)).verdict(0, SEQUENCE)
    assert verdict is not None and verdict.startswith("ran destroy, syntax")


def test_transcript_ignores_other_scenarios_lines() -> None:
    lines = _molecule_run("web", [("create", "", "Successful")])
    lines += _molecule_run("db", [("converge", "", "Failed")])
    transcript = _transcript("web", lines)
    assert [a.name for a in transcript.actions] == ["create"]


def test_only_the_explained_default_scenario_line_is_filtered() -> None:
    assert is_noise("CRITICAL 'molecule/default/molecule.yml' glob failed.  Exiting.\n")
    assert not is_noise("CRITICAL 'molecule/common/molecule.yml' glob failed.  Exiting.\n")
    assert not is_noise("CRITICAL Ansible return code was 2, command was: ...\n")


def test_time_table_columns_follow_the_configured_sequence() -> None:
    assert configured_sequence()[0] == "destroy" and configured_sequence().count("check") == 2
    labels = column_labels(configured_sequence())
    assert labels == ["destroy", "syntax", "create", "prepare", "check-fresh", "converge", "idempotence",
                      "check-converged", "verify", "destroy-final"]


def test_molecule_does_not_copy_the_collection_and_shows_diffs() -> None:
    base = yaml.safe_load((ROOT / ".config/molecule/config.yml").read_text())
    assert base["prerun"] is False
    assert base["provisioner"]["options"]["diff"] is True
    assert base["provisioner"]["env"]["ANSIBLE_COLLECTIONS_PATH"].endswith("/.collections")


@pytest.mark.parametrize(("output", "expected"), [
    ('WARNING: Required program "shellcheck" not found.\n', ['Required program "shellcheck" not found']),
    ('WARNING: Skipping sanity test "import" on Python 3.9 because it is unsupported.\n',
     ['Skipping sanity test "import" on Python 3.9 because it is unsupported.']),
    ('Running sanity test "shellcheck"\nRunning sanity test "yamllint"\n', []),
])
def test_sanity_guard_finds_every_kind_of_skip(output: str, expected: list[str]) -> None:
    assert skipped_tests(output.splitlines(keepends=True)) == expected


def test_sanity_guard_fails_a_passing_command_that_skipped_a_test(tmp_path: Path) -> None:
    fake = tmp_path / "ansible-test"
    fake.write_text('#!/bin/sh\necho \'Running sanity test "shellcheck"\'\n'
                    'echo \'WARNING: Required program "shellcheck" not found.\' >&2\nexit 0\n')
    fake.chmod(0o755)
    proc = subprocess.run(["python", str(HARNESS / "sanity_guard.py"), str(fake)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 1
    assert 'Required program "shellcheck" not found' in proc.stderr


def test_sanity_guard_keeps_the_commands_own_failure(tmp_path: Path) -> None:
    fake = tmp_path / "ansible-test"
    fake.write_text("#!/bin/sh\necho 'ERROR: Found 1 pep8 issue(s)'\nexit 3\n")
    fake.chmod(0o755)
    proc = subprocess.run(["python", str(HARNESS / "sanity_guard.py"), str(fake)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 3 and "pep8" in proc.stdout


def _prereq_packages() -> dict[str, list[str]]:
    out = subprocess.run(["bash", str(HARNESS / "prereqs.sh"), "list"], check=True, capture_output=True,
                         text=True).stdout
    return {line.split(":")[0]: line.split(":")[1].split() for line in out.splitlines()}


def test_prereqs_cover_what_the_tests_start_and_the_readme_says_so() -> None:
    packages = _prereq_packages()
    # What make test really starts or calls: the bot_app tests' servers, ansible-test's shellcheck,
    # the container engine and image build.
    assert {"redis-server", "mariadb-server", "shellcheck", "docker.io", "debootstrap"} <= set(packages["test"])
    assert {"docker.io", "debootstrap"} <= set(packages["demo"])
    readme = (ROOT / "README.md").read_text()
    for package in packages["test"] + packages["demo"] + packages["bench"]:
        assert f"`{package}`" in readme, f"README does not say that make installs {package}"


def test_ci_runs_make_test_and_installs_nothing_itself() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "exec make test" in ci
    assert "apt-get" not in ci


def test_long_scenarios_start_first_and_none_is_lost() -> None:
    known = discover_scenarios()
    assert set(LONG_FIRST) <= set(known), "LONG_FIRST names a scenario that does not exist"
    ordered = run_order(known)
    assert sorted(ordered) == sorted(known)
    assert ordered[: len(LONG_FIRST)] == list(LONG_FIRST)
    assert run_order(["redis", "common"]) == ["redis", "common"]


def test_a_scenario_with_its_own_sequence_is_judged_by_it() -> None:
    """molecule/ha sets its own test_sequence (no check-mode runs), molecule/site one with only the
    fresh-host check (its compliance test is the converged-host check): the runner expects exactly
    that sequence, and the converged-host check rule applies only to sequences that have it."""
    own = configured_sequence("ha")
    assert own != configured_sequence() and own.count("check") == 0
    site = configured_sequence("site")
    assert site.count("check") == 1 and site.index("check") < site.index("converge")
    assert [a for a in configured_sequence() if a != "check"] == [a for a in site if a != "check"]
    assert configured_sequence("common") == configured_sequence()
    for scenario, sequence in (("ha", own), ("site", site)):
        run = _molecule_run(scenario, [(name, "", "Successful") for name in sequence])
        assert _transcript(scenario, run).verdict(0, sequence) is None
        assert _transcript(scenario, run).verdict(0, SEQUENCE) is not None
