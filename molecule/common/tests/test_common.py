"""Effective state of the clawbot.stack.common role in the Molecule container."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCENARIO_DIR = Path(__file__).resolve().parents[1]
TEST_CA = (SCENARIO_DIR / "files" / "clawbot-test-ca.crt").read_text().strip()
TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAc6a0oj56pClzlN0EVY9PwG3VWHrcNnR6Uxu6MnTdDZ molecule-test-key"


def _sshd_effective(host) -> dict[str, str]:
    out = host.check_output("/usr/sbin/sshd -T -C user=opsadmin,host=test,addr=192.0.2.1")
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key.lower(), value)
    return settings


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("permitrootlogin", "no"),
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("permitemptypasswords", "no"),
        ("x11forwarding", "no"),
        ("allowagentforwarding", "no"),
        ("allowtcpforwarding", "no"),
        ("maxauthtries", "3"),
        ("banner", "none"),
    ],
)
def test_sshd_effective_settings(host, keyword, expected):
    assert _sshd_effective(host)[keyword] == expected


def test_sshd_dropin_wins_over_later_dropins(host):
    """A later drop-in (like cloud-init's 50-cloud-init.conf) must not re-enable passwords."""
    later = "/etc/ssh/sshd_config.d/50-molecule-later.conf"
    with host.sudo():
        host.check_output(f"printf 'PasswordAuthentication yes\\n' > {later}")
        try:
            assert _sshd_effective(host)["passwordauthentication"] == "no"
        finally:
            host.check_output(f"rm -f {later}")


def test_sshd_running_and_enabled(host):
    ssh = host.service("ssh")
    assert ssh.is_running
    assert ssh.is_enabled


def _fail2ban_fields(out: str) -> dict[str, str]:
    """``fail2ban-client status`` tree (``|- Key:<TAB>value``) as {key: value}."""
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.lstrip("|`- ").partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _fail2ban_list(out: str) -> list[str]:
    """``fail2ban-client get sshd ignoreip|actions``: a header line, then one item per line."""
    return [line.lstrip("|`- ").strip() for line in out.splitlines()[1:] if line.strip()]


def test_fail2ban_sshd_jail_active(host):
    assert host.service("fail2ban").is_running
    overview = _fail2ban_fields(host.check_output("fail2ban-client status"))
    assert "sshd" in overview["Jail list"].split(", "), overview
    status = _fail2ban_fields(host.check_output("fail2ban-client status sshd"))
    assert status["Status for the jail"] == "sshd"
    # backend = systemd: the jail follows sshd's journal (Debian 12 has no /var/log/auth.log);
    # a file backend would list "File list:" here instead.
    assert status.get("Journal matches") == "_SYSTEMD_UNIT=sshd.service + _COMM=sshd", status
    assert status.get("Currently failed", "").isdigit(), status
    assert status.get("Currently banned", "").isdigit(), status


# As the running jail reports them (seconds for the times). converge.yml sets maxretry and findtime
# to values that differ from fail2ban's own defaults (5, 10m), the role default bantime 1h
# differs from fail2ban's 10m: a jail without the role's settings fails here.
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("get sshd maxretry", "4"),
        ("get sshd findtime", "900"),
        ("get sshd bantime", "3600"),
        ("get sshd action nftables-multiport port", "22"),
    ],
)
def test_fail2ban_sshd_jail_settings(host, command, expected):
    assert host.check_output(f"fail2ban-client {command}").strip() == expected


def test_fail2ban_sshd_jail_ignoreip_and_action(host):
    ignored = _fail2ban_list(host.check_output("fail2ban-client get sshd ignoreip"))
    assert ignored == ["127.0.0.0/8", "::1"]  # 127.0.0.1/8 as fail2ban normalises it
    actions = _fail2ban_list(host.check_output("fail2ban-client get sshd actions"))
    assert actions == ["nftables-multiport"]


def test_fail2ban_ban_reaches_nftables(host):
    with host.sudo():
        host.check_output("fail2ban-client set sshd banip 192.0.2.77")
        try:
            assert "192.0.2.77" in host.check_output("nft list ruleset")
        finally:
            host.run("fail2ban-client set sshd unbanip 192.0.2.77")


def _main_pid(host, unit: str) -> str:
    pid = host.check_output(f"systemctl show --property=MainPID --value {unit}").strip()
    assert pid.isdigit() and pid != "0", f"{unit} has no main process"
    return pid


def test_chrony_running_enabled_and_not_stepping_clock(host):
    chrony = host.service("chrony")
    assert chrony.is_running
    assert chrony.is_enabled
    pid = _main_pid(host, "chrony")
    # DAEMON_OPTS = common_chrony_daemon_options of converge.yml; -x: never set the clock
    # (the container has no CAP_SYS_TIME).
    argv = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/cmdline").splitlines()
    assert argv == ["/usr/sbin/chronyd", "-F", "1", "-x"]
    # What the running chronyd made of -x and -F 1 (it logs both when it starts).
    started = host.check_output(f"journalctl --no-pager -o cat _PID={pid}").splitlines()
    assert "Disabled control of system clock" in started, started
    assert "Loaded seccomp filter (level 1)" in started, started


def test_chrony_sources_are_the_configured_servers(host):
    """chronyd's sources as chronyc reports them: the converge.yml server and nothing else.

    There is no DNS/NTP reachability in the container, so the name stays unresolved: -a lists
    such sources too, -N shows the name from the configuration, -c prints CSV. A failed chronyc
    (e.g. "506 Cannot talk to daemon") fails check_output.
    """
    rows = [line.split(",") for line in host.check_output("chronyc -c -N sources -a").splitlines()]
    assert [(row[0], row[2]) for row in rows] == [("^", "ntp.example.invalid")], rows


def test_timezone_effective(host):
    assert host.file("/etc/localtime").linked_to.endswith("zoneinfo/Atlantic/Reykjavik")
    assert host.check_output("date +%Z").strip() == "GMT"


def test_unattended_upgrades_security_only_no_reboot(host):
    dump = host.check_output("apt-config dump")
    patterns = [
        line.split('"')[1] for line in dump.splitlines() if line.startswith("Unattended-Upgrade::Origins-Pattern::")
    ]
    assert patterns
    assert all("security" in p.lower() for p in patterns), patterns
    assert 'Unattended-Upgrade::Allowed-Origins:: "' not in dump
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in dump
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    # unattended-upgrades itself accepts the configuration
    with host.sudo():
        run = host.run("unattended-upgrade --dry-run --debug 2>&1 | head -n 40")
    assert "Allowed origins are:" in run.stdout
    assert "label=Debian," not in run.stdout.split("Allowed origins are:")[1].splitlines()[0]


# MESSAGE_ID of journald's "System Journal (...) is 8.0M, max 64.0M, 55.9M free." (systemd's
# SD_MESSAGE_JOURNAL_USAGE), logged with the limits in effect whenever journald opens a journal.
JOURNAL_USAGE_MESSAGE_ID = "ec387f577b844b8fa948f33cad9a75e6"


def test_journald_running_with_configured_limits(host):
    """The limits of the running journald, as it reports them itself (not the config files).

    journald clamps SystemMaxUse= to at least 2 x SystemMaxFileSize=; converge.yml keeps the
    file size small enough that the configured 64M is what is in effect.
    """
    assert host.service("systemd-journald").is_running
    pid = _main_pid(host, "systemd-journald")
    with host.sudo():
        out = host.check_output(
            f"journalctl --no-pager -o json _PID={pid} MESSAGE_ID={JOURNAL_USAGE_MESSAGE_ID}"
        )
    reports = [json.loads(line) for line in out.splitlines()]
    system = [r for r in reports if r.get("JOURNAL_NAME") == "System Journal"]
    messages = [r.get("MESSAGE") for r in reports]
    assert system, f"journald (pid {pid}) has not reported its system journal: {messages}"
    usage = system[-1]
    assert usage["JOURNAL_PATH"].startswith("/var/log/journal/"), usage  # Storage=persistent
    assert int(usage["MAX_USE"]) == 64 * 1024**2, usage["MESSAGE"]  # SystemMaxUse=64M
    assert int(usage["DISK_KEEP_FREE"]) == 1024**3, usage["MESSAGE"]  # SystemKeepFree=1G


def test_logrotate_config_parses_and_rotates(host):
    with host.sudo():
        assert host.run("logrotate --debug /etc/logrotate.d/clawbot").rc == 0
        host.check_output("install -d -m 0755 /var/log/clawbot && echo hello > /var/log/clawbot/molecule.log")
        try:
            host.check_output("logrotate --force --state /tmp/logrotate-molecule.state /etc/logrotate.d/clawbot")
            assert host.file("/var/log/clawbot/molecule.log.1").exists
        finally:
            host.check_output("rm -rf /var/log/clawbot /tmp/logrotate-molecule.state")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("net.ipv4.conf.all.accept_redirects", "0"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.all.log_martians", "1"),
        ("net.ipv4.tcp_syncookies", "1"),
    ],
)
def test_sysctl_effective_and_persistent(host, key, value):
    assert host.check_output(f"sysctl -n {key}").strip() == value
    persisted = host.file("/etc/sysctl.d/60-clawbot-common.conf").content_string.splitlines()
    assert f"{key}={value}" in [line.replace(" ", "") for line in persisted]


def test_admin_user_with_key_and_sudo(host):
    user = host.user("opsadmin")
    assert user.exists
    assert user.shell == "/bin/bash"
    assert "adm" in user.groups
    keys = host.file(f"{user.home}/.ssh/authorized_keys")
    assert keys.user == "opsadmin"
    assert keys.mode == 0o600
    assert keys.content_string.strip() == TEST_KEY
    with host.sudo():
        assert "(ALL : ALL) NOPASSWD: ALL" in host.check_output("sudo -l -U opsadmin")
    assert host.run("sudo -u opsadmin sudo -n true").rc == 0


def test_absent_admin_user(host):
    assert not host.user("formeradmin").exists
    assert not host.file("/etc/sudoers.d/clawbot-formeradmin").exists


def test_extra_ca_trusted(host):
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
    assert TEST_CA in bundle
    with host.sudo():
        verify = host.run(
            "openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt "
            "/usr/local/share/ca-certificates/clawbot-test-ca.crt"
        )
    assert verify.rc == 0, verify.stderr
