"""roles/backup/files/clawbot_backup.py against real restic, mariadbd and redis-server.

The servers are private (conftest.py): mariadbd in a temporary datadir on its own socket, redis-server
on 127.0.0.1 with an ACL user, restic repositories in temporary directories. The tool runs as a CLI
(subprocess, as the systemd units run it) and, for the dump analysis, as a module loaded by path.

The module-scoped fixtures build one history, each step recorded once and asserted by the tests:
init -> run (a, broken, b; sampled with ps) -> run (a, broken) -> run (a) -> tampered snapshots in
a; drills of b and a; a restore from b. Restic spends ~0.5 s deriving the key per command, so the
runs are few. Every CLI call's output and every child's argv (wrappers in conftest.py) is kept for
the secrets tests at the end.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import MariaDB, World

# What a fixture records of a CLI run: the process result and the JSON it printed or wrote.
Run = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "roles" / "backup" / "files" / "clawbot_backup.py"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("clawbot_backup_under_test", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cb = load_tool()

METRIC_NAMES = [m[0] for m in cb.METRICS]
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{repository="((?:[^"\\\n]|\\[\\n"])*)"\} (\S+)$')


def parse_textfile(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text format, strictly: HELP and TYPE before a metric's samples, one label."""
    assert text.endswith("\n"), "the textfile must end with a newline"
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _sep, helptext = line[len("# HELP "):].partition(" ")
            assert name not in helps and helptext, line
            helps[name] = helptext
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split(" ")
            assert kind in ("gauge", "counter", "untyped"), line
            assert name in helps and name not in types, line
            types[name] = kind
        else:
            match = SAMPLE_RE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, repo, value = match.groups()
            assert name in types, f"{name} has no TYPE before its samples"
            assert repo not in samples.setdefault(name, {}), f"duplicate sample {line!r}"
            samples[name][repo] = float(value)
    return samples


def snapshot_id_from_backup_json(stdout: str) -> str:
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if message.get("message_type") == "summary":
                return str(message["snapshot_id"])
    raise AssertionError(f"no summary in restic backup output: {stdout[-500:]}")


def checksums(mariadb: MariaDB, tables: list[str]) -> str:
    quoted = ", ".join("`{}`".format(t.replace("`", "``")) for t in tables)
    return mariadb.sql(f"CHECKSUM TABLE {quoted} EXTENDED", "clawbot")


def drill_leftovers(world: World) -> tuple[list[str], list[str]]:
    dirs = sorted(p.name for p in world.work.iterdir() if p.name.startswith("drill-")) if world.work.exists() else []
    dbs = [d for d in world.mariadb.databases() if "_drill_" in d]
    return dirs, dbs


# --- check-config -------------------------------------------------------------------------------

def _set(path: str, value: Any):
    def mutate(cfg: dict) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


def _drop(path: str):
    def mutate(cfg: dict) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]
    return mutate


BROKEN_CONFIGS = [
    ("repo-name-pattern", _set("repositories.1.name", "Bad Name"), "config.repositories[1].name"),
    ("repo-name-twice", _set("repositories.2.name", "a"), "config.repositories[2].name"),
    ("repo-password-missing", _drop("repositories.1.password_file"), "config.repositories[1].password_file"),
    ("repo-password-relative", _set("repositories.0.password_file", "pw"), "config.repositories[0].password_file"),
    ("repo-url", _set("repositories.0.repository", "relative/dir"), "config.repositories[0].repository"),
    ("repo-option", _set("repositories.0.options", ["no-equals-sign"]), "config.repositories[0].options[0]"),
    ("repo-not-object", _set("repositories.1", "b"), "config.repositories[1]"),
    ("repos-empty", _set("repositories", []), "config.repositories"),
    ("repos-not-list", _set("repositories", {"a": {}}), "config.repositories"),
    ("format", _set("format", 2), "config.format"),
    ("format-bool", _set("format", True), "config.format"),
    ("host-space", _set("host", "two words"), "config.host"),
    ("tag", _set("tag", "Not-A-Tag"), "config.tag"),
    ("staging-relative", _set("staging_dir", "staging"), "config.staging_dir"),
    ("staging-root", _set("staging_dir", "/"), "config.staging_dir"),
    ("staging-dotdot", _set("staging_dir", "/var/backups/../.."), "config.staging_dir"),
    ("state-missing", _drop("state_dir"), "config.state_dir"),
    ("textfile-relative", _set("textfile", "metrics.prom"), "config.textfile"),
    ("restic-missing", _drop("restic"), "config.restic"),
    ("lock-negative", _set("lock_retries", -1), "config.lock_retries"),
    ("lock-float", _set("lock_retry_seconds", 1.5), "config.lock_retry_seconds"),
    ("mariadb-not-object", _set("mariadb", []), "config.mariadb"),
    ("mariadb-enabled-string", _set("mariadb.enabled", "yes"), "config.mariadb.enabled"),
    ("mariadb-database", _set("mariadb.database", "clawbot; DROP"), "config.mariadb.database"),
    ("mariadb-defaults", _set("mariadb.defaults_file", ""), "config.mariadb.defaults_file"),
    ("mariadb-admin-missing", _drop("mariadb.admin_defaults_file"), "config.mariadb.admin_defaults_file"),
    ("redis-port-range", _set("redis.port", 70000), "config.redis.port"),
    ("redis-port-bool", _set("redis.port", True), "config.redis.port"),
    ("redis-tls-string", _set("redis.tls", "false"), "config.redis.tls"),
    ("redis-password-missing", _drop("redis.password_file"), "config.redis.password_file"),
    ("paths-not-list", _set("paths", "/etc/clawbot"), "config.paths"),
    ("paths-relative", _set("paths", ["etc/clawbot"]), "config.paths[0]"),
    ("paths-root", _set("paths", ["/etc", "/"]), "config.paths[1]"),
    ("paths-dotdot", _set("paths", ["/etc/../root"]), "config.paths[0]"),
    ("paths-nul", _set("paths", ["/etc/a\0b"]), "config.paths[0]"),
    ("paths-number", _set("paths", [7]), "config.paths[0]"),
    ("retention-daily-zero", _set("retention.keep_daily", 0), "config.retention.keep_daily"),
    ("retention-string", _set("retention.keep_weekly", "4"), "config.retention.keep_weekly"),
    ("retention-missing", _drop("retention"), "config.retention"),
    ("subset", _set("check_read_data_subset", "lots"), "config.check_read_data_subset"),
]


@pytest.fixture
def keep_umask() -> Any:
    """main() sets umask 077 for the tool's files; give the test process its own back."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)


def test_check_config_accepts_the_world_config(world: World) -> None:
    res = world.cli("check-config")
    assert res.returncode == 0, res.stderr
    assert "configuration OK: 3 repositories (a, broken, b)" in res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize(("mutate", "field"), [c[1:] for c in BROKEN_CONFIGS], ids=[c[0] for c in BROKEN_CONFIGS])
def test_check_config_names_the_broken_field(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             keep_umask: Any, mutate: Any, field: str) -> None:
    cfg = json.loads(json.dumps(world.config))
    mutate(cfg)
    path = world.write_config(cfg, tmp_path / "config.json")
    assert cb.main(["--config", str(path), "check-config"]) == 2  # no exception escapes either
    out = capsys.readouterr()
    assert out.err.startswith("clawbot-backup: invalid configuration: "), out.err
    message = out.err.split("invalid configuration: ", 1)[1]
    assert message.startswith(field) and not message[len(field)].isalnum(), (field, message)
    assert out.out == ""


def test_check_config_rejects_a_json_array(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_umask: Any) -> None:
    (tmp_path / "c.json").write_text("[]")
    assert cb.main(["--config", str(tmp_path / "c.json"), "check-config"]) == 2
    assert "the configuration must be a JSON object" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "expected"), [
    (b'{"format": 1,', "is not valid JSON"),
    (b"\xff\xfe not utf-8", "is not valid JSON"),
    (b"[" * 200000 + b"]" * 200000, "is not valid JSON"),
    (None, "cannot read"),
    ("directory", "cannot read"),
], ids=["truncated", "not-utf8", "nested-too-deep", "missing-file", "directory"])
def test_check_config_unreadable_files_exit_2_without_traceback(world: World, tmp_path: Path, content: Any,
                                                                expected: str) -> None:
    path = tmp_path / "config.json"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    res = world.cli("check-config", config=path)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("clawbot-backup: invalid configuration: ")
    assert expected in res.stderr and str(path) in res.stderr


# --- the dump analysis: properties on generated rows ------------------------------------------------

MYSQL_ESCAPES = {"\0": "\\0", "\n": "\\n", "\r": "\\r", "\\": "\\\\", "'": "\\'", '"': '\\"', "\x1a": "\\Z"}


def render_value(value: Any) -> str:
    """A value as mariadb-dump writes it (mysql_real_escape_string, --hex-blob)."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "0x" + value.hex().upper() if value else "''"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + "".join(MYSQL_ESCAPES.get(ch, ch) for ch in value) + "'"


def render_row(row: list[Any]) -> str:
    return "(" + ",".join(render_value(v) for v in row) + ")"


TRICKY = st.sampled_from([*"'\\(),;\n\r\t\0\x1a\"` ", "é", "日本", "🎉", "')", "('", "\\'", "),(", "');"])
sql_text = st.lists(st.one_of(TRICKY, st.characters(codec="utf-8")), max_size=12).map("".join)
sql_value = st.one_of(st.none(), sql_text, st.integers(-(2**63), 2**63 - 1),
                      st.floats(allow_nan=False, allow_infinity=False), st.binary(max_size=12))
sql_row = st.lists(sql_value, min_size=1, max_size=5)
TABLE_NAMES = ["users", "notes", "odd`name", "t_日本", "empty", "with space"]
PURE = settings(max_examples=150, deadline=None, database=None)


@PURE
@given(rows=st.lists(sql_row, min_size=1, max_size=25))
def test_count_tuples_on_rendered_rows(rows: list[list[Any]]) -> None:
    one_line = ",".join(render_row(r) for r in rows) + ";\n"
    assert cb.count_tuples(one_line.encode()) == len(rows)
    per_line = [render_row(r) + ("," if i < len(rows) - 1 else ";") + "\n" for i, r in enumerate(rows)]
    assert sum(cb.count_tuples(line.encode()) for line in per_line) == len(rows)


@st.composite
def dump_files(draw: Any) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """A dump in the old one-line or the 10.11 row-per-line style, with views and trigger bodies."""
    names = draw(st.lists(st.sampled_from(TABLE_NAMES), min_size=1, max_size=4, unique=True))
    one_line = draw(st.booleans())
    out = [b"/*M!999999\\- enable the sandbox mode */ \n", b"-- MariaDB dump 10.19\n",
           b"/*!40101 SET NAMES utf8mb4 */;\n"]
    expected: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = draw(st.lists(sql_row, max_size=12))
        chunk = draw(st.integers(1, 5))
        quoted = name.replace("`", "``")
        out += [f"DROP TABLE IF EXISTS `{quoted}`;\n".encode(),
                f"CREATE TABLE `{quoted}` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n"
                ") ENGINE=InnoDB;\n".encode(),
                f"LOCK TABLES `{quoted}` WRITE;\n".encode()]
        digest = hashlib.sha256()
        for start in range(0, len(rows), chunk):
            part = [render_row(r) for r in rows[start:start + chunk]]
            if one_line:
                statement = f"INSERT INTO `{quoted}` VALUES " + ",".join(part) + ";\n"
            else:
                statement = f"INSERT INTO `{quoted}` VALUES\n" + ",\n".join(part) + ";\n"
            digest.update(statement.encode())
            out.append(statement.encode())
        out.append(b"UNLOCK TABLES;\n")
        expected[name] = {"rows": len(rows), "sha256": digest.hexdigest()}
    target = names[0].replace("`", "``")
    if draw(st.booleans()):
        # How mariadb-dump writes a view's placeholder and a trigger whose body has line breaks.
        out += [b"/*!50001 CREATE VIEW `v` AS SELECT\n", b" NULL AS `id` */;\n", b"DELIMITER ;;\n",
                b"/*!50003 CREATE*/ /*!50003 TRIGGER tr AFTER INSERT ON x FOR EACH ROW\n",
                f"INSERT INTO `{target}` VALUES (NEW.id, 'a'),\n".encode(), b"(NEW.id, 'b;') */;;\n",
                b"DELIMITER ;\n"]
    out.append(b"-- Dump completed\n")
    return b"".join(out), expected


@PURE
@given(dump=dump_files())
def test_analyse_dump_on_generated_dumps(tmp_path_factory: pytest.TempPathFactory, dump: tuple[bytes, dict]) -> None:
    data, expected = dump
    path = tmp_path_factory.getbasetemp() / "generated.sql"
    path.write_bytes(data)
    assert cb.analyse_dump(str(path)) == expected


# --- the dump analysis on real mariadb-dump output --------------------------------------------------

@pytest.fixture(scope="module")
def hyp_db(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A database for generated rows; dumped as root with a small net_buffer_length, so that
    mariadb-dump splits a table's rows over several INSERT statements."""
    mariadb.sql("CREATE DATABASE hyp CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;\n"
                "CREATE TABLE hyp.texts (id INT PRIMARY KEY AUTO_INCREMENT, a TEXT NULL, b VARCHAR(64) NULL,"
                " n BIGINT NULL, f DOUBLE NULL);\n"
                "CREATE TABLE hyp.blobs (id INT PRIMARY KEY AUTO_INCREMENT, data BLOB NULL);\n")
    base = tmp_path_factory.mktemp("hyp")
    cnf = base / "root.cnf"
    cnf.write_text(f"[client]\nuser=root\nsocket={mariadb.socket}\n\n[mysqldump]\nnet_buffer_length=1024\n")
    try:
        yield cnf
    finally:
        mariadb.sql("DROP DATABASE IF EXISTS hyp")


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return f"CONVERT(0x{value.encode().hex()} USING utf8mb4)" if value else "''"
    if isinstance(value, bytes):
        return f"0x{value.hex()}" if value else "''"
    return repr(value)


def fill_hyp(mariadb: MariaDB, texts: list[tuple], blobs: list[Any]) -> None:
    statements = ["TRUNCATE texts;", "TRUNCATE blobs;"]
    if texts:
        statements.append("INSERT INTO texts (a, b, n, f) VALUES "
                          + ",".join("(" + ",".join(sql_literal(v) for v in row) + ")" for row in texts) + ";")
    if blobs:
        statements.append("INSERT INTO blobs (data) VALUES " + ",".join(f"({sql_literal(b)})" for b in blobs) + ";")
    mariadb.sql("\n".join(statements), "hyp")


def hyp_counts(mariadb: MariaDB) -> dict[str, int]:
    texts, blobs = mariadb.sql("SELECT (SELECT COUNT(*) FROM texts), (SELECT COUNT(*) FROM blobs)", "hyp").split()
    return {"texts": int(texts), "blobs": int(blobs)}


short_text = st.lists(st.one_of(TRICKY, st.characters(codec="utf-8")), max_size=20).map("".join)
text_rows = st.tuples(st.one_of(st.none(), short_text), st.one_of(st.none(), short_text),
                      st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                      st.one_of(st.none(), st.floats(-1e300, 1e300, allow_nan=False, allow_subnormal=False)))


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts=st.lists(text_rows, max_size=40),
       blobs=st.lists(st.one_of(st.none(), st.binary(max_size=48)), max_size=40))
def test_real_dump_rows_match_count(mariadb: MariaDB, hyp_db: Path, tmp_path_factory: pytest.TempPathFactory,
                                    texts: list[tuple], blobs: list[Any]) -> None:
    fill_hyp(mariadb, texts, blobs)
    dump = tmp_path_factory.getbasetemp() / "hyp.sql"
    cb.dump_database(str(hyp_db), "hyp", str(dump))
    tables = cb.analyse_dump(str(dump))
    counts = hyp_counts(mariadb)
    assert counts == {"texts": len(texts), "blobs": len(blobs)}
    assert {name: info["rows"] for name, info in tables.items()} == counts


def test_real_dump_split_into_several_statements(mariadb: MariaDB, hyp_db: Path, tmp_path: Path) -> None:
    texts = [(f"row {i} ' \\ ( ) , ;\n 日本 🎉 " + "x" * 80, None, i, i / 7) for i in range(300)]
    blobs = [bytes(range(i % 256)) for i in range(120)]
    fill_hyp(mariadb, texts, blobs)
    dump = tmp_path / "hyp.sql"
    cb.dump_database(str(hyp_db), "hyp", str(dump))
    statements = dump.read_bytes().count(b"INSERT INTO `texts` VALUES")
    assert statements >= 3, "net_buffer_length=1024 should split the 300 rows"
    tables = cb.analyse_dump(str(dump))
    assert tables["texts"]["rows"] == 300 == hyp_counts(mariadb)["texts"]
    assert tables["blobs"]["rows"] == 120
    # The same data dumped again gives the same digests: what the drill relies on.
    again = tmp_path / "again.sql"
    cb.dump_database(str(hyp_db), "hyp", str(again))
    assert cb.analyse_dump(str(again)) == tables


def test_dump_of_the_seeded_database(world: World, tmp_path: Path) -> None:
    """The backup user's grants (SELECT, SHOW VIEW, TRIGGER) are enough; the view and the trigger
    bodies are not counted as tables or rows."""
    dump = tmp_path / "clawbot.sql"
    cb.dump_database(str(world.mariadb.backup_cnf), "clawbot", str(dump))
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "clawbot.sql.partial").exists()
    tables = cb.analyse_dump(str(dump))
    assert {name: info["rows"] for name, info in tables.items()} == world.mariadb.seed_rows
    for name in world.mariadb.seed_rows:
        assert world.mariadb.count(name) == tables[name]["rows"]
    assert b"TRIGGER plain_ai" in dump.read_bytes()
    cb.check_dump_is_portable(str(dump))


def test_dump_failure_leaves_no_file(world: World, tmp_path: Path) -> None:
    dest = tmp_path / "nope.sql"
    with pytest.raises(cb.BackupError, match=r"mariadb-dump failed \(exit 2\): .*no_such_database"):
        cb.dump_database(str(world.mariadb.backup_cnf), "no_such_database", str(dest))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(cb.BackupError, match="mariadb-dump did not finish within"):
        cb.dump_database(str(world.mariadb.backup_cnf), "clawbot", str(dest), timeout=0.001)
    assert list(tmp_path.iterdir()) == []


def test_dump_without_trailer_is_rejected(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump that stops early (here: a mariadb-dump that exits 0 without the trailer) is refused."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mariadb-dump").write_text("#!/bin/sh\nprintf 'INSERT INTO `t` VALUES (1);\\n'\n")
    (fake / "mariadb-dump").chmod(0o755)
    dest = tmp_path / "out" / "d.sql"
    dest.parent.mkdir()
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(cb.BackupError, match="no 'Dump completed' trailer"):
        cb.dump_database(str(world.mariadb.backup_cnf), "clawbot", str(dest))
    assert list(dest.parent.iterdir()) == []


# --- init and run ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def initialised(world: World) -> dict[str, Any]:
    return {"dry": world.cli("init", "--dry-run"), "created": world.cli("init"),
            "again": world.cli("init", "--repository", "a", "--repository", "b")}


def _run(world: World, *args: str) -> dict[str, Any]:
    started = time.time()
    res = world.cli("run", *args)
    return {"res": res, "started": started, "ended": time.time(), "state": world.state(),
            "textfile": world.textfile.read_text()}


@pytest.fixture(scope="module")
def first_run(world: World, initialised: Run) -> dict[str, Any]:
    """The first run, in the background: the process table is sampled while it works (what `ps`
    shows every local user; the argv wrappers record what was exec'd)."""
    started = time.time()
    python = os.environ.get("CLAWBOT_BACKUP_PYTHON") or sys.executable
    proc = subprocess.Popen([python, str(TOOL), "--config", str(world.config_path), "run"],
                            env=world.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    try:
        while proc.poll() is None:
            ps = subprocess.run(["ps", "-e", "-ww", "-o", "args"], capture_output=True, text=True, check=True).stdout
            seen.update(line for line in ps.splitlines() if line.strip())
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    world.outputs.append((["run"], stdout, stderr))
    return {"res": subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), "started": started,
            "ended": time.time(), "state": world.state(), "textfile": world.textfile.read_text(), "ps": seen,
            "snapshots": {name: world.snapshots(name) for name in ("a", "b")}}


@pytest.fixture(scope="module")
def second_run(world: World, first_run: Run) -> dict[str, Any]:
    return _run(world, "--repository", "a", "--repository", "broken")


@pytest.fixture(scope="module")
def third_run(world: World, second_run: Run) -> dict[str, Any]:
    out = _run(world, "--repository", "a")
    out["snapshots"] = world.snapshots("a")
    return out


def test_init_creates_missing_repositories_then_reports_exists(world: World, initialised: Run) -> None:
    dry, created, again = initialised["dry"], initialised["created"], initialised["again"]
    report = json.loads(dry.stdout)
    assert report["a"] == report["b"] == "missing"
    assert report["broken"].startswith("error: ") and "not a directory" in report["broken"]
    assert dry.returncode == 1
    report = json.loads(created.stdout)
    assert report["a"] == report["b"] == "created"
    assert report["broken"].startswith("error: ")
    assert created.returncode == 1
    for name in ("a", "b"):
        assert (Path(world.repo(name)["repository"]) / "config").is_file()
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"a": "exists", "b": "exists"}


def test_init_wrong_password_is_an_error_not_missing(world: World, initialised: Run, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    cfg = json.loads(json.dumps(world.config))
    cfg["repositories"][0]["password_file"] = str(wrong)
    res = world.cli("init", "--repository", "a", config=world.write_config(cfg, tmp_path / "c.json"))
    assert res.returncode == 1
    report = json.loads(res.stdout)["a"]
    assert report.startswith("error: ") and "wrong password" in report
    assert (Path(world.repo("a")["repository"]) / "config").is_file()


def test_init_missing_password_file_is_an_error_not_missing(world: World, tmp_path: Path) -> None:
    """restic says '... does not exist' about the password file: that is not a missing repository
    (init must not offer to create it, run must not say `the role's init creates it`)."""
    cfg = json.loads(json.dumps(world.config))
    cfg["repositories"][2]["password_file"] = str(tmp_path / "no-such.password")
    cfg["repositories"][2]["repository"] = str(tmp_path / "fresh-repo")
    res = world.cli("init", "--dry-run", "--repository", "b", config=world.write_config(cfg, tmp_path / "c.json"))
    assert res.returncode == 1
    report = json.loads(res.stdout)["b"]
    assert report.startswith("error: ") and "password" in report, report
    assert not (tmp_path / "fresh-repo").exists()


def test_run_with_a_broken_repository(world: World, first_run: Run) -> None:
    res = first_run["res"]
    assert res.returncode == 1, res.stderr
    assert "repository broken: FAILED" in res.stderr
    assert "1 of 3 repositories failed: broken" in res.stderr
    assert "path {} does not exist".format(world.config["paths"][1]) in res.stderr
    assert [len(first_run["snapshots"][n]) for n in ("a", "b")] == [1, 1]
    for snap in first_run["snapshots"].values():
        assert snap[0]["paths"] == [world.config["staging_dir"]]
        assert snap[0]["hostname"] == "cbtest-host" and snap[0]["tags"] == ["clawbot"]
    assert not world.staging.exists(), "the staging directory is removed after the run"

    repos = first_run["state"]["repositories"]
    assert [repos[n]["last_run_success"] for n in ("a", "b", "broken")] == [1, 1, 0]
    for name in ("a", "b"):
        assert first_run["started"] < repos[name]["last_success"] <= first_run["ended"]
        assert repos[name]["snapshots"] == 1 and repos[name]["last_error"] == ""
        assert repos[name]["size_bytes"] > 0
        newest = cb.snapshot_time(first_run["snapshots"][name][0])
        assert abs(repos[name]["newest_snapshot"] - newest) < 0.01
    assert repos["broken"].get("last_success", 0) == 0
    assert "not a directory" in repos["broken"]["last_error"]

    samples = parse_textfile(first_run["textfile"])
    assert set(samples) == set(METRIC_NAMES)
    assert samples["clawbot_backup_last_run_success"] == {"a": 1, "b": 1, "broken": 0}
    success = samples["clawbot_backup_last_success_timestamp_seconds"]
    assert success["a"] > 0 and success["b"] > 0 and success["broken"] == 0
    assert success["a"] == repos["a"]["last_success"]
    assert samples["clawbot_backup_snapshots"] == {"a": 1, "b": 1}
    assert set(samples["clawbot_backup_last_run_timestamp_seconds"]) == {"a", "b", "broken"}
    assert samples["clawbot_backup_check_last_success_timestamp_seconds"] == {"a": 0, "b": 0, "broken": 0}
    assert oct(world.textfile.stat().st_mode & 0o777) == "0o644"
    assert oct(world.state_path.stat().st_mode & 0o777) == "0o600"


def test_status_reports_every_repository(world: World, first_run: Run) -> None:
    res = world.cli("status")
    assert res.returncode == 0, res.stderr
    status = {entry["name"]: entry for entry in json.loads(res.stdout)}
    assert set(status) == {"a", "b", "broken"}
    assert status["broken"]["last_run_success"] == 0
    assert status["a"]["repository"] == world.repo("a")["repository"]


def test_second_run_keeps_the_failed_repository_at_zero(world: World, first_run: Run, second_run: Run) -> None:
    assert second_run["res"].returncode == 1
    repos = second_run["state"]["repositories"]
    assert repos["broken"].get("last_success", 0) == 0
    assert repos["broken"]["last_run"] > first_run["state"]["repositories"]["broken"]["last_run"]
    assert repos["a"]["last_success"] > first_run["state"]["repositories"]["a"]["last_success"]
    assert repos["b"] == first_run["state"]["repositories"]["b"], "b was not part of this run"
    samples = parse_textfile(second_run["textfile"])
    assert samples["clawbot_backup_last_success_timestamp_seconds"]["broken"] == 0
    assert samples["clawbot_backup_last_run_success"] == {"a": 1, "b": 1, "broken": 0}


def test_retention_keeps_one_snapshot_per_day(world: World, first_run: Run, second_run: Run, third_run: Run) -> None:
    """restic forget --keep-daily 7 keeps the newest snapshot of each day: three runs on one day
    leave one snapshot (two if the runs straddled midnight)."""
    assert third_run["res"].returncode == 0, third_run["res"].stderr
    snaps = third_run["snapshots"]
    days = {datetime.datetime.fromtimestamp(run["started"]).date() for run in (first_run, second_run, third_run)}
    days |= {datetime.datetime.fromtimestamp(third_run["ended"]).date()}
    assert 1 <= len(snaps) <= len(days)
    if len(days) == 1:
        assert len(snaps) == 1
    newest = max(cb.snapshot_time(s) for s in snaps)
    assert third_run["started"] < newest < third_run["ended"]
    assert third_run["state"]["repositories"]["a"]["snapshots"] == len(snaps)


def test_check_and_metrics_subcommands(world: World, third_run: Run) -> None:
    started = time.time()
    res = world.cli("check", "--repository", "b", "--read-data-subset", "50%")
    assert res.returncode == 0, res.stderr
    assert "repository b: check --read-data-subset 50% OK" in res.stderr
    checked = world.state()["repositories"]["b"]["check_last_success"]
    assert checked >= round(started, 3)
    world.textfile.unlink()
    res = world.cli("metrics")
    assert res.returncode == 0, res.stderr
    samples = parse_textfile(world.textfile.read_text())
    assert samples["clawbot_backup_check_last_success_timestamp_seconds"] == {"a": 0, "b": checked, "broken": 0}


def test_snapshots_subcommand(world: World, first_run: Run) -> None:
    res = world.cli("snapshots", "--repository", "b")
    assert res.returncode == 0, res.stderr
    snaps = json.loads(res.stdout)
    assert [s["id"] for s in snaps] == [s["id"] for s in first_run["snapshots"]["b"]]
    res = world.cli("snapshots", "--repository", "nope")
    assert res.returncode == 1 and "no repository named nope" in res.stderr


def test_freshness_reads_every_repository(world: World, first_run: Run) -> None:
    """The compliance probe: the newest snapshot's age per repository, from the repository itself;
    an unreadable repository is an entry with its error, not a crash."""
    res = world.cli("freshness")
    assert res.returncode == 1, "the broken repository makes the whole answer stale"
    fresh = {entry["name"]: entry for entry in json.loads(res.stdout)}
    assert set(fresh) == {"a", "b", "broken"}
    for name in ("a", "b"):
        snaps = world.snapshots(name)  # what the repository holds now (later runs add to it)
        assert fresh[name]["newest_snapshot"] == round(max(cb.snapshot_time(s) for s in snaps), 3)
        assert 0 <= fresh[name]["age_seconds"] < 3600 and fresh[name]["fresh"] is True
        assert fresh[name]["error"] is None and fresh[name]["snapshots"] == len(snaps)
    assert fresh["broken"]["fresh"] is False and fresh["broken"]["error"]
    res = world.cli("freshness", "--repository", "a", "--repository", "b")
    assert res.returncode == 0, res.stdout + res.stderr
    res = world.cli("freshness", "--repository", "a", "--max-age-hours", "0")
    assert res.returncode == 1
    assert json.loads(res.stdout)[0]["fresh"] is False


# --- drill ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drill_ok(world: World, first_run: Run) -> dict[str, Any]:
    res = world.cli("drill", "--repository", "b")
    return {"res": res, "report": json.loads(res.stdout), "leftovers": drill_leftovers(world)}


def test_drill_passes_after_a_run(world: World, first_run: Run, drill_ok: Run) -> None:
    res, report = drill_ok["res"], drill_ok["report"]
    assert res.returncode == 0, res.stdout + res.stderr
    assert report["ok"] is True and report["errors"] == []
    assert report["snapshot"] == first_run["snapshots"]["b"][-1]["id"]
    tables = {t["table"]: t for t in report["tables"]}
    assert set(tables) == set(world.mariadb.seed_rows), "the view is not a table"
    for name, rows in world.mariadb.seed_rows.items():
        assert tables[name]["ok"] is True, tables[name]
        assert tables[name]["rows_manifest"] == tables[name]["rows_restored"] == rows
        assert tables[name]["sha256_manifest"] == tables[name]["sha256_restored"]
    kinds = {f["kind"] for f in report["files"]}
    assert kinds == {"mariadb", "redis", "files"}
    assert all(f["ok"] for f in report["files"])
    live = world.config["paths"][0].lstrip("/")
    assert {f["path"] for f in report["files"] if f["kind"] == "files"} == {
        f"files/{live}/app.yml", f"files/{live}/conf.d/extra.conf"}
    assert report["redis"] == {"ok": True, "detail": "redis-check-rdb: RDB looks OK"}
    assert report["scratch_cleaned"] is True
    assert drill_ok["leftovers"] == ([], [])
    assert report["versions"]["mariadb"] == world.mariadb.sql("SELECT VERSION()").strip()
    assert report["versions"]["redis"] and report["versions"]["restic"] == "0.14.0"


@pytest.fixture(scope="module")
def tampered(world: World, third_run: Run, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two snapshots in repository a whose dump no longer matches the manifest inside them.

    The newest snapshot is restored with restic, its dump edited (one value changed; one row
    removed), and the tree backed up again from the staging path with the tool's host and tag.
    """
    base = tmp_path_factory.mktemp("tamper")
    newest = third_run["snapshots"][-1]["id"]
    res = world.restic("a", "restore", newest, "--target", str(base / "restored"))
    assert res.returncode == 0, res.stderr
    original = base / "restored" / world.config["staging_dir"].lstrip("/")
    assert (original / "manifest.json").is_file()
    dump_rel = Path("mariadb") / "clawbot.sql"
    ids = {}
    edits = {
        "changed": (b"(1,'alice','alice@example.org'),", b"(1,'alicE','alice@example.org'),"),
        "removed": (b"(2,'two'),\n", b""),
    }
    try:
        for kind, (old, new) in edits.items():
            shutil.rmtree(world.staging, ignore_errors=True)
            shutil.copytree(original, world.staging, symlinks=True)
            dump = world.staging / dump_rel
            data = dump.read_bytes()
            assert data.count(old) == 1, kind
            dump.write_bytes(data.replace(old, new))
            res = world.restic("a", "backup", "--json", "--host", world.config["host"], "--tag",
                               world.config["tag"], str(world.staging))
            assert res.returncode == 0, res.stderr
            ids[kind] = snapshot_id_from_backup_json(res.stdout)
    finally:
        shutil.rmtree(world.staging, ignore_errors=True)
    return ids


def test_drill_detects_a_changed_value(world: World, tampered: dict[str, str]) -> None:
    res = world.cli("drill", "--repository", "a", "--snapshot", tampered["changed"])
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["snapshot"].startswith(tampered["changed"])
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["users"]["ok"] is False
    assert tables["users"]["rows_manifest"] == tables["users"]["rows_restored"] == 6
    assert tables["users"]["sha256_manifest"] != tables["users"]["sha256_restored"]
    assert all(t["ok"] for name, t in tables.items() if name != "users")
    dump = next(f for f in report["files"] if f["kind"] == "mariadb")
    assert dump["ok"] is False
    assert report["scratch_cleaned"] is True
    assert drill_leftovers(world) == ([], [])


def test_drill_detects_a_removed_row(world: World, tampered: dict[str, str]) -> None:
    res = world.cli("drill", "--repository", "a", "--snapshot", tampered["removed"])
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["snapshot"].startswith(tampered["removed"])
    tables = {t["table"]: t for t in report["tables"]}
    assert tables["plain"]["ok"] is False
    assert (tables["plain"]["rows_manifest"], tables["plain"]["rows_restored"]) == (3, 2)
    assert [name for name, t in tables.items() if not t["ok"]] == ["plain"]
    assert drill_leftovers(world) == ([], [])


def test_restore_refuses_a_snapshot_that_does_not_match_its_manifest(world: World, tampered: dict[str, str]) -> None:
    tables = list(world.mariadb.seed_rows)
    before = checksums(world.mariadb, tables)
    res = world.cli("restore", "--repository", "a", "--snapshot", tampered["changed"], "--confirm", "--database")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["restored"] == []
    assert "does not match its manifest (mariadb/clawbot.sql)" in report["errors"][0]
    assert "safety_dir" not in report
    assert checksums(world.mariadb, tables) == before


# --- restore --------------------------------------------------------------------------------------

def test_restore_without_confirm_changes_nothing(world: World, first_run: Run) -> None:
    tables = list(world.mariadb.seed_rows)
    before = checksums(world.mariadb, tables)
    app = (world.live_dir / "app.yml").read_text()
    snap = first_run["snapshots"]["b"][-1]["id"]
    calls_before = world.argv_log.read_text()
    work_before = sorted(os.listdir(world.work)) if world.work.exists() else []
    res = world.cli("restore", "--repository", "b", "--snapshot", snap, "--database", "--path", str(world.live_dir))
    assert res.returncode == 1
    assert "pass --confirm" in res.stderr
    assert res.stdout == ""
    assert world.argv_log.read_text() == calls_before, "no restic, mariadb or redis-cli call at all"
    assert (sorted(os.listdir(world.work)) if world.work.exists() else []) == work_before
    assert checksums(world.mariadb, tables) == before
    assert (world.live_dir / "app.yml").read_text() == app


@pytest.mark.parametrize(("args", "change", "message"), [
    ([], {}, "nothing to restore: pass --database, --path P or --redis"),
    (["--database"], {"mariadb": {"enabled": False}}, "--database: this host's configuration has no MariaDB source"),
    (["--redis"], {"redis": {"enabled": False}}, "--redis: this host's configuration has no Redis source"),
], ids=["nothing-selected", "database-without-mariadb", "redis-without-redis"])
def test_restore_refuses_what_it_cannot_do(world: World, tmp_path: Path, args: list[str], change: dict,
                                           message: str) -> None:
    cfg = {**json.loads(json.dumps(world.config)), **change}
    calls_before = world.argv_log.read_text() if world.argv_log.exists() else ""
    res = world.cli("restore", "--repository", "b", "--snapshot", "latest", "--confirm", *args,
                    config=world.write_config(cfg, tmp_path / "c.json"))
    assert res.returncode == 1
    assert res.stderr == f"clawbot-backup: {message}\n" or message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert (world.argv_log.read_text() if world.argv_log.exists() else "") == calls_before


@pytest.fixture(scope="module")
def restored(world: World, first_run: Run, drill_ok: Run) -> dict[str, Any]:
    """Break the live state, then restore database, config directory and Redis from b."""
    tables = list(world.mariadb.seed_rows)
    before = {"checksums": checksums(world.mariadb, tables), "app": (world.live_dir / "app.yml").read_text()}
    world.mariadb.sql("DELETE FROM users WHERE id = 2", "clawbot")
    assert world.mariadb.count("users") == 5
    (world.live_dir / "app.yml").write_text("listen: 0.0.0.0:9999\n")
    (world.live_dir / "conf.d" / "stray.conf").write_text("not in the backup\n")
    (world.bin / "systemctl.calls").unlink(missing_ok=True)
    snap = first_run["snapshots"]["b"][-1]["id"]
    res = world.cli("restore", "--repository", "b", "--snapshot", snap, "--confirm", "--database",
                    "--path", str(world.live_dir), "--redis")
    return {"res": res, "before": before, "tables": tables, "snapshot": snap,
            "report": json.loads(res.stdout) if res.stdout.strip() else {}}


def test_restore_brings_back_database_and_files(world: World, restored: Run) -> None:
    res, report = restored["res"], restored["report"]
    assert res.returncode == 0, res.stdout + res.stderr
    assert report["ok"] is True and report["errors"] == []
    assert report["restored"] == ["mariadb:clawbot", str(world.live_dir), "redis"]
    assert world.mariadb.count("users") == 6
    assert world.mariadb.sql("SELECT name FROM users WHERE id = 2", "clawbot").strip() == "bob"
    assert checksums(world.mariadb, restored["tables"]) == restored["before"]["checksums"]
    assert "user_names" in world.mariadb.sql("SHOW FULL TABLES WHERE Table_type = 'VIEW'", "clawbot")
    assert (world.live_dir / "app.yml").read_text() == restored["before"]["app"]
    assert not (world.live_dir / "conf.d" / "stray.conf").exists()
    assert os.readlink(world.live_dir / "current.yml") == "app.yml"
    siblings = sorted(p.name for p in world.live_dir.parent.iterdir())
    assert siblings == ["clawbot"], "no .restore-*/.pre-restore-* copies left next to the live path"


def test_restore_keeps_a_safety_copy_of_the_state_before(world: World, restored: Run) -> None:
    safety = Path(restored["report"]["safety_dir"])
    assert safety.parent == world.work
    dump = safety / "clawbot.sql"
    tables = cb.analyse_dump(str(dump))
    assert tables["users"]["rows"] == 5
    users = [line for line in dump.read_bytes().splitlines() if line.startswith(b"(")]
    assert not any(b"'bob'" in line for line in users)
    assert b"(1,'alice'" in dump.read_bytes()
    live = world.live_dir.relative_to("/")
    assert (safety / "files" / live / "app.yml").read_text() == "listen: 0.0.0.0:9999\n"
    assert (safety / "files" / live / "conf.d" / "stray.conf").is_file()
    assert (safety / "dump.rdb").stat().st_size > 0


def test_restore_puts_the_redis_dump_in_place(world: World, restored: Run, drill_ok: Run) -> None:
    expected = next(f["expected"] for f in drill_ok["report"]["files"] if f["kind"] == "redis")
    live_rdb = Path(world.config["redis"]["data_dir"]) / "dump.rdb"
    assert cb.sha256_file(str(live_rdb)) == expected
    calls = (world.bin / "systemctl.calls").read_text().splitlines()
    assert calls == ["stop redis-server.service", "start redis-server.service"]


# --- locking --------------------------------------------------------------------------------------

def test_a_second_run_while_the_lock_is_held(world: World, first_run: Run) -> None:
    state_dir = Path(world.config["state_dir"])
    before = world.state_path.read_bytes()
    with open(state_dir / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = world.cli("run")
        drill = world.cli("drill", "--repository", "b")
        check = world.cli("check")
    assert res.returncode != 0
    assert "another clawbot-backup run" in res.stderr
    assert "Traceback" not in res.stderr
    assert not world.staging.exists()
    assert check.returncode != 0 and "another clawbot-backup run" in check.stderr
    assert drill.returncode == 1
    assert any("another clawbot-backup run" in e for e in json.loads(drill.stdout)["errors"])
    assert world.state_path.read_bytes() == before
    assert drill_leftovers(world) == ([], [])


# --- secrets (last: it reads everything the module's CLI calls printed and ran) --------------------

def test_secrets_never_leave_their_files(world: World, first_run: Run, drill_ok: Run) -> None:
    secrets = {"restic repository": world.repo_password, "mariadb backup user": world.mariadb.backup_password,
               "redis": world.redis.password}
    argv = world.argv_log.read_text()
    # The wrappers saw the children that matter: the check below would be empty otherwise.
    for needle in ("restic --quiet backup ", "restic --quiet restore ", "mariadb-dump --defaults-extra-file=",
                   "redis-cli --no-auth-warning", " --rdb ", "mariadb --defaults-extra-file="):
        assert needle in argv, needle
    places = {"child argv": argv, "state.json": world.state_path.read_text(),
              "textfile": world.textfile.read_text()}
    for number, (args, stdout, stderr) in enumerate(world.outputs):
        places[f"output {number} ({' '.join(args)})"] = stdout + stderr
    assert len(world.outputs) >= 5
    for what, secret in secrets.items():
        for where, content in places.items():
            assert secret not in content, f"the {what} password appears in {where}"
    # ps: the whole process table, in case anything started here is still running.
    ps = subprocess.run(["ps", "-e", "-ww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    assert not any(secret in ps for secret in secrets.values())


def test_secrets_not_in_the_process_table_during_a_run(world: World, first_run: Run) -> None:
    seen = first_run["ps"]
    # Each restic call derives the key (~0.5 s): a 0.1 s sampling sees some of the six per repository.
    assert any(line.startswith(("/usr/bin/restic --quiet ", "/bin/sh " + str(world.bin / "restic")))
               for line in seen), "the sampling saw no restic child"
    for secret in (world.repo_password, world.mariadb.backup_password, world.redis.password):
        assert not any(secret in line for line in seen)
