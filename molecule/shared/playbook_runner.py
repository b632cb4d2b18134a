"""Run a playbook from a Molecule scenario's tests against that scenario's own inventory.

Shared by the testinfra tests of the site and ha scenarios (their conftest/test modules put this
directory on sys.path). The run inherits Molecule's environment, so it uses the same ansible.cfg
and collection path as converge, with colours off so that tests can search the output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_playbook(playbook: str | Path, *extra: str, env: dict[str, str] | None = None,
                 timeout: int = 900) -> tuple[int, str]:
    """ansible-playbook PLAYBOOK (a path, or a file name under playbooks/) with EXTRA arguments;
    returns its exit code and its stdout and stderr together."""
    path = Path(playbook) if isinstance(playbook, Path) else ROOT / "playbooks" / playbook
    run = subprocess.run(
        ["ansible-playbook", "-i", str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent), str(path), *extra],
        capture_output=True, text=True, timeout=timeout, check=False,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **(env or {})))
    return run.returncode, run.stdout + run.stderr
