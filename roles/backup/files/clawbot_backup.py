# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""clawbot-backup: one dump, several restic repositories (installed by the clawbot.stack.backup role).

Subcommands (all take --config, default /etc/clawbot-backup/config.json):

  check-config            validate the configuration file (the role's `validate:`)
  init [--dry-run]        create the repositories that do not exist yet (JSON per repository)
  run [--repository N]    stage once (MariaDB dump, Redis RDB, files, manifest), then back up,
                          forget --prune and check in every repository; a failed repository does
                          not stop the others, the exit status is 1 when any failed
  check [--read-data-subset S]   restic check of every repository (the weekly timer)
  status                  JSON: every repository's state, as the metrics show it
  snapshots --repository N       JSON list of the host's snapshots
  freshness [--max-age-hours H]  JSON: age of the host's newest snapshot in each repository, read
                          from the repository (compliance); exit 1 when one is older or unreadable
  drill --repository N [--snapshot ID]   restore into a scratch directory and database, compare
                          with the manifest, clean up; exit 1 when anything differs
  restore --repository N --snapshot ID --confirm [--database] [--path P ...] [--redis]
                          a real restore, after a safety dump of the current state
  metrics                 rewrite the textfile-collector file from the saved state

Secrets never appear on a command line: restic reads RESTIC_PASSWORD_FILE, mariadb-dump a
--defaults-extra-file, redis-cli REDISCLI_AUTH, S3 keys come from an environment file.
Only the standard library: the tool runs with the host's python3.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

FORMAT = 1
TOOL_VERSION = "1.0.0"
DEFAULT_CONFIG = "/etc/clawbot-backup/config.json"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# restic's documented exit codes (0.14): 0 success, 1 fatal error (no snapshot), 3 the snapshot was
# written but some source data could not be read. Later versions add 10 (no repository), 11 (lock
# failed), 12 (wrong password). Anything but 0 is a failure for this tool; 3 is named as such.
RESTIC_EXIT_MEANING = {
    1: "fatal error",
    3: "incomplete snapshot: some source files could not be read",
    10: "repository does not exist",
    11: "repository is locked",
    12: "wrong password",
    130: "interrupted",
}
LOCKED_MARKERS = ("repository is already locked", "unable to create lock")
# restic reports an unreadable password file as "... does not exist" too: never "missing".
PASSWORD_MARKERS = ("resolving password failed", "wrong password", "empty password", "reading password")
MISSING_MARKERS = ("Is there a repository at the following location?", "does not exist",
                   "no such file or directory", "unable to open config file",
                   "The specified bucket does not exist")
INSERT_RE = re.compile(rb"^INSERT INTO `((?:[^`]|``)+)` VALUES\s")
CREATE_RE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
# Triggers (and routines) are written between "DELIMITER ;;" and "DELIMITER ;"; their bodies are
# verbatim SQL and may hold a line that starts like a data INSERT.
DELIMITER_RE = re.compile(rb"^DELIMITER\s+(\S+)\s*$")
# A quoted SQL string as mariadb-dump writes it (backslash escapes), or a parenthesis.
TUPLE_TOKEN_RE = re.compile(rb"'(?:[^'\\]|\\.)*'|[()]", re.DOTALL)
FORBIDDEN_DUMP_RE = re.compile(rb"^(USE |CREATE DATABASE|DROP DATABASE)", re.IGNORECASE)
# mariadb-dump options, the same for the backup and for the drill's comparison dump.
DUMP_OPTIONS = [
    "--single-transaction", "--quick", "--hex-blob", "--order-by-primary", "--skip-dump-date",
    "--triggers", "--no-tablespaces", "--default-character-set=utf8mb4",
]


class BackupError(Exception):
    """An error with a message for the operator (never a secret)."""


class ConfigError(BackupError):
    """The configuration file is invalid: the message names the field."""


# --- configuration ----------------------------------------------------------------------------

def _need(obj: dict, key: str, kind: type, where: str):
    if key not in obj:
        raise ConfigError(f"{where}.{key} is missing")
    value = obj[key]
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be an integer")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key} must be a {kind.__name__}")
    return value


def _abs_path(obj: dict, key: str, where: str, optional: bool = False) -> str:
    value = _need(obj, key, str, where)
    if optional and value == "":
        return value
    if not value.startswith("/") or "\0" in value:
        raise ConfigError(f"{where}.{key} must be an absolute path")
    return value


def validate_config(cfg: object) -> dict:
    """Check every field the tool reads; raise ConfigError naming the first bad one."""
    if not isinstance(cfg, dict):
        raise ConfigError("the configuration must be a JSON object")
    if _need(cfg, "format", int, "config") != FORMAT:
        raise ConfigError(f"config.format must be {FORMAT}")
    host = _need(cfg, "host", str, "config")
    if not host or len(host) > 253 or any(c.isspace() for c in host):
        raise ConfigError("config.host must be a host name")
    tag = _need(cfg, "tag", str, "config")
    if not NAME_RE.match(tag):
        raise ConfigError(f"config.tag must match {NAME_RE.pattern}")
    for key in ("staging_dir", "state_dir", "cache_dir", "work_dir"):
        if ".." in _abs_path(cfg, key, "config").split("/"):
            raise ConfigError(f"config.{key} must not contain ..")
    if cfg["staging_dir"].rstrip("/") == "":
        raise ConfigError("config.staging_dir must not be / (every run empties it)")
    _abs_path(cfg, "textfile", "config", optional=True)
    _abs_path(cfg, "restic", "config")
    for key in ("lock_retries", "lock_retry_seconds"):
        if _need(cfg, key, int, "config") < 0:
            raise ConfigError(f"config.{key} must be >= 0")
    mariadb = _need(cfg, "mariadb", dict, "config")
    if _need(mariadb, "enabled", bool, "config.mariadb"):
        if not DB_NAME_RE.match(_need(mariadb, "database", str, "config.mariadb")):
            raise ConfigError("config.mariadb.database must be a plain database name")
        _abs_path(mariadb, "defaults_file", "config.mariadb")
        _abs_path(mariadb, "admin_defaults_file", "config.mariadb", optional=True)
    redis = _need(cfg, "redis", dict, "config")
    if _need(redis, "enabled", bool, "config.redis"):
        _need(redis, "host", str, "config.redis")
        port = _need(redis, "port", int, "config.redis")
        if not 0 < port < 65536:
            raise ConfigError("config.redis.port must be a TCP port")
        _need(redis, "tls", bool, "config.redis")
        _need(redis, "user", str, "config.redis")
        _abs_path(redis, "password_file", "config.redis")
        _abs_path(redis, "cacert", "config.redis", optional=True)
        _abs_path(redis, "data_dir", "config.redis")
        _need(redis, "service", str, "config.redis")
    paths = _need(cfg, "paths", list, "config")
    for i, path in enumerate(paths):
        if (not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") == ""
                or ".." in path.split("/") or "\0" in path):
            raise ConfigError(f"config.paths[{i}] must be an absolute path other than /")
    retention = _need(cfg, "retention", dict, "config")
    for key in ("keep_daily", "keep_weekly", "keep_monthly"):
        if _need(retention, key, int, "config.retention") < 0:
            raise ConfigError(f"config.retention.{key} must be >= 0")
    if retention["keep_daily"] < 1:
        raise ConfigError("config.retention.keep_daily must be >= 1")
    subset = _need(cfg, "check_read_data_subset", str, "config")
    if subset and not re.match(r"^(\d{1,3}(\.\d+)?%|\d+/\d+|\d+[KMGT])$", subset):
        raise ConfigError("config.check_read_data_subset must be like 5%, 1/7 or 500M")
    repos = _need(cfg, "repositories", list, "config")
    if not repos:
        raise ConfigError("config.repositories is empty")
    seen = set()
    for i, repo in enumerate(repos):
        where = f"config.repositories[{i}]"
        if not isinstance(repo, dict):
            raise ConfigError(f"{where} must be an object")
        name = _need(repo, "name", str, where)
        if not NAME_RE.match(name):
            raise ConfigError(f"{where}.name must match {NAME_RE.pattern}")
        if name in seen:
            raise ConfigError(f"{where}.name {name!r} is used twice")
        seen.add(name)
        url = _need(repo, "repository", str, where)
        backends = ("/", "s3:", "sftp:", "rest:", "rclone:", "b2:", "azure:", "gs:", "swift:")
        if not url.startswith(backends):
            raise ConfigError(f"{where}.repository must be a path or a restic backend URL")
        _abs_path(repo, "password_file", where)
        _abs_path(repo, "env_file", where, optional=True)
        options = _need(repo, "options", list, where)
        for j, opt in enumerate(options):
            if not isinstance(opt, str) or "=" not in opt:
                raise ConfigError(f"{where}.options[{j}] must be KEY=VALUE")
        _abs_path(repo, "cacert", where, optional=True)
    return cfg


def load_config(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        cfg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid JSON: nested too deeply") from None
    return validate_config(cfg)


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (no quoting, no expansion); # comments and blank lines ignored."""
    env = {}
    if not path:
        return env
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise BackupError(f"cannot read the environment file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not ENV_NAME_RE.match(key):
            raise BackupError(f"{path} line {number} is not KEY=VALUE")
        env[key] = value
    return env


# --- small helpers ----------------------------------------------------------------------------

def log(message: str) -> None:
    """Progress for the journal, on stderr: stdout carries only the JSON answers."""
    sys.stderr.write(f"clawbot-backup: {message}\n")
    sys.stderr.flush()


def now() -> float:
    return time.time()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:500]


def run_cmd(argv: Sequence[str], env: dict[str, str] | None = None, stdin=None, stdout=None,
            timeout: float | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        return subprocess.run(list(argv), env=full_env, stdin=stdin,
                              stdout=stdout if stdout is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, check=False, timeout=timeout)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"{os.path.basename(argv[0])} did not finish within {timeout} s") from None


def text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


@contextlib.contextmanager
def run_lock(state_dir: str) -> Iterator[None]:
    """One tool run at a time on this host (the timer, the drill and a restore share it)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(state_dir, "lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BackupError(f"another clawbot-backup run holds {state_dir}/lock") from None
            raise
        yield


def write_atomic(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- dump analysis ----------------------------------------------------------------------------

def count_tuples(values: bytes) -> int:
    """Rows in the VALUES part of one extended INSERT: parentheses at depth 0 outside strings."""
    depth = 0
    rows = 0
    for match in TUPLE_TOKEN_RE.finditer(values):
        token = match.group(0)
        if token == b"(":
            if depth == 0:
                rows += 1
            depth += 1
        elif token == b")":
            depth -= 1
    return rows


def analyse_dump(path: str) -> dict[str, dict[str, object]]:
    """Per table: rows and the sha256 of its INSERT statements, in dump order.

    mariadb-dump escapes newlines inside strings, so a line break in the dump is never part of a
    value. MariaDB 10.11 writes `INSERT INTO `t` VALUES` on a line of its own and one tuple per
    line after it, older versions the whole statement on one line: a statement ends with the first
    line that ends with ";". Trigger bodies (between DELIMITER lines) are code, not rows: skipped.
    The same options on the same data give the same bytes, which is what the drill compares: the
    dump taken at backup time against a dump of the restored scratch database.
    """
    tables: dict[str, dict[str, object]] = {}
    digests: dict = {}
    current = None
    in_block = False
    with open(path, "rb") as handle:
        for line in handle:
            delimiter = DELIMITER_RE.match(line) if current is None else None
            if delimiter:
                in_block = delimiter.group(1) != b";"
                continue
            if in_block:
                continue
            if current is not None:
                digests[current].update(line)
                tables[current]["rows"] = int(tables[current]["rows"]) + count_tuples(line)
                if line.rstrip().endswith(b";"):
                    current = None
                continue
            created = CREATE_RE.match(line)
            if created:
                name = created.group(1).replace(b"``", b"`").decode("utf-8", "replace")
                tables.setdefault(name, {"rows": 0, "sha256": ""})
                digests.setdefault(name, hashlib.sha256())
                continue
            inserted = INSERT_RE.match(line)
            if inserted:
                name = inserted.group(1).replace(b"``", b"`").decode("utf-8", "replace")
                entry = tables.setdefault(name, {"rows": 0, "sha256": ""})
                digests.setdefault(name, hashlib.sha256()).update(line)
                entry["rows"] = int(entry["rows"]) + count_tuples(line[inserted.end():])
                if not line.rstrip().endswith(b";"):
                    current = name
    for name, digest in digests.items():
        tables[name]["sha256"] = digest.hexdigest()
    return tables


def check_dump_is_portable(path: str) -> None:
    """A dump loaded into a scratch database must not switch to (or drop) another one."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if FORBIDDEN_DUMP_RE.match(line):
                raise BackupError(f"the dump names a database (line {number}): refusing to load it")


# --- sources ------------------------------------------------------------------------------------

def mariadb_version(defaults_file: str) -> str:
    result = run_cmd(["mariadb", "--defaults-extra-file=" + defaults_file, "--batch",
                      "--skip-column-names", "-e", "SELECT VERSION()"], timeout=60)
    return text(result.stdout).strip() if result.returncode == 0 else ""


def dump_database(defaults_file: str, database: str, dest: str, timeout: float = 6 * 3600) -> None:
    """mariadb-dump into dest (0600), written to a temporary name and renamed when complete."""
    partial = dest + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            result = run_cmd(["mariadb-dump", "--defaults-extra-file=" + defaults_file, *DUMP_OPTIONS, database],
                             stdout=out, timeout=timeout)
            out.flush()
            os.fsync(out.fileno())
        if result.returncode != 0:
            raise BackupError(f"mariadb-dump failed (exit {result.returncode}): {tail(text(result.stderr))}")
        with open(partial, "rb") as handle:
            handle.seek(max(0, os.path.getsize(partial) - 200))
            if b"-- Dump completed" not in handle.read():
                raise BackupError("mariadb-dump output is incomplete (no 'Dump completed' trailer)")
        os.replace(partial, dest)
    except BaseException:
        # A failed, timed-out or interrupted dump leaves nothing behind (it may be large).
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def redis_cli_base(redis: dict) -> tuple[list[str], dict[str, str]]:
    with open(redis["password_file"], encoding="utf-8") as handle:
        password = handle.read().strip()
    argv = ["redis-cli", "--no-auth-warning", "-h", redis["host"], "-p", str(redis["port"]),
            "--user", redis["user"]]
    if redis["tls"]:
        argv.append("--tls")
        if redis["cacert"]:
            argv += ["--cacert", redis["cacert"]]
    return argv, {"REDISCLI_AUTH": password}


def redis_rdb(redis: dict, dest: str) -> str:
    argv, env = redis_cli_base(redis)
    result = run_cmd([*argv, "--rdb", dest], env=env, timeout=3600)
    if result.returncode != 0 or not os.path.exists(dest):
        raise BackupError(f"redis-cli --rdb failed (exit {result.returncode}): "
                          f"{tail(text(result.stderr) + text(result.stdout))}")
    os.chmod(dest, 0o600)
    info = run_cmd([*argv, "INFO", "server"], env=env, timeout=60)
    match = re.search(r"redis_version:(\S+)", text(info.stdout))
    return match.group(1) if match else ""


def copy_tree(src: str, dst: str) -> None:
    """Copy src (file or directory) to dst keeping modes, owners and symlinks."""
    if os.path.islink(src) or not os.path.isdir(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
        st = os.lstat(src)
        os.lchown(dst, st.st_uid, st.st_gid)
        return
    shutil.copytree(src, dst, symlinks=True)
    for root, dirs, files in os.walk(src):
        for name in dirs + files + [""]:
            path = os.path.join(root, name) if name else root
            st = os.lstat(path)
            os.lchown(os.path.join(dst, os.path.relpath(path, src)), st.st_uid, st.st_gid)


def file_checksums(base: str) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for root, _dirs, files in os.walk(base):
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, base)
            out[rel] = {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}
    return out


def bot_version() -> str:
    target = os.path.realpath("/opt/clawbot/current")
    name = os.path.basename(target)
    return name if os.path.isdir(target) and name != "current" else ""


def os_release() -> str:
    with contextlib.suppress(OSError), open("/etc/os-release", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return ""


def stage(cfg: dict, restic_ver: str) -> dict:
    """Fill the staging directory once: every repository gets the same files."""
    staging = cfg["staging_dir"]
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging, mode=0o700)
    os.chmod(staging, 0o700)
    manifest: dict = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "created_timestamp": round(now(), 3),
        "host": cfg["host"],
        "hostname": socket.gethostname(),
        "versions": {"clawbot_backup": TOOL_VERSION, "restic": restic_ver, "os": os_release(),
                     "bot_app": bot_version()},
        "paths": [],
        "files": {},
    }
    mariadb = cfg["mariadb"]
    if mariadb["enabled"]:
        os.makedirs(os.path.join(staging, "mariadb"), mode=0o700)
        rel = "mariadb/{}.sql".format(mariadb["database"])
        dump = os.path.join(staging, rel)
        dump_database(mariadb["defaults_file"], mariadb["database"], dump)
        manifest["versions"]["mariadb"] = mariadb_version(mariadb["defaults_file"])
        manifest["mariadb"] = {"database": mariadb["database"], "dump": rel,
                               "sha256": sha256_file(dump), "bytes": os.path.getsize(dump),
                               "tables": analyse_dump(dump)}
    redis = cfg["redis"]
    if redis["enabled"]:
        os.makedirs(os.path.join(staging, "redis"), mode=0o700)
        rel = "redis/dump.rdb"
        rdb = os.path.join(staging, rel)
        manifest["versions"]["redis"] = redis_rdb(redis, rdb)
        manifest["redis"] = {"rdb": rel, "sha256": sha256_file(rdb), "bytes": os.path.getsize(rdb)}
    for path in cfg["paths"]:
        if not os.path.lexists(path):
            log(f"path {path} does not exist on this host: not in this backup")
            continue
        copy_tree(path, os.path.join(staging, "files", path.lstrip("/")))
        manifest["paths"].append(path)
    if os.path.isdir(os.path.join(staging, "files")):
        manifest["files"] = file_checksums(os.path.join(staging, "files"))
    write_atomic(os.path.join(staging, "manifest.json"),
                 json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"), 0o600)
    return manifest


# --- restic -----------------------------------------------------------------------------------

class Repository:
    """One restic repository of the configuration."""

    def __init__(self, cfg: dict, repo: dict):
        self.cfg = cfg
        self.name = repo["name"]
        self.repo = repo

    def env(self) -> dict[str, str]:
        env = read_env_file(self.repo["env_file"])
        env.update({
            "RESTIC_REPOSITORY": self.repo["repository"],
            "RESTIC_PASSWORD_FILE": self.repo["password_file"],
            "RESTIC_CACHE_DIR": os.path.join(self.cfg["cache_dir"], self.name),
            "RESTIC_PROGRESS_FPS": "0.0166",
        })
        if self.repo["cacert"]:
            env["RESTIC_CACERT"] = self.repo["cacert"]
        # Never let the caller's environment pick another repository or password.
        for key in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY_FILE"):
            env.setdefault(key, "")
        return env

    def restic(self, args: Sequence[str], timeout: float | None = None,
               retry_locked: bool = True) -> subprocess.CompletedProcess:
        argv = [self.cfg["restic"], "--quiet"]
        for opt in self.repo["options"]:
            argv += ["-o", opt]
        argv += list(args)
        attempts = self.cfg["lock_retries"] + 1 if retry_locked else 1
        result = run_cmd(argv, env=self.env(), timeout=timeout)
        for _attempt in range(1, attempts):
            if result.returncode == 0 or not any(m in text(result.stderr) for m in LOCKED_MARKERS):
                break
            log(f"repository {self.name}: locked by another restic, retrying in {self.cfg['lock_retry_seconds']} s")
            time.sleep(self.cfg["lock_retry_seconds"])
            result = run_cmd(argv, env=self.env(), timeout=timeout)
        return result

    def fail(self, step: str, result: subprocess.CompletedProcess) -> BackupError:
        meaning = RESTIC_EXIT_MEANING.get(result.returncode, "unknown exit code")
        return BackupError(f"{step} failed (restic exit {result.returncode}, {meaning}): {tail(text(result.stderr))}")

    def exists(self) -> tuple[bool, str]:
        result = self.restic(["cat", "config"], timeout=300, retry_locked=False)
        if result.returncode == 0:
            return True, ""
        err = text(result.stderr)
        low = err.lower()
        if (any(marker.lower() in low for marker in MISSING_MARKERS)
                and not any(marker in low for marker in PASSWORD_MARKERS)):
            return False, ""
        raise self.fail("opening the repository", result)

    def init(self) -> None:
        result = self.restic(["init"], timeout=600, retry_locked=False)
        if result.returncode != 0:
            raise self.fail("restic init", result)

    def backup(self, staging: str) -> None:
        result = self.restic(["backup", "--host", self.cfg["host"], "--tag", self.cfg["tag"],
                              "--one-file-system", staging], timeout=12 * 3600)
        if result.returncode != 0:
            raise self.fail("restic backup", result)

    def forget_prune(self) -> None:
        ret = self.cfg["retention"]
        args = ["forget", "--prune", "--host", self.cfg["host"], "--tag", self.cfg["tag"],
                "--keep-daily", str(ret["keep_daily"])]
        if ret["keep_weekly"]:
            args += ["--keep-weekly", str(ret["keep_weekly"])]
        if ret["keep_monthly"]:
            args += ["--keep-monthly", str(ret["keep_monthly"])]
        result = self.restic(args, timeout=6 * 3600)
        if result.returncode != 0:
            raise self.fail("restic forget --prune", result)

    def check(self, subset: str = "") -> None:
        args = ["check"] + (["--read-data-subset", subset] if subset else [])
        result = self.restic(args, timeout=12 * 3600)
        if result.returncode != 0:
            raise self.fail("restic check" + (" --read-data-subset " + subset if subset else ""), result)

    def snapshots(self, host: str | None = None) -> list[dict]:
        result = self.restic(["snapshots", "--json", "--host", host or self.cfg["host"],
                              "--tag", self.cfg["tag"]], timeout=600)
        if result.returncode != 0:
            raise self.fail("restic snapshots", result)
        try:
            snaps = json.loads(text(result.stdout) or "[]") or []
        except ValueError:
            raise BackupError("restic snapshots printed no JSON") from None
        return sorted(snaps, key=lambda s: s.get("time", ""))

    def size(self) -> int:
        result = self.restic(["stats", "--mode", "raw-data", "--json"], timeout=3600)
        if result.returncode != 0:
            raise self.fail("restic stats", result)
        try:
            return int(json.loads(text(result.stdout)).get("total_size", 0))
        except (ValueError, AttributeError):
            raise BackupError("restic stats printed no JSON") from None

    def restore(self, snapshot_id: str, target: str) -> None:
        result = self.restic(["restore", snapshot_id, "--target", target], timeout=12 * 3600)
        if result.returncode != 0:
            raise self.fail("restic restore", result)


def restic_version(cfg: dict) -> str:
    result = run_cmd([cfg["restic"], "version"], timeout=60)
    match = re.search(r"restic (\S+)", text(result.stdout))
    return match.group(1) if match else ""


def repositories(cfg: dict, names: Sequence[str] | None = None) -> list[Repository]:
    repos = [Repository(cfg, r) for r in cfg["repositories"]]
    if names:
        unknown = sorted(set(names) - {r.name for r in repos})
        if unknown:
            raise BackupError("no repository named {} in the configuration".format(", ".join(unknown)))
        repos = [r for r in repos if r.name in names]
    return repos


def snapshot_time(snap: dict) -> float:
    stamp = snap.get("time", "")
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if not match:
        return 0.0
    base = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    zone = match.group(3)
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    fraction = float("0." + match.group(2)) if match.group(2) else 0.0
    return base.replace(tzinfo=datetime.timezone.utc).timestamp() - offset + fraction


def pick_snapshot(repo: Repository, wanted: str, host: str | None) -> dict:
    snaps = repo.snapshots(host)
    if not snaps:
        raise BackupError("repository {} has no snapshot of host {}".format(repo.name, host or repo.cfg["host"]))
    if wanted in ("", "latest"):
        return max(snaps, key=snapshot_time)
    for snap in snaps:
        if wanted in (snap.get("id"), snap.get("short_id")) or (
                len(wanted) >= 8 and str(snap.get("id", "")).startswith(wanted)):
            return snap
    raise BackupError("repository {} has no snapshot {} of host {}".format(repo.name, wanted, host or repo.cfg["host"]))


# --- state and metrics --------------------------------------------------------------------------

def load_state(cfg: dict) -> dict:
    path = os.path.join(cfg["state_dir"], "state.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        state = {}
    if not isinstance(state, dict) or not isinstance(state.get("repositories"), dict):
        state = {"repositories": {}}
    return state


def save_state(cfg: dict, state: dict) -> None:
    os.makedirs(cfg["state_dir"], mode=0o700, exist_ok=True)
    write_atomic(os.path.join(cfg["state_dir"], "state.json"),
                 json.dumps(state, indent=1, sort_keys=True).encode("utf-8"), 0o600)


METRICS = [
    ("clawbot_backup_last_success_timestamp_seconds", "gauge",
     "Time of the last backup run that succeeded in this repository (0: never).", "last_success"),
    ("clawbot_backup_last_run_timestamp_seconds", "gauge",
     "Time of the last backup run that tried this repository.", "last_run"),
    ("clawbot_backup_last_run_success", "gauge",
     "1 if the last backup run succeeded in this repository, 0 if it failed.", "last_run_success"),
    ("clawbot_backup_duration_seconds", "gauge",
     "Duration of the last backup run in this repository (backup, forget --prune, check).", "duration"),
    ("clawbot_backup_snapshots", "gauge",
     "Snapshots of this host in the repository after the last successful run.", "snapshots"),
    ("clawbot_backup_repository_size_bytes", "gauge",
     "Stored (deduplicated, compressed, encrypted) size of the repository.", "size_bytes"),
    ("clawbot_backup_newest_snapshot_timestamp_seconds", "gauge",
     "Time of the newest snapshot of this host in the repository.", "newest_snapshot"),
    ("clawbot_backup_check_last_success_timestamp_seconds", "gauge",
     "Time of the last restic check --read-data-subset that succeeded (0: never).", "check_last_success"),
]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(cfg: dict, state: dict) -> str:
    lines = []
    names = [r["name"] for r in cfg["repositories"]]
    for metric, kind, helptext, key in METRICS:
        lines.append(f"# HELP {metric} {helptext}")
        lines.append(f"# TYPE {metric} {kind}")
        for name in names:
            entry = state["repositories"].get(name, {})
            value = entry.get(key)
            if value is None:
                if key not in ("last_success", "check_last_success"):
                    continue
                value = 0
            number = repr(float(value)) if isinstance(value, float) else int(value)
            lines.append(f'{metric}{{repository="{escape_label(name)}"}} {number}')
    return "\n".join(lines) + "\n"


def write_metrics(cfg: dict, state: dict) -> None:
    if not cfg["textfile"]:
        return
    directory = os.path.dirname(cfg["textfile"])
    if not os.path.isdir(directory):
        log(f"textfile collector directory {directory} is missing: no metrics written")
        return
    write_atomic(cfg["textfile"], render_metrics(cfg, state).encode("utf-8"), 0o644)


# --- subcommands --------------------------------------------------------------------------------

def cmd_check_config(cfg: dict, _args: argparse.Namespace) -> int:
    names = ", ".join(r["name"] for r in cfg["repositories"])
    log(f"configuration OK: {len(cfg['repositories'])} repositories ({names})")
    return 0


def cmd_init(cfg: dict, args: argparse.Namespace) -> int:
    report = {}
    failed = False
    for repo in repositories(cfg, args.repository):
        try:
            present, _detail = repo.exists()
            if present:
                report[repo.name] = "exists"
            elif args.dry_run:
                report[repo.name] = "missing"
            else:
                repo.init()
                report[repo.name] = "created"
        except BackupError as exc:
            report[repo.name] = f"error: {exc}"
            failed = True
    print(json.dumps(report, sort_keys=True))
    return 1 if failed else 0


def cmd_run(cfg: dict, args: argparse.Namespace) -> int:
    repos = repositories(cfg, args.repository)
    state = load_state(cfg)
    failures = []
    started = now()
    try:
        manifest = stage(cfg, restic_version(cfg))
        log("staged {} ({})".format(cfg["staging_dir"], ", ".join(
            [k for k in ("mariadb", "redis") if k in manifest] + manifest["paths"])))
    except (BackupError, OSError) as exc:
        log(f"staging failed, no repository gets a snapshot: {exc}")
        for repo in repos:
            entry = state["repositories"].setdefault(repo.name, {})
            entry.update({"last_run": round(now(), 3), "last_run_success": 0, "duration": round(now() - started, 3),
                          "last_error": f"staging: {exc}"})
        save_state(cfg, state)
        write_metrics(cfg, state)
        with contextlib.suppress(OSError):
            shutil.rmtree(cfg["staging_dir"])
        return 1
    try:
        for repo in repos:
            begin = now()
            entry = state["repositories"].setdefault(repo.name, {})
            try:
                present, _detail = repo.exists()
                if not present:
                    raise BackupError("the repository does not exist (the role's `init` creates it)")
                repo.backup(cfg["staging_dir"])
                repo.forget_prune()
                repo.check()
                snaps = repo.snapshots()
                entry.update({"last_success": round(now(), 3), "last_run_success": 1,
                              "snapshots": len(snaps), "last_error": ""})
                if snaps:
                    entry["newest_snapshot"] = round(max(snapshot_time(s) for s in snaps), 3)
                try:
                    entry["size_bytes"] = repo.size()
                except BackupError as exc:
                    log(f"repository {repo.name}: size unknown: {exc}")
                log(f"repository {repo.name}: OK, {len(snaps)} snapshots")
            except BackupError as exc:
                entry.update({"last_run_success": 0, "last_error": str(exc)})
                failures.append(repo.name)
                log(f"repository {repo.name}: FAILED: {exc}")
            entry["last_run"] = round(now(), 3)
            entry["duration"] = round(now() - begin, 3)
            save_state(cfg, state)
            write_metrics(cfg, state)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(cfg["staging_dir"])
    if failures:
        log(f"{len(failures)} of {len(repos)} repositories failed: {', '.join(failures)}")
        return 1
    log(f"all {len(repos)} repositories OK")
    return 0


def cmd_check(cfg: dict, args: argparse.Namespace) -> int:
    subset = cfg["check_read_data_subset"] if args.read_data_subset is None else args.read_data_subset
    state = load_state(cfg)
    failures = []
    for repo in repositories(cfg, args.repository):
        try:
            repo.check(subset)
            state["repositories"].setdefault(repo.name, {})["check_last_success"] = round(now(), 3)
            log("repository {}: check{} OK".format(repo.name, " --read-data-subset " + subset if subset else ""))
        except BackupError as exc:
            failures.append(repo.name)
            log(f"repository {repo.name}: FAILED: {exc}")
    save_state(cfg, state)
    write_metrics(cfg, state)
    return 1 if failures else 0


def cmd_status(cfg: dict, _args: argparse.Namespace) -> int:
    state = load_state(cfg)
    out = []
    for repo in cfg["repositories"]:
        entry = dict(state["repositories"].get(repo["name"], {}))
        entry["name"] = repo["name"]
        entry["repository"] = repo["repository"]
        out.append(entry)
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0


def cmd_snapshots(cfg: dict, args: argparse.Namespace) -> int:
    repo = repositories(cfg, [args.repository])[0]
    print(json.dumps(repo.snapshots(args.host), indent=1, sort_keys=True))
    return 0


def cmd_freshness(cfg: dict, args: argparse.Namespace) -> int:
    """The newest snapshot of this host in each repository, read from the repository itself.

    Read-only (compliance runs): one entry per repository, with `error` instead of failing when
    a repository cannot be read, so every repository is reported. Exit 1 when any entry has no
    snapshot younger than --max-age-hours (or could not be read)."""
    out = []
    limit = float(args.max_age_hours) * 3600
    for repo in repositories(cfg, args.repository):
        entry: dict = {"name": repo.name, "newest_snapshot": None, "age_seconds": None, "snapshots": 0,
                       "error": None, "fresh": False}
        try:
            snaps = repo.snapshots()
        except BackupError as exc:
            entry["error"] = str(exc)
        else:
            entry["snapshots"] = len(snaps)
            if snaps:
                newest = max(snapshot_time(s) for s in snaps)
                entry["newest_snapshot"] = round(newest, 3)
                entry["age_seconds"] = round(max(0.0, now() - newest), 1)
                entry["fresh"] = entry["age_seconds"] < limit
            else:
                entry["error"] = "no snapshot of host {}".format(repo.cfg["host"])
        out.append(entry)
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0 if all(e["fresh"] for e in out) else 1


def cmd_metrics(cfg: dict, _args: argparse.Namespace) -> int:
    write_metrics(cfg, load_state(cfg))
    return 0


def mariadb_admin(cfg: dict) -> list[str]:
    admin = cfg["mariadb"].get("admin_defaults_file", "")
    return ["mariadb"] + (["--defaults-extra-file=" + admin] if admin else [])


def sql(cfg: dict, statement: str, database: str = "") -> str:
    argv = [*mariadb_admin(cfg), "--batch", "--skip-column-names"]
    argv += (["--database=" + database] if database else []) + ["-e", statement]
    result = run_cmd(argv, timeout=3600)
    if result.returncode != 0:
        raise BackupError(f"mariadb failed (exit {result.returncode}): {tail(text(result.stderr))}")
    return text(result.stdout)


def load_dump(cfg: dict, dump: str, database: str) -> None:
    check_dump_is_portable(dump)
    with open(dump, "rb") as handle:
        result = run_cmd([*mariadb_admin(cfg), "--database=" + database], stdin=handle, timeout=12 * 3600)
    if result.returncode != 0:
        raise BackupError(f"loading the dump into {database} failed (exit {result.returncode}): "
                          f"{tail(text(result.stderr))}")


def restore_snapshot(repo: Repository, snap: dict, target: str) -> tuple[str, dict]:
    """restic restore into target; returns the staging root inside it and the manifest."""
    repo.restore(snap["id"], target)
    paths = snap.get("paths") or []
    if len(paths) != 1:
        raise BackupError(f"snapshot {snap.get('short_id')} has {len(paths)} paths, expected the staging directory")
    root = os.path.join(target, paths[0].lstrip("/"))
    try:
        with open(os.path.join(root, "manifest.json"), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise BackupError("snapshot {} has no readable manifest.json: {}".format(snap.get("short_id"), exc)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BackupError(f"snapshot {snap.get('short_id')}: manifest format {found!r} is not {FORMAT}")
    return root, manifest


def compare_files(root: str, manifest: dict) -> list[dict]:
    results = []
    expected_files = []
    if "mariadb" in manifest:
        expected_files.append(("mariadb", manifest["mariadb"]["dump"], manifest["mariadb"]["sha256"]))
    if "redis" in manifest:
        expected_files.append(("redis", manifest["redis"]["rdb"], manifest["redis"]["sha256"]))
    for rel, info in sorted(manifest.get("files", {}).items()):
        expected_files.append(("files", os.path.join("files", rel), info.get("sha256")))
    for kind, rel, expected in expected_files:
        path = os.path.join(root, rel)
        actual = sha256_file(path) if os.path.isfile(path) else "missing"
        results.append({"kind": kind, "path": rel, "ok": actual == expected, "expected": expected, "actual": actual})
    return results


def drill_database(cfg: dict, root: str, manifest: dict, scratch_db: str) -> list[dict]:
    info = manifest["mariadb"]
    dump = os.path.join(root, info["dump"])
    expected = info.get("tables", {})
    sql(cfg, f"CREATE DATABASE `{scratch_db}` CHARACTER SET utf8mb4")
    load_dump(cfg, dump, scratch_db)
    redump = os.path.join(os.path.dirname(dump), "drill-redump.sql")
    admin = cfg["mariadb"].get("admin_defaults_file", "")
    fd = os.open(redump, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        result = run_cmd(["mariadb-dump"] + (["--defaults-extra-file=" + admin] if admin else [])
                         + DUMP_OPTIONS + [scratch_db], stdout=out, timeout=12 * 3600)
    if result.returncode != 0:
        raise BackupError(f"dumping the scratch database failed: {tail(text(result.stderr))}")
    actual = analyse_dump(redump)
    counted = {}
    for line in sql(cfg, f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{scratch_db}' "
                    "AND table_type = 'BASE TABLE'").splitlines():
        name = line.strip()
        if name:
            quoted = name.replace("`", "``")
            counted[name] = int(sql(cfg, f"SELECT COUNT(*) FROM `{quoted}`", scratch_db).strip())
    report = []
    for table in sorted(set(expected) | set(actual) | set(counted)):
        exp = expected.get(table, {})
        act = actual.get(table, {})
        entry = {
            "table": table,
            "rows_manifest": exp.get("rows"),
            "rows_restored": counted.get(table),
            "sha256_manifest": exp.get("sha256"),
            "sha256_restored": act.get("sha256"),
        }
        entry["ok"] = (table in expected and table in counted
                       and entry["rows_manifest"] == entry["rows_restored"] == act.get("rows")
                       and entry["sha256_manifest"] == entry["sha256_restored"])
        report.append(entry)
    return report


def redis_check(root: str, manifest: dict) -> dict:
    rdb = os.path.join(root, manifest["redis"]["rdb"])
    if not os.path.isfile(rdb):
        return {"ok": False, "detail": "dump.rdb missing"}
    if shutil.which("redis-check-rdb") is None:
        return {"ok": True, "detail": "checksum only (redis-check-rdb not installed)"}
    result = run_cmd(["redis-check-rdb", rdb], timeout=3600)
    out = text(result.stdout) + text(result.stderr)
    ok = result.returncode == 0 and "RDB looks OK" in out
    return {"ok": ok, "detail": "redis-check-rdb: " + ("RDB looks OK" if ok else tail(out))}


def cmd_drill(cfg: dict, args: argparse.Namespace) -> int:
    repo = repositories(cfg, [args.repository])[0]
    started = now()
    report: dict = {"repository": repo.name, "ok": False, "errors": [], "files": [], "tables": []}
    scratch_db = "{}_drill_{}".format((cfg["mariadb"].get("database") or "clawbot")[:40], os.getpid())
    os.makedirs(cfg["work_dir"], mode=0o700, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="drill-", dir=cfg["work_dir"])
    created_db = False
    try:
        with run_lock(cfg["state_dir"]):
            snap = pick_snapshot(repo, args.snapshot, args.host)
            report.update({"snapshot": snap.get("id"), "short_id": snap.get("short_id"),
                           "snapshot_time": snap.get("time"), "host": snap.get("hostname")})
            root, manifest = restore_snapshot(repo, snap, scratch)
            report["manifest_created"] = manifest.get("created")
            report["versions"] = manifest.get("versions", {})
            report["files"] = compare_files(root, manifest)
            if "mariadb" in manifest:
                if not cfg["mariadb"]["enabled"] and not args.with_database:
                    report["errors"].append(
                        "the snapshot has a database dump but this host has no MariaDB for the drill")
                else:
                    created_db = True
                    report["tables"] = drill_database(cfg, root, manifest, scratch_db)
            if "redis" in manifest:
                report["redis"] = redis_check(root, manifest)
    except (BackupError, OSError) as exc:
        report["errors"].append(str(exc))
    finally:
        if created_db:
            try:
                sql(cfg, f"DROP DATABASE IF EXISTS `{scratch_db}`")
            except BackupError as exc:
                report["errors"].append(f"cleanup: {exc}")
        shutil.rmtree(scratch, ignore_errors=True)
    report["ok"] = (not report["errors"] and all(f["ok"] for f in report["files"])
                    and all(t["ok"] for t in report["tables"]) and report.get("redis", {"ok": True})["ok"])
    report["duration_seconds"] = round(now() - started, 3)
    report["scratch_cleaned"] = not os.path.exists(scratch)
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0 if report["ok"] else 1


def systemctl(action: str, unit: str) -> None:
    result = run_cmd(["systemctl", action, unit], timeout=300)
    if result.returncode != 0:
        raise BackupError(f"systemctl {action} {unit} failed: {tail(text(result.stderr))}")


def remove_path(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def replace_path(restored: str, live: str, stamp: str) -> None:
    """Put the restored copy in place: copy it next to the live path, then rename it over.

    The live path is renamed aside first and removed afterwards (the safety copy keeps it). Where
    a directory cannot be renamed (EXDEV: an overlay filesystem's lower layer), it is removed
    instead, just before the restored copy is renamed into its place.
    """
    incoming = f"{live}.restore-{stamp}"
    outgoing = f"{live}.pre-restore-{stamp}"
    copy_tree(restored, incoming)
    try:
        if os.path.lexists(live):
            try:
                os.rename(live, outgoing)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                remove_path(live)
        os.rename(incoming, live)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_path(incoming)
        raise
    remove_path(outgoing)


def cmd_restore(cfg: dict, args: argparse.Namespace) -> int:
    if not args.confirm:
        raise BackupError("a restore replaces live data: pass --confirm")
    if not (args.database or args.path or args.redis):
        raise BackupError("nothing to restore: pass --database, --path P or --redis")
    if args.database and not cfg["mariadb"]["enabled"]:
        raise BackupError("--database: this host's configuration has no MariaDB source (mariadb.enabled is false)")
    if args.redis and not cfg["redis"]["enabled"]:
        raise BackupError("--redis: this host's configuration has no Redis source (redis.enabled is false)")
    repo = repositories(cfg, [args.repository])[0]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict = {"repository": repo.name, "ok": False, "restored": [], "errors": []}
    os.makedirs(cfg["work_dir"], mode=0o700, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="restore-", dir=cfg["work_dir"])
    safety = os.path.join(cfg["work_dir"], "safety-" + stamp)
    try:
        with run_lock(cfg["state_dir"]):
            snap = pick_snapshot(repo, args.snapshot, args.host)
            report.update({"snapshot": snap.get("id"), "short_id": snap.get("short_id"),
                           "snapshot_time": snap.get("time")})
            root, manifest = restore_snapshot(repo, snap, scratch)
            bad = [f["path"] for f in compare_files(root, manifest) if not f["ok"]]
            if bad:
                raise BackupError(f"the snapshot does not match its manifest ({', '.join(bad[:5])}): not restoring")
            wanted_paths = list(args.path or [])
            for path in wanted_paths:
                if path not in manifest.get("paths", []):
                    has = ", ".join(manifest.get("paths", [])) or "none"
                    raise BackupError(f"{path} is not in snapshot {snap.get('short_id')} (it has: {has})")
            if args.database and "mariadb" not in manifest:
                raise BackupError("snapshot {} has no database dump".format(snap.get("short_id")))
            if args.redis and "redis" not in manifest:
                raise BackupError("snapshot {} has no Redis snapshot".format(snap.get("short_id")))
            if args.redis:
                argv, env = redis_cli_base(cfg["redis"])
                aof = run_cmd([*argv, "CONFIG", "GET", "appendonly"], env=env, timeout=60)
                if aof.returncode != 0 or "yes" in text(aof.stdout).split():
                    raise BackupError("Redis has appendonly on (or did not answer): it would load its AOF, "
                                      "not the restored dump.rdb; not restoring Redis")
            # Safety copy of the current state first: kept in work_dir for the operator.
            os.makedirs(safety, mode=0o700)
            report["safety_dir"] = safety
            database = cfg["mariadb"].get("database", "")
            if args.database:
                dump_database(cfg["mariadb"]["defaults_file"], database, os.path.join(safety, database + ".sql"))
            for path in wanted_paths:
                if os.path.lexists(path):
                    copy_tree(path, os.path.join(safety, "files", path.lstrip("/")))
            if args.redis:
                redis_rdb(cfg["redis"], os.path.join(safety, "dump.rdb"))
            log(f"safety copy of the current state in {safety}")
            if args.database:
                try:
                    load_dump(cfg, os.path.join(root, manifest["mariadb"]["dump"]), database)
                except BackupError as exc:
                    log(f"restore of {database} failed, loading the safety dump back: {exc}")
                    load_dump(cfg, os.path.join(safety, database + ".sql"), database)
                    raise BackupError(f"{exc} (the safety dump was loaded back)") from None
                report["restored"].append("mariadb:" + database)
            for path in wanted_paths:
                replace_path(os.path.join(root, "files", path.lstrip("/")), path, stamp)
                report["restored"].append(path)
            if args.redis:
                redis = cfg["redis"]
                systemctl("stop", redis["service"])
                try:
                    live_rdb = os.path.join(redis["data_dir"], "dump.rdb")
                    st = os.stat(redis["data_dir"])
                    shutil.copyfile(os.path.join(root, manifest["redis"]["rdb"]), live_rdb + ".restore")
                    os.chown(live_rdb + ".restore", st.st_uid, st.st_gid)
                    os.chmod(live_rdb + ".restore", 0o660)
                    os.replace(live_rdb + ".restore", live_rdb)
                finally:
                    systemctl("start", redis["service"])
                report["restored"].append("redis")
            report["ok"] = True
    except (BackupError, OSError) as exc:
        report["errors"].append(str(exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0 if report["ok"] else 1


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clawbot-backup", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config")
    sub.add_parser("status")
    sub.add_parser("metrics")
    init = sub.add_parser("init")
    init.add_argument("--repository", action="append")
    init.add_argument("--dry-run", action="store_true")
    run = sub.add_parser("run")
    run.add_argument("--repository", action="append")
    check = sub.add_parser("check")
    check.add_argument("--repository", action="append")
    check.add_argument("--read-data-subset", default=None)
    snaps = sub.add_parser("snapshots")
    snaps.add_argument("--repository", required=True)
    snaps.add_argument("--host", default=None)
    fresh = sub.add_parser("freshness", help="age of the newest snapshot in each repository (read-only)")
    fresh.add_argument("--repository", action="append")
    fresh.add_argument("--max-age-hours", type=float, default=26.0)
    drill = sub.add_parser("drill")
    drill.add_argument("--repository", required=True)
    drill.add_argument("--snapshot", default="latest")
    drill.add_argument("--host", default=None, help="restore another host's snapshot (a drill host)")
    drill.add_argument("--with-database", action="store_true",
                       help="load a dump although this host's configuration has no MariaDB source")
    restore = sub.add_parser("restore")
    restore.add_argument("--repository", required=True)
    restore.add_argument("--snapshot", required=True)
    restore.add_argument("--host", default=None)
    restore.add_argument("--confirm", action="store_true")
    restore.add_argument("--database", action="store_true")
    restore.add_argument("--redis", action="store_true")
    restore.add_argument("--path", action="append")
    return parser.parse_args(argv)


COMMANDS = {
    "check-config": cmd_check_config,
    "init": cmd_init,
    "run": cmd_run,
    "check": cmd_check,
    "status": cmd_status,
    "snapshots": cmd_snapshots,
    "freshness": cmd_freshness,
    "metrics": cmd_metrics,
    "drill": cmd_drill,
    "restore": cmd_restore,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)
    try:
        cfg = load_config(args.config)
        if args.command in ("run", "check"):
            with run_lock(cfg["state_dir"]):
                return COMMANDS[args.command](cfg, args)
        return COMMANDS[args.command](cfg, args)
    except ConfigError as exc:
        sys.stderr.write(f"clawbot-backup: invalid configuration: {exc}\n")
        return 2
    except BackupError as exc:
        sys.stderr.write(f"clawbot-backup: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
