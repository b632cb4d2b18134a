"""Alertmanager and the alert relay on one monitoring host, robots faked on 127.0.0.1:18900.

The fake robots (tests/fakes/robots.py, started by ../prepare.yml) check signatures as DingTalk,
Feishu and WeCom do and append one JSON line per request to ROBOTS_LOG; exim4 delivers e-mail to
/var/mail/<user>. The bot (clawbot-app) is not installed in this container.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import yaml

AM = "http://127.0.0.1:9093"
RELAY = "http://127.0.0.1:18790"
AM_CONFIG = "/etc/prometheus/alertmanager.yml"
AM_TOKEN = "/etc/prometheus/alertmanager-relay.token"
RELAY_CONFIG = "/etc/clawbot-alert-relay/relay.yaml"
RELAY_TOKEN = "/etc/clawbot-alert-relay/token"
ROBOTS_LOG = "/var/log/clawbot-fakes/robots.jsonl"
WAIT_SECONDS = 60


def _curl(host, *args: str) -> tuple[int, str]:
    """HTTP status and body of a curl run inside the container (testinfra quotes each arg)."""
    out = host.check_output("curl -s -o /tmp/curl.body -w '%%{http_code}' " + " ".join(["%s"] * len(args)), *args)
    return int(out), host.file("/tmp/curl.body").content_string


def _post_alert(host, labels: dict[str, str]) -> None:
    body = json.dumps([{"labels": labels,
                        "annotations": {"summary": f"molecule test alert {labels['alertname']}",
                                        "description": "posted by molecule/alertmanager/tests"}}])
    status, text = _curl(host, "-X", "POST", "-H", "Content-Type: application/json", "--data", body,
                         f"{AM}/api/v2/alerts")
    assert status == 200, text


def _robot_requests(host) -> list[dict]:
    f = host.file(ROBOTS_LOG)
    return [json.loads(line) for line in f.content_string.splitlines()] if f.exists else []


def _mentions(record: dict, text: str) -> bool:
    return text in json.dumps(record["body"], ensure_ascii=False)


def _relay_counter(host, receiver: str, outcome: str) -> float:
    metrics = host.check_output(f"curl -sf {RELAY}/metrics")
    for m in re.finditer(r"^clawbot_alert_relay_notifications_total\{([^}]*)\} (\S+)$", metrics, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("receiver") == receiver and labels.get("outcome") == outcome:
            return float(m.group(2))
    raise AssertionError(f"no clawbot_alert_relay_notifications_total for {receiver}/{outcome}")


def _wait_for(what: str, check, seconds: int = WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(1)


def _secrets(host) -> list[str]:
    """Every secret the two services hold, read from their files (root)."""
    relay = yaml.safe_load(host.file(RELAY_CONFIG).content_string)
    am = yaml.safe_load(host.file(AM_CONFIG).content_string)
    values = [host.file(RELAY_TOKEN).content_string.strip()]
    for r in relay["receivers"]:
        values.append(r.get("secret", ""))
        values += re.findall(r"(?:access_token|key)=([^&]+)|/hook/([^/?]+)$", r["webhook_url"])[0]
    for receiver in am["receivers"]:
        values += [c["auth_password"] for c in receiver.get("email_configs", []) if "auth_password" in c]
        values += [c["api_secret"] for c in receiver.get("wechat_configs", [])]
    return sorted({v for v in values if v})


# --- Alertmanager -------------------------------------------------------------------------------

def test_alertmanager_is_ready_on_loopback_without_clustering(host) -> None:
    assert _curl(host, f"{AM}/-/ready")[0] == 200
    listening = host.check_output("ss -Hltnp")
    am_sockets = [line.split()[3] for line in listening.splitlines() if "prometheus-aler" in line]
    assert am_sockets == ["127.0.0.1:9093"]


def test_live_configuration_is_the_rendered_one(host) -> None:
    rendered = yaml.safe_load(host.file(AM_CONFIG).content_string)
    shown = yaml.safe_load(host.check_output(f"amtool config show --alertmanager.url={AM}"))

    def tree(route: dict) -> list:
        return [route["receiver"], route.get("matchers", []), [tree(r) for r in route.get("routes", [])]]

    assert tree(shown["route"]) == tree(rendered["route"])
    assert shown["route"]["group_wait"] == "1s"
    assert shown["route"]["group_by"] == ["alertname", "host"]
    assert shown["inhibit_rules"] == rendered["inhibit_rules"]
    assert [r["name"] for r in shown["receivers"]] == [r["name"] for r in rendered["receivers"]]
    for live, file in zip(shown["receivers"], rendered["receivers"], strict=True):
        assert [h["url"] for h in live.get("webhook_configs", [])] == \
               [h["url"] for h in file.get("webhook_configs", [])]
        # Alertmanager hides secrets in its API; the file has them.
        for mail in live.get("email_configs", []):
            assert mail["auth_password"] == "<secret>"
    ok = host.check_output(f"curl -sf {AM}/metrics")
    assert re.search(r"^alertmanager_config_last_reload_successful 1$", ok, re.M)


@pytest.mark.parametrize(("labels", "receivers"), [
    ("severity=critical team=clawbot host=web1", "default-critical"),
    ("severity=warning team=clawbot host=web1", "default-warning"),
    ("severity=info", "default-warning"),
    ("severity=critical team=qa", "team-qa-critical"),
    ("severity=warning team=qa", "team-qa-warning"),
    ("alertname=Watchdog severity=none team=clawbot", "watchdog"),
])
def test_routes_by_severity_and_team(host, labels: str, receivers: str) -> None:
    out = host.check_output(f"amtool config routes test --config.file={AM_CONFIG} {labels}")
    assert out.strip() == receivers


def test_robots_get_the_severities_they_asked_for(host) -> None:
    rendered = yaml.safe_load(host.file(AM_CONFIG).content_string)
    by_name = {r["name"]: r for r in rendered["receivers"]}

    def robots(name: str) -> list[str]:
        return [h["url"].rsplit("/", 1)[1] for h in by_name[name].get("webhook_configs", [])]

    assert robots("default-critical") == ["ops-dingtalk", "ops-feishu", "ops-wecom"]
    assert robots("default-warning") == ["ops-dingtalk", "ops-feishu"]  # ops-wecom: critical only
    assert robots("team-qa-critical") == ["qa-dingtalk"]
    assert "email_configs" in by_name["default-critical"]
    assert "email_configs" not in by_name["default-warning"]
    assert "wechat_configs" in by_name["team-qa-critical"]
    assert "wechat_configs" in by_name["default-critical"]
    assert "wechat_configs" not in by_name["default-warning"]  # critical only by default
    assert by_name["watchdog"] == {"name": "watchdog"}
    for receiver in rendered["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].startswith(f"{RELAY}/alerts/")
            assert hook["send_resolved"] is True
            assert hook["http_config"]["authorization"]["credentials_file"] == AM_TOKEN
    # Alertmanager never holds the robots' webhook tokens or signing secrets.
    text = host.file(AM_CONFIG).content_string
    relay = yaml.safe_load(host.file(RELAY_CONFIG).content_string)
    for r in relay["receivers"]:
        assert r["webhook_url"] not in text
        assert "secret" not in r or r["secret"] not in text


def test_host_down_silences_the_hosts_other_alerts(host) -> None:
    tag = uuid.uuid4().hex[:8]
    down, other = f"inhibit-{tag}", f"other-{tag}"
    _post_alert(host, {"alertname": "TargetDown", "host": down, "severity": "critical", "team": "clawbot",
                       "job": "node"})
    _post_alert(host, {"alertname": f"HighCpu{tag}", "host": down, "severity": "warning", "team": "clawbot"})
    _post_alert(host, {"alertname": f"HighCpu{tag}", "host": other, "severity": "warning", "team": "clawbot"})
    # Critical silences the warning of the same alertname and host.
    _post_alert(host, {"alertname": f"DiskFull{tag}", "host": other, "severity": "critical", "team": "clawbot"})
    _post_alert(host, {"alertname": f"DiskFull{tag}", "host": other, "severity": "warning", "team": "clawbot"})

    def states() -> dict | None:
        alerts = json.loads(host.check_output(f"curl -sf {AM}/api/v2/alerts"))
        got = {(a["labels"]["alertname"], a["labels"]["host"], a["labels"]["severity"]): a["status"]
               for a in alerts if a["labels"].get("host") in (down, other)}
        return got if len(got) == 5 and all(s["state"] != "unprocessed" for s in got.values()) else None

    got = _wait_for("the five test alerts processed", states, 30)
    assert got[(f"HighCpu{tag}", down, "warning")]["state"] == "suppressed"
    assert got[(f"HighCpu{tag}", down, "warning")]["inhibitedBy"]
    assert got[("TargetDown", down, "critical")]["state"] == "active"
    assert got[(f"HighCpu{tag}", other, "warning")]["state"] == "active"
    assert got[(f"DiskFull{tag}", other, "warning")]["state"] == "suppressed"
    assert got[(f"DiskFull{tag}", other, "critical")]["state"] == "active"


# --- End to end: Alertmanager -> relay -> robots --------------------------------------------------

def test_critical_alert_reaches_every_robot_signed_and_by_mail(host) -> None:
    name = f"MoleculeCritical{uuid.uuid4().hex[:8]}"
    sent_before = {r: _relay_counter(host, r, "sent") for r in ("ops-dingtalk", "ops-feishu", "ops-wecom")}
    _post_alert(host, {"alertname": name, "severity": "critical", "team": "clawbot", "host": "alertmanager"})

    def delivered() -> dict | None:
        ours = [r for r in _robot_requests(host) if r["accepted"] and _mentions(r, name)]
        platforms = {r["platform"]: r for r in ours}
        return platforms if set(platforms) == {"dingtalk", "feishu", "wecom"} else None

    got = _wait_for(f"{name} accepted by the DingTalk, Feishu and WeCom fakes", delivered)
    # The fakes accepted them, i.e. the DingTalk sign (query) and the Feishu sign (body) were right.
    assert got["feishu"]["body"]["sign"] and got["feishu"]["body"]["timestamp"]
    # ops-dingtalk has language zh, the others the relay's default (en).
    assert "[告警中:1]" in json.dumps(got["dingtalk"]["body"], ensure_ascii=False)
    assert "[FIRING:1]" in json.dumps(got["feishu"]["body"], ensure_ascii=False)
    for receiver, before in sent_before.items():
        assert _relay_counter(host, receiver, "sent") >= before + 1, receiver
    mail = _wait_for("the e-mail in /var/mail/ops",
                     lambda: host.file("/var/mail/ops").exists and name in host.file("/var/mail/ops").content_string)
    assert mail


def test_wrong_signing_secret_is_rejected_and_counted_failed(host) -> None:
    name = f"MoleculeQa{uuid.uuid4().hex[:8]}"
    failed_before = _relay_counter(host, "qa-dingtalk", "failed")
    _post_alert(host, {"alertname": name, "severity": "critical", "team": "qa", "host": "alertmanager"})

    def rejected() -> list | None:
        return [r for r in _robot_requests(host) if r["platform"] == "dingtalk" and _mentions(r, name)] or None

    records = _wait_for(f"{name} sent to the DingTalk fake", rejected)
    assert all(not r["accepted"] for r in records)
    assert {r["errcode"] for r in records} == {310000}  # sign not match
    _wait_for("qa-dingtalk failed counted",
              lambda: _relay_counter(host, "qa-dingtalk", "failed") >= failed_before + 1, 30)
    assert _relay_counter(host, "qa-dingtalk", "sent") == 0


# --- The relay --------------------------------------------------------------------------------------

def test_relay_refuses_a_missing_or_wrong_token(host) -> None:
    body = json.dumps({"version": "4", "status": "firing", "alerts": []})
    assert _curl(host, "-X", "POST", "--data", body, f"{RELAY}/alerts/ops-dingtalk")[0] == 401
    assert _curl(host, "-X", "POST", "-H", "Authorization: Bearer not-the-token-at-all", "--data", body,
                 f"{RELAY}/alerts/ops-dingtalk")[0] == 401


def test_alertmanager_and_the_relay_share_the_token(host) -> None:
    relay = host.file(RELAY_TOKEN).content_string.strip()
    assert len(relay) >= 32
    assert host.file(AM_TOKEN).content_string.strip() == relay


@pytest.mark.parametrize(("path", "owner", "group", "mode"), [
    (RELAY_CONFIG, "clawbot-relay", "clawbot-relay", 0o600),
    (RELAY_TOKEN, "clawbot-relay", "clawbot-relay", 0o600),
    ("/etc/clawbot-alert-relay", "root", "clawbot-relay", 0o750),
    (AM_CONFIG, "root", "prometheus", 0o640),
    (AM_TOKEN, "root", "prometheus", 0o640),
])
def test_file_modes(host, path: str, owner: str, group: str, mode: int) -> None:
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def test_no_secret_in_the_journal_or_the_command_lines(host) -> None:
    secrets = _secrets(host)
    assert len(secrets) >= 8  # relay token, 2 signing secrets, 3 webhook tokens, SMTP, WeCom app
    journal = host.check_output("journalctl --no-pager -o cat -u clawbot-alert-relay -u prometheus-alertmanager")
    assert "notification delivered" in journal  # the relay did log its work
    commands = host.check_output("ps -o args= -u clawbot-relay -u prometheus")
    assert "alert-relay --config" in commands
    for secret in secrets:
        assert secret not in journal, f"a secret ({secret[:4]}...) is in the journal"
        assert secret not in commands, f"a secret ({secret[:4]}...) is on a command line"


def test_relay_runs_its_own_release_without_the_bot(host) -> None:
    assert host.service("clawbot-alert-relay").is_running
    assert host.service("clawbot-alert-relay").is_enabled
    assert host.check_output("systemctl show -P LoadState clawbot-app") == "not-found"
    assert not host.file("/opt/clawbot").exists
    assert not host.file("/usr/local/bin/clawbot-app").exists
    current = host.file("/opt/clawbot-alert-relay/current")
    assert current.is_symlink and current.linked_to.startswith("/opt/clawbot-alert-relay/releases/")
    assert host.check_output("systemctl show -P User clawbot-alert-relay") == "clawbot-relay"


def test_relay_unit_is_sandboxed(host) -> None:
    out = host.check_output("systemd-analyze security --no-pager clawbot-alert-relay | tail -1")
    score = float(re.search(r"exposure level .*?: (\d+\.\d+)", out).group(1))
    print(f"systemd-analyze security clawbot-alert-relay: {out.strip()}")
    assert score <= 2.5, out
