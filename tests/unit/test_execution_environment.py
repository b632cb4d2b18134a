"""execution-environment.yml: `ansible-builder create` writes a build context that holds what the
collection needs on the controller, the collection dependencies of galaxy.yml with the same
floors, and a tarball of this collection built by `ansible-galaxy collection build` (so galaxy.yml's
build_ignore is checked too). Needs the `ansible-builder` of requirements-dev.txt on PATH."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# What the controller side of the collection needs (see requirements.txt and bindep.txt for why).
PYTHON_PACKAGES = {"cryptography"}
SYSTEM_PACKAGES = {"openssh-clients", "openssh-client"}
# ansible-builder copies _build/ of the context to /build in its galaxy stage.
GALAXY_STAGE_DIR = "/build/"


def requirement_names(text: str) -> list[str]:
    """First word of every line that is not a comment (pip and bindep formats alike)."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line.split()[0].split("=")[0].split(">")[0].split("<")[0] for line in lines if line]


@pytest.fixture(scope="module")
def galaxy() -> dict:
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())


@pytest.fixture(scope="module")
def definition() -> dict:
    return yaml.safe_load((ROOT / "execution-environment.yml").read_text())


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory, definition: dict) -> Path:
    """Build context of a copy of the definition, next to a freshly built collection tarball."""
    builder = shutil.which("ansible-builder")
    if builder is None:
        pytest.fail("ansible-builder is not on PATH: pip install -r requirements-dev.txt (make venv)")
    tmp = tmp_path_factory.mktemp("ee")
    src = tmp / "src"
    src.mkdir()
    shutil.copy2(ROOT / "execution-environment.yml", src)
    for kind in ("python", "system"):
        shutil.copy2(ROOT / definition["dependencies"][kind], src)
    for entry in definition.get("additional_build_files", []):
        # Only the collection tarball is expected here; it is built, never taken from dist/.
        assert entry["src"].startswith("dist/") and entry["src"].endswith(".tar.gz"), entry
    build = subprocess.run(
        [sys.executable, "-m", "ansible.cli.galaxy", "collection", "build", "--output-path", str(src / "dist"),
         str(ROOT)],
        capture_output=True, text=True, check=False, cwd=tmp,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    create = subprocess.run(
        [builder, "create", "-f", str(src / "execution-environment.yml"), "-c", str(tmp / "context"),
         "--output-filename", "Containerfile"],
        capture_output=True, text=True, check=False, cwd=src,
    )
    assert create.returncode == 0, create.stdout + create.stderr
    # ansible-builder only warns about an additional_build_files source that matches nothing.
    assert "No matches" not in create.stdout + create.stderr, create.stdout + create.stderr
    return tmp / "context"


def test_containerfile(context: Path) -> None:
    containerfile = (context / "Containerfile").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text().split()
    core = next(line for line in dev if line.startswith("ansible-core=="))
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    assert core in containerfile, f"the EE does not install {core} (requirements-dev.txt)"
    assert "ansible-runner" in containerfile
    # The collections installed in the image stay visible next to the project's ansible.cfg.
    env = next(line for line in containerfile.splitlines() if line.startswith("ENV ANSIBLE_COLLECTIONS_PATH="))
    assert "/usr/share/ansible/collections" in env.split("=", 1)[1].split(":")


def test_python_requirements(context: Path) -> None:
    names = requirement_names((context / "_build" / "requirements.txt").read_text())
    assert set(names) >= PYTHON_PACKAGES, f"missing: {PYTHON_PACKAGES - set(names)}"


def test_system_requirements(context: Path) -> None:
    names = requirement_names((context / "_build" / "bindep.txt").read_text())
    assert set(names) >= SYSTEM_PACKAGES, f"missing: {SYSTEM_PACKAGES - set(names)}"


def test_galaxy_requirements_match_galaxy_yml(context: Path, galaxy: dict) -> None:
    collections = yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]
    floors = {c["name"]: c.get("version") for c in collections if c.get("type", "galaxy") == "galaxy"}
    assert floors == galaxy["dependencies"]


def test_collection_tarball_in_context(context: Path, galaxy: dict) -> None:
    collections = yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"]
    files = [c["name"] for c in collections if c.get("type") == "file"]
    tarball = f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert len(files) == 1, f"one collection tarball expected: {files}"
    assert files[0].endswith("/" + tarball), f"{files[0]}: not the tarball of galaxy.yml's version, {tarball}"
    assert files[0].startswith(GALAXY_STAGE_DIR)
    path = context / "_build" / files[0][len(GALAXY_STAGE_DIR):]
    with tarfile.open(path) as tar:
        members = set(tar.getnames())
        meta = yaml.safe_load(tar.extractfile("meta/execution-environment.yml").read())
        shipped = {kind: tar.extractfile(name).read().decode() for kind, name in meta["dependencies"].items()}
    # ansible-builder introspects the installed collection: its metadata must name files it ships.
    assert set(meta["dependencies"]) == {"python", "system"}
    assert set(requirement_names(shipped["python"])) >= PYTHON_PACKAGES
    assert set(requirement_names(shipped["system"])) >= SYSTEM_PACKAGES
    # The bot_app role builds its wheel on the controller from the collection's bot_app/.
    if (ROOT / "bot_app" / "pyproject.toml").is_file():
        assert {"bot_app/pyproject.toml", "bot_app/constraints.txt", "bot_app/src"} <= members


def test_definition_and_collection_metadata_name_the_same_files(definition: dict) -> None:
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    assert meta["dependencies"] == {k: definition["dependencies"][k] for k in ("python", "system")}
