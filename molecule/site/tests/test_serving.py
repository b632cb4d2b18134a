"""The serving path after playbooks/site.yml: client -> nginx (TLS) -> clawbot-app -> stand-in model,
with Redis and MariaDB behind the bot; asserted from inside the container."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from conftest import CONFIG, https_chat, run_playbook

SCENARIO = Path(__file__).resolve().parents[1]

SECRETS = ("molecule-app-password-1", "molecule-migrator-password-1", "molecule-clawbot-password-0002",
           "sk-molecule-standin-key-1")


def test_chat_over_https_keeps_the_context_across_turns(host, api_token) -> None:
    status, first, _ = https_chat(host, api_token, {"message": "first turn"})
    assert status == 200, first
    # The stand-in answers "<name>: <last message> [n=<messages it was sent>]".
    assert first["reply"] == "standin-model: first turn [n=1]"
    status, second, _ = https_chat(host, api_token, {"message": "second turn", "session_id": first["session_id"]})
    assert status == 200, second
    assert second["reply"] == "standin-model: second turn [n=3]"
    assert second["session_id"] == first["session_id"]


def test_context_lives_in_redis(host, api_token) -> None:
    status, answer, _ = https_chat(host, api_token, {"message": "remember me"})
    assert status == 200
    keys = host.check_output("REDISCLI_AUTH=molecule-admin-password-0001 redis-cli --no-auth-warning "
                             "-s /run/redis-clawbot/redis-server.sock --user admin --scan --pattern 'clawbot:turns:*'")
    assert any(answer["session_id"] in k for k in keys.splitlines()), keys


def test_conversation_rows_land_in_mariadb_encrypted(host, api_token) -> None:
    marker = f"secret-marker-{time.time_ns()}"
    status, _, _ = https_chat(host, api_token, {"message": marker})
    assert status == 200
    query = (f"SELECT COUNT(*), SUM(content LIKE '%{marker}%'), MIN(LENGTH(content)) FROM conversation_log "
             "WHERE user_id = 'verify'")
    for _ in range(20):  # the writer batches rows (linger 25 ms); give it a moment
        count, plain, shortest = host.check_output("mariadb -N -B clawbot -e %s", query).split()
        if int(count) >= 2:
            break
        time.sleep(0.5)
    assert int(count) >= 2
    assert plain in ("0", "NULL")
    assert int(shortest) > len(marker)


def test_the_request_id_goes_from_nginx_to_the_bot(host, api_token) -> None:
    status, _, headers = https_chat(host, api_token, {"message": "trace me"})
    assert status == 200
    trace = re.search(r"(?im)^x-trace-id:\s*([0-9a-f]{32})\s*$", headers)
    assert trace, headers
    log = host.check_output("tail -n 50 /var/log/nginx/clawbot.access.log")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(trace.group(1) in json.dumps(line) for line in lines), "nginx's request id is not the bot's trace id"


def test_http_redirects_to_https(host) -> None:
    out = host.check_output("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://localhost/api/v1/chat")
    assert out == "301 https://localhost/api/v1/chat"


def test_hsts_on_https(host) -> None:
    headers = host.check_output("curl -sk -D - -o /dev/null https://localhost/health")
    assert re.search(r"(?im)^strict-transport-security:\s*max-age=63072000", headers), headers


def test_a_burst_over_the_limit_gets_429_json(host) -> None:
    codes = host.check_output(
        "for i in $(seq 1 60); do curl -sk -o /dev/null -w '%{http_code}\\n' -X POST "
        "https://localhost/api/v1/chat; done")
    assert "429" in codes.split(), codes
    body = host.check_output("for i in $(seq 1 40); do curl -sk -X POST https://localhost/api/v1/chat; echo; done "
                             "| grep -m1 rate_limited || true")
    assert json.loads(body)["error"]["code"] == "rate_limited"


def test_backends_listen_on_loopback_only(host) -> None:
    listeners = host.check_output("ss -ltnH")
    for port in (18789, 6379, 3306, 18800):
        addrs = {m.group(1) for m in re.finditer(rf"\s(\S+):{port}\s", listeners)}
        assert addrs, f"nothing listens on {port}"
        assert addrs <= {"127.0.0.1", "[::1]"}, (port, addrs)
    assert re.search(r"\s(0\.0\.0\.0|\*|\[::\]):443\s", listeners)


def test_ufw_is_active_with_the_web_ports(host) -> None:
    status = host.check_output("ufw status")
    assert "Status: active" in status
    assert re.search(r"(?m)^443/tcp\s+ALLOW", status)
    assert not re.search(r"(?m)^(18789|6379|3306)\b", status)


def test_kill_9_of_the_bot_is_restarted_and_ready_within_5_seconds(host) -> None:
    pid = host.check_output("systemctl show -p MainPID --value clawbot-app")
    assert int(pid) > 0
    host.check_output(f"kill -9 {pid}")
    start = time.monotonic()
    ready = False
    while time.monotonic() - start < 5:
        if host.run("curl -sf -o /dev/null --max-time 1 http://127.0.0.1:18789/ready").rc == 0:
            ready = True
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    assert ready, "the bot did not answer /ready within 5 s of kill -9"
    new_pid = host.check_output("systemctl show -p MainPID --value clawbot-app")
    assert new_pid != pid
    print(f"ready again {elapsed:.1f} s after kill -9")


def test_secret_files_are_private(host) -> None:
    for path, owner in (("/etc/clawbot/secrets.yaml", "clawbot"), ("/etc/clawbot/migrator-password", "root"),
                        ("/etc/clawbot/keys/encryption.json", "clawbot"),
                        ("/etc/clawbot/keys/model-standin.json", "clawbot")):
        f = host.file(path)
        assert f.exists, path
        assert (f.user, f.mode) == (owner, 0o600), path
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "clawbot", 0o640)
    assert host.file("/etc/clawbot").mode == 0o750


def test_no_secret_in_config_unit_process_list_or_journal(host) -> None:
    places = {
        "config": host.file(CONFIG).content_string,
        "unit": host.check_output("systemctl cat clawbot-app"),
        "environment": host.check_output("systemctl show -p Environment clawbot-app"),
        "processes": host.check_output("ps -eo args"),
        "journal": host.check_output("journalctl -u clawbot-app -u nginx --no-pager -o cat"),
    }
    for name, text in places.items():
        for secret in SECRETS:
            assert secret not in text, f"a secret is in the {name}"


def test_the_service_runs_sandboxed_as_its_user(host) -> None:
    show = host.check_output("systemctl show clawbot-app -p User -p NoNewPrivileges -p ProtectSystem "
                             "-p CapabilityBoundingSet -p PrivateTmp -p PrivateDevices")
    assert "User=clawbot" in show
    assert "NoNewPrivileges=yes" in show
    assert "ProtectSystem=strict" in show
    assert "CapabilityBoundingSet=\n" in show + "\n" or re.search(r"CapabilityBoundingSet=$", show, re.M)
    pid = host.check_output("systemctl show -p MainPID --value clawbot-app")
    status = host.file(f"/proc/{pid}/status").content_string
    assert re.search(r"(?m)^CapEff:\s+0+$", status)
    assert re.search(r"(?m)^NoNewPrivs:\s+1$", status)
    exposure = host.check_output("systemd-analyze security clawbot-app --no-pager | tail -n 1")
    score = float(re.search(r"exposure level .*?: ([0-9.]+)", exposure).group(1))
    print(f"systemd-analyze security clawbot-app: {exposure.strip()}")
    assert score <= 2.9, exposure  # "OK" or better (systemd rates <= 2.9 as OK)


def test_releases_and_the_cli_on_path(host) -> None:
    current = host.file("/opt/clawbot/current")
    assert current.is_symlink
    assert re.fullmatch(r"releases/\d[^/]*-[0-9a-f]{12}", current.linked_to.removeprefix("/opt/clawbot/")), \
        current.linked_to
    assert host.file("/usr/local/bin/clawbot-app").linked_to.startswith("/opt/clawbot/")
    version = host.check_output("clawbot-app --version")
    assert version in current.linked_to


def test_metrics_and_ready_only_from_loopback(host) -> None:
    """nginx serves /metrics and /ready to nginx_internal_allow_cidrs (loopback) only: a request from
    the container's own non-loopback address (traffic that stays inside the container) is refused."""
    addr = host.check_output("ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", addr), addr
    for path in ("/metrics", "/ready"):
        inside = host.check_output(f"curl -sk -o /dev/null -w '%{{http_code}}' https://localhost{path}")
        outside = host.check_output(f"curl -sk -o /dev/null -w '%{{http_code}}' --interface {addr} "
                                    f"--resolve localhost:443:{addr} https://localhost{path}")
        assert (inside, outside) == ("200", "403"), path
    chat = host.check_output(f"curl -sk -o /dev/null -w '%{{http_code}}' --interface {addr} "
                             f"--resolve localhost:443:{addr} -d '{{}}' https://localhost/api/v1/chat")
    assert chat == "401"  # the API itself is open to clients (and asks for a token)
    # The bot trusts nginx's X-Forwarded-For (forwarded_allow_ips: loopback): its access log names
    # the real client, not nginx's 127.0.0.1.
    def forwarded_401_logged() -> bool:
        journal = host.check_output("journalctl -u clawbot-app -o cat --since -2min --no-pager")
        entries = [json.loads(line) for line in journal.splitlines() if line.startswith("{")]
        return any(e.get("client.address") == addr and e.get("http.response.status_code") == 401 for e in entries)

    for _ in range(20):  # the line reaches the journal just after the answer
        if forwarded_401_logged():
            break
        time.sleep(0.25)
    assert forwarded_401_logged(), "the bot's access log does not name the client nginx forwarded"


def test_the_wecom_app_is_configured_and_its_callback_verifies_through_nginx(host) -> None:
    """bot_app_wecom went to the config (public fields) and the 0600 secrets file (secrets), and
    WeCom's signed, encrypted URL verification through nginx gets the plaintext back."""
    config = host.check_output("cat /etc/clawbot/config.yaml")
    assert "wwmoleculesite0001" in config and "agent_id: 1000002" in config
    assert "molecule-wecom" not in config and "MoleculeSiteWeCom" not in config
    secrets = host.file("/etc/clawbot/secrets.yaml")
    assert (secrets.mode, secrets.user) == (0o600, "clawbot")
    assert "molecule-wecom-corp-secret-6" in host.check_output("cat /etc/clawbot/secrets.yaml")
    rc, out = run_playbook(SCENARIO / "im_check_wecom.yml")
    assert rc == 0, out
    assert "WeCom callback_tls=ok callback_verification=ok" in out
    assert "molecule-wecom-callback-token-7" not in out and "MoleculeSiteWeCom" not in out
