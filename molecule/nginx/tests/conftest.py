"""Helpers of the nginx scenario's tests: every request is made inside the container (docker exec).

The role variables are the inventory group_vars of ../molecule.yml; the upstream is the
repository's fake OpenAI-compatible provider on 127.0.0.1:18789 (prepare.yml), which answers
POST .../v1/chat/completions and GET .../v1/models under any path prefix, a JSON 404 for other
paths, and waits a second before every chat answer.

Client addresses: all of 127.0.0.0/8 is local in the container, so ``curl --interface 127.0.0.N``
gives each test a client address of its own (rate limits are per address) and an address outside
the internal allowlist (127.0.0.1/32). The container's own network address is outside the API
allowlist (127.0.0.0/8); traffic to it stays inside the container.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
ROLE_DIR = SCENARIO_DIR.parents[1] / "roles/nginx"
DEFAULTS = yaml.safe_load((ROLE_DIR / "defaults/main.yml").read_text())
VARS = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
USER = VARS["nginx_api_basic_auth_users"][0]
AUTH = ["-u", f"{USER['name']}:{USER['password']}"]
SITE = "/etc/nginx/conf.d/clawbot.conf"
VALIDATE = "/usr/local/sbin/clawbot-nginx-validate"
ACCESS_LOG = DEFAULTS["nginx_access_log"]
ERROR_LOG = DEFAULTS["nginx_error_log"]
# What the role's 429 answer must look like: the bot's error shape (bot_app errors.py).
RATE_LIMITED = {"error": {"code": "rate_limited", "message": "too many requests"}}
CHAT = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]})


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: str
    exit_code: int
    info: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def curl(host, url: str, *args: str, source: str | None = None, auth: bool = False,
         data: str | None = None, resolve: str | None = None) -> Response:
    """One request with curl in the container; status and headers come from curl's -w JSON."""
    cmd = ["curl", "-sk", "--max-time", "20", "-w", "%{stderr}%{json}\\n%{header_json}"]
    if source:
        cmd += ["--interface", source]
    if auth:
        cmd += AUTH
    if resolve:
        cmd += ["--resolve", resolve]
    if data is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    cmd += [*args, url]
    line = shlex.join(cmd)
    if data is not None:
        line = f"printf %s {shlex.quote(data)} | {line}"
    result = host.run(line)
    lines = result.stderr.strip().split("\n", 1)
    info = json.loads(lines[0]) if lines and lines[0].startswith("{") else {}
    headers = json.loads(lines[1]) if len(lines) > 1 and lines[1].startswith("{") else {}
    return Response(status=int(info.get("http_code", 0)), headers=headers, body=result.stdout,
                    exit_code=result.rc, info=info)


def container_address(host) -> str:
    """The container's own address on its network (not loopback)."""
    return host.check_output("ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1").strip()


def handshake(host, port: int, *args: str, servername: str = "localhost") -> str:
    """openssl s_client against 127.0.0.1:PORT; returns its output, "" when no handshake was made.
    The session block of a made one names the protocol ("Protocol  : TLSv1.2"); the "New, X,
    Cipher is Y" line names the suite (X is the suite's oldest version, not the protocol)."""
    sni = ["-servername", servername] if servername else ["-noservername"]
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *sni, *args]
    result = host.run(f"echo | timeout 10 {shlex.join(cmd)} 2>&1")
    made = result.rc == 0 and re.search(r"^(New|Reused), .*, Cipher is (?!\(NONE\))", result.stdout, re.M)
    return result.stdout if made else ""


def protocol(output: str) -> str | None:
    """The protocol of a handshake() output: the session block's for TLS 1.2 and older; a TLS 1.3
    suite (only TLS 1.3 has them) for TLS 1.3, whose session block comes with a ticket only."""
    found = re.search(r"^\s*Protocol\s*: (\S+)$", output, re.M)
    if found:
        return found.group(1)
    return "TLSv1.3" if re.search(r"^New, TLSv1\.3, Cipher is TLS_", output, re.M) else None


def tls12_scan(host, port: int) -> set[str]:
    """Every TLS 1.2 cipher suite this OpenSSL knows (@SECLEVEL=0: the weak ones too), tried one
    at a time over TLS 1.2, four at once; returns those the server accepted. Left out: PSK and
    SRP suites (they need a pre-shared key or an SRP password that neither side has)."""
    probe = (
        f"out=$(echo | timeout 5 openssl s_client -connect 127.0.0.1:{port} -servername localhost -tls1_2 "
        '-cipher "$1:@SECLEVEL=0" 2>/dev/null); '
        'printf "%s\\n" "$out" | grep -q "^New, .*, Cipher is $1\\$" && '
        'printf "%s\\n" "$out" | grep -q "^ *Protocol *: TLSv1.2\\$" && echo "$1"; true'
    )
    script = (
        "openssl ciphers -tls1_2 'ALL:COMPLEMENTOFALL:!PSK:!SRP:@SECLEVEL=0' | tr ':' '\\n' | grep -v '^TLS_' "
        f"| xargs -P 4 -I CIPHER sh -c {shlex.quote(probe)} probe CIPHER"
    )
    return set(host.check_output(script).split())


def tls_control_server(host, cert: str, key: str, port: int = 4433):
    """A permissive TLS endpoint (openssl s_server: every protocol version and cipher suite, no
    HTTP) with the same certificate as nginx, as a control: it shows that the client in the
    container can negotiate what nginx must refuse, so a refusal is nginx's doing."""
    unit = f"clawbot-tls-control-{port}"
    host.run(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null")
    server = shlex.join(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", key,
                         "-cipher", "ALL:@SECLEVEL=0", "-quiet"])
    host.check_output(f"systemd-run --quiet --unit {unit} sh -c {shlex.quote(f'sleep 600 | {server}')}")
    host.check_output(f"for i in $(seq 1 50); do ss -Hltn 'sport = :{port}' | grep -q . && exit 0; "
                      "sleep 0.1; done; exit 1")
    return unit


def converge(extra_vars: dict) -> subprocess.CompletedProcess[str]:
    """converge.yml once more with extra vars, against Molecule's inventory (molecule.yml)."""
    return subprocess.run(
        ["ansible-playbook", "-v", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO_DIR / "converge.yml"),
         "-e", json.dumps(extra_vars)],
        capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def selfsigned_control(host):
    unit = tls_control_server(host, "/etc/ssl/clawbot/clawbot.crt", "/etc/ssl/clawbot/clawbot.key")
    yield 4433
    host.run(f"systemctl stop {unit}")
