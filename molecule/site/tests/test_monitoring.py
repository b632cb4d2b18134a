"""Monitoring of the whole stack on one host, verified from inside the container.

site.yml ran the exporters on the host and Prometheus, the alert relay and Alertmanager on it as
the monitoring host. These tests read the live state over loopback: every scrape target is up
(the bot's /metrics and the HTTPS probe through nginx included), the deployed rule file is the one
the promtool unit tests pass on, Prometheus' own alerts reach Alertmanager, and an alert reaches
the fake DingTalk, Feishu and WeCom robots (tests/fakes/robots.py, started by
tests/harness/fake-robots.yml) signed as the platforms require, counted by the relay.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

PROM = "http://127.0.0.1:9090"
AM = "http://127.0.0.1:9093"
RELAY = "http://127.0.0.1:18790"
ROBOTS_LOG = "/var/log/clawbot-fakes/robots.jsonl"
RULES = "/etc/prometheus/rules/clawbot.yml"
RULE_TESTS = Path(__file__).resolve().parents[3] / "tests" / "monitoring" / "rules"
EXPECTED_JOBS = {"node", "nginx", "redis", "mysqld", "clawbot", "blackbox_http", "prometheus",
                 "alertmanager", "alert_relay"}


def _get_json(host, url: str) -> dict:
    return json.loads(host.check_output("curl -sf --max-time 10 %s", url))


def _wait_for(what: str, check, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(2)


@pytest.fixture(scope="module")
def targets(host) -> list[dict]:
    """Prometheus' active targets, once all are up (a service started after Prometheus is up at
    its next scrape) or after 90 s (the test then names the ones that are not)."""
    def read() -> list[dict]:
        return _get_json(host, f"{PROM}/api/v1/targets?state=active")["data"]["activeTargets"]

    deadline = time.monotonic() + 90
    active = read()
    while not (active and all(t["health"] == "up" for t in active)) and time.monotonic() < deadline:
        time.sleep(3)
        active = read()
    return active


def test_every_target_of_the_stack_is_scraped_and_up(targets) -> None:
    down = {(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"}
    assert down == set()
    assert {t["labels"]["job"] for t in targets} == EXPECTED_JOBS
    # The inventory name as `host` on every target: the rules join bot, node and textfile metrics on it.
    assert {t["labels"].get("host") for t in targets} == {"clawbot-molecule-site"}


def test_the_bot_and_the_https_probe_report_real_values(host) -> None:
    def value(query: str) -> list[dict]:
        out = host.check_output("curl -sf --max-time 10 -G --data-urlencode %s %s", f"query={query}",
                                f"{PROM}/api/v1/query")
        return json.loads(out)["data"]["result"]

    # The bot's own series, scraped from its /metrics.
    assert value("clawbot_keyring_current_info")
    # /health through nginx over HTTPS, the certificate checked against its name, and its expiry.
    probe = value('probe_success{job="blackbox_http"}')
    assert [r["value"][1] for r in probe] == ["1"]
    expiry = value('probe_ssl_earliest_cert_expiry{job="blackbox_http"}')
    days_left = (float(expiry[0]["value"][1]) - time.time()) / 86400
    assert 300 < days_left <= 366  # the role's one-year self-signed certificate
    # The services behind the exporters, not only the exporters.
    for up in ("redis_up", "mysql_up", "nginx_up"):
        assert [r["value"][1] for r in value(up)] == ["1"], up
    # key_rotation's policy, read by node exporter's textfile collector.
    ages = {r["metric"]["keyring"]: float(r["value"][1]) for r in value("clawbot_keyring_max_age_seconds")}
    assert ages["encryption"] == 90 * 86400


def test_every_rule_group_is_loaded_and_healthy(host) -> None:
    groups = _get_json(host, f"{PROM}/api/v1/rules")["data"]["groups"]
    loaded = {g["name"] for g in groups if g["file"] == RULES}
    assert loaded == {"clawbot-hosts", "clawbot-bot", "clawbot-stack"}
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r.get("health") == "err"]
    assert broken == []


def test_deployed_rules_pass_the_promtool_unit_tests(host) -> None:
    """The rule file on the host, not only the one rendered on the controller."""
    host.check_output("rm -rf /tmp/rule-tests && mkdir /tmp/rule-tests && cp %s /tmp/rule-tests/clawbot.yml", RULES)
    names = []
    for test_file in sorted(RULE_TESTS.glob("*_test.yml")):
        host.check_output(f"cat > /tmp/rule-tests/{test_file.name} <<'EOF'\n{test_file.read_text()}\nEOF")
        names.append(test_file.name)
    result = host.run("cd /tmp/rule-tests && promtool test rules " + " ".join(names))
    assert result.rc == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(names)


def test_live_alertmanager_config_is_the_rendered_one(host) -> None:
    live = _get_json(host, f"{AM}/api/v2/status")["config"]["original"]
    assert "ops-dingtalk" in live and "ops-feishu" in live
    check = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert check.rc == 0, check.stdout + check.stderr
    # Critical alerts go to the receiver that holds the robots (the relay's webhook per robot).
    route = host.check_output("amtool config routes test --alertmanager.url=%s severity=critical team=clawbot", AM)
    assert route.strip() == "default-critical"
    receivers = {r["name"]: r for r in _get_json(host, f"{AM}/api/v2/receivers")}
    assert "default-critical" in receivers


def test_prometheus_alerts_reach_alertmanager(host) -> None:
    """The always-firing Watchdog travels Prometheus -> Alertmanager."""
    def watchdog() -> list[dict]:
        alerts = _get_json(host, f"{AM}/api/v2/alerts?filter=alertname%3D%22Watchdog%22")
        return [a for a in alerts if a["labels"].get("severity") == "none"]

    found = _wait_for("Watchdog in Alertmanager", watchdog)
    assert found[0]["generatorURL"].startswith("http")


def _robot_requests(host) -> list[dict]:
    f = host.file(ROBOTS_LOG)
    return [json.loads(line) for line in f.content_string.splitlines()] if f.exists else []


def _relay_sent(host, receiver: str) -> float:
    metrics = host.check_output(f"curl -sf {RELAY}/metrics")
    for labels, value in re.findall(r"^clawbot_alert_relay_notifications_total\{([^}]*)\} (\S+)$", metrics, re.M):
        parsed = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if parsed.get("receiver") == receiver and parsed.get("outcome") == "sent":
            return float(value)
    raise AssertionError(f"no clawbot_alert_relay_notifications_total sent series for {receiver}")


def test_an_alert_reaches_the_group_robots_signed(host) -> None:
    """A critical alert (as Prometheus would send it) reaches DingTalk, Feishu and WeCom robots,
    each accepted by a fake that checks the signature as the platform does; the relay counts it."""
    name = f"SiteSynthetic{uuid.uuid4().hex[:8]}"
    before = {r: _relay_sent(host, r) for r in ("ops-dingtalk", "ops-feishu", "ops-wecom")}
    host.check_output(
        "amtool alert add --alertmanager.url=%s %s severity=critical team=clawbot host=clawbot-molecule-site "
        "--annotation=summary=%s", AM, f"alertname={name}", f"synthetic alert {name}")

    def delivered() -> dict | None:
        ours = {r["platform"]: r for r in _robot_requests(host) if r["accepted"] and name in json.dumps(r["body"])}
        return ours if set(ours) == {"dingtalk", "feishu", "wecom"} else None

    got = _wait_for(f"{name} accepted by the three fake robots", delivered)
    assert got["feishu"]["body"]["sign"] and got["feishu"]["body"]["timestamp"]
    assert got["dingtalk"]["body"]["msgtype"] == "markdown"
    assert "告警" in json.dumps(got["dingtalk"]["body"], ensure_ascii=False)  # ops-dingtalk speaks zh
    for receiver, count in before.items():
        assert _relay_sent(host, receiver) >= count + 1, receiver
    # No robot request was rejected in this scenario (all secrets are right).
    assert [r for r in _robot_requests(host) if not r["accepted"]] == []
