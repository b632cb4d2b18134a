"""roles/prometheus/templates/prometheus.yml.j2 rendered for multi-host inventories: targets,
`host` labels and addresses follow the stack's addressing rule (loopback on the monitoring host
itself, else the private address), ports come from each host's own variables.

The template is rendered by Ansible itself (the `template` lookup, with the role's defaults and
vars) in a small local playbook against a fake inventory; no host is contacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "prometheus"

PLAYBOOK = f"""
- name: Render prometheus.yml for the monitoring host
  hosts: monitoring_servers
  gather_facts: false
  connection: local
  vars_files:
    - {ROLE}/defaults/main.yml
    - {ROLE}/vars/main.yml
  vars:
    role_path: {ROLE}
  tasks:
    - name: Render the template
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', '{ROLE}/templates/prometheus.yml.j2') }}}}"
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}.yml"
        mode: "0644"
"""

# Split layout like inventories/ha plus a monitoring host, with a second bot that has
# its own port and no private address, an IPv6 data host and a renamed nginx server name.
SPLIT = {
    "all": {"children": {"clawbot": {
        "hosts": {
            "mon-1": {"ansible_host": "192.0.2.2", "firewall_private_address": "10.30.0.2"},
            "lb-1": {"ansible_host": "192.0.2.5", "firewall_private_address": "10.30.0.5",
                     "nginx_server_names": ["chat.example.com", "www.example.com"], "nginx_https_port": 8443},
            "bot-1": {"ansible_host": "192.0.2.10", "firewall_private_address": "10.30.0.10",
                      "bot_app_listen_host": "10.30.0.10"},
            "bot-2": {"ansible_host": "192.0.2.11", "bot_app_port": 18800},
            "data-1": {"ansible_host": "192.0.2.20", "firewall_private_address": "fd00::20",
                       "exporters_redis_port": 9200},
        },
        "children": {
            "monitoring_servers": {"hosts": {"mon-1": {}}},
            "lb_servers": {"hosts": {"lb-1": {}}},
            "bot_servers": {"hosts": {"bot-1": {}, "bot-2": {}}},
            "redis_servers": {"hosts": {"data-1": {}}},
            "db_servers": {"hosts": {"data-1": {}}},
        }}}}}

# Everything on one host (inventories/production-single-host): all loopback.
SINGLE = {
    "all": {"children": {"clawbot": {
        "hosts": {"solo": {"ansible_host": "192.0.2.50", "firewall_private_address": "10.0.0.50",
                           "bot_app_listen_host": "127.0.0.1"}},
        "children": {g: {"hosts": {"solo": {}}} for g in
                     ("monitoring_servers", "lb_servers", "bot_servers", "redis_servers", "db_servers")}}}}}


def render(tmp_path: Path, inventory: dict[str, Any], *extra: str) -> dict[str, dict[str, Any]]:
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "render.yml").write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections")}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(tmp_path / "hosts.yml"),
         str(tmp_path / "render.yml"), "-e", f"out_dir={tmp_path}",
         "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {p.stem: yaml.safe_load(p.read_text()) for p in tmp_path.glob("*.yml") if p.stem not in ("hosts", "render")}


def targets(config: dict[str, Any], job: str) -> dict[str, str]:
    """host label -> target of one job."""
    [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == job]
    out: dict[str, str] = {}
    for static in scrape["static_configs"]:
        for target in static["targets"]:
            assert static["labels"]["host"] not in out
            out[static["labels"]["host"]] = target
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return render(tmp_path_factory.mktemp("split"), SPLIT)["mon-1"]


def test_split_layout_exporters_at_private_addresses(split):
    assert targets(split, "node") == {"mon-1": "127.0.0.1:9100", "lb-1": "10.30.0.5:9100", "bot-1": "10.30.0.10:9100",
                                      "bot-2": "192.0.2.11:9100", "data-1": "[fd00::20]:9100"}
    assert targets(split, "nginx") == {"lb-1": "10.30.0.5:9113"}
    assert targets(split, "redis") == {"data-1": "[fd00::20]:9200"}  # the host's own exporters_redis_port
    assert targets(split, "mysqld") == {"data-1": "[fd00::20]:9104"}


def test_split_layout_bots_and_monitoring_services(split):
    assert targets(split, "clawbot") == {"bot-1": "10.30.0.10:18789", "bot-2": "192.0.2.11:18800"}
    [bot] = [s for s in split["scrape_configs"] if s["job_name"] == "clawbot"]
    assert bot["metrics_path"] == "/metrics"
    assert targets(split, "prometheus") == {"mon-1": "127.0.0.1:9090"}
    assert targets(split, "alertmanager") == {"mon-1": "127.0.0.1:9093"}
    assert targets(split, "alert_relay") == {"mon-1": "127.0.0.1:18790"}
    assert split["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]
    assert split["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_split_layout_https_probe_through_nginx(split):
    [probe] = [s for s in split["scrape_configs"] if s["job_name"] == "blackbox_http"]
    assert probe["metrics_path"] == "/probe" and probe["params"] == {"module": ["clawbot_https_health"]}
    assert probe["static_configs"] == [{"targets": ["https://10.30.0.5:8443/health"],
                                        "labels": {"host": "lb-1", "__param_hostname": "chat.example.com"}}]
    assert {"target_label": "__address__", "replacement": "127.0.0.1:9115"} in probe["relabel_configs"]


def test_every_job_name_once_and_every_target_labelled(split):
    jobs = [s["job_name"] for s in split["scrape_configs"]]
    assert sorted(jobs) == sorted({"prometheus", "alertmanager", "alert_relay", "node", "nginx", "redis", "mysqld",
                                   "clawbot", "blackbox_http"})
    for scrape in split["scrape_configs"]:
        for static in scrape["static_configs"]:
            assert set(static["labels"]) <= {"host", "__param_hostname"} and static["labels"]["host"]


def test_single_host_layout_all_loopback(tmp_path):
    config = render(tmp_path, SINGLE)["solo"]
    for job, port in {"node": 9100, "nginx": 9113, "redis": 9121, "mysqld": 9104, "clawbot": 18789}.items():
        assert targets(config, job) == {"solo": f"127.0.0.1:{port}"}, job
    [probe] = [s for s in config["scrape_configs"] if s["job_name"] == "blackbox_http"]
    assert probe["static_configs"][0]["targets"] == ["https://127.0.0.1:443/health"]
    assert probe["static_configs"][0]["labels"]["__param_hostname"] == "solo"


def test_optional_parts_off_and_extra_jobs(tmp_path):
    extra = json.dumps({
        "prometheus_alertmanager_enabled": False, "prometheus_alert_relay_enabled": False,
        "prometheus_blackbox_enabled": False, "prometheus_web_client_user": "mon",
        "prometheus_web_client_password": "pw-only-for-this-test", "prometheus_web_tls_cert_file": "/etc/x.crt",
        "prometheus_extra_scrape_configs": [{"job_name": "extra", "static_configs": [{"targets": ["10.1.1.1:9999"]}]}],
    })
    config = render(tmp_path, SINGLE, "-e", extra)["solo"]
    jobs = [s["job_name"] for s in config["scrape_configs"]]
    assert "alerting" not in config
    assert {"alertmanager", "alert_relay", "blackbox_http"}.isdisjoint(jobs)
    assert jobs[-1] == "extra"
    [me] = [s for s in config["scrape_configs"] if s["job_name"] == "prometheus"]
    assert me["scheme"] == "https" and me["basic_auth"] == {"username": "mon", "password": "pw-only-for-this-test"}
    [ext] = [s for s in config["scrape_configs"] if s["job_name"] == "extra"]
    assert ext["static_configs"] == [{"targets": ["10.1.1.1:9999"]}]
