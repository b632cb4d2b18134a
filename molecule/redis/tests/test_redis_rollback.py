"""Two more runs of the role on the converged host (after test_redis.py, which they change).

1. Switching AOF on while Redis holds data: the role turns it on at runtime before the restart,
   so the AOF starts from the data (a restart with only "appendonly yes" in the file would start
   from an empty AOF and lose it).
2. A configuration Redis refuses (an unknown redis.conf directive and an unknown command in the
   bot's ACL rules): the play fails naming the failed start's journal lines, the previous files
   are back and Redis answers with them.

Both run converge.yml with extra vars against Molecule's inventory (group_vars of molecule.yml).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
VARS = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
ADMIN_PASSWORD = VARS["redis_admin_password"]
SECRETS = [VARS["redis_admin_password"], VARS["redis_clawbot_password"], VARS["redis_monitor_password"]]


def admin(host, *args: str) -> str:
    result = host.run(f"REDISCLI_AUTH={shlex.quote(ADMIN_PASSWORD)} timeout 10 redis-cli --no-auth-warning "
                      f"-h 127.0.0.1 -p 6379 --user admin {shlex.join(args)}")
    return (result.stdout + result.stderr).strip()


def converge(extra_vars: dict) -> subprocess.CompletedProcess[str]:
    """converge.yml with -v and --diff: the no_log checks below see everything a log would."""
    return subprocess.run(
        ["ansible-playbook", "-v", "--diff", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(SCENARIO_DIR / "converge.yml"), "-e", json.dumps(extra_vars)],
        capture_output=True, text=True, timeout=900, check=False)


def test_switching_aof_on_keeps_the_data(host):
    assert admin(host, "CONFIG", "GET", "appendonly").splitlines() == ["appendonly", "no"]
    assert admin(host, "SET", "molecule:aof", "before-aof") == "OK"

    run = converge({"redis_appendonly": True})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert not [s for s in SECRETS if s in run.stdout + run.stderr], "a password was logged"

    assert admin(host, "CONFIG", "GET", "appendonly").splitlines() == ["appendonly", "yes"]
    assert admin(host, "GET", "molecule:aof") == "before-aof"
    assert host.file("/var/lib/redis/appendonlydir/appendonly.aof.manifest").exists
    # From now on the data comes back from the AOF.
    with host.sudo():
        host.check_output("systemctl restart redis-server")
    assert "aof_enabled:1" in admin(host, "INFO", "persistence")
    assert admin(host, "GET", "molecule:aof") == "before-aof"


def test_refused_configuration_is_rolled_back_and_fails_the_play(host):
    before = admin(host, "CONFIG", "GET", "maxmemory")
    conf_before = host.file("/etc/redis/redis.conf").content_string
    with host.sudo():
        acl_before = host.check_output("sha256sum /etc/redis/users.acl")
    bad_rules = [*yaml.safe_load((SCENARIO_DIR.parents[1] / "roles/redis/defaults/main.yml").read_text())[
        "redis_clawbot_acl_rules"], "+no-such-command"]

    run = converge({"redis_appendonly": True, "redis_maxmemory": "64mb",
                    "redis_extra_config": {"no-such-directive": "yes"},
                    "redis_clawbot_acl_rules": bad_rules})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-4000:]
    assert not [s for s in SECRETS if s in out], "a password was logged"
    assert 'Redis: task "Service | Restart Redis with the changed configuration" failed' in out, out[-4000:]
    assert ("The new configuration was rolled back: restored /etc/redis/users.acl, /etc/redis/redis.conf "
            "and restarted Redis: it runs with the previous configuration again.") in out, out[-4000:]
    assert "journalctl -u redis-server -n 20, before the rollback:" in out
    assert ">>> 'no-such-directive yes'" in out and "Bad directive or wrong number of arguments" in out
    assert "rescued=1" in out

    # Redis answers with the previous configuration and data.
    assert admin(host, "PING") == "PONG"
    assert admin(host, "CONFIG", "GET", "maxmemory") == before
    assert admin(host, "GET", "molecule:aof") == "before-aof"
    assert host.file("/etc/redis/redis.conf").content_string == conf_before
    with host.sudo():
        assert host.check_output("sha256sum /etc/redis/users.acl") == acl_before
    assert host.service("redis-server").is_running
