"""Effective state of the clawbot.stack.mysql role in the Molecule container.

Every check asks the running server (or tries what an account should or should not be able to
do); the variables are the scenario's inventory (../molecule.yml), read through testinfra.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
SLOW_LOG = "/var/log/mysql/slow/mysql-slow.log"
CA = "/etc/ssl/clawbot-mysql/ca.crt"
PROBE = "molecule_probe"
TEXT = "你好，世界 🦀"  # noqa: RUF001 - the full-width comma is part of the test text
DENIED = ("ERROR 1142", "ERROR 1044", "ERROR 1227", "command denied", "Access denied")


@pytest.fixture(scope="module")
def inventory(host) -> dict:
    return host.ansible.get_variables()


def mariadb(host, sql: str, user: str | None = None, password: str | None = None,
            database: str | None = None, tcp: bool = False, tls: bool = False):
    """Run ``sql`` with the mariadb client in the container (root over the socket by default)."""
    args = ["mariadb", "--batch", "--skip-column-names", "--default-character-set=utf8mb4"]
    if user:
        args += [f"--user={user}", f"--password={password}"]
    if tcp:
        args += ["--protocol=tcp", "--host=127.0.0.1"]
        args += [f"--ssl-ca={CA}", "--ssl-verify-server-cert"] if tls else ["--skip-ssl"]
    if database:
        args.append(f"--database={database}")
    args += ["--execute", sql]
    return host.run(" ".join(["%s"] * len(args)), *args)


def ok(host, sql: str, **kwargs) -> str:
    res = mariadb(host, sql, **kwargs)
    assert res.rc == 0, f"{sql!r} failed for {kwargs.get('user', 'root')}: {res.stderr}"
    return res.stdout


def refused(host, sql: str, **kwargs) -> str:
    res = mariadb(host, sql, **kwargs)
    assert res.rc != 0, f"{sql!r} was allowed for {kwargs.get('user', 'root')}"
    assert any(marker in res.stderr for marker in DENIED), res.stderr
    return res.stderr


# The role's default account names; the passwords are the inventory's (molecule.yml).
USERS = {"app": "clawbot", "migrator": "clawbot_migrator", "backup": "clawbot_backup",
         "exporter": "clawbot_exporter"}


def account(inventory: dict, job: str) -> dict:
    return {"user": USERS[job], "password": inventory[f"mysql_{job}_password"]}


@pytest.fixture(scope="module")
def probe(host, inventory) -> str:
    """A table the migrator creates and alters: what the other accounts are tried on."""
    migrator = account(inventory, "migrator")
    ok(host, f"DROP TABLE IF EXISTS {PROBE}; "
             f"CREATE TABLE {PROBE} (id INT PRIMARY KEY, note VARCHAR(64) NOT NULL); "
             f"ALTER TABLE {PROBE} ADD COLUMN created_at DATETIME(6) NULL; "
             f"CREATE INDEX ix_{PROBE}_created ON {PROBE} (created_at)",
       database="clawbot", **migrator)
    return PROBE


def global_variables(host) -> dict[str, str]:
    out = ok(host, "SHOW GLOBAL VARIABLES")
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


# -- the server ------------------------------------------------------------------------------
def test_service_running_and_enabled(host):
    service = host.service("mariadb")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_loopback_only(host):
    lines = [line for line in host.check_output("ss -Hltnp").splitlines() if "mariadbd" in line]
    assert [line.split()[3] for line in lines] == ["127.0.0.1:3306"], lines


def test_effective_settings(host):
    variables = global_variables(host)
    mem_kb = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    # 2 % of memtotal_mb (molecule.yml), in 128 MB steps, at least 128 MB.
    pool_mb = max(128, int(mem_kb // 1024 * 2 / 100 / 128) * 128)
    expected = {
        "bind_address": "127.0.0.1",
        "local_infile": "OFF",
        "skip_name_resolve": "ON",
        "slow_query_log": "ON",
        "slow_query_log_file": SLOW_LOG,
        "long_query_time": "1.000000",
        "max_connections": "100",
        "innodb_buffer_pool_size": str(pool_mb * 1024 * 1024),
        "require_secure_transport": "ON",
        "have_ssl": "YES",
        "character_set_server": "utf8mb4",
        "collation_server": "utf8mb4_unicode_ci",
    }
    assert {key: variables.get(key) for key in expected} == expected


def test_database_charset_and_collation(host):
    row = ok(host, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                   "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'clawbot'")
    assert row.split() == ["utf8mb4", "utf8mb4_unicode_ci"]


# -- what mariadb-secure-installation removes ----------------------------------------------------
def test_no_anonymous_users_no_remote_root_no_unauthenticated_accounts(host):
    accounts = ok(host, "SELECT CONCAT(User, '@', Host) FROM mysql.user "
                        "WHERE is_role = 'N' AND (User = '' OR User = 'root' "
                        "OR (authentication_string = '' AND plugin <> 'unix_socket'"
                        " AND User <> 'mariadb.sys'))").split()
    assert accounts == ["root@localhost"]


def test_no_test_database_and_no_grants_on_it(host):
    assert "test" not in ok(host, "SHOW DATABASES").split()
    assert ok(host, r"SELECT COUNT(*) FROM mysql.db WHERE Db IN ('test', 'test\\_%')").strip() == "0"


def test_root_only_by_unix_socket(host):
    create = ok(host, "SHOW CREATE USER 'root'@'localhost'").strip()
    assert create == "CREATE USER `root`@`localhost` IDENTIFIED VIA unix_socket"
    assert ok(host, "SELECT CURRENT_USER()").strip() == "root@localhost"
    # Another OS user cannot be root, with or without a password; nor can TCP.
    other = host.run("runuser -u nobody -- mariadb --user=root --execute 'SELECT 1'")
    assert other.rc != 0 and "Access denied" in other.stderr, other.stderr
    tcp = mariadb(host, "SELECT 1", user="root", password="", tcp=True, tls=True)
    assert tcp.rc != 0 and "Access denied" in tcp.stderr, tcp.stderr
    # The server itself refuses to give root a password (unix_socket only).
    assert "not applicable" in mariadb(host, "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('x')").stderr


# -- one account per job --------------------------------------------------------------------------
def test_app_account_rows_only(host, inventory, probe):
    app = account(inventory, "app")
    ok(host, f"INSERT INTO {probe} (id, note) VALUES (1, 'a'); "
             f"UPDATE {probe} SET note = 'b' WHERE id = 1", database="clawbot", **app)
    assert ok(host, f"SELECT note FROM {probe} WHERE id = 1", database="clawbot", **app).strip() == "b"
    ok(host, f"DELETE FROM {probe} WHERE id = 1", database="clawbot", **app)
    refused(host, "CREATE TABLE app_may_not (id INT)", database="clawbot", **app)
    refused(host, f"ALTER TABLE {probe} ADD COLUMN x INT", database="clawbot", **app)
    refused(host, f"DROP TABLE {probe}", database="clawbot", **app)
    refused(host, "SELECT User FROM mysql.user", **app)


def test_migrator_ddl_in_its_database_only(host, inventory, probe):
    migrator = account(inventory, "migrator")
    # probe: CREATE TABLE, ALTER TABLE, CREATE INDEX worked in clawbot. Elsewhere nothing:
    ok(host, "CREATE DATABASE IF NOT EXISTS molecule_other")
    try:
        refused(host, "CREATE TABLE molecule_other.t (id INT)", **migrator)
        refused(host, "CREATE DATABASE molecule_migrator_db", **migrator)
        refused(host, "SELECT User FROM mysql.user", **migrator)
    finally:
        ok(host, "DROP DATABASE molecule_other")


def test_utf8mb4_round_trip_as_the_app(host, inventory, probe):
    app = account(inventory, "app")
    ok(host, f"REPLACE INTO {probe} (id, note) VALUES (2, '{TEXT}')", database="clawbot", **app)
    assert ok(host, f"SELECT note FROM {probe} WHERE id = 2", database="clawbot", **app).strip() == TEXT
    stored = ok(host, f"SELECT HEX(note) FROM {probe} WHERE id = 2", database="clawbot", **app).strip()
    assert bytes.fromhex(stored).decode("utf-8") == TEXT  # four-byte emoji stored as such


def test_tcp_needs_tls(host, inventory):
    app = account(inventory, "app")
    plain = mariadb(host, "SELECT 1", tcp=True, **app)
    assert plain.rc != 0, "TCP without TLS was accepted"
    cipher = ok(host, "SHOW SESSION STATUS LIKE 'Ssl_version'", tcp=True, tls=True, **app)
    assert cipher.split()[1].startswith("TLSv1."), cipher
    assert ok(host, "SELECT CURRENT_USER()", tcp=True, tls=True, **app).strip() == "clawbot@127.0.0.1"


def test_backup_account_dumps_with_single_transaction(host, inventory, probe):
    backup = account(inventory, "backup")
    dump = host.run("mariadb-dump --single-transaction --user=%s --password=%s clawbot",
                    backup["user"], backup["password"])
    assert dump.rc == 0, dump.stderr
    assert f"CREATE TABLE `{probe}`" in dump.stdout
    refused(host, f"INSERT INTO {probe} (id, note) VALUES (9, 'x')", database="clawbot", **backup)


def test_exporter_reads_status_and_nothing_in_the_database(host, inventory, probe):
    exporter = account(inventory, "exporter")
    status = ok(host, "SHOW GLOBAL STATUS LIKE 'Uptime'", **exporter)
    assert status.split()[0] == "Uptime"
    # PROCESS: the exporter sees another account's running query, and InnoDB's status.
    app = account(inventory, "app")
    script = (
        f"mariadb --user={shlex.quote(app['user'])} --password={shlex.quote(app['password'])}"
        " --execute='SELECT SLEEP(5) AS molecule_sleeper' & "
        "for i in $(seq 40); do out=$(mariadb --batch"
        f" --user={shlex.quote(exporter['user'])} --password={shlex.quote(exporter['password'])}"
        " --execute='SHOW FULL PROCESSLIST'); case \"$out\" in *molecule_sleeper*) break;; esac;"
        " sleep 0.25; done; kill $! 2>/dev/null; echo \"$out\""
    )
    processes = host.check_output("bash -c %s", script)
    assert "molecule_sleeper" in processes and f"\t{app['user']}\t" in processes, processes
    assert "BUFFER POOL AND MEMORY" in ok(host, "SHOW ENGINE INNODB STATUS", **exporter)
    refused(host, "SHOW ENGINE INNODB STATUS", **app)
    ok(host, "SHOW SLAVE STATUS", **exporter)
    ok(host, "SELECT COUNT(*) FROM performance_schema.global_status", **exporter)
    refused(host, f"SELECT * FROM clawbot.{probe}", **exporter)
    refused(host, "SHOW TABLES", database="clawbot", **exporter)
    limit = ok(host, "SELECT max_user_connections FROM mysql.user WHERE User = 'clawbot_exporter'")
    assert limit.split() == ["3"]


# -- slow query log and its rotation ---------------------------------------------------------------
def test_slow_query_logged_and_rotated(host, inventory):
    app = account(inventory, "app")
    ok(host, "SELECT SLEEP(1.1) AS molecule_slow", **app)
    assert "SELECT SLEEP(1.1) AS molecule_slow" in host.file(SLOW_LOG).content_string
    conf = "/etc/logrotate.d/clawbot-mysql-slow"
    assert host.run("logrotate --debug %s", conf).rc == 0
    state = "/tmp/logrotate-molecule.state"
    try:
        host.check_output("logrotate --force --state %s %s", state, conf)
        assert "molecule_slow" in host.file(f"{SLOW_LOG}.1").content_string
        # postrotate made the server reopen the log: it starts the new file with its banner.
        current = host.file(SLOW_LOG)
        assert current.user == "mysql" and current.group == "adm"
        assert "started with:" in current.content_string
    finally:
        host.run("rm -f %s", state)


# -- what needs the role itself: verify.yml ---------------------------------------------------------
def test_role_refuses_a_broken_option_and_resecures(host):
    """Runs verify.yml with Molecule's inventory and Ansible configuration (see its header)."""
    env = dict(os.environ)
    cmd = ["ansible-playbook", "-i", env["MOLECULE_INVENTORY_FILE"], str(SCENARIO_DIR / "verify.yml")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = "\n".join(run.stdout.splitlines()[-60:])
    assert run.returncode == 0, f"verify.yml failed:\n{tail}\n{run.stderr[-2000:]}"
    assert "rescued=1" in run.stdout, tail
