"""The stack's Prometheus alert rules, rendered by Ansible and unit-tested by promtool.

roles/prometheus/templates/rules/clawbot.yml.j2 is rendered with the role's defaults by a real
`ansible-playbook` run (the same template module the role uses), checked with `promtool check
rules` and tested with `promtool test rules` against tests/monitoring/rules/*_test.yml.
Then each threshold variable is moved past the test's values: the same tests must fail, which
shows the rules really read the variables. promtool comes from tests/harness/promtool.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "prometheus"
TEMPLATE = ROLE / "templates" / "rules" / "clawbot.yml.j2"
RULE_TESTS = sorted((Path(__file__).parent / "rules").glob("*_test.yml"))

# One variable per threshold, moved just past the test series: the named test must then fail.
MOVED = {
    "cpu": ({"prometheus_alert_cpu_percent": 87}, "HostHighCpu"),
    "memory": ({"prometheus_alert_memory_percent": 92}, "HostHighMemory"),
    "disk": ({"prometheus_alert_disk_free_percent": 13}, "HostLowDisk"),
    "latency_warning": ({"prometheus_alert_latency_p99_warning_ms": 2000}, "BotLatencyHigh"),
    "latency_critical": ({"prometheus_alert_latency_p99_critical_ms": 2500}, "BotLatencyHigh"),
    "5xx_warning": ({"prometheus_alert_5xx_warning_percent": 3}, "BotErrorRateHigh"),
    "5xx_critical": ({"prometheus_alert_5xx_critical_percent": 7}, "BotErrorRateHigh"),
    "model_success": ({"prometheus_alert_model_success_percent": 93}, "ModelCallsFailing"),
    "model_latency": ({"prometheus_alert_model_latency_ms": 1700}, "ModelLatencyHigh"),
    "sessions": ({"prometheus_alert_active_sessions_max": 1001}, "ActiveSessionsOverCapacity"),
    "callbacks": ({"prometheus_alert_callback_failures_max": 13}, "CallbackVerificationFailures"),
    "target_down_for": ({"prometheus_alert_target_down_for": "5m"}, "HostDown"),
    "tls": ({"prometheus_alert_tls_expiry_days": 12}, "TLSCertificateExpiring"),
    "backup": ({"prometheus_alert_backup_max_age_hours": 27}, "BackupTooOld"),
    "team": ({"prometheus_alert_team": "ops"}, "Watchdog"),
}


def _promtool() -> str:
    out = subprocess.run(["bash", str(ROOT / "tests" / "harness" / "promtool.sh")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _defaults() -> dict[str, object]:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()) or {}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Render the rules once per variant (defaults + each MOVED override) in one playbook run.

    The template lookup renders exactly what the role's template task writes (same engine, same
    `#jinja2:` header handling) without a module run per variant.
    """
    base = tmp_path_factory.mktemp("rules")
    alert_defaults = {k: v for k, v in _defaults().items() if k.startswith("prometheus_alert_")}
    variants = {"defaults": {}} | {name: moved[0] for name, moved in MOVED.items()}
    playbook = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": alert_defaults | {"ansible_python_interpreter": sys.executable, "_variants": variants,
                                  "_template": str(TEMPLATE)},
        "tasks": [{
            "name": "render",
            "ansible.builtin.debug": {
                "msg": "{{ lookup('ansible.builtin.template', _template, template_vars=_variants[item]) }}"},
            "loop": list(variants),
        }],
    }]
    (base / "render.yml").write_text(yaml.safe_dump(playbook))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json")
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "localhost,", str(base / "render.yml")],
                         check=True, capture_output=True, text=True, env=env, cwd=base)
    results = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["results"]
    dirs = {}
    for result in results:
        d = dirs[result["item"]] = base / result["item"]
        d.mkdir()
        (d / "clawbot.yml").write_text(result["msg"])
        for test_file in RULE_TESTS:
            shutil.copy(test_file, d / test_file.name)
    assert set(dirs) == set(variants)
    return dirs


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_every_threshold_variable_is_a_role_default() -> None:
    used = {name for moved in MOVED.values() for name in moved[0]}
    template_vars = set(re.findall(r"\[\[\s*(prometheus_alert_\w+)", TEMPLATE.read_text()))
    assert template_vars <= set(_defaults()), "a rule uses a variable the role does not define"
    assert used <= template_vars


def test_rules_pass_promtool_check(rendered: dict[str, Path]) -> None:
    result = _run("check", "rules", "clawbot.yml", cwd=rendered["defaults"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test(rendered: dict[str, Path]) -> None:
    rules = yaml.safe_load((rendered["defaults"] / "clawbot.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = [case for f in RULE_TESTS for case in yaml.safe_load(f.read_text())["tests"]]
    tested = {t["alertname"] for case in tests
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts - tested == set(), "alerts without a firing test"
    assert len(alerts) >= 17


def test_rules_unit_tests_pass_with_the_default_thresholds(rendered: dict[str, Path]) -> None:
    result = _run("test", "rules", *(f.name for f in RULE_TESTS), cwd=rendered["defaults"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", sorted(MOVED))
def test_moving_a_threshold_changes_the_outcome(rendered: dict[str, Path], variant: str) -> None:
    result = _run("test", "rules", *(f.name for f in RULE_TESTS), cwd=rendered[variant])
    assert result.returncode != 0, f"{variant}: the rules ignore {MOVED[variant][0]}"
    assert f"alertname: {MOVED[variant][1]}" in result.stdout + result.stderr
