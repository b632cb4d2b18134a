"""The multi-host layout on four containers: the load balancer spreads chats over both app hosts,
a conversation continues across them, one app host down keeps the service answering, and
playbooks/upgrade.yml rolls a release with no failed request while a broken release is rolled back.

Requests are made from inside the lb container (curl to https://localhost), so traffic stays in
the test network. The tests run in file order; the upgrade tests come last because they change
releases.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import testinfra

SCENARIO = Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
sys.path.insert(0, str(SCENARIO.parent / "shared"))
from playbook_runner import run_playbook  # noqa: E402

LB = testinfra.get_host("docker://clawbot-molecule-ha-lb")
APPS = {name: testinfra.get_host(f"docker://clawbot-molecule-ha-{name}") for name in ("app1", "app2")}
DATA = testinfra.get_host("docker://clawbot-molecule-ha-data")
APP_ADDRESSES = {"10.213.90.11:18789": "app1", "10.213.90.12:18789": "app2"}
ACCESS_LOG = "/var/log/nginx/clawbot.access.log"
LOOP_RESULTS = "/tmp/ha-loop.txt"


@pytest.fixture(scope="module")
def token() -> str:
    out = APPS["app1"].check_output(
        "clawbot-app token create --user ha --tenant ha --days 1 --config /etc/clawbot/config.yaml 2>/dev/null")
    return out.strip().splitlines()[-1]


def chat(token: str, body: dict) -> tuple[int, dict]:
    cmd = ("curl -sk -o /tmp/ha-chat.json -w '%%{http_code}' --max-time 20 -H %s"
           " -H 'Content-Type: application/json' --data %s https://localhost/api/v1/chat")
    status = int(LB.check_output(cmd, f"Authorization: Bearer {token}", json.dumps(body)))
    payload = LB.file("/tmp/ha-chat.json").content_string
    return status, (json.loads(payload) if payload.strip() else {})


def upstreams_since(mark: int) -> list[str]:
    """upstream_addr of the access-log lines after line `mark` (nginx's JSON access log)."""
    lines = LB.check_output(f"tail -n +{mark + 1} {ACCESS_LOG}").splitlines()
    return [json.loads(line).get("upstream_addr", "") for line in lines if line.startswith("{")]


def log_length() -> int:
    return int(LB.check_output(f"wc -l < {ACCESS_LOG}"))


def test_the_bots_listen_on_their_private_address_only_and_the_firewall_opens_them_to_the_lb_only() -> None:
    for name, app in APPS.items():
        listen = app.check_output("ss -Hltn 'sport = :18789' | awk '{print $4}'").split()
        assert listen == [f"10.213.90.{11 if name == 'app1' else 12}:18789"], (name, listen)
        rules = app.check_output("ufw show added")
        assert "allow from 10.213.90.10 to any port 18789 proto tcp" in rules, rules
    data_rules = DATA.check_output("ufw show added")
    for port in ("6379", "3306"):
        for peer in ("10.213.90.11", "10.213.90.12"):
            assert f"allow from {peer} to any port {port} proto tcp" in data_rules, data_rules
    # From the lb, the data host's stores are closed (only the app hosts may reach them).
    assert LB.run("timeout 3 bash -c '</dev/tcp/10.213.90.20/6379'").rc != 0


def test_chats_through_the_load_balancer_reach_both_app_hosts(token: str) -> None:
    mark = log_length()
    for i in range(8):
        status, answer = chat(token, {"message": f"spread {i}"})
        assert status == 200, answer
        assert answer["reply"] == f"standin-model: spread {i} [n=1]"
    used = {APP_ADDRESSES.get(addr) for addr in upstreams_since(mark)}
    assert used == {"app1", "app2"}, used


def test_a_conversation_continues_across_app_hosts(token: str) -> None:
    mark = log_length()
    status, first = chat(token, {"message": "turn 1"})
    assert status == 200, first
    for turn in range(2, 6):
        status, answer = chat(token, {"message": f"turn {turn}", "session_id": first["session_id"]})
        assert status == 200, answer
        assert answer["reply"] == f"standin-model: turn {turn} [n={2 * turn - 1}]"
    hosts = [APP_ADDRESSES.get(addr) for addr in upstreams_since(mark)]
    assert set(hosts) == {"app1", "app2"}, f"the turns were not served by both app hosts: {hosts}"
    keys = DATA.check_output(
        "REDISCLI_AUTH=molecule-ha-admin-password-0001 redis-cli --user admin --no-auth-warning"
        " --scan --pattern 'clawbot:turns:*'")
    assert any(first["session_id"] in key for key in keys.splitlines()), "the session is not in Redis"


def test_one_app_host_stopped_keeps_the_service_answering(token: str) -> None:
    APPS["app2"].check_output("systemctl stop clawbot-app")
    try:
        for i in range(6):
            status, answer = chat(token, {"message": f"one down {i}"})
            assert status == 200, answer
    finally:
        APPS["app2"].check_output("systemctl start clawbot-app")
    APPS["app2"].check_output("curl -sf --retry 10 --retry-delay 1 --retry-all-errors http://10.213.90.12:18789/ready")


def test_the_data_host_down_gives_503_json_and_the_service_comes_back(token: str) -> None:
    """inventories/ha/README.md: the data host is the single point of failure. With MariaDB and Redis
    stopped, a chat gets a JSON 503 (never another 5xx, never a hang); after they start, it answers."""
    DATA.check_output("systemctl stop mariadb redis-server")
    try:
        status, answer = chat(token, {"message": "data host down"})
        assert status == 503, (status, answer)
        assert answer.get("error", {}).get("code") == "unavailable", answer
    finally:
        DATA.check_output("systemctl start mariadb redis-server")
    for app in APPS.values():
        app.check_output("curl -sf --retry 15 --retry-delay 1 --retry-all-errors http://%s:18789/ready",
                         app.check_output("ss -Hltn 'sport = :18789' | awk '{print $4}'").rsplit(":", 1)[0])
    status, answer = chat(token, {"message": "data host back"})
    assert status == 200, answer


def _last_backup(host) -> float:
    """The newest last_success of the host's backup repositories (clawbot-backup status)."""
    return max(entry.get("last_success", 0) for entry in json.loads(host.check_output("clawbot-backup status")))


def _release(version: str, broken: bool) -> str:
    rc, out = run_playbook(ROOT / "tests" / "harness" / "test-release.yml",
                           "-e", f"test_release_version={version}", "-e", f"test_release_broken={str(broken).lower()}")
    assert rc == 0, out[-3000:]
    return f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/release-{version}/dist/clawbot_app-{version}-py3-none-any.whl"


def _start_loop(token: str) -> None:
    """At most 1,500 chats, one every 0.2 s, from the lb container; stops by itself after 300 s
    or when /tmp/ha-loop.stop exists. One line per request: the HTTP status."""
    script = (
        f"rm -f {LOOP_RESULTS} /tmp/ha-loop.stop; end=$((SECONDS + 300)); i=0; "
        f"while [ $i -lt 1500 ] && [ $SECONDS -lt $end ] && [ ! -e /tmp/ha-loop.stop ]; do "
        "  code=$(curl -sk -o /tmp/ha-loop.body -w '%{http_code}' --max-time 20 "
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' "
        "    --data '{\"message\": \"loop\"}' https://localhost/api/v1/chat); "
        f"  echo \"$code\" >> {LOOP_RESULTS}; "
        "  [ \"$code\" = 200 ] || echo \"$(date -u +%T.%N) $code $(head -c 300 /tmp/ha-loop.body)\""
        "    >> /tmp/ha-loop.failures; "
        "  i=$((i + 1)); sleep 0.2; "
        "done; echo done >> /tmp/ha-loop.done")
    LB.check_output("rm -f /tmp/ha-loop.done /tmp/ha-loop.failures; setsid nohup bash -c %s >/dev/null 2>&1 &",
                    script)


def _failures() -> str:
    """The loop's failed requests, nginx's log lines for them, and the bots' errors meanwhile."""
    loop = LB.run("cat /tmp/ha-loop.failures").stdout
    nginx = LB.run(f"grep -v '\"status\":200,' {ACCESS_LOG} | grep '/api/v1/chat' | tail -5").stdout
    bots = {name: app.run("journalctl -u clawbot-app --since '-10 min' -o cat | grep -i '\"log.level\": \"error\"'"
                          " | tail -5").stdout for name, app in APPS.items()}
    return f"loop: {loop}\nnginx: {nginx}\nbots: {bots}"


def _stop_loop() -> list[str]:
    LB.check_output("touch /tmp/ha-loop.stop; for i in $(seq 1 60); do"
                    " [ -e /tmp/ha-loop.done ] && break; sleep 0.5; done")
    return LB.file(LOOP_RESULTS).content_string.split()


def test_upgrade_rolls_a_new_release_without_a_failed_request(token: str) -> None:
    wheel = _release("0.1.0.post1", broken=False)
    before = {name: app.file("/opt/clawbot/current").linked_to for name, app in APPS.items()}
    backups_before = {name: _last_backup(host) for name, host in (("lb", LB), ("data", DATA), *APPS.items())}
    _start_loop(token)
    rc, out = run_playbook(ROOT / "playbooks" / "upgrade.yml", "-e", f"bot_app_wheel={wheel}", timeout=1200)
    codes = _stop_loop()
    assert rc == 0, out[-5000:]
    assert len(codes) >= 50, f"the request loop made only {len(codes)} requests during the upgrade"
    assert set(codes) == {"200"}, ({code: codes.count(code) for code in set(codes)}, _failures())
    for name, app in APPS.items():
        assert app.check_output("clawbot-app --version") == "0.1.0.post1", name
        assert app.file("/opt/clawbot/current").linked_to != before[name]
        assert app.file("/opt/clawbot/previous").linked_to == before[name]
    # One host at a time: app1 was drained and back before app2 was drained.
    drains = [m.group(1) for m in re.finditer(r"Upstream \| Mark the server (down|up) on", out)]
    assert drains == ["down", "up", "down", "up"], drains
    conf = LB.file("/etc/nginx/conf.d/clawbot.conf").content_string
    assert " down;" not in conf, "a host was left drained"
    # A backup ran first on every host, before the first drain.
    for name, host in (("lb", LB), ("data", DATA), *APPS.items()):
        assert _last_backup(host) > backups_before[name], name


def test_a_broken_release_is_rolled_back_and_stops_the_rollout(token: str) -> None:
    wheel = _release("0.1.0.post999", broken=True)
    _start_loop(token)
    rc, out = run_playbook(ROOT / "playbooks" / "upgrade.yml", "-e", f"bot_app_wheel={wheel}",
                           "-e", "bot_app_health_timeout=10", "-e", "upgrade_backup=false", timeout=1200)
    codes = _stop_loop()
    assert rc != 0, "the rollout of a release that cannot start must fail"
    assert "The upgrade stopped at clawbot-molecule-ha-app1" in out, out[-5000:]
    assert "Rolled back from release 0.1.0.post999-" in out and "answers /ready again" in out, out[-5000:]
    assert "The host is back in the load balancers with its previous release." in out
    assert set(codes) == {"200"}, ({code: codes.count(code) for code in set(codes)}, _failures())
    # app1 is back on the release that ran; app2 was never touched.
    for app in APPS.values():
        assert app.check_output("clawbot-app --version") == "0.1.0.post1"
    assert "0.1.0.post999" not in APPS["app2"].check_output("ls /opt/clawbot/releases")
    assert " down;" not in LB.file("/etc/nginx/conf.d/clawbot.conf").content_string
    status, answer = chat(token, {"message": "after the rollback"})
    assert status == 200, answer
