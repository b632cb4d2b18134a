"""Private servers and a scratch host layout for the clawbot-backup tests.

Everything is real: a mariadbd started from `mariadb-install-db` in a temporary datadir (own
socket and port, --no-defaults), a redis-server on 127.0.0.1 with an ACL user, local restic
repositories. The tool's children (restic, mariadb, mariadb-dump, redis-cli, systemctl) are
reached through wrapper scripts that record their argv before exec'ing the real binary, so the
tests can prove no secret is ever put on a command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "roles" / "backup" / "files" / "clawbot_backup.py"
DATABASE = "clawbot"
# The interpreter for the CLI runs: the hosts have python3 >= 3.9, so CLAWBOT_BACKUP_PYTHON=python3.9
# runs the same tests against the oldest supported version.
PYTHON = os.environ.get("CLAWBOT_BACKUP_PYTHON") or sys.executable


def require(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None)
    if path is None:
        pytest.fail(f"required binary {binary!r} not found (Debian: apt-get install restic "
                    "mariadb-server mariadb-client redis-server)", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps caches (unicode tables, constants) in ./.hypothesis: use a temporary home,
    the tests run with database=None anyway."""
    home = tempfile.mkdtemp(prefix="cbtest-hypothesis-")
    config.stash[HYPOTHESIS_HOME] = home
    set_hypothesis_home_dir(home)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(HYPOTHESIS_HOME, None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


HYPOTHESIS_HOME = pytest.StashKey[str]()


# --- MariaDB ------------------------------------------------------------------------------------

SEED_SQL = r"""
CREATE TABLE users (
  id INT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(200) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO users (name, email) VALUES
  ('alice', 'alice@example.org'), ('bob', NULL), ('O\'Brien (the 2nd), \\ esq.', 'ob@example.org'),
  ('zoë 日本語 🎉', 'z@example.org'), ('line1\nline2\r\ttab', ''), ('nul\0ctrlz\Z"dq"', 'x');
CREATE TABLE notes (
  id INT PRIMARY KEY AUTO_INCREMENT,
  user_id INT NOT NULL,
  body TEXT NULL,
  data VARBINARY(64) NULL,
  score DOUBLE NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO notes (user_id, body, data, score) VALUES
  (1, 'a ) closing paren and ( opening', 0x0027285C0A29FF, 1.5),
  (2, '\'),(\'fake tuple', X'', -0.25),
  (3, NULL, NULL, NULL),
  (4, 'backslash at end \\', 0x5C, 1e300),
  (5, '\'\'', 0x2727, 0);
CREATE TABLE plain (id INT PRIMARY KEY, label VARCHAR(20) NOT NULL) ENGINE=InnoDB;
INSERT INTO plain VALUES (1, 'one'), (2, 'two'), (3, 'three');
CREATE TABLE empty_table (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB;
CREATE TABLE `odd``name` (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO `odd``name` VALUES (1, 'x');
CREATE TABLE audit (id INT NOT NULL, what VARCHAR(20) NOT NULL) ENGINE=InnoDB;
CREATE VIEW user_names AS SELECT id, name FROM users;
CREATE TRIGGER users_bi BEFORE INSERT ON users FOR EACH ROW SET NEW.email = LOWER(NEW.email);
-- A trigger body on lines of its own: the dump then has a line that starts like a data INSERT.
CREATE TRIGGER plain_ai AFTER INSERT ON plain FOR EACH ROW
INSERT INTO `audit` VALUES (NEW.id, 'plain'),
(NEW.id + 1000, 'twice;');
"""

# Rows per base table after SEED_SQL (the view is not a table; audit stays empty: the trigger is
# created after the INSERT into plain).
SEED_ROWS = {"users": 6, "notes": 5, "plain": 3, "empty_table": 0, "odd`name": 1, "audit": 0}


def cnf_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MariaDB:
    """mariadbd in a temporary datadir; root over its own socket, a read-only backup user."""

    def __init__(self, base: Path) -> None:
        self.install_db = require("mariadb-install-db")
        self.mariadbd = require("mariadbd")
        self.client = require("mariadb")
        self.base = base
        self.datadir = base / "data"
        self.socket = base / "mysqld.sock"
        self.port = free_port()
        self.logfile = base / "mariadbd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_cnf = base / "admin.cnf"
        self.backup_cnf = base / "backup.cnf"
        self.backup_password = "MdbPw-" + secrets.token_hex(12) + "-end"
        self.seed_rows = dict(SEED_ROWS)

    def install(self) -> None:
        res = subprocess.run(
            [self.install_db, "--no-defaults", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"],
            capture_output=True, timeout=180, check=False)
        if res.returncode != 0:
            pytest.fail(f"mariadb-install-db failed: {res.stderr.decode()[-2000:]}", pytrace=False)

    def start(self) -> None:
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.mariadbd, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
                 f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin",
                 "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=16M", "--skip-name-resolve",
                 "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                 f"--pid-file={self.base / 'mysqld.pid'}", f"--log-error={self.logfile}"],
                stdout=log, stderr=subprocess.STDOUT)
        self.admin_cnf.write_text(f"[client]\nuser=root\nsocket={self.socket}\ndefault-character-set=utf8mb4\n")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mariadbd exited: {self.logfile.read_text()[-2000:]}", pytrace=False)
            res = subprocess.run([self.client, f"--defaults-extra-file={self.admin_cnf}", "-e", "SELECT 1"],
                                 capture_output=True, timeout=30, check=False)
            if res.returncode == 0:
                return
            time.sleep(0.2)
        pytest.fail(f"MariaDB did not become ready: {self.logfile.read_text()[-2000:]}", pytrace=False)

    def sql(self, statement: str, database: str = "") -> str:
        """Run SQL (from stdin, so no value ever lands in argv) as root; tab-separated output."""
        argv = [self.client, f"--defaults-extra-file={self.admin_cnf}", "--batch", "--skip-column-names"]
        if database:
            argv.append(f"--database={database}")
        res = subprocess.run(argv, input=statement.encode(), capture_output=True, timeout=120, check=False)
        if res.returncode != 0:
            raise AssertionError(f"mariadb failed: {res.stderr.decode()}\n{statement[:500]}")
        return res.stdout.decode()

    def count(self, table: str, database: str = DATABASE) -> int:
        return int(self.sql("SELECT COUNT(*) FROM `{}`".format(table.replace("`", "``")), database).strip())

    def databases(self) -> list[str]:
        return self.sql("SHOW DATABASES").split()

    def seed(self) -> None:
        self.sql(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n"
                 f"CREATE USER 'backup'@'localhost' IDENTIFIED BY '{self.backup_password}';\n"
                 f"GRANT SELECT, SHOW VIEW, TRIGGER ON {DATABASE}.* TO 'backup'@'localhost';\n")
        self.sql(SEED_SQL, DATABASE)
        self.backup_cnf.write_text(f"[client]\nuser=backup\npassword={cnf_quote(self.backup_password)}\n"
                                   f"socket={self.socket}\n")
        self.backup_cnf.chmod(0o600)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    base = Path(tempfile.mkdtemp(prefix="cbtest-mariadb-"))
    db = MariaDB(base)
    try:
        db.install()
        db.start()
        db.seed()
        yield db
    finally:
        db.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- Redis --------------------------------------------------------------------------------------

class Redis:
    def __init__(self, base: Path) -> None:
        self.server = require("redis-server")
        self.client = require("redis-cli")
        self.base = base
        self.port = free_port()
        self.password = "RedisPw-" + secrets.token_hex(12) + "-end"
        self.password_file = base / "redis.password"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The password goes into a config file, never into the server's argv.
        conf = self.base / "redis.conf"
        # repl-diskless-sync-delay 0: `redis-cli --rdb` would otherwise wait 5 s for more replicas.
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {self.base}\n"
                        "repl-diskless-sync-delay 0\n"
                        f"user default off\nuser admin on >{self.password} ~* &* +@all\n")
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        self.proc = subprocess.Popen([self.server, str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, 20)

    def cli(self, *args: str) -> str:
        res = subprocess.run([self.client, "--no-auth-warning", "-h", "127.0.0.1", "-p", str(self.port),
                              "--user", "admin", *args],
                             env={**os.environ, "REDISCLI_AUTH": self.password},
                             capture_output=True, timeout=30, check=False)
        if res.returncode != 0:
            raise AssertionError(f"redis-cli {args} failed: {res.stderr.decode()}")
        return res.stdout.decode()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis() -> Iterator[Redis]:
    base = Path(tempfile.mkdtemp(prefix="cbtest-redis-"))
    server = Redis(base)
    try:
        server.start()
        server.cli("SET", "greeting", "hello (world), it's me \\ ")
        server.cli("HSET", "session:1", "user", "alice", "lang", "日本語")
        server.cli("RPUSH", "queue", "a", "b", "c")
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- the scratch host ---------------------------------------------------------------------------

WRAPPED = {"restic": "restic", "mariadb": "mariadb", "mariadb-dump": "mariadb-dump",
           "redis-cli": "redis-cli", "redis-check-rdb": "redis-check-rdb"}

WRAPPER = """#!/bin/sh
# Record the argv (one line per call) and run the real binary.
{{ printf '%s' "$(basename "$0")"; for arg in "$@"; do printf ' %s' "$arg"; done; printf '\\n'; }} \\
  >> "${{CB_ARGV_LOG:-/dev/null}}"
exec {real} "$@"
"""

# systemctl stand-in for `restore --redis`: records the call, touches nothing on this machine.
FAKE_SYSTEMCTL = """#!/bin/sh
{ printf 'systemctl'; for arg in "$@"; do printf ' %s' "$arg"; done; printf '\\n'; } >> "${CB_ARGV_LOG:-/dev/null}"
printf '%s\\n' "$*" >> "$(dirname "$0")/systemctl.calls"
exit 0
"""


@dataclass
class World:
    """One host's configuration: repositories a, broken (below a regular file) and b."""

    base: Path
    mariadb: MariaDB
    redis: Redis
    bin: Path
    argv_log: Path
    config_path: Path
    config: dict
    repo_password: str
    live_dir: Path
    outputs: list[tuple[list[str], str, str]] = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return Path(self.config["state_dir"]) / "state.json"

    @property
    def textfile(self) -> Path:
        return Path(self.config["textfile"])

    @property
    def staging(self) -> Path:
        return Path(self.config["staging_dir"])

    @property
    def work(self) -> Path:
        return Path(self.config["work_dir"])

    def repo(self, name: str) -> dict:
        return next(r for r in self.config["repositories"] if r["name"] == name)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        env["CB_ARGV_LOG"] = str(self.argv_log)
        return env

    def cli(self, *args: str, config: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = [PYTHON, str(TOOL), "--config", str(config or self.config_path), *args]
        res = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        self.outputs.append((list(args), res.stdout, res.stderr))
        return res

    def restic(self, name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """restic directly (not through the tool), for the tests' own look at a repository."""
        repo = self.repo(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update({"RESTIC_REPOSITORY": repo["repository"], "RESTIC_PASSWORD_FILE": repo["password_file"],
                    "RESTIC_CACHE_DIR": str(self.base / "test-restic-cache")})
        return subprocess.run([require("restic"), *args], env=env, capture_output=True, text=True,
                              timeout=300, check=False, cwd=cwd)

    def snapshots(self, name: str) -> list[dict]:
        res = self.restic(name, "snapshots", "--json", "--host", self.config["host"], "--tag", self.config["tag"])
        assert res.returncode == 0, res.stderr
        return sorted(json.loads(res.stdout or "[]") or [], key=lambda s: s["time"])

    def state(self) -> dict:
        return json.loads(self.state_path.read_text())

    def write_config(self, cfg: dict, path: Path) -> Path:
        path.write_text(json.dumps(cfg, indent=2))
        return path


def make_world(base: Path, mariadb: MariaDB, redis: Redis) -> World:
    bindir = base / "bin"
    bindir.mkdir()
    for name, binary in WRAPPED.items():
        wrapper = bindir / name
        wrapper.write_text(WRAPPER.format(real=require(binary)))
        wrapper.chmod(0o755)
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)

    secret_dir = base / "secrets"
    secret_dir.mkdir(mode=0o700)
    repo_password = "RepoPw-" + secrets.token_hex(12) + "-end"
    (secret_dir / "repo.password").write_text(repo_password + "\n")
    (base / "not-a-directory").write_text("a regular file: no repository can be created below it\n")

    live = base / "live" / "etc" / "clawbot"
    (live / "conf.d").mkdir(parents=True)
    (live / "app.yml").write_text("listen: 127.0.0.1:8080\nname: clawbot\n")
    (live / "conf.d" / "extra.conf").write_text("# extra\nlimit = 5\n")
    os.symlink("app.yml", live / "current.yml")
    (base / "textfile").mkdir()
    (base / "redis-data").mkdir()

    repos = []
    # broken sits between a and b: a failed repository must not stop the ones after it.
    for name, location in (("a", base / "repos" / "a"), ("broken", base / "not-a-directory" / "repo"),
                           ("b", base / "repos" / "b")):
        repos.append({"name": name, "repository": str(location), "password_file": str(secret_dir / "repo.password"),
                      "env_file": "", "options": [], "cacert": ""})
    config = {
        "format": 1,
        "host": "cbtest-host",
        "tag": "clawbot",
        "staging_dir": str(base / "staging" / "current"),
        "work_dir": str(base / "work"),
        "state_dir": str(base / "state"),
        "cache_dir": str(base / "cache"),
        "textfile": str(base / "textfile" / "clawbot_backup.prom"),
        "restic": str(bindir / "restic"),
        "lock_retries": 1,
        "lock_retry_seconds": 1,
        "mariadb": {"enabled": True, "database": DATABASE, "defaults_file": str(mariadb.backup_cnf),
                    "admin_defaults_file": str(mariadb.admin_cnf)},
        "redis": {"enabled": True, "host": "127.0.0.1", "port": redis.port, "tls": False, "cacert": "",
                  "user": "admin", "password_file": str(redis.password_file), "data_dir": str(base / "redis-data"),
                  "service": "redis-server.service"},
        "paths": [str(live), str(base / "live" / "does-not-exist")],
        "retention": {"keep_daily": 7, "keep_weekly": 0, "keep_monthly": 0},
        "check_read_data_subset": "10%",
        "repositories": repos,
    }
    config_path = base / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    return World(base=base, mariadb=mariadb, redis=redis, bin=bindir, argv_log=base / "argv.log",
                 config_path=config_path, config=config, repo_password=repo_password, live_dir=live)


@pytest.fixture(scope="module")
def world(mariadb: MariaDB, redis: Redis) -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="cbtest-world-"))
    try:
        yield make_world(base, mariadb, redis)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _remove_basetemp_when_green(request: pytest.FixtureRequest,
                                tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """tmp_path directories hold dumps and restores: removed after a green session, kept to debug a red one."""
    yield
    if request.session.testsfailed == 0:
        shutil.rmtree(tmp_path_factory.getbasetemp(), ignore_errors=True)
