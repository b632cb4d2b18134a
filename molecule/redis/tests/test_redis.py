"""Effective state of the clawbot.stack.redis role: the running service, asked over its sockets.

The role variables are the inventory group_vars of ../molecule.yml (unix socket and TLS on,
maxmemory 10 %, policy allkeys-lfu). The default ACL rules are the role's defaults.
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest
import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
ROLE_DEFAULTS = yaml.safe_load((SCENARIO_DIR.parents[1] / "roles/redis/defaults/main.yml").read_text())
VARS = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
PASSWORDS = {
    "admin": VARS["redis_admin_password"],
    "clawbot": VARS["redis_clawbot_password"],
    "monitor": VARS["redis_monitor_password"],
}
SOCKET = ROLE_DEFAULTS["redis_unixsocket_path"]
# Client certificate and key (one file) from prepare.yml; the CA is the one the role deployed.
TLS_CLIENT = "--tls --cacert /etc/redis/tls/ca.crt --cert /root/tls-client.pem --key /root/tls-client.pem"


def cli(host, *args: str, user: str | None = None, conn: str = "-h 127.0.0.1 -p 6379", stdin: str | None = None,
        json_out: bool = False) -> str:
    """redis-cli in the container (password through REDISCLI_AUTH, never on the command line).

    redis-cli exits 0 on error replies too: callers look at the reply. A command that the ACL
    should have refused but that blocks (SUBSCRIBE) ends after 10 s without a NOPERM reply.
    """
    env = f"REDISCLI_AUTH={shlex.quote(PASSWORDS[user])} " if user else ""
    auth = f"--user {user} " if user else ""
    fmt = "--json " if json_out else ""
    cmd = f"{env}timeout 10 redis-cli --no-auth-warning {fmt}{conn} {auth}{shlex.join(args)}"
    if stdin is not None:
        cmd = f"printf %s {shlex.quote(stdin)} | {env}timeout 10 redis-cli --no-auth-warning {conn} {auth}"
    result = host.run(cmd)
    return (result.stdout + result.stderr).strip()


def admin(host, *args: str) -> str:
    return cli(host, *args, user="admin")


# ------------------------------------------------------------------------------- users and ACL


@pytest.mark.parametrize("conn", ["-h 127.0.0.1 -p 6379", f"-s {SOCKET}"])
def test_unauthenticated_commands_are_refused(host, conn):
    assert cli(host, "PING", conn=conn).startswith("NOAUTH")
    assert cli(host, "GET", "clawbot:seen:x", conn=conn).startswith("NOAUTH")


def test_default_user_is_off_and_wrong_passwords_fail(host):
    users = {line.split()[1]: line for line in admin(host, "ACL", "LIST").splitlines()}
    assert sorted(users) == ["admin", "clawbot", "default", "monitor"]
    assert users["default"].split()[2] == "off"
    assert "nopass" not in users["default"]
    assert cli(host, "AUTH", "default", "anything").startswith("WRONGPASS")
    assert cli(host, "AUTH", "clawbot", "not-the-password").startswith("WRONGPASS")


def test_clawbot_runs_every_command_bot_app_sends(host):
    """What RedisStore sends, on keys of its three patterns (see the role defaults)."""
    assert cli(host, "PING", user="clawbot") == "PONG"
    # mark_seen: SET key 1 NX EX ttl (a second SET NX is refused with nil)
    seen = f"clawbot:seen:im:feishu:event:{uuid.uuid4()}"
    assert cli(host, "SET", seen, "1", "NX", "EX", "60", user="clawbot") == "OK"
    assert cli(host, "SET", seen, "1", "NX", "EX", "60", user="clawbot") == ""
    assert cli(host, "GET", seen, user="clawbot") == "1"
    # incr_window: MULTI, INCRBY (redis-py's incr), EXPIRE, EXEC (a transaction pipeline); DISCARD
    window = f"clawbot:rl:tenant:{uuid.uuid4().hex}:100"
    out = cli(host, user="clawbot", stdin=f"MULTI\nINCRBY {window} 1\nEXPIRE {window} 61\nEXEC\n")
    assert out.splitlines() == ["OK", "QUEUED", "QUEUED", "1", "1"], out
    out = cli(host, user="clawbot", stdin=f"MULTI\nINCR {window}\nDISCARD\n")
    assert out.splitlines() == ["OK", "QUEUED", "OK"], out
    assert cli(host, "INCR", window, user="clawbot") == "2"
    # append_turns: MULTI, RPUSH, LTRIM, EXPIRE, EXEC; get_turns: LRANGE
    turns = f"clawbot:turns:t1:{uuid.uuid4().hex}"
    out = cli(host, user="clawbot",
              stdin=f"MULTI\nRPUSH {turns} a b c\nLTRIM {turns} -2 -1\nEXPIRE {turns} 1800\nEXEC\n")
    assert out.splitlines() == ["OK", "QUEUED", "QUEUED", "QUEUED", "3", "OK", "1"], out
    assert cli(host, "LRANGE", turns, "0", "-1", user="clawbot").splitlines() == ["b", "c"]
    assert cli(host, "EXPIRE", turns, "1800", user="clawbot") == "1"


@pytest.mark.parametrize(
    "command",
    [
        ["FLUSHALL"],
        ["FLUSHDB"],
        ["CONFIG", "SET", "maxmemory", "1"],
        ["CONFIG", "GET", "maxmemory"],
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["DEBUG", "SLEEP", "0"],
        ["SHUTDOWN", "NOSAVE"],
        ["MODULE", "LIST"],
        ["ACL", "LIST"],
        ["EVAL", "return redis.call('get', KEYS[1])", "1", "clawbot:seen:x"],
        ["SELECT", "1"],
        ["DEL", "clawbot:seen:x"],
        ["SUBSCRIBE", "clawbot:chan"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_clawbot_is_refused_other_commands(host, command):
    out = cli(host, *command, user="clawbot")
    if command[0] == "DEBUG":
        # enable-debug-command no refuses DEBUG to everyone before the ACL is asked; ACL DRYRUN
        # shows that the ACL refuses it as well.
        assert out.startswith("ERR") and "not allowed" in out, out
        assert "no permissions" in admin(host, "ACL", "DRYRUN", "clawbot", *command)
    else:
        assert out.startswith("NOPERM"), out


@pytest.mark.parametrize(
    "command",
    [
        ["SET", "other:key", "1"],
        ["GET", "session:1"],
        ["INCR", "clawbot:other:1"],
        ["SET", "clawbot:seen", "1"],
        ["RPUSH", "clawbotturns:1", "x"],
    ],
    ids=lambda c: c[1],
)
def test_clawbot_is_refused_keys_outside_its_patterns(host, command):
    out = cli(host, *command, user="clawbot")
    assert out.startswith("NOPERM") and "keys" in out, out


def test_monitor_reads_server_state_only(host):
    assert cli(host, "PING", user="monitor") == "PONG"
    assert "redis_version:7." in cli(host, "INFO", "server", user="monitor")
    assert cli(host, "CONFIG", "GET", "maxmemory", user="monitor").splitlines()[0] == "maxmemory"
    admin(host, "SET", "clawbot:seen:monitor-probe", "secret", "EX", "60")
    for command in (["GET", "clawbot:seen:monitor-probe"], ["SET", "x", "1"], ["KEYS", "*"], ["SCAN", "0"],
                    ["CONFIG", "SET", "maxmemory", "1"], ["SLOWLOG", "GET"], ["CLIENT", "KILL", "ID", "1"],
                    ["FLUSHALL"], ["ACL", "LIST"]):
        assert cli(host, *command, user="monitor").startswith("NOPERM"), command


def test_prometheus_redis_exporter_scrapes_as_monitor(host):
    """The Debian exporter, run once as the monitoring user: a full scrape, and in the ACL log
    only the one command the role leaves out on purpose (SLOWLOG GET: arguments of slow
    commands, i.e. keys and session text)."""
    admin(host, "ACL", "LOG", "RESET")
    script = (
        f"REDIS_PASSWORD={shlex.quote(PASSWORDS['monitor'])} prometheus-redis-exporter -redis.user monitor "
        "-redis.addr redis://127.0.0.1:6379 -web.listen-address 127.0.0.1:19121 >/tmp/exporter.log 2>&1 & "
        "pid=$!; for i in $(seq 1 50); do curl -sf http://127.0.0.1:19121/metrics >/tmp/metrics && break; "
        "sleep 0.2; done; kill $pid; cat /tmp/metrics"
    )
    metrics = host.check_output(script).splitlines()
    assert "redis_up 1" in metrics
    assert 'redis_exporter_last_scrape_error{err=""} 0' in metrics
    assert any(m.startswith("redis_config_maxmemory ") and m.split()[1] != "0" for m in metrics)
    log = json.loads(cli(host, "ACL", "LOG", user="admin", json_out=True))
    denied = {(entry["username"], entry["object"]) for entry in log}
    assert denied <= {("monitor", "slowlog|get")}, log


# ---------------------------------------------------------------------------- configuration


def _config(host, name: str) -> str:
    out = admin(host, "CONFIG", "GET", name).splitlines()
    assert out[0] == name, out
    return out[1] if len(out) > 1 else ""


def test_maxmemory_is_the_configured_share_of_host_memory(host):
    memtotal_kb = int(host.check_output("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    expected_mb = int((memtotal_kb // 1024) * 10 / 100)  # redis_maxmemory "10%" of memtotal_mb
    assert int(_config(host, "maxmemory")) == expected_mb * 1024 * 1024
    assert _config(host, "maxmemory-policy") == VARS["redis_maxmemory_policy"]


def test_persistence_settings(host):
    assert _config(host, "save") == "900 1 60 1000"
    assert _config(host, "dir") == "/var/lib/redis"
    assert _config(host, "appendfsync") == "everysec"
    assert _config(host, "protected-mode") == "yes"
    data_dir = host.file("/var/lib/redis")
    assert (data_dir.user, data_dir.group, data_dir.mode) == ("redis", "redis", 0o750)


def test_key_survives_a_restart(host):
    assert admin(host, "SET", "molecule:persist", "kept") == "OK"
    with host.sudo():
        host.check_output("systemctl restart redis-server")
    assert admin(host, "GET", "molecule:persist") == "kept"


def test_listens_on_loopback_only(host):
    lines = host.check_output("ss -Hltnp").splitlines()
    redis = sorted(line.split()[3] for line in lines if '"redis-server"' in line)
    # -::1 is optional in the bind list: the container has no IPv6 loopback.
    assert set(redis) <= {"127.0.0.1:6379", "127.0.0.1:6380", "[::1]:6379", "[::1]:6380"}, redis
    assert {"127.0.0.1:6379", "127.0.0.1:6380"} <= set(redis), redis


def test_unix_socket_mode_group_and_access(host):
    sock = host.file(SOCKET)
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("redis", "clawbot", 0o770)
    directory = host.file(str(Path(SOCKET).parent))
    assert (directory.user, directory.group, directory.mode) == ("redis", "clawbot", 0o2750)
    env = f"REDISCLI_AUTH={shlex.quote(PASSWORDS['clawbot'])}"
    member = host.run(f"{env} setpriv --reuid=nobody --regid=clawbot --clear-groups "
                      f"redis-cli --no-auth-warning -s {SOCKET} --user clawbot PING")
    assert member.stdout.strip() == "PONG", member.stderr
    outsider = host.run(f"{env} setpriv --reuid=nobody --regid=nogroup --clear-groups "
                        f"redis-cli --no-auth-warning -s {SOCKET} --user clawbot PING")
    assert "Permission denied" in outsider.stdout + outsider.stderr


def test_tls_port_with_client_certificate(host):
    assert cli(host, "PING", user="clawbot", conn=f"-h 127.0.0.1 -p 6380 {TLS_CLIENT}") == "PONG"
    # tls-auth-clients yes: no client certificate, no session
    no_cert = cli(host, "PING", user="clawbot", conn="-h 127.0.0.1 -p 6380 --tls --cacert /etc/redis/tls/ca.crt")
    assert "PONG" not in no_cert
    # and plain text on the TLS port gets nowhere
    plain = cli(host, "PING", user="clawbot", conn="-h 127.0.0.1 -p 6380")
    assert "PONG" not in plain and plain, plain


def test_files_and_secrets_on_disk(host):
    acl = host.file("/etc/redis/users.acl")
    assert (acl.user, acl.group, acl.mode) == ("root", "redis", 0o640)
    with host.sudo():
        content = host.check_output("cat /etc/redis/users.acl")
    assert all(password not in content for password in PASSWORDS.values())
    assert "user default off" in content
    key = host.file("/etc/redis/tls/redis.key")
    assert (key.user, key.group, key.mode) == ("root", "redis", 0o640)
    conf = host.file("/etc/redis/redis.conf")
    assert (conf.user, conf.group, conf.mode) == ("redis", "redis", 0o640)
    assert _config(host, "requirepass") == ""  # ACL users only


def test_redis_cannot_rewrite_its_configuration(host):
    """The unit drop-in makes /etc/redis read-only for the service: the files stay the role's."""
    assert "Read-only file system" in admin(host, "CONFIG", "REWRITE")
    assert admin(host, "ACL", "SAVE").startswith("ERR")


def test_service_enabled_running_and_logging_to_the_journal(host):
    service = host.service("redis-server")
    assert service.is_running
    assert service.is_enabled
    with host.sudo():
        journal = host.check_output("journalctl -u redis-server --no-pager -o cat")
    assert "Ready to accept connections" in journal
