"""playbooks/compliance.yml against the converged stack: it passes, it fails naming the control
after deliberate breaks, its JUnit file lists them, and it never changes the host.

The tests run in file order: a passing run (as an AWX "Check" job would start it, with --check
--diff: every role of site.yml in check mode must report no change, which is also this scenario's
check on the converged host), a probes-only run with four breaks at once (each one hits a
different control), a probes-only run with ufw disabled and a TLS server that accepts old
protocols with a short-lived certificate, and the repair. Drift (every role in check mode, about
140 s here) runs only in the first: that DRIFT-01 records the tasks a check-mode play would change
is tested on localhost (tests/playbooks/test_compliance_playbook.py).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_playbook

# Files a compliance run must leave as they are (contents and metadata), and what the breaks touch.
WATCHED = "/etc /opt/clawbot /usr/local /var/backups/clawbot/restic/snapshots"
KEYRING = "/etc/clawbot/keys/probe-token.json"
RESTIC_ENV = ("RESTIC_REPOSITORY=/var/backups/clawbot/restic "
              "RESTIC_PASSWORD_FILE=/etc/clawbot-backup/repositories/local.password")
EVERY_CONTROL = {"SSH-01", "FW-01", "TLS-01", "TLS-02", "BOT-01", "REDIS-01", "DB-01", "BACKUP-01",
                 "KEY-01", "SVC-01", "DRIFT-01"}


def _compliance(tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, tuple[bool, str]]]:
    """Run compliance.yml; returns (rc, output, {control id: (passed, evidence)}) from the JUnit file."""
    junit = tmp_path / "junit.xml"
    rc, out = run_playbook("compliance.yml", "-e", f"compliance_junit_file={junit}", *extra,
                           env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert junit.exists(), out[-3000:]
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    results = {}
    for case in root.iter("testcase"):
        failure = case.find("failure")
        passed = failure is None
        evidence = (case.findtext("system-out") or "") if passed else (failure.text or "")
        results[case.get("name", "").split(" ", 1)[0]] = (passed, evidence)
        assert case.get("classname") == "clawbot-molecule-site"
    assert int(root.get("tests", "0")) == len(results)
    assert int(root.get("failures", "0")) == sum(1 for ok, _ in results.values() if not ok)
    return rc, out, results


def _fingerprint(host) -> str:
    """Path, size, mode, owner and content checksum of every watched file (no timestamps)."""
    return host.check_output(
        f"find {WATCHED} -xdev -type f -printf '%p %s %m %u\\n' 2>/dev/null | sort"
        f" && find {WATCHED} -xdev -type f -exec sha256sum {{}} + 2>/dev/null | sort"
        " && ufw show added")


@pytest.fixture(scope="module")
def converged_fingerprint(host) -> str:
    return _fingerprint(host)


def test_passes_on_the_converged_host_in_a_check_job(host, tmp_path: Path, converged_fingerprint: str) -> None:
    rc, out, results = _compliance(tmp_path, "--check", "--diff")
    assert rc == 0, out[-4000:]
    assert set(results) == EVERY_CONTROL
    assert all(ok for ok, _ in results.values()), results
    assert "limit 22/tcp" in results["FW-01"][1] and "allow 443/tcp" in results["FW-01"][1]
    assert "refused: tls1, tls1_1" in results["TLS-01"][1]
    assert "local: newest" in results["BACKUP-01"][1] and "s3: newest" in results["BACKUP-01"][1]
    assert "none would change the host" in results["DRIFT-01"][1]
    assert "clawbot-molecule-site  DRIFT-01   PASS" in out
    assert _fingerprint(host) == converged_fingerprint, "the compliance run changed the host"


@pytest.fixture
def broken(host):
    """A port opened by hand, a stale backup (the local repository's only snapshot is 30 h old),
    an overdue key and root allowed from anywhere; repaired afterwards."""
    keyring = host.file(KEYRING).content_string
    host.check_output("ufw allow 8080/tcp")
    host.check_output(
        f"{RESTIC_ENV} restic snapshots --json --host clawbot-molecule-site > /tmp/compliance-snaps.json"
        f" && {RESTIC_ENV} restic forget -q $(python3 -c 'import json;"
        "print(\" \".join(s[\"id\"] for s in json.load(open(\"/tmp/compliance-snaps.json\"))))')"
        f" && {RESTIC_ENV} restic backup -q --host clawbot-molecule-site --tag clawbot"
        " --time \"$(date -u -d '-30 hours' '+%Y-%m-%d %H:%M:%S')\" /etc/hostname")
    host.check_output(
        "python3 -c 'import json,sys,datetime;p=sys.argv[1];d=json.load(open(p));"
        "d[\"meta\"][d[\"current\"]][\"created\"]=(datetime.datetime.utcnow()-datetime.timedelta(days=40))"
        ".strftime(\"%%Y-%%m-%%dT%%H:%%M:%%SZ\");json.dump(d,open(p,\"w\"),indent=2)' %s", KEYRING)
    host.check_output("mariadb -e \"CREATE USER 'root'@'%' IDENTIFIED BY 'compliance-test-x9'\"")
    yield _fingerprint(host)
    host.check_output("ufw delete allow 8080/tcp")
    host.check_output("mariadb -e \"DROP USER 'root'@'%'\"")
    host.check_output("python3 -c 'import sys;open(sys.argv[1], \"w\").write(sys.argv[2])' %s %s", KEYRING, keyring)
    host.check_output("systemctl start clawbot-backup.service")


def test_fails_naming_each_broken_control(host, tmp_path: Path, broken: str) -> None:
    rc, out, results = _compliance(tmp_path, "-e", "compliance_drift_check=false")
    assert rc != 0
    assert "DRIFT-01" not in results
    failed = {cid for cid, (ok, _) in results.items() if not ok}
    assert failed == {"FW-01", "BACKUP-01", "KEY-01", "DB-01"}, results
    assert "unexpected rule: allow 8080/tcp" in results["FW-01"][1]
    assert "local: newest 30.0 h old, STALE" in results["BACKUP-01"][1]
    assert "s3: newest" in results["BACKUP-01"][1] and "STALE" not in results["BACKUP-01"][1].split("local:")[0]
    assert "probe-token: 40.0 of 30 days OVERDUE" in results["KEY-01"][1]
    assert "'root'@'%'" in results["DB-01"][1]
    summary = next(line for line in out.splitlines() if "controls failed:" in line)
    for cid in ("FW-01", "BACKUP-01", "KEY-01", "DB-01"):
        assert f"clawbot-molecule-site {cid}" in summary
    # set_stats for AWX workflows carries the same verdict.
    stats = out[out.index("CUSTOM STATS"):]
    assert "passed: false" in stats and "- clawbot-molecule-site DB-01" in stats, stats[:2000]
    # Nothing was repaired behind the report's back: the rule, the snapshot and the key are as broken.
    assert _fingerprint(host) == broken, "the compliance run changed the host"


@pytest.fixture
def tls_and_ufw_broken(host):
    """ufw disabled, and an OpenSSL server that accepts TLS 1.0-1.3 (the host's policy ignored)
    with a certificate valid for 3 days, on the port the probe is pointed at."""
    host.check_output("ufw disable")
    host.check_output(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj /CN=localhost"
        " -keyout /tmp/compliance-tls.key -out /tmp/compliance-tls.crt 2>/dev/null")
    host.check_output(
        "OPENSSL_CONF=/dev/null setsid nohup openssl s_server -quiet -accept 127.0.0.1:4443"
        " -cert /tmp/compliance-tls.crt -key /tmp/compliance-tls.key -cipher 'DEFAULT:@SECLEVEL=0'"
        " -naccept 40 </dev/null >/dev/null 2>&1 & sleep 1")
    yield
    host.run("pkill -f 'openssl s_server -quiet -accept 127.0.0.1:4443'")
    host.check_output("ufw --force enable")


def test_probes_only_name_ufw_and_tls(host, tmp_path: Path, tls_and_ufw_broken: None) -> None:
    rc, _, results = _compliance(tmp_path, "-e", "compliance_drift_check=false",
                                   "-e", '{"nginx_https_port": 4443}')
    assert rc != 0
    assert "DRIFT-01" not in results
    failed = {cid for cid, (ok, _) in results.items() if not ok}
    assert failed == {"FW-01", "TLS-01", "TLS-02"}, results
    assert "ufw is not active" in results["FW-01"][1]
    assert "accepted: tls1, tls1_1, tls1_2" in results["TLS-01"][1]
    assert "within 14 days" in results["TLS-02"][1]


def test_passes_again_after_the_repair(host, tmp_path: Path) -> None:
    rc, _, results = _compliance(tmp_path, "-e", "compliance_drift_check=false")
    assert rc == 0, json.dumps(results, indent=1)
    assert set(results) == EVERY_CONTROL - {"DRIFT-01"}
