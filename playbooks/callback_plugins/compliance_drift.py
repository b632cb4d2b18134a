# Copyright (c) clawbot.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Enables clawbot.stack.compliance_drift for the playbooks in this directory.

Ansible loads callback plugins next to a playbook by itself; one that does not ask to be enabled
runs without a `callbacks_enabled` entry. It acts only in plays that set compliance_drift_play
(compliance.yml), so the other playbooks here are not affected.
"""

from __future__ import annotations

from ansible_collections.clawbot.stack.plugins.callback.compliance_drift import CallbackModule as _DriftCallback


class CallbackModule(_DriftCallback):
    CALLBACK_NAME = "compliance_drift_adjacent"
    CALLBACK_NEEDS_ENABLED = False
