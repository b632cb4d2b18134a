# Copyright (c) clawbot.stack maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter ``clawbot.stack.ufw_rule_command``: a rule dict in ufw's canonical form.

The result is exactly what ``ufw show added`` prints for the rule (without the leading
``ufw ``), so the firewall role can compare desired and current rules as plain strings.
It mirrors ``UFWCommandRule.get_command()`` and ``ufw.util.normalize_address()`` of
ufw 0.36 (Debian 12/13, Ubuntu 22.04/24.04). Documentation lives in ``ufw_rule_command.yml``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

ACTIONS = ("allow", "deny", "reject", "limit")
DIRECTIONS = ("in", "out")
PROTOCOLS = ("any", "tcp", "udp", "ipv6", "esp", "ah", "gre", "igmp", "vrrp")
ANY_ADDRESSES = ("any", "0.0.0.0/0", "::/0")
KNOWN_KEYS = frozenset({"rule", "port", "proto", "from", "to", "direction", "comment"})
_PORT_RE = re.compile(r"^\d+(:\d+)?(,\d+(:\d+)?)*$")


def _fail(msg: str) -> AnsibleFilterError:
    return AnsibleFilterError(f"ufw_rule_command: {msg}")


def normalize_address(value: Any, field: str) -> str:
    """Return the address as ufw stores it, or ``any``.

    ufw drops a host netmask (/32, /128), zeroes IPv4 host bits (10.1.2.3/8 -> 10.0.0.0/8),
    compresses IPv6 (inet_ntop) but keeps IPv6 host bits. 0.0.0.0/0 and ::/0 print as ``any``.
    """
    if value is None:
        return "any"
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{field}={value!r} is not an IP address or network")
    text = value.strip()
    if text.lower() in ANY_ADDRESSES:
        return "any"
    addr_text, _sep, prefix_text = text.partition("/")
    try:
        addr = ipaddress.ip_address(addr_text)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise _fail(f"{field}={value!r} is not a valid IP address or network") from exc
    if isinstance(addr, ipaddress.IPv4Address):
        if network.prefixlen == 0:
            return "any"
        if network.prefixlen == 32:
            return str(addr)
        return str(network)
    mapped = addr.ipv4_mapped
    addr_str = f"::ffff:{mapped}" if mapped is not None else addr.compressed
    if not prefix_text or network.prefixlen == 128:
        return addr_str
    return f"{addr_str}/{network.prefixlen}"


def _port(value: Any) -> str:
    if value is None or value == "" or value == "any":
        return "any"
    if isinstance(value, bool):
        raise _fail(f"port={value!r} is not a port")
    text = str(value).strip()
    if not _PORT_RE.match(text):
        raise _fail(f"port={value!r} is not a port, a range 'low:high' or a comma list of those")
    for part in re.split(r"[:,]", text):
        if not 1 <= int(part) <= 65535:
            raise _fail(f"port={value!r} is out of range 1-65535")
    return ",".join(":".join(str(int(p)) for p in chunk.split(":")) for chunk in text.split(","))


def ufw_rule_command(rule: Mapping[str, Any]) -> str:
    """Return the canonical ufw command (as in ``ufw show added``) for ``rule``.

    ``rule`` keys: rule (allow|deny|reject|limit, required), port, proto (default any),
    from (default any), to (default any), direction (in|out, default in), comment.
    """
    if not isinstance(rule, Mapping):
        raise _fail(f"expected a dict, got {rule!r}")
    unknown = set(rule) - KNOWN_KEYS
    if unknown:
        raise _fail(f"unknown key(s) {sorted(unknown)} in rule {dict(rule)!r}")
    action = rule.get("rule")
    if action not in ACTIONS:
        raise _fail(f"rule={action!r} must be one of {', '.join(ACTIONS)} (in {dict(rule)!r})")
    direction = rule.get("direction") or "in"
    if direction not in DIRECTIONS:
        raise _fail(f"direction={direction!r} must be one of {', '.join(DIRECTIONS)}")
    proto = rule.get("proto") or "any"
    if proto not in PROTOCOLS:
        raise _fail(f"proto={proto!r} must be one of {', '.join(PROTOCOLS)}")
    src = normalize_address(rule.get("from"), "from")
    dst = normalize_address(rule.get("to"), "to")
    if src != "any" and dst != "any" and (":" in src) != (":" in dst):
        raise _fail(f"from={src!r} and to={dst!r} mix IPv4 and IPv6")
    dport = _port(rule.get("port"))
    if dport != "any" and proto not in ("tcp", "udp") and re.search(r"[:,]", dport):
        raise _fail(f"port={dport!r}: port ranges and lists need proto tcp or udp")
    if dport != "any" and proto not in ("any", "tcp", "udp"):
        raise _fail(f"port={dport!r} cannot be combined with proto={proto!r}")
    comment = rule.get("comment")
    if comment is not None and not isinstance(comment, str):
        comment = str(comment)
    if comment and "'" in comment:
        raise _fail(f"comment={comment!r} must not contain a single quote")

    res = action
    if src == "any" and dst == "any" and dport != "any":
        # ufw's short syntax: "allow 80/tcp", "allow out 53/udp"
        if direction == "out":
            res += " out"
        res += f" {dport}"
        if proto != "any":
            res += f"/{proto}"
    else:
        if direction == "out":
            res += " out"
        if src != "any":
            res += f" from {src}"
        if dst != "any" or dport != "any":
            res += f" to {dst}"
            if dport != "any":
                res += f" port {dport}"
        if " to " not in res and " from " not in res:
            res += " to any"
        if proto != "any":
            res += f" proto {proto}"
    if comment:
        res += f" comment '{comment}'"
    return res


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"ufw_rule_command": ufw_rule_command}
