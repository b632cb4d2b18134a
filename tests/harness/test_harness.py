"""Self-tests of the test harness: the parts whose mistakes would hide real failures."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import yaml

from run_molecule import recap_changed

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
