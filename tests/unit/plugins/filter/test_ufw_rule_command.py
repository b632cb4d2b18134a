"""Unit tests for clawbot.stack.ufw_rule_command.

The expected strings were taken from `ufw show added` of ufw 0.36.2 (Debian 12) after adding
the same rules with the ufw CLI, so they pin the canonical form the firewall role relies on.
"""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.clawbot.stack.plugins.filter.ufw_rule_command import (
    FilterModule,
    ufw_rule_command,
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"rule": "limit", "port": 22, "proto": "tcp", "from": "10.1.2.3/8"},
            "limit from 10.0.0.0/8 to any port 22 proto tcp",
        ),
        (
            {"rule": "limit", "port": "22", "proto": "tcp", "from": "2001:db8:0:0::1/64"},
            "limit from 2001:db8::1/64 to any port 22 proto tcp",
        ),
        ({"rule": "limit", "port": 2222, "proto": "tcp", "from": "0.0.0.0/0"}, "limit 2222/tcp"),
        ({"rule": "limit", "port": 22, "proto": "tcp", "from": "::/0"}, "limit 22/tcp"),
        ({"rule": "allow", "port": 80, "proto": "tcp", "direction": "in"}, "allow 80/tcp"),
        ({"rule": "allow", "port": 80}, "allow 80"),
        (
            {"rule": "allow", "port": 18789, "proto": "tcp", "from": "192.0.2.0/24", "comment": "bot api"},
            "allow from 192.0.2.0/24 to any port 18789 proto tcp comment 'bot api'",
        ),
        (
            {"rule": "deny", "direction": "out", "to": "203.0.113.5", "port": 25, "proto": "tcp"},
            "deny out to 203.0.113.5 port 25 proto tcp",
        ),
        ({"rule": "allow", "direction": "out", "port": 53, "proto": "udp"}, "allow out 53/udp"),
        ({"rule": "reject", "from": "198.51.100.7"}, "reject from 198.51.100.7"),
        ({"rule": "allow", "port": "8000:8100", "proto": "tcp"}, "allow 8000:8100/tcp"),
        (
            {"rule": "allow", "from": "10.0.0.5/32", "to": "10.0.0.1", "port": 5432, "proto": "tcp"},
            "allow from 10.0.0.5 to 10.0.0.1 port 5432 proto tcp",
        ),
        ({"rule": "allow", "port": 8080, "proto": "tcp", "comment": "stray x"}, "allow 8080/tcp comment 'stray x'"),
        ({"rule": "deny"}, "deny to any"),
        ({"rule": "deny", "direction": "out"}, "deny out to any"),
        ({"rule": "allow", "proto": "gre"}, "allow to any proto gre"),
        (
            {"rule": "allow", "from": "2001:db8::1/128", "port": 443, "proto": "tcp"},
            "allow from 2001:db8::1 to any port 443 proto tcp",
        ),
        ({"rule": "allow", "port": "80,443", "proto": "tcp", "comment": None}, "allow 80,443/tcp"),
        # ufw keeps IPv6 host bits (only IPv4 networks are zeroed) and prints mapped IPv4 dotted
        (
            {"rule": "allow", "from": "2001:db8::1:0:0:5/64", "port": 443, "proto": "tcp"},
            "allow from 2001:db8::1:0:0:5/64 to any port 443 proto tcp",
        ),
        (
            {"rule": "allow", "from": "::ffff:10.0.0.1", "port": 1, "proto": "tcp"},
            "allow from ::ffff:10.0.0.1 to any port 1 proto tcp",
        ),
    ],
)
def test_canonical_form(rule: dict[str, Any], expected: str) -> None:
    assert ufw_rule_command(rule) == expected


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"rule": "permit", "port": 22}, "'permit'"),
        ({"port": 22}, "rule=None"),
        ({"rule": "allow", "port": 22, "direction": "sideways"}, "'sideways'"),
        ({"rule": "allow", "port": 22, "proto": "sctp"}, "'sctp'"),
        ({"rule": "allow", "port": 70000, "proto": "tcp"}, "70000"),
        ({"rule": "allow", "port": "ssh", "proto": "tcp"}, "'ssh'"),
        ({"rule": "allow", "port": True}, "True"),
        ({"rule": "allow", "port": "1000:2000"}, "need proto tcp or udp"),
        ({"rule": "allow", "port": 22, "proto": "gre"}, "'gre'"),
        ({"rule": "allow", "from": "10.0.0.300"}, "'10.0.0.300'"),
        ({"rule": "allow", "to": "example.org"}, "'example.org'"),
        ({"rule": "allow", "from": "10.0.0.1", "to": "2001:db8::1"}, "mix IPv4 and IPv6"),
        ({"rule": "allow", "port": 22, "comment": "it's"}, "single quote"),
        ({"rule": "allow", "port": 22, "src": "10.0.0.1"}, "'src'"),
        ("allow 22", "expected a dict"),
    ],
)
def test_bad_input_names_value(rule: Any, needle: str) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        ufw_rule_command(rule)
    assert needle in str(err.value)


def test_filter_module_exports() -> None:
    assert FilterModule().filters() == {"ufw_rule_command": ufw_rule_command}
