"""The role refuses what promtool refuses: a broken extra scrape config or rule file fails the
play before anything is live; the live files stay as they were and Prometheus keeps serving.
Runs prometheus-only.yml with extra vars against Molecule's inventory (after test_prometheus.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
VARS = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
AUTH = f"{VARS['prometheus_web_client_user']}:{VARS['prometheus_web_client_password']}"
SECRETS = [VARS["redis_monitor_password"], VARS["mysql_exporter_password"], VARS["prometheus_web_client_password"]]


def converge(extra_vars: dict) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "-v", "--diff", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(SCENARIO_DIR / "prometheus-only.yml"), "-e", json.dumps(extra_vars)],
        capture_output=True, text=True, timeout=600, check=False)


def live_state(host) -> dict[str, str]:
    with host.sudo():
        sums = host.check_output("sha256sum /etc/prometheus/prometheus.yml /etc/prometheus/rules/*")
    auth = shlex.quote(AUTH)
    reload_ok = host.check_output(
        f"curl -sf -u {auth} http://127.0.0.1:9090/metrics | grep '^prometheus_config_last_reload_successful '")
    ready = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -u {auth} http://127.0.0.1:9090/-/ready")
    return {"files": sums, "reload": reload_ok, "ready": ready}


def test_a_broken_extra_scrape_config_is_refused(host):
    before = live_state(host)
    assert before["ready"] == "200" and before["reload"].endswith(" 1")
    # Valid YAML, refused by promtool (not a duration).
    bad = [{"job_name": "broken", "scrape_interval": "fortnightly", "static_configs": [{"targets": ["127.0.0.1:1"]}]}]
    run = converge({"prometheus_extra_scrape_configs": bad})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-4000:]
    assert "Scrape | Write /etc/prometheus/prometheus.yml" in out and "failed to validate" in out, out[-4000:]
    assert not [s for s in SECRETS if s in out], "a secret was logged"
    assert live_state(host) == before


def test_a_broken_extra_rule_file_is_refused(tmp_path, host):
    before = live_state(host)
    rules = tmp_path / "broken.yml"
    rules.write_text("groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: rate(up[5m]\n")
    run = converge({"prometheus_extra_rule_files": [str(rules)]})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-4000:]
    assert "Rules | Copy the extra rule files" in out and "failed to validate" in out, out[-4000:]
    assert not host.file("/etc/prometheus/rules/broken.yml").exists
    assert live_state(host) == before


def test_a_valid_extra_rule_file_is_loaded_and_removed_again(tmp_path, host):
    rules = tmp_path / "extra.yml"
    rules.write_text("groups:\n  - name: molecule-extra\n    rules:\n"
                     "      - record: molecule:up:sum\n        expr: sum(up)\n")
    run = converge({"prometheus_extra_rule_files": [str(rules)]})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    groups = json.loads(host.check_output(f"curl -sf -u {shlex.quote(AUTH)} http://127.0.0.1:9090/api/v1/rules"))
    assert "molecule-extra" in {g["name"] for g in groups["data"]["groups"]}
    # Back to the inventory's rule files: the extra file is removed and Prometheus reloaded.
    run = converge({})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert not host.file("/etc/prometheus/rules/extra.yml").exists
    groups = json.loads(host.check_output(f"curl -sf -u {shlex.quote(AUTH)} http://127.0.0.1:9090/api/v1/rules"))
    assert "molecule-extra" not in {g["name"] for g in groups["data"]["groups"]}
