"""playbooks/compliance.yml without hosts: its drift plays stay in step with site.yml, and the
clawbot.stack.compliance_drift callback records what a check-mode play would change.

The callback runs for real: a small playbook in a temporary directory next to a copy of
playbooks/callback_plugins (the way compliance.yml gets it), against localhost."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml
from playbook_support import ROOT, run_playbook

SITE = yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())
COMPLIANCE = yaml.safe_load((ROOT / "playbooks" / "compliance.yml").read_text())


def _roles(play: dict) -> list[str]:
    return [r if isinstance(r, str) else r["role"] for r in play.get("roles", [])]


def _drift_hosts(pattern: str) -> str:
    """The groups a drift play's host expression narrows the target to ('clawbot': all of it)."""
    match = re.search(r"\('([a-z_:]+):&'", pattern)
    return match.group(1) if match else "clawbot"


def test_drift_plays_apply_site_roles_on_the_same_groups_in_the_same_order() -> None:
    drift = [p for p in COMPLIANCE if p.get("vars", {}).get("compliance_drift_play")]
    assert drift, "compliance.yml has no drift play"
    assert [(_drift_hosts(p["hosts"]), _roles(p)) for p in drift] == [(p["hosts"], _roles(p)) for p in SITE]
    for play in drift:
        assert play["check_mode"] is True and play["ignore_errors"] is True, play["name"]
        assert "compliance_drift_check" in play["hosts"], play["name"]


def test_every_compliance_play_runs_in_check_mode() -> None:
    assert all(play.get("check_mode") is True for play in COMPLIANCE)


def test_report_tasks_that_run_for_real_only_write_on_the_controller() -> None:
    report = COMPLIANCE[-1]
    assert report["hosts"] == "localhost"
    real = [t["name"] for t in report["tasks"] if t.get("check_mode") is False]
    assert real == ["Write the JUnit report"]


DRIFT_PLAYBOOK = """
- name: Marked play in check mode
  hosts: localhost
  gather_facts: false
  check_mode: true
  ignore_errors: true
  vars:
    compliance_drift_play: true
  tasks:
    - name: Would change
      ansible.builtin.command: /bin/true
      changed_when: true
      check_mode: false
    - name: Unchanged
      ansible.builtin.command: /bin/true
      changed_when: false
      check_mode: false
    - name: Skipped in check mode
      ansible.builtin.command: /bin/false
    - name: Controller build
      ansible.builtin.command: /bin/true
      changed_when: true
      check_mode: false
      delegate_to: localhost
    - name: Broken
      ansible.builtin.fail:
        msg: the role cannot run here

- name: Unmarked play
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Changes outside the drift plays
      ansible.builtin.command: /bin/true
      changed_when: true

- name: Read the record
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Print it
      ansible.builtin.debug:
        msg: "DRIFT={{ hostvars['localhost'].compliance_drift | default('none') | to_json }}"
"""


def _drift(tmp_path: Path, with_callback: bool) -> object:
    (tmp_path / "drift.yml").write_text(DRIFT_PLAYBOOK)
    if with_callback:
        shutil.copytree(ROOT / "playbooks" / "callback_plugins", tmp_path / "callback_plugins")
    run = run_playbook(str(tmp_path / "drift.yml"))
    assert run.returncode == 0, run.output[-3000:]
    line = next(line for line in run.output.splitlines() if '"msg": "DRIFT=' in line)
    message = json.loads(line.split('"msg": ', 1)[1].rstrip(","))
    return json.loads(message.split("DRIFT=", 1)[1])


def test_the_callback_records_changes_and_failures_of_marked_plays_only(tmp_path: Path) -> None:
    record = _drift(tmp_path, with_callback=True)
    assert record == {
        "tasks": 5,
        "changed": ["Would change"],
        "failed": ["Broken: the role cannot run here"],
        "unreachable": False,
    }


def test_without_the_callback_nothing_is_recorded(tmp_path: Path) -> None:
    assert _drift(tmp_path, with_callback=False) == "none"
