"""Effective state of the clawbot.stack.nginx role (self-signed mode): asked over its sockets.

The variables are the inventory group_vars of ../molecule.yml: server names localhost and
clawbot.test, body limit 40000 bytes, 5 requests in progress per address, CORS for one origin,
one basic auth user and the API allowlist 127.0.0.0/8. Everything else is the role's default.
See conftest.py for the upstream and the client addresses.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import uuid

import pytest
from conftest import (
    ACCESS_LOG,
    AUTH,
    CHAT,
    DEFAULTS,
    ERROR_LOG,
    RATE_LIMITED,
    SITE,
    USER,
    VARS,
    container_address,
    curl,
    handshake,
    protocol,
    tls12_scan,
)

EXPECTED_TLS12 = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"}
MAX_BODY = VARS["nginx_client_max_body_size"]
AUTH_ARGS = shlex.join(AUTH)


def test_nginx_runs_and_listens_where_it_should(host):
    service = host.service("nginx")
    assert service.is_running and service.is_enabled
    listening = set(host.check_output("ss -Hltn | awk '{print $4}'").split())
    assert {"0.0.0.0:80", "0.0.0.0:443", "[::]:80", "[::]:443", "127.0.0.1:8080"} <= listening, listening
    assert not any(a.endswith(":8080") for a in listening - {"127.0.0.1:8080"}), listening



def test_nginx_reads_the_role_s_files_only(host):
    """Debian's default site is gone; of conf.d and sites-enabled nginx reads the role's site only
    (not the backups the role keeps next to it)."""
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    with host.sudo():
        dump = host.check_output("nginx -T 2>/dev/null")
    read = re.findall(r"^# configuration file (\S+):$", dump, re.M)
    assert read[0] == "/etc/nginx/nginx.conf"
    assert [f for f in read if f.startswith(("/etc/nginx/conf.d/", "/etc/nginx/sites-enabled/"))] == [SITE]


def test_configuration_passes_nginx_t_and_hides_the_version(host):
    with host.sudo():
        dump = host.check_output("nginx -T 2>/dev/null")
    assert re.search(r"^\s*server_tokens off;", dump, re.M)
    assert "ssl_session_tickets off;" in dump
    assert "ssl_stapling off;" in dump and "ssl_stapling on" not in dump
    response = curl(host, "https://localhost/")
    assert response.header("server") == "nginx"  # no version
    # nginx's own HTML error page (the stub_status server's 404) names no version either.
    page = curl(host, "http://127.0.0.1:8080/no-such-page")
    assert page.status == 404 and "<center>nginx</center>" in page.body


@pytest.mark.parametrize("name", ["localhost", "clawbot.test"])
def test_http_redirects_to_https(host, name):
    response = curl(host, "http://127.0.0.1/api/v1/chat?session=1", "-H", f"Host: {name}")
    assert response.status == 301
    assert response.header("location") == f"https://{name}/api/v1/chat?session=1"


def test_acme_challenges_are_served_from_the_webroot(host):
    token = uuid.uuid4().hex
    webroot = DEFAULTS["nginx_acme_webroot"]
    with host.sudo():
        host.check_output(f"mkdir -p {webroot}/.well-known/acme-challenge && "
                          f"printf %s {token}-content > {webroot}/.well-known/acme-challenge/{token}")
    served = curl(host, f"http://localhost/.well-known/acme-challenge/{token}")
    assert (served.status, served.body) == (200, f"{token}-content")
    missing = curl(host, "http://localhost/.well-known/acme-challenge/no-such-token")
    assert missing.status == 404  # not redirected


def test_other_host_names_get_no_answer(host):
    # HTTP: 444 closes the connection without a response (curl: empty reply or reset).
    closed = curl(host, "http://127.0.0.1/", "-H", "Host: other.example")
    assert closed.status == 0 and closed.exit_code in (52, 56)
    assert curl(host, "http://127.0.0.1/", "-H", "Host: localhost").status == 301
    # HTTPS: no handshake for another SNI name, nor without one; the configured names get one.
    assert handshake(host, 443, servername="other.example") == ""
    assert handshake(host, 443, servername="") == ""
    assert handshake(host, 443, servername="clawbot.test") != ""


# ----------------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("version", ["tls1", "tls1_1"])
def test_tls_1_0_and_1_1_are_refused(host, selfsigned_control, version):
    expected = {"tls1": "TLSv1", "tls1_1": "TLSv1.1"}[version]
    assert protocol(handshake(host, selfsigned_control, f"-{version}", "-cipher", "ALL:@SECLEVEL=0")) == expected
    assert handshake(host, 443, f"-{version}", "-cipher", "ALL:@SECLEVEL=0") == ""


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_tls_1_2_and_1_3_are_accepted(host, version):
    assert protocol(handshake(host, 443, f"-{version}")) == f"TLSv1.{version[-1]}"


def test_only_ecdhe_aead_suites_are_accepted_with_tls_1_2(host, selfsigned_control):
    accepted = tls12_scan(host, 443)
    assert accepted == EXPECTED_TLS12
    # The same scan against the permissive control with the same certificate finds non-AEAD
    # (CBC) suites: the scan can see what nginx refuses.
    control = tls12_scan(host, selfsigned_control)
    assert {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"} <= control, control
    assert control >= EXPECTED_TLS12


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])
def test_tls_1_3_suites(host, suite):
    assert f"Cipher is {suite}" in handshake(host, 443, "-tls1_3", "-ciphersuites", suite)


# TLS 1.3: the client's groups are for the key exchange only (in TLS 1.2 they would also limit
# the curves of the ECDSA certificate).
@pytest.mark.parametrize(("group", "accepted"), [("X25519", True), ("prime256v1", True), ("secp384r1", True),
                                                 ("secp521r1", False), ("X448", False)])
def test_key_exchange_groups(host, selfsigned_control, group, accepted):
    assert handshake(host, selfsigned_control, "-tls1_3", "-groups", group), f"control {group}"
    out = handshake(host, 443, "-tls1_3", "-groups", group)
    assert bool(out) is accepted
    if accepted:
        assert re.search(rf"^Server Temp Key: {'X25519' if group == 'X25519' else 'ECDH'}", out, re.M), out


def test_no_session_tickets_but_cached_sessions_resume(host, selfsigned_control):
    assert "TLS session ticket:" in handshake(host, selfsigned_control, "-tls1_2"), "control"
    first = handshake(host, 443, "-tls1_2", "-sess_out", "/tmp/nginx-session.pem")
    assert first and "TLS session ticket:" not in first
    again = handshake(host, 443, "-tls1_2", "-sess_in", "/tmp/nginx-session.pem")
    assert again.count("\nReused, ") == 1 and protocol(again) == "TLSv1.2"


def test_no_ocsp_stapling_for_the_self_signed_certificate(host):
    assert "OCSP response: no response sent" in handshake(host, 443, "-status")


def test_self_signed_certificate_and_key(host):
    info = curl(host, "https://localhost/").info["certs"]
    assert "Subject:CN = localhost" in info
    assert "X509v3 Subject Alternative Name:DNS:localhost, DNS:clawbot.test" in info
    assert "Public Key Algorithm:id-ecPublicKey" in info
    assert "X509v3 Extended Key Usage:TLS Web Server Authentication" in info
    assert "X509v3 Basic Constraints:CA:FALSE" in info
    with host.sudo():
        text = host.check_output("openssl x509 -in /etc/ssl/clawbot/clawbot.crt -noout -text")
        days = host.run("openssl x509 -in /etc/ssl/clawbot/clawbot.crt -noout "
                        f"-checkend {(DEFAULTS['nginx_tls_selfsigned_days'] - 2) * 86400}")
        key = host.file("/etc/ssl/clawbot/clawbot.key")
        assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
        assert "ASN1 OID: prime256v1" in host.check_output("openssl pkey -in /etc/ssl/clawbot/clawbot.key -noout -text")
    assert "NIST CURVE: P-256" in text
    assert days.rc == 0, "valid for about nginx_tls_selfsigned_days"


# -------------------------------------------------------------------------- HTTP answers


def test_security_headers(host):
    response = curl(host, "https://localhost/health")
    assert response.header("strict-transport-security") == "max-age=63072000"
    assert response.header("x-content-type-options") == "nosniff"
    assert response.header("x-frame-options") == "DENY"
    assert response.header("referrer-policy") == "no-referrer"
    assert response.header("content-security-policy") == DEFAULTS["nginx_content_security_policy"]
    assert re.fullmatch(r"[0-9a-f]{32}", response.header("x-request-id") or "")
    # On nginx's own errors too (always).
    assert curl(host, "https://localhost/metrics", source="127.0.0.2").header("strict-transport-security")


def test_chat_completion_reaches_the_upstream(host):
    before = int(host.check_output("wc -l < /var/log/fake-openai.jsonl"))
    response = curl(host, "https://localhost/v1/chat/completions", data=CHAT, auth=True)
    assert response.status == 200, response.body
    assert response.json()["choices"][0]["message"]["content"] == "upstream: hello [n=1]"
    calls = [json.loads(line) for line in host.check_output("cat /var/log/fake-openai.jsonl").splitlines()[before:]]
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [("POST", "/v1/chat/completions", 200)]


def test_streamed_chat_passes_through(host):
    body = json.dumps({**json.loads(CHAT), "stream": True})
    response = curl(host, "https://localhost/v1/chat/completions", data=body, auth=True)
    assert response.status == 200
    assert response.header("content-type").startswith("text/event-stream")
    events = [line for line in response.body.splitlines() if line.startswith("data: ")]
    assert len(events) > 2 and events[-1] == "data: [DONE]"


def test_upstream_connections_are_kept_alive(host):
    for _ in range(3):
        assert curl(host, "https://localhost/api/v1/models", auth=True).status == 200
    established = host.check_output("ss -Htnp state established '( dport = :18789 )'")
    assert '"nginx"' in established, "no idle keep-alive connection from nginx to the upstream"


def test_api_requires_basic_auth(host):
    for args in ([], ["-u", f"{USER['name']}:wrong-password"]):
        response = curl(host, "https://localhost/api/v1/models", *args)
        assert response.status == 401
        assert response.json() == {"error": {"code": "unauthorized", "message": "authentication required"}}
        assert response.header("www-authenticate") == 'Basic realm="clawbot API"'
    assert curl(host, "https://localhost/api/v1/models", auth=True).status == 200
    with host.sudo():
        htpasswd = host.file("/etc/nginx/clawbot-api.htpasswd")
        assert (htpasswd.user, htpasswd.group, htpasswd.mode) == ("root", "www-data", 0o640)
        content = htpasswd.content_string
    assert content.startswith(f"{USER['name']}:$6$") and USER["password"] not in content


def test_api_allowlist_and_callbacks_outside_it(host):
    own = container_address(host)
    resolve = f"localhost:443:{own}"
    refused = curl(host, "https://localhost/api/v1/models", auth=True, resolve=resolve)
    assert refused.status == 403
    assert refused.json() == {"error": {"code": "forbidden", "message": "access denied"}}
    # The IM callbacks are not behind the API's access control: the upstream answers (the fake
    # has no such path: its own 404).
    callback = curl(host, "https://localhost/api/feishu/callback", resolve=resolve, data="{}")
    assert callback.status == 404 and "Invalid URL (POST /api/feishu/callback)" in callback.body


@pytest.mark.parametrize("path", DEFAULTS["nginx_internal_paths"])
def test_internal_paths_only_from_internal_addresses(host, path):
    allowed = curl(host, f"https://localhost{path}")
    # Reached the upstream (the fake has no such path and answers its own 404).
    assert allowed.status == 404 and f"Invalid URL (GET {path})" in allowed.body
    refused = curl(host, f"https://localhost{path}", source="127.0.0.2")
    assert refused.status == 403
    assert refused.json() == {"error": {"code": "forbidden", "message": "access denied"}}


def test_body_limit(host):
    message = json.loads(CHAT)
    message["messages"][0]["content"] = ""
    padding = MAX_BODY - len(json.dumps(message))
    message["messages"][0]["content"] = "a" * padding
    exact = json.dumps(message)
    assert len(exact) == MAX_BODY
    assert curl(host, "https://localhost/api/v1/chat/completions", data=exact, auth=True).status == 200
    too_big = curl(host, "https://localhost/api/v1/chat/completions", data=exact + " ", auth=True)
    assert too_big.status == 413
    assert too_big.json() == {"error": {"code": "body_too_large", "message": f"request body exceeds {MAX_BODY} bytes"}}


def test_cors_preflight_for_the_allowed_origin_only(host):
    origin = VARS["nginx_cors_allow_origins"][0]
    preflight = ["-X", "OPTIONS", "-H", "Access-Control-Request-Method: POST"]
    allowed = curl(host, "https://localhost/api/v1/chat", *preflight, "-H", f"Origin: {origin}")
    assert allowed.status == 204
    assert allowed.header("access-control-allow-origin") == origin
    assert "POST" in allowed.header("access-control-allow-methods")
    assert "Authorization" in allowed.header("access-control-allow-headers")
    other = curl(host, "https://localhost/api/v1/chat", *preflight, "-H", "Origin: https://evil.example")
    assert other.header("access-control-allow-origin") is None
    assert other.header("access-control-allow-methods") is None
    # A real request from the allowed origin gets the header as well, errors included.
    assert curl(host, "https://localhost/api/v1/models", "-H", f"Origin: {origin}",
                auth=True).header("access-control-allow-origin") == origin
    assert curl(host, "https://localhost/api/v1/models", "-H",
                f"Origin: {origin}").header("access-control-allow-origin") == origin


# --------------------------------------------------------------------------------- limits


def _burst(host, source: str, path: str, count: int, args: str) -> tuple[list[int], float, dict[str, str], str]:
    """count requests on one connection, as fast as curl sends them: their statuses, the seconds
    they took (the zone refills meanwhile), and the headers and body of the last answer."""
    each = f"-sk --interface {source} {args} -w '%{{http_code}}\\n' https://localhost{path}"
    first = " ".join(f"-o /dev/null {each}" for _ in range(count - 1))
    out = host.check_output(f"date +%s.%N; curl {first} --next -D /tmp/burst-headers -o /tmp/burst-body {each}; "
                            "date +%s.%N")
    start, *statuses, end = out.split()
    lines = host.check_output("cat /tmp/burst-headers").splitlines()[1:]
    headers = dict(line.strip().lower().split(": ", 1) for line in lines if ": " in line)
    body = host.check_output("cat /tmp/burst-body")
    return [int(s) for s in statuses], float(end) - float(start), headers, body


def _most_allowed(burst: int, rate: str, seconds: float) -> int:
    """What limit_req can let through in `seconds`: the burst, the first request, the refill."""
    per_second = int(rate.split("r/")[0]) / (1 if rate.endswith("r/s") else 60)
    return burst + 1 + math.ceil(per_second * seconds) + 1


def test_api_rate_limit_per_address_with_json_429(host):
    statuses, seconds, headers, body = _burst(host, "127.0.0.10", "/api/v1/models", 60, AUTH_ARGS)
    passed, limited = statuses.count(200), statuses.count(429)
    burst = DEFAULTS["nginx_api_burst"]
    assert passed + limited == 60, statuses
    assert burst + 1 <= passed <= _most_allowed(burst, DEFAULTS["nginx_api_rate"], seconds), (statuses, seconds)
    assert limited > 0 and statuses[-1] == 429, statuses
    assert headers["content-type"] == "application/json" and headers["retry-after"] == "1", headers
    assert json.loads(body) == RATE_LIMITED
    # Another address is not limited; neither is the callback zone for the same address.
    assert curl(host, "https://localhost/api/v1/models", source="127.0.0.11", auth=True).status == 200
    assert curl(host, "https://localhost/feishu/callback", source="127.0.0.10", data="{}").status == 404
    with host.sudo():
        log = host.check_output(f"cat {ERROR_LOG}")
    assert re.search(r'limiting requests, excess: [0-9.]+ by zone "clawbot_api", client: 127\.0\.0\.10,', log)


def test_callback_rate_limit_has_its_own_zone(host):
    statuses, seconds, _, _ = _burst(host, "127.0.0.12", "/feishu/callback", 100, "-X POST -d '{}'")
    passed, limited = statuses.count(404), statuses.count(429)  # 404: the fake's answer
    burst = DEFAULTS["nginx_callback_burst"]
    assert passed + limited == 100, statuses
    assert burst + 1 <= passed <= _most_allowed(burst, DEFAULTS["nginx_callback_rate"], seconds), (statuses, seconds)
    assert limited > 0


def test_connection_limit_per_address(host):
    # 8 chat requests at once from one address; each takes a second at the upstream.
    limit = VARS["nginx_conn_limit_per_ip"]
    urls = " ".join("-o /dev/null https://localhost/v1/chat/completions" for _ in range(8))
    out = host.check_output(
        f"curl -sk --interface 127.0.0.13 --http1.1 --parallel --parallel-immediate --parallel-max 8 "
        f"{AUTH_ARGS} -H 'Content-Type: application/json' -d {shlex.quote(CHAT)} -w '%{{http_code}}\\n' {urls}")
    statuses = sorted(int(s) for s in out.split())
    # All 8 arrive within the first second: exactly `limit` get through. (Were some late, more
    # would: at least `limit` pass and at least one is refused either way.)
    assert statuses.count(200) + statuses.count(429) == 8, statuses
    assert statuses.count(200) >= limit and statuses.count(429) >= 1, statuses
    with host.sudo():
        log = host.check_output(f"cat {ERROR_LOG}")
    assert re.search(r'limiting connections by zone "clawbot_conn", client: 127\.0\.0\.13,', log)



# ------------------------------------------------------------------------------ stub_status


def test_stub_status_on_loopback_only(host):
    status = curl(host, "http://127.0.0.1:8080/stub_status")
    assert status.status == 200 and status.body.startswith("Active connections:")
    assert curl(host, "http://127.0.0.1:8080/stub_status", source="127.0.0.2").status == 403
    # Nothing listens on port 8080 of the container's network address.
    assert curl(host, f"http://{container_address(host)}:8080/stub_status").exit_code == 7


# ------------------------------------------------------------------------------- access log


def test_json_access_log_with_the_request_id(host):
    agent = f"molecule-{uuid.uuid4().hex}"
    response = curl(host, "https://localhost/api/v1/models?secret=s3cr3t", "-A", agent, auth=True)
    request_id = response.header("x-request-id")
    assert response.status == 200 and request_id
    with host.sudo():
        lines = host.check_output(f"tail -n 500 {ACCESS_LOG}").splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON
    [entry] = [e for e in entries if e["request_id"] == request_id]
    assert entry["user_agent"] == agent
    assert (entry["method"], entry["uri"], entry["status"]) == ("GET", "/api/v1/models", 200)
    assert entry["remote_addr"] == "127.0.0.1"
    assert entry["upstream_addr"] == "127.0.0.1:18789"
    assert entry["upstream_status"] == "200"
    assert isinstance(entry["request_time"], float) and isinstance(entry["bytes_sent"], int)
    assert entry["tls"] in ("TLSv1.2", "TLSv1.3")
    assert "s3cr3t" not in json.dumps(entries)  # no query strings in the log
