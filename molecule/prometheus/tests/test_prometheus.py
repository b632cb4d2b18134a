"""Exporters and Prometheus on one container (every group but bot_servers), from inside it."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
VARS = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
AUTH = f"{VARS['prometheus_web_client_user']}:{VARS['prometheus_web_client_password']}"
SECRETS = [VARS["redis_monitor_password"], VARS["mysql_exporter_password"], VARS["prometheus_web_client_password"]]
HOST = "clawbot-molecule-prometheus"
EXPORTER_PORTS = {"node": 9100, "nginx": 9113, "redis": 9121, "mysqld": 9104}
JOBS = {"prometheus", "node", "nginx", "redis", "mysqld", "blackbox_http"}


def api(host, path: str, **params: str) -> Any:
    data = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    out = host.check_output(f"curl -sf -G -u {shlex.quote(AUTH)} {data} "
                            f"{shlex.quote('http://127.0.0.1:9090/api/v1/' + path)}")
    body = json.loads(out)
    assert body["status"] == "success", body
    return body["data"]


def query(host, expr: str) -> list[dict[str, Any]]:
    return api(host, "query", query=expr)["result"]


def wait_for_targets(host, timeout: float = 60) -> list[dict[str, Any]]:
    """Every active target scraped at least once and healthy (bounded wait for the first scrapes)."""
    deadline = time.monotonic() + timeout
    while True:
        targets = api(host, "targets", state="active")["activeTargets"]
        if (targets and all(t["health"] == "up" for t in targets)) or time.monotonic() > deadline:
            return targets
        time.sleep(2)


def test_every_target_is_up_with_its_host_label(host):
    targets = wait_for_targets(host)
    assert {t["labels"]["job"] for t in targets} == JOBS
    assert [(t["labels"]["job"], t["lastError"]) for t in targets if t["health"] != "up"] == []
    assert {t["labels"]["host"] for t in targets} == {HOST}
    for t in targets:
        if t["labels"]["job"] != "blackbox_http":
            assert t["scrapeUrl"].startswith("http://127.0.0.1:"), t["scrapeUrl"]


def test_exporters_reach_their_services(host):
    wait_for_targets(host)
    for metric in ("redis_up", "mysql_up", "nginx_up"):
        result = query(host, metric)
        assert [r["value"][1] for r in result] == ["1"], (metric, result)
    # The textfile collector directory is read (other roles write *.prom files there). Only the
    # role's target (it has a `host` label): Debian's default config, live before the role's,
    # scraped localhost:9100 too, and a restart writes no staleness marker, so that series stays
    # visible for Prometheus' 5 minute lookback.
    assert [r["value"][1] for r in query(host, 'node_textfile_scrape_error{host!=""}')] == ["0"]
    # The systemd collector is on in this scenario.
    assert query(host, 'node_systemd_unit_state{name="redis-server.service",state="active"}')[0]["value"][1] == "1"


def test_https_probe_checks_the_certificate_with_the_server_name(host):
    """nginx's self-signed certificate (the CA file) verified for nginx_server_names[0]: the TLS
    handshake succeeds and the expiry is measured; /health answers 502 (no bot in this scenario)."""
    wait_for_targets(host)
    expiry = query(host, 'probe_ssl_earliest_cert_expiry{job="blackbox_http"}')
    assert len(expiry) == 1 and float(expiry[0]["value"][1]) > time.time() + 86400
    assert query(host, 'probe_http_status_code{job="blackbox_http"}')[0]["value"][1] == "502"
    assert query(host, 'probe_http_ssl{job="blackbox_http"}')[0]["value"][1] == "1"


def test_every_service_listens_on_loopback_only(host):
    listening = host.check_output("ss -Hltn")
    for port in [*EXPORTER_PORTS.values(), 9090, 9115]:
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()
                     if line.split()[3].rsplit(":", 1)[1] == str(port)}
        assert addresses == {"127.0.0.1"}, (port, addresses)


def test_no_credential_in_the_process_list(host):
    args = host.check_output("ps -eo args")
    assert "prometheus-redis-exporter" in args and "prometheus-mysqld-exporter" in args
    assert [s for s in SECRETS if s in args] == []


def test_files_holding_credentials_are_closed(host):
    expected = {
        "/etc/default/prometheus-redis-exporter": ("root", "root", 0o600),
        "/etc/prometheus/mysqld-exporter.cnf": ("prometheus", "prometheus", 0o600),
        "/etc/prometheus/prometheus.yml": ("root", "prometheus", 0o640),
        "/etc/prometheus/web-config.yml": ("root", "prometheus", 0o640),
    }
    for path, (user, group, mode) in expected.items():
        f = host.file(path)
        assert (f.user, f.group, f.mode) == (user, group, mode), path
    with host.sudo():
        assert VARS["redis_monitor_password"] in host.file("/etc/default/prometheus-redis-exporter").content_string
        web = host.file("/etc/prometheus/web-config.yml").content_string
    assert VARS["prometheus_web_client_password"] not in web and "$2y$10$" in web


def test_basic_auth_is_required(host):
    code = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/api/v1/targets")
    assert code == "401"


def test_flags_in_effect(host):
    flags = api(host, "status/flags")
    assert flags["storage.tsdb.retention.time"] == VARS["prometheus_retention_time"]
    # Prometheus prints sizes in binary units (256MB is 256MiB to it).
    assert flags["storage.tsdb.retention.size"] == VARS["prometheus_retention_size"].replace("B", "iB")
    config = yaml.safe_load(api(host, "status/config")["yaml"])
    assert config["global"]["external_labels"] == VARS["prometheus_external_labels"]
    assert "alerting" not in config or not config["alerting"].get("alertmanagers")


def test_the_rules_are_loaded(host):
    groups = api(host, "rules")["groups"]
    rendered = yaml.safe_load(host.file("/etc/prometheus/rules/clawbot.yml").content_string)
    assert {g["name"] for g in groups} == {g["name"] for g in rendered["groups"]}
    assert all(g["file"] == "/etc/prometheus/rules/clawbot.yml" for g in groups)
    assert [r["health"] for g in groups for r in g["rules"] if r["health"] != "ok"] == []
