# Copyright (c) clawbot.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Callback ``clawbot.stack.compliance_drift``: what each host's roles would change, as a host fact."""

from __future__ import annotations

DOCUMENTATION = r"""
name: compliance_drift
type: aggregate
short_description: Record, per host, the tasks that would change it in the drift plays of compliance.yml
description:
  - In plays that set the play variable C(compliance_drift_play=true) (the check-mode role plays of
    C(playbooks/compliance.yml)), records for every host the tasks that reported C(changed), failed
    or could not reach it.
  - The record is set as the host fact C(compliance_drift) (C(tasks), C(changed), C(failed),
    C(unreachable)), so a later play of the same run reads it from C(hostvars); nothing is written
    anywhere else. Plays without that variable are not looked at.
  - Tasks delegated to the controller (C(localhost)), such as the build of the bot release, do not
    count, as they do not change the host.
  - C(playbooks/callback_plugins/) enables it for the collection's own playbooks; a project that
    copies C(compliance.yml) enables it with C(callbacks_enabled = clawbot.stack.compliance_drift).
    Without it, compliance.yml fails its drift control as "not measured" instead of passing.
author:
  - clawbot.stack contributors (@clawbot)
requirements:
  - ansible-core 2.17 or later
"""

from collections.abc import Mapping  # noqa: E402 - plugins import below their documentation
from typing import TYPE_CHECKING, TypedDict  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402

if TYPE_CHECKING:
    from ansible.executor.task_result import TaskResult
    from ansible.playbook.play import Play
    from ansible.vars.manager import VariableManager

FACT = "compliance_drift"
MARKER = "compliance_drift_play"
CONTROLLER = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_ITEMS = 50
MAX_MESSAGE = 300


class DriftRecord(TypedDict):
    tasks: int
    changed: list[str]
    failed: list[str]
    unreachable: bool


def _is_true(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


class CallbackModule(CallbackBase):
    """Collects per-host drift in the marked plays and publishes it as a nonpersistent fact."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "clawbot.stack.compliance_drift"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._active = False
        self._variables: VariableManager | None = None
        self._records: dict[str, DriftRecord] = {}

    def v2_playbook_on_play_start(self, play: Play) -> None:
        raw: Mapping[str, object] = play.vars or {}
        self._active = _is_true(raw.get(MARKER, False))
        self._variables = play.get_variable_manager() if self._active else None

    @staticmethod
    def _label(result: TaskResult) -> str:
        """The task's name as Ansible prints it (``clawbot.stack.nginx : Site | Write ...``)."""
        return result._task.get_name()

    @staticmethod
    def _on_controller(result: TaskResult) -> bool:
        delegated = result._result.get("_ansible_delegated_vars") or {}
        target = delegated.get("ansible_delegated_host") or result._task.delegate_to
        return isinstance(target, str) and target in CONTROLLER

    def _record(self, result: TaskResult, kind: str) -> None:
        if not self._active or self._variables is None:
            return
        host = result._host.get_name()
        record = self._records.setdefault(host, DriftRecord(tasks=0, changed=[], failed=[], unreachable=False))
        record["tasks"] += 1
        if kind == "unreachable":
            record["unreachable"] = True
            record["failed"].append(f"{self._label(result)}: unreachable")
        elif kind == "failed":
            message = str(result._result.get("msg") or "failed").replace("\n", " ")[:MAX_MESSAGE]
            record["failed"].append(f"{self._label(result)}: {message}")
        elif kind == "changed" and not self._on_controller(result):
            record["changed"].append(self._label(result))
        del record["changed"][MAX_ITEMS:]
        del record["failed"][MAX_ITEMS:]
        facts = {FACT: {"tasks": record["tasks"], "changed": list(record["changed"]),
                        "failed": list(record["failed"]), "unreachable": record["unreachable"]}}
        self._variables.set_nonpersistent_facts(host, facts)

    def v2_runner_on_ok(self, result: TaskResult) -> None:
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_skipped(self, result: TaskResult) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: TaskResult, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result: TaskResult) -> None:
        self._record(result, "unreachable")
