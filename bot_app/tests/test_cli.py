"""CLI: migrate, token create/list/revoke, keyring rotate; where the config file comes from."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from clawbot_app.cli import main
from clawbot_app.config import Settings
from clawbot_app.db import migrate
from clawbot_app.db.engine import make_engine
from clawbot_app.db.schema import api_tokens, audit_log
from clawbot_app.db.tokens import hash_token
from tests.conftest import MariaDB


def _cfg(tmp_path: Path, **storage: object) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"storage": {"data_dir": str(tmp_path / "data"), **storage},
                                 "logging": {"level": "WARNING"}}))
    return str(p)


def _rows(url: str, table: sa.Table) -> list[sa.Row]:
    async def q() -> list[sa.Row]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.select(table))).all())
        finally:
            await engine.dispose()

    return asyncio.run(q())


def test_token_lifecycle_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    assert main(["token", "create", "--config", cfg, "--user", "u1", "--tenant", "t1",
                 "--days", "30"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("cb_") and "id: 1" in out.err
    url = Settings.model_validate(yaml.safe_load(Path(cfg).read_text())) \
        .storage.effective_database_url
    rows = _rows(url, api_tokens)
    assert rows[0].token_hash == hash_token(token)
    assert token not in str(tuple(rows[0]))  # only the hash is stored
    assert main(["token", "list", "--config", cfg]) == 0
    listing = capsys.readouterr().out
    assert "u1" in listing and "t1" in listing and "active" in listing and token not in listing
    assert main(["token", "revoke", "--config", cfg, "1"]) == 0
    assert main(["token", "revoke", "--config", cfg, "99"]) == 1
    capsys.readouterr()
    assert main(["token", "list", "--config", cfg]) == 0
    assert "revoked" in capsys.readouterr().out
    actions = [r.action for r in _rows(url, audit_log)]
    assert actions == ["token.create", "token.revoke"]


def test_migrate_mariadb(tmp_path: Path, mariadb: MariaDB,
                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, database_url=mariadb.url)
    assert main(["migrate", "--config", cfg]) == 0
    head = migrate.head_revision(mariadb.url)
    assert head and capsys.readouterr().out == f"database at revision {head}\n"
    assert main(["token", "create", "--config", cfg, "--user", "m1", "--days", "1"]) == 0
    token = capsys.readouterr().out.strip()
    rows = [r for r in _rows(mariadb.url, api_tokens) if r.token_hash == hash_token(token)]
    assert len(rows) == 1 and rows[0].tenant_id == "m1"


def test_keyring_rotate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    assert main(["keyring", "rotate", "--config", cfg]) == 0
    assert main(["keyring", "rotate", "--config", cfg]) == 0

    doc = json.loads((tmp_path / "data" / "keyring.json").read_text())
    assert len(doc["keys"]) == 2 and doc["current"] in doc["keys"]
    assert doc["version"] == 1 and set(doc["meta"]) == set(doc["keys"])


# --- the config file, through the installed ``clawbot-app`` entry point -------------------------

CLI = shutil.which("clawbot-app") or str(Path(sys.executable).parent / "clawbot-app")

# Every subcommand: (argv without --config, number of leading command words).
COMMANDS = {
    "serve": (["serve"], 1),
    "migrate": (["migrate"], 1),
    "config check": (["config", "check"], 2),
    "token create": (["token", "create", "--user", "u1"], 2),
    "token list": (["token", "list"], 2),
    "token revoke": (["token", "revoke", "1"], 2),
    "keyring rotate": (["keyring", "rotate"], 2),
}


def _positions(command: str, cfg: str) -> dict[str, list[str]]:
    """``--config`` before the subcommand, after it, and between a group and its command."""
    words, n = COMMANDS[command]
    out = {"before": ["--config", cfg, *words],
           "after": [*words[:n], "--config", cfg, *words[n:]]}
    if n == 2:
        out["between"] = [words[0], "--config", cfg, *words[1:]]
    return out


def _expected_rc(command: str) -> int:
    return 1 if command == "config check" else 2  # "invalid" answer vs. cannot start


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLAWBOT") and k != "MODEL_API_KEY"}
    env["HOME"] = str(home)  # where the built-in defaults would put their data
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A timeout, not a hang, if `serve` ever starts on the defaults instead of failing.
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def _run_all(argvs: dict[str, list[str]],
             env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
        futures = {name: pool.submit(_run, argv, env) for name, argv in argvs.items()}
        return {name: f.result() for name, f in futures.items()}


def _good_cfg(tmp_path: Path) -> str:
    """A config whose effect is visible: provider 'a', data in tmp_path/data."""
    p = tmp_path / "good.yaml"
    p.write_text(yaml.safe_dump({
        "storage": {"data_dir": str(tmp_path / "data")},
        "models": {"providers": {"a": {"base_url": "http://127.0.0.1:9", "model": "m"}}},
        "logging": {"level": "WARNING"}}))
    return str(p)


def test_config_in_every_position_is_used(tmp_path: Path) -> None:
    cfg = _good_cfg(tmp_path)
    home = tmp_path / "home"
    runs = _run_all({**_positions("config check", cfg),
                     "twice, same path": ["--config", cfg, "config", "check", "--config", cfg]},
                    _env(home))
    for where, r in runs.items():
        assert (r.returncode, r.stdout.strip()) == \
            (0, f"configuration OK ({cfg}); providers: a; default: a"), (where, r.stderr)
    # Commands that load the config through the same path, --config before / between.
    for argv in (["--config", cfg, "keyring", "rotate"], ["keyring", "--config", cfg, "rotate"]):
        r = _run(argv, _env(home))
        assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "data" / "keyring.json").read_text())
    assert len(doc["keys"]) == 2
    assert not home.exists()  # nothing went to the built-in default data_dir


def test_config_from_env_and_explicit_option_wins(tmp_path: Path) -> None:
    cfg = _good_cfg(tmp_path)
    home = tmp_path / "home"
    r = _run(["config", "check"], _env(home, CLAWBOT_CONFIG=cfg))
    assert (r.returncode, r.stdout.strip()) == \
        (0, f"configuration OK ($CLAWBOT_CONFIG={cfg}); providers: a; default: a"), r.stderr
    # --config replaces $CLAWBOT_CONFIG: the missing file it names is not read.
    r = _run(["--config", cfg, "config", "check"],
             _env(home, CLAWBOT_CONFIG=str(tmp_path / "absent.yaml")))
    assert (r.returncode, r.stdout.strip()) == \
        (0, f"configuration OK ({cfg}); providers: a; default: a"), r.stderr
    # Set but empty is the same as not set: the built-in defaults.
    r = _run(["config", "check"], _env(home, CLAWBOT_CONFIG=""))
    assert (r.returncode, r.stdout.strip()) == \
        (0, "configuration OK (<defaults>); providers: none; default: none"), r.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_config_file_is_an_error_everywhere(tmp_path: Path, command: str) -> None:
    missing = str(tmp_path / "nonexistent.yaml")
    home = tmp_path / "home"
    runs = _run_all(_positions(command, missing), _env(home))
    for where, r in runs.items():
        assert r.returncode == _expected_rc(command), (where, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"configuration invalid ({missing}; 1 error(s)):",
            f"  <file>: cannot read {missing}: No such file or directory",
        ], where
        assert r.stdout == "", where
    assert not home.exists()  # did not fall back to the defaults (data_dir under $HOME)


def test_missing_config_file_from_env_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nonexistent.yaml")
    home = tmp_path / "home"
    commands = ["config check", "serve", "migrate", "token create"]
    runs = _run_all({c: COMMANDS[c][0] for c in commands}, _env(home, CLAWBOT_CONFIG=missing))
    for command, r in runs.items():
        assert r.returncode == _expected_rc(command), (command, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"configuration invalid ($CLAWBOT_CONFIG={missing}; 1 error(s)):",
            f"  <file>: cannot read {missing}: No such file or directory",
        ], command
    assert not home.exists()


def test_directory_as_config_file(tmp_path: Path) -> None:
    directory = tmp_path / "conf.d"
    directory.mkdir()
    runs = _run_all({"config check": ["--config", str(directory), "config", "check"],
                     "token list": ["token", "list", "--config", str(directory)]},
                    _env(tmp_path / "home"))
    for command, r in runs.items():
        assert r.returncode == _expected_rc(command), (command, r.stderr)
        assert r.stderr.splitlines() == [
            f"configuration invalid ({directory}; 1 error(s)):",
            f"  <file>: cannot read {directory}: Is a directory",
        ], command


@pytest.mark.parametrize(("content", "error"), [
    (b"- a\n- b\n", "<root>: {path}: top level must be a mapping, not list"),
    (b"just a string\n", "<root>: {path}: top level must be a mapping, not str"),
    (b"42\n", "<root>: {path}: top level must be a mapping, not int"),
    (b"server: [unclosed\n", "<file>: {path}: invalid YAML at line 2"),
    (b"server: {port: \xff}\n", "<file>: cannot read {path}: not UTF-8 text"),
])
def test_config_file_not_a_yaml_mapping(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    runs = _run_all({"config check": ["--config", str(path), "config", "check"],
                     "keyring rotate": ["keyring", "rotate", "--config", str(path)]},
                    _env(tmp_path / "home"))
    for command, r in runs.items():
        assert r.returncode == _expected_rc(command), (command, r.stderr)
        assert r.stderr.splitlines() == [f"configuration invalid ({path}; 1 error(s)):",
                                         "  " + error.format(path=path)], command
    assert not (tmp_path / "home").exists()


def test_config_path_that_cannot_be_opened(tmp_path: Path) -> None:
    """The read error path, in a form that fails for root too (CI runs as root)."""
    parent = tmp_path / "a-file"
    parent.write_text("")
    path = parent / "cfg.yaml"
    r = _run(["--config", str(path), "migrate"], _env(tmp_path / "home"))
    assert r.returncode == 2
    assert f"  <file>: cannot read {path}: Not a directory" in r.stderr.splitlines(), r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_config_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("server: {port: 8080}\n")
    path.chmod(0)
    r = _run(["--config", str(path), "migrate"], _env(tmp_path / "home"))
    assert r.returncode == 2
    assert f"  <file>: cannot read {path}: Permission denied" in r.stderr.splitlines()


def test_config_option_usage_errors(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    runs = _run_all({"empty": ["--config", "", "config", "check"],
                     "conflict": ["--config", a, "token", "list", "--config", b],
                     "conflict, same level": ["migrate", "--config", a, "--config", b]},
                    _env(tmp_path / "home"))
    assert runs["empty"].returncode == 2
    assert "error: argument --config: empty path" in runs["empty"].stderr
    for name in ("conflict", "conflict, same level"):
        assert runs[name].returncode == 2, name
        assert f"error: argument --config: given more than once with different paths: {a}, {b}" \
            in runs[name].stderr, name
