# Copyright (c) clawbot.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter ``clawbot.stack.ip_in_networks``: is an IP address inside any of a list of networks.

Pure Python ``ipaddress``; no netaddr dependency. Documentation lives in ``ip_in_networks.yml``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from ansible.errors import AnsibleFilterError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_address(value: Any) -> IPAddress:
    """Parse one address; an IPv6 zone index (``fe80::1%eth0``) is ignored."""
    if not isinstance(value, str) or not value.strip():
        raise AnsibleFilterError(f"ip_in_networks: {value!r} is not an IP address (expected a string)")
    text = value.strip().split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise AnsibleFilterError(f"ip_in_networks: {value!r} is not a valid IP address") from exc


def _parse_network(value: Any) -> IPNetwork:
    """Parse one network in CIDR notation (or a bare address, meaning a single host).

    Host bits are allowed (``10.1.2.3/8`` means ``10.0.0.0/8``), as ufw itself accepts them.
    """
    if not isinstance(value, str) or not value.strip():
        raise AnsibleFilterError(f"ip_in_networks: {value!r} is not a network in CIDR notation (expected a string)")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise AnsibleFilterError(f"ip_in_networks: {value!r} is not a valid network in CIDR notation") from exc


def ip_in_networks(address: str, networks: str | Iterable[str]) -> bool:
    """Return True when ``address`` lies inside at least one of ``networks``.

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, as sshd reports IPv4 clients on a
    dual-stack socket) are also matched against IPv4 networks. Every network is validated,
    even after a match, so a typo in the list never goes unnoticed.
    """
    addr = _parse_address(address)
    if isinstance(networks, str):
        networks = [networks]
    elif isinstance(networks, dict) or not isinstance(networks, Iterable):
        raise AnsibleFilterError(
            f"ip_in_networks: the networks argument must be a list of CIDR strings, got {networks!r}"
        )
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    parsed = [_parse_network(net) for net in networks]
    return any(cand.version == net.version and cand in net for net in parsed for cand in candidates)


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"ip_in_networks": ip_in_networks}
