"""Effective state of the clawbot.stack.common role in the Molecule container."""

from __future__ import annotations

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


def test_fail2ban_sshd_jail_active(host):
    assert host.service("fail2ban").is_running
    out = host.check_output("fail2ban-client status sshd")
    assert "Journal matches" in out or "Currently failed" in out
    assert host.check_output("fail2ban-client get sshd maxretry").strip() == "5"


def test_fail2ban_ban_reaches_nftables(host):
    with host.sudo():
        host.check_output("fail2ban-client set sshd banip 192.0.2.77")
        try:
            assert "192.0.2.77" in host.check_output("nft list ruleset")
        finally:
            host.run("fail2ban-client set sshd unbanip 192.0.2.77")


def test_chrony_running_enabled_and_not_stepping_clock(host):
    chrony = host.service("chrony")
    assert chrony.is_running
    assert chrony.is_enabled
    cmdline = host.check_output("cat /proc/$(pgrep -o chronyd)/cmdline | tr '\\0' ' '")
    assert " -x" in f" {cmdline}"
    sources = host.check_output("chronyc -n sources 2>&1 || true")
    assert "506" not in sources  # chronyd answers on its command socket


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


def test_journald_dropin_effective(host):
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=64M" in config
    assert host.service("systemd-journald").is_running
    usage = host.check_output("journalctl --disk-usage")
    assert "take up" in usage


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
