"""Unit tests for clawbot.stack.ip_in_networks (plain pytest, run by ansible-test units)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.clawbot.stack.plugins.filter.ip_in_networks import (
    FilterModule,
    ip_in_networks,
)


@pytest.mark.parametrize(
    ("address", "networks", "expected"),
    [
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["192.168.0.0/16", "10.0.0.0/8"], True),
        ("11.0.0.1", ["10.0.0.0/8"], False),
        ("192.0.2.10", ["192.0.2.10/32"], True),
        ("192.0.2.10", ["192.0.2.10"], True),
        ("192.0.2.11", ["192.0.2.10"], False),
        ("192.0.2.10", ["192.0.2.99/24"], True),  # host bits allowed, like ufw
        ("203.0.113.9", ["0.0.0.0/0"], True),
        ("203.0.113.9", [], False),
        ("203.0.113.9", "203.0.113.0/24", True),  # a single string is a one-element list
        (" 203.0.113.9 ", [" 203.0.113.0/24 "], True),
        ("2001:db8::5", ["2001:db8::/32"], True),
        ("2001:db9::5", ["2001:db8::/32"], False),
        ("2001:db8::5", ["::/0"], True),
        ("fe80::1%eth0", ["fe80::/10"], True),  # zone index ignored
        ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),  # IPv4-mapped (dual-stack sshd)
        ("::ffff:10.1.2.3", ["::ffff:0:0/96"], True),
        ("10.1.2.3", ["::/0"], False),  # families never cross
        ("2001:db8::5", ["0.0.0.0/0"], False),
    ],
)
def test_membership(address: str, networks: list[str] | str, expected: bool) -> None:
    assert ip_in_networks(address, networks) is expected


@pytest.mark.parametrize("bad", ["10.0.0.300", "not-an-ip", "", "10.0.0.0/8", 42, None])
def test_bad_address_names_value(bad: object) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        ip_in_networks(bad, ["10.0.0.0/8"])  # type: ignore[arg-type]
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "10.0.0.0/8x", "bogus", "2001:db8::/129", "", 10])
def test_bad_network_names_value(bad: object) -> None:
    with pytest.raises(AnsibleFilterError) as err:
        ip_in_networks("10.1.2.3", ["10.0.0.0/8", bad])  # type: ignore[list-item]
    assert repr(bad) in str(err.value)


def test_bad_network_after_match_still_raises() -> None:
    with pytest.raises(AnsibleFilterError, match="'bogus'"):
        ip_in_networks("10.1.2.3", ["10.0.0.0/8", "bogus"])


@pytest.mark.parametrize("bad", [{"10.0.0.0/8": 1}, 5, None])
def test_networks_must_be_a_list(bad: object) -> None:
    with pytest.raises(AnsibleFilterError, match="networks argument"):
        ip_in_networks("10.1.2.3", bad)  # type: ignore[arg-type]


def test_filter_module_exports() -> None:
    assert FilterModule().filters() == {"ip_in_networks": ip_in_networks}
