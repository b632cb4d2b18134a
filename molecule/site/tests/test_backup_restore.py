"""Backups on the converged stack: three real restic repositories (a local directory, S3 on moto's
server, SFTP to a second sshd), the restore drill and a real restore with restore.yml.

The tests run in file order and build on each other (a backup, a drill, an outage, a restore);
the last one leaves the S3 server running and the backup unit not failed.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import https_chat, run_playbook

REPOS = ("local", "s3", "offsite")
S3_OUTAGE_RULE = "-i lo -p tcp --dport 19000 -j REJECT --reject-with tcp-reset"
TEXTFILE = "/var/lib/prometheus/node-exporter/clawbot_backup.prom"
STAGING = "/var/backups/clawbot/staging"


def _snapshots(host, repo: str) -> list[dict]:
    return json.loads(host.check_output(f"clawbot-backup snapshots --repository {repo}"))


def _newest(host, repo: str) -> str:
    snaps = _snapshots(host, repo)
    assert snaps, f"repository {repo} has no snapshot"
    return max(snaps, key=lambda s: s["time"])["id"]


def _metrics(host) -> dict[tuple[str, str], float]:
    """The textfile the node exporter serves, as {(metric, repository): value}."""
    out = {}
    for line in host.file(TEXTFILE).content_string.splitlines():
        m = re.fullmatch(r'(clawbot_backup_\w+)\{repository="([^"]+)"\} (\S+)', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def _run_backup(host):
    return host.run("systemctl start clawbot-backup.service")


def _sql(host, query: str) -> str:
    return host.check_output("mariadb -N -B clawbot -e %s", query).strip()


def test_timers_are_scheduled_daily_and_weekly(host) -> None:
    for timer, calendar in (("clawbot-backup.timer", "*-*-* 03:00:00"),
                            ("clawbot-backup-check.timer", "Sun *-*-* 05:00:00")):
        t = host.service(timer)
        assert t.is_enabled and t.is_running, timer
        show = host.check_output(f"systemctl show {timer} -p TimersCalendar -p Persistent -p RandomizedDelayUSec")
        assert "Persistent=yes" in show
        assert "RandomizedDelayUSec=30min" in show
        assert host.check_output(f"systemctl cat {timer}").count(f"OnCalendar={calendar}") == 1


def test_the_deploy_made_a_snapshot_in_all_three_repositories(host) -> None:
    for repo in REPOS:
        snaps = _snapshots(host, repo)
        assert len(snaps) >= 1, repo
        assert all("clawbot" in s["tags"] for s in snaps)
    metrics = _metrics(host)
    for repo in REPOS:
        assert metrics[("clawbot_backup_last_run_success", repo)] == 1
        assert time.time() - metrics[("clawbot_backup_last_success_timestamp_seconds", repo)] < 86400
        assert metrics[("clawbot_backup_snapshots", repo)] >= 1
        assert metrics[("clawbot_backup_repository_size_bytes", repo)] > 0
    # The SFTP repository really is on the second sshd's side, S3 on moto.
    assert host.file("/srv/offsite/restic/clawbot/config").exists
    assert host.file("/srv/offsite/restic/clawbot").user == "offsite"


def test_node_exporter_serves_the_backup_metrics(host) -> None:
    page = host.check_output("curl -s http://127.0.0.1:9100/metrics")
    for repo in REPOS:
        assert f'clawbot_backup_last_run_success{{repository="{repo}"}} 1' in page


def test_the_weekly_read_check_runs_in_its_sandbox(host) -> None:
    """clawbot-backup-check.service (restic check --read-data-subset 10%) as the timer starts it."""
    metric = "clawbot_backup_check_last_success_timestamp_seconds"
    before = {repo: _metrics(host)[(metric, repo)] for repo in REPOS}
    result = host.run("systemctl start clawbot-backup-check.service")
    assert result.rc == 0, host.check_output("journalctl -u clawbot-backup-check.service -o cat -n 20 --no-pager")
    journal = host.check_output("journalctl -u clawbot-backup-check.service -o cat -n 20 --no-pager")
    for repo in REPOS:
        assert f"repository {repo}: check --read-data-subset 10% OK" in journal
        assert _metrics(host)[(metric, repo)] > before[repo]


def test_secrets_stay_in_private_files(host) -> None:
    for path in ("/etc/clawbot-backup/config.json", "/etc/clawbot-backup/mariadb.cnf",
                 "/etc/clawbot-backup/redis.password", "/etc/clawbot-backup/ssh/id_offsite",
                 *(f"/etc/clawbot-backup/repositories/{r}.password" for r in REPOS),
                 "/etc/clawbot-backup/repositories/s3.env"):
        f = host.file(path)
        assert f.exists and f.user == "root" and f.mode == 0o600, path
    assert host.file("/etc/clawbot-backup").mode == 0o700
    units = host.check_output("systemctl cat clawbot-backup.service clawbot-backup-check.service")
    journal = host.check_output("journalctl -u clawbot-backup.service -o cat --no-pager")
    for secret in ("molecule-backup-local-password-1", "molecule-backup-s3-password-2",
                   "molecule-backup-offsite-password-3", "molecule-s3-secret-key",
                   "molecule-backup-password-1", "molecule-admin-password-0001"):
        assert secret not in units
        assert secret not in journal
        assert secret not in host.file(TEXTFILE).content_string


def test_the_manifest_describes_the_dump(host) -> None:
    """The newest local snapshot's manifest has every bot table with its row count at dump time."""
    host.check_output("rm -rf /tmp/manifest-check && mkdir -m 0700 /tmp/manifest-check")
    env = ("RESTIC_REPOSITORY=/var/backups/clawbot/restic "
           "RESTIC_PASSWORD_FILE=/etc/clawbot-backup/repositories/local.password")
    name = json.loads(host.file("/etc/clawbot-backup/config.json").content_string)["host"]
    host.check_output(f"{env} restic restore latest --host {name} --target /tmp/manifest-check "
                      f"--include {STAGING}/manifest.json")
    manifest = json.loads(host.file(f"/tmp/manifest-check{STAGING}/manifest.json").content_string)
    host.check_output("rm -rf /tmp/manifest-check")
    tables = manifest["mariadb"]["tables"]
    assert "conversation_log" in tables and "alembic_version" in tables
    assert tables["alembic_version"]["rows"] == 1
    assert manifest["versions"]["mariadb"].startswith("10.")
    assert manifest["versions"]["redis"].startswith("7.")
    assert manifest["redis"]["bytes"] > 0
    assert "/etc/clawbot" in manifest["paths"] and "/etc/nginx" in manifest["paths"]
    assert any(p.startswith("etc/clawbot/keys/") for p in manifest["files"])


def test_the_restore_drill_passes(host) -> None:
    rc, out = run_playbook("restore_drill.yml", "-e", "restore_drill_repository=offsite")
    assert rc == 0, out[-4000:]
    assert "Restore drill passed" in out
    assert re.search(r"OK +table conversation_log: rows \d+ restored / \d+ at backup, checksum same", out), out[-4000:]
    assert "OK      redis: redis-check-rdb: RDB looks OK" in out
    # Nothing of the drill is left: no scratch database, no scratch directory.
    assert "_drill_" not in host.check_output("mariadb -N -B -e 'SHOW DATABASES'")
    assert host.check_output("ls -A /var/backups/clawbot/work") == ""


def test_the_drill_detects_a_corrupted_dump(host) -> None:
    """A snapshot whose dump lost a row and changed a value, its manifest unchanged: the drill fails
    and names the table; the snapshot is forgotten afterwards."""
    env = ("RESTIC_REPOSITORY=/var/backups/clawbot/restic "
           "RESTIC_PASSWORD_FILE=/etc/clawbot-backup/repositories/local.password")
    name = json.loads(host.file("/etc/clawbot-backup/config.json").content_string)["host"]
    host.check_output(f"rm -rf /tmp/corrupt && mkdir -m 0700 /tmp/corrupt && {env} restic restore latest "
                      f"--host {name} --target /tmp/corrupt")
    dump = f"/tmp/corrupt{STAGING}/mariadb/clawbot.sql"
    # alembic_version holds one row: change the revision in it (MariaDB 10.11 writes the INSERT
    # and each row on lines of their own, older versions all on one line).
    host.check_output(f"sed -i \"/^INSERT INTO \\`alembic_version\\`/,/;\\$/ s/('/('x/\" {dump}")
    assert "('x" in host.check_output(f"grep -A1 '^INSERT INTO `alembic_version`' {dump}")
    host.check_output(f"rm -rf {STAGING} && mv /tmp/corrupt{STAGING} {STAGING} && "
                      f"{env} restic backup --quiet --host {name} --tag clawbot {STAGING}")
    host.check_output(f"rm -rf {STAGING} /tmp/corrupt")
    try:
        rc, out = run_playbook("restore_drill.yml", "-e", "restore_drill_repository=local")
        assert rc != 0, out[-4000:]
        assert "Restore drill FAILED" in out
        assert "table alembic_version" in out
        assert "DIFFERS table alembic_version" in out
        assert "file mariadb/clawbot.sql" in out
        assert "_drill_" not in host.check_output("mariadb -N -B -e 'SHOW DATABASES'")
    finally:
        host.check_output(f"{env} restic forget --quiet {_newest(host, 'local')}")


def test_with_the_s3_server_down_the_other_repositories_still_get_their_snapshot(host) -> None:
    before = {repo: _newest(host, repo) for repo in REPOS}
    # The outage: connections to the S3 port are refused (RST), as with the server down. moto keeps
    # its buckets in memory, so it is not stopped (tests/harness/fake-s3.yml).
    host.check_output(f"iptables -w -I INPUT 1 {S3_OUTAGE_RULE}")
    try:
        result = _run_backup(host)
        assert result.rc != 0, "the unit must fail when a repository failed"
        assert host.run("systemctl is-failed clawbot-backup.service").stdout.strip() == "failed"
        for repo in ("local", "offsite"):
            assert _newest(host, repo) != before[repo], repo
        metrics = _metrics(host)
        assert metrics[("clawbot_backup_last_run_success", "s3")] == 0
        assert metrics[("clawbot_backup_last_run_success", "local")] == 1
        assert metrics[("clawbot_backup_last_run_success", "offsite")] == 1
        assert (metrics[("clawbot_backup_last_success_timestamp_seconds", "s3")]
                < metrics[("clawbot_backup_last_success_timestamp_seconds", "local")])
        journal = host.check_output("journalctl -u clawbot-backup.service -o cat -n 30 --no-pager")
        assert "repository s3: FAILED" in journal
        assert "1 of 3 repositories failed: s3" in journal
    finally:
        host.check_output(f"iptables -w -D INPUT {S3_OUTAGE_RULE}")
        host.run("systemctl reset-failed clawbot-backup.service")
    # Back up: the next run succeeds everywhere again, into the same S3 repository.
    assert _run_backup(host).rc == 0
    assert _newest(host, "s3") != before["s3"]
    assert _metrics(host)[("clawbot_backup_last_run_success", "s3")] == 1


@pytest.fixture()
def api_row(host, api_token) -> str:
    """A conversation row made through the real API, then backed up."""
    status, _, _ = https_chat(host, api_token, {"message": f"backup-me-{time.time_ns()}"})
    assert status == 200
    for _ in range(20):
        row = _sql(host, "SELECT MAX(id) FROM conversation_log WHERE user_id = 'verify'")  # a UUID
        if row not in ("", "NULL"):
            break
        time.sleep(0.5)
    assert row not in ("", "NULL")
    assert re.fullmatch(r"[0-9a-f-]{36}", row), row
    assert _run_backup(host).rc == 0
    return row


def test_restore_needs_the_confirmation_and_changes_nothing_without_it(host) -> None:
    rows = _sql(host, "SELECT COUNT(*) FROM conversation_log")
    rc, out = run_playbook("restore.yml", "-e", "restore_repository=local", "-e", "restore_snapshot=latest")
    assert rc != 0
    assert "restore_confirm=yes" in out and "Nothing was changed" in out
    assert host.service("clawbot-app").is_running
    assert _sql(host, "SELECT COUNT(*) FROM conversation_log") == rows


def test_restore_brings_back_a_deleted_conversation_row(host, api_token, api_row) -> None:
    original = _sql(host, f"SELECT HEX(content) FROM conversation_log WHERE id = '{api_row}'")
    _sql(host, f"DELETE FROM conversation_log WHERE id = '{api_row}'")
    assert _sql(host, f"SELECT COUNT(*) FROM conversation_log WHERE id = '{api_row}'") == "0"
    config_before = host.file("/etc/clawbot/config.yaml").content_string
    host.check_output("echo '# changed after the backup' >> /etc/clawbot/config.yaml")

    rc, out = run_playbook("restore.yml", "-e", "restore_repository=offsite", "-e", "restore_snapshot=latest",
                        "-e", "restore_confirm=yes")
    assert rc == 0, out[-4000:]
    assert "restored mariadb:clawbot, /etc/clawbot" in out
    # The row is back, byte for byte (still encrypted), and the config is the backed-up one.
    assert _sql(host, f"SELECT HEX(content) FROM conversation_log WHERE id = '{api_row}'") == original
    assert host.file("/etc/clawbot/config.yaml").content_string == config_before
    # The safety copy holds the state before the restore: the row deleted, the config changed.
    safety = host.check_output("ls -d /var/backups/clawbot/work/safety-* | tail -1")
    assert host.file(safety).mode == 0o700
    assert "# changed after the backup" in host.file(f"{safety}/files/etc/clawbot/config.yaml").content_string
    # The bot answers again after the health gate, and reads the restored rows with its keys.
    status, answer, _ = https_chat(host, api_token, {"message": "after the restore"})
    assert status == 200, answer
    host.check_output(f"rm -rf {safety}")
