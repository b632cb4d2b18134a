"""Effective state of the firewall scenario (see ../converge.yml for the variables)."""

from __future__ import annotations

import re

import pytest

SSH_V4 = "192.0.2.0/24"
SSH_V6 = "2001:db8:1::/48"
APP_CIDR = "198.51.100.0/24"


def _rules(host) -> list[tuple[str, str, str]]:
    """(to, action, from) of every rule line in `ufw status verbose`, comments stripped."""
    out = host.check_output("ufw status verbose")
    rows = []
    for line in out.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        parts = re.split(r"\s{2,}", line)
        if len(parts) == 3 and parts[0] not in ("To", "--"):
            rows.append((parts[0], parts[1], parts[2]))
    return rows


@pytest.fixture(scope="module")
def status(host) -> str:
    return host.check_output("ufw status verbose")


@pytest.fixture(scope="module")
def rules(host) -> list[tuple[str, str, str]]:
    return _rules(host)


def test_active_with_default_policies(status: str) -> None:
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status
    assert "Logging: on (medium)" in status


def test_ipv6_enabled(host) -> None:
    assert host.file("/etc/default/ufw").contains("^IPV6=yes$")


def test_ssh_limited_from_allowed_networks_only(rules) -> None:
    # ufw adds " (v6)" only to rules whose addresses are both "anywhere".
    ssh = [r for r in rules if r[0].startswith("22/tcp")]
    assert sorted(ssh) == sorted(
        [
            ("22/tcp", "LIMIT IN", SSH_V4),
            ("22/tcp", "LIMIT IN", SSH_V6),
        ]
    )


@pytest.mark.parametrize("port", ["80", "443"])
def test_web_open_to_anywhere(rules, port: str) -> None:
    web = [r for r in rules if r[0].split()[0] == f"{port}/tcp"]
    assert sorted(web) == sorted(
        [
            (f"{port}/tcp", "ALLOW IN", "Anywhere"),
            (f"{port}/tcp (v6)", "ALLOW IN", "Anywhere (v6)"),
        ]
    )


def test_bot_port_only_from_allowed_network(rules) -> None:
    bot = sorted(r for r in rules if "18789" in r[0])
    # and from the monitoring host (test_metrics_ports_open_to_the_monitoring_host_only)
    assert bot == [("18789/tcp", "ALLOW IN", "10.20.0.9"), ("18789/tcp", "ALLOW IN", APP_CIDR)]


def test_extra_rules_present(rules) -> None:
    assert ("9100/tcp", "ALLOW IN", "10.10.0.0/16") in rules
    assert ("203.0.113.25 25/tcp", "DENY OUT", "Anywhere") in rules


def test_route_rules_present(rules) -> None:
    """firewall_route_rules, as the routed (FWD) rules ufw reports; IPv4 addresses, so no (v6) copy."""
    routed = [r for r in rules if r[1].endswith(" FWD")]
    assert sorted(routed) == sorted(
        [
            ("8080/tcp", "ALLOW FWD", "10.0.0.0/8"),
            ("172.30.0.53 53/udp", "DENY FWD", "Anywhere"),
        ]
    )


def test_route_rules_canonical(host) -> None:
    added = host.check_output("ufw show added").splitlines()
    assert "ufw route allow from 10.0.0.0/8 to any port 8080 proto tcp comment 'web containers'" in added
    assert "ufw route deny to 172.30.0.53 port 53 proto udp" in added


def test_redis_open_to_the_other_app_hosts_only(rules) -> None:
    """app-1 at its firewall_private_address (not its public ansible_host), app-2 at its ansible_host;
    the container is an app host too, but gets no rule for itself."""
    redis = [r for r in rules if r[0].startswith("6379")]
    assert sorted(redis) == sorted(
        [
            ("6379/tcp", "ALLOW IN", "10.20.0.5"),
            ("6379/tcp", "ALLOW IN", "10.20.0.6"),
        ]
    )


def test_redis_rules_name_the_app_hosts(host) -> None:
    added = host.check_output("ufw show added").splitlines()
    assert "ufw allow from 10.20.0.5 to any port 6379 proto tcp comment 'redis from app-1'" in added
    assert "ufw allow from 10.20.0.6 to any port 6379 proto tcp comment 'redis from app-2'" in added
    assert "203.0.113.50" not in "\n".join(added)


def test_metrics_ports_open_to_the_monitoring_host_only(host, rules) -> None:
    """The container is a Redis and a bot host: node exporter, Redis exporter and the bot's
    /metrics port open to mon-1's private address; nginx's and MariaDB's exporters stay closed."""
    metrics = sorted(r for r in rules if r[2] == "10.20.0.9")
    assert metrics == [
        ("18789/tcp", "ALLOW IN", "10.20.0.9"),
        ("9100/tcp", "ALLOW IN", "10.20.0.9"),
        ("9121/tcp", "ALLOW IN", "10.20.0.9"),
    ]
    assert not [r for r in rules if r[0].startswith(("9104", "9113"))]
    added = host.check_output("ufw show added").splitlines()
    assert "ufw allow from 10.20.0.9 to any port 9100 proto tcp comment 'node-exporter from mon-1'" in added
    assert "203.0.113.60" not in "\n".join(added)


def test_mariadb_closed_when_not_a_db_server(rules) -> None:
    assert not [r for r in rules if r[0].startswith("3306")]


def test_stray_rules_removed(host, rules) -> None:
    assert not [r for r in rules if "5000" in r[0] or "5001" in r[0]]
    assert not [r for r in rules if r[0].startswith("8080") and not r[1].endswith(" FWD")]
    added = host.check_output("ufw show added").splitlines()
    assert not [line for line in added if "8080" in line and "route" not in line]
    assert not [line for line in added if "5000" in line or "5001" in line]
    # The stray route rule that differed from a wanted one only by its comment is gone too.
    assert "ufw route allow from 10.0.0.0/8 to any port 8080 proto tcp" not in added
    assert "2001:db8:dead::/48" not in "\n".join(added)


def test_nothing_else(rules) -> None:
    assert len(rules) == 16, rules


def test_rules_loaded_in_kernel(host) -> None:
    v4 = host.check_output("iptables -S")
    v6 = host.check_output("ip6tables -S")
    assert "-P INPUT DROP" in v4
    assert "-A ufw-user-input -s 192.0.2.0/24 -p tcp -m tcp --dport 22" in v4
    assert "-A ufw-user-input -s 198.51.100.0/24 -p tcp -m tcp --dport 18789 -j ACCEPT" in v4
    assert "-P INPUT DROP" in v6
    assert "-A ufw6-user-input -s 2001:db8:1::/48 -p tcp -m tcp --dport 22" in v6
    assert "-A ufw-user-input -s 10.20.0.5/32 -p tcp -m tcp --dport 6379 -j ACCEPT" in v4
    assert "-A ufw-user-forward -s 10.0.0.0/8 -p tcp -m tcp --dport 8080 -j ACCEPT" in v4
    assert "--dport 8080" not in v4.replace("-A ufw-user-forward -s 10.0.0.0/8 -p tcp -m tcp --dport 8080", "")
    assert "--dport 8080" not in v6
    assert "--dport 3306" not in v4 + v6


def test_unit_enabled(host) -> None:
    assert host.service("ufw").is_enabled
