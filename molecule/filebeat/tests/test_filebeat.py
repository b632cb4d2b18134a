"""The filebeat role on a host without the filebeat binary (Elastic's repository is unreachable here).

What is checked for real:

1. The APT source and Elastic's key are set up as Elastic documents them, and `apt-get update`
   in the container fails for that one source only, because its host cannot be reached.
2. filebeat.yml and the TLS files: owner, modes, the secret kept out of the file, the output.
3. The inputs read the paths the roles that write those logs use (their defaults/templates), and
   their parsers fit real lines of each log (fixtures/, written by the real programs:
   fixtures/regenerate.py): the JSON keys, dissect keys, multiline pattern, timestamp layouts and
   every field a processor names exist in those lines.
4. Without the binary nothing that needs it ran: no keystore, no unit, no filebeat directory.

Filebeat's own processing is not run (no binary): the decoding, dissect and multiline steps are
reproduced below with the semantics Elastic documents for them, on the real lines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
ROOT = SCENARIO_DIR.parents[1]
FIXTURES = SCENARIO_DIR / "fixtures"
VARS = yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["provisioner"]["inventory"]["group_vars"]["all"]
DEFAULTS = {role: yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
            for role in ("filebeat", "nginx", "mysql", "bot_app")}
CONFIG = "/etc/filebeat/filebeat.yml"
ELASTIC_FINGERPRINT = "46095ACC8548582C1A2699A9D27D666CD88E42B4"
# Go reference-time layouts the role uses, as strptime formats.
GO_LAYOUTS = {"2006-01-02T15:04:05Z07:00": "%Y-%m-%dT%H:%M:%S%z", "2006/01/02 15:04:05": "%Y/%m/%d %H:%M:%S"}


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


@pytest.fixture(scope="module")
def config(host) -> dict[str, Any]:
    with host.sudo():
        return yaml.safe_load(host.file(CONFIG).content_string)


@pytest.fixture(scope="module")
def inputs(config) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in config["filebeat.inputs"]}


def processor(inp: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [p[kind] for p in inp.get("processors", []) if kind in p]
    assert len(found) == 1, f"{inp['id']}: {len(found)} {kind} processors"
    return found[0]


def parse_go_time(value: str, layout: str) -> dt.datetime:
    return dt.datetime.strptime(value, GO_LAYOUTS[layout])


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        assert isinstance(doc, dict) and part in doc, f"{dotted} missing"
        doc = doc[part]
    return doc


# ------------------------------------------------------------------------------ package source

def test_apt_source_is_elastics_with_the_signed_by_key(host):
    source = host.file("/etc/apt/sources.list.d/elastic-8.x.list")
    assert source.content_string == (
        "deb [signed-by=/etc/apt/keyrings/elastic.asc] https://artifacts.elastic.co/packages/8.x/apt stable main\n")
    assert (source.user, source.group, source.mode) == ("root", "root", 0o644)
    key = host.file("/etc/apt/keyrings/elastic.asc")
    assert key.content_string == (SCENARIO_DIR / "files" / "GPG-KEY-elasticsearch").read_text()
    assert (key.user, key.mode) == ("root", 0o644)


def test_the_key_is_elastics_signing_key():
    out = subprocess.run(["gpg", "--show-keys", "--with-colons", str(SCENARIO_DIR / "files" / "GPG-KEY-elasticsearch")],
                         capture_output=True, text=True, check=True).stdout
    fingerprints = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
    assert fingerprints[0] == ELASTIC_FINGERPRINT


def test_apt_update_fails_only_for_elastics_unreachable_host(host):
    with host.sudo():
        update = host.run("apt-get update")
    failed = [line for line in update.stdout.splitlines() + update.stderr.splitlines()
              if line.startswith(("Err:", "W: Failed to fetch", "E: Failed to fetch"))]
    assert failed, update.stdout + update.stderr
    assert all("https://artifacts.elastic.co/packages/8.x/apt" in line for line in failed), failed
    reasons = update.stdout + update.stderr
    assert re.search(r"Could not resolve 'artifacts\.elastic\.co'|Could not connect to artifacts\.elastic\.co|"
                     r"Connection timed out|Network is unreachable", reasons), reasons
    # Debian's own sources were fetched in the same run.
    assert re.search(r"^(Hit|Get):\d+ http://deb\.debian\.org/debian", update.stdout, re.M), update.stdout


# ------------------------------------------------------------------------- files and output

def test_config_is_root_0600_and_keeps_the_password_out(host):
    with host.sudo():
        cfg = host.file(CONFIG)
        assert (cfg.user, cfg.group, cfg.mode) == ("root", "root", 0o600)
        hits = host.run(f"grep -rl -- {VARS['filebeat_elasticsearch_password']} /etc/filebeat /var/lib /etc/apt")
    assert hits.stdout == ""
    assert cfg.content_string.startswith("#\n# Ansible managed")


def test_output_is_elasticsearch_over_tls_with_the_keystore_password(config, host):
    out = config["output.elasticsearch"]
    assert "output.logstash" not in config
    assert out["hosts"] == VARS["filebeat_output_hosts"]
    assert out["username"] == "clawbot-shipper"
    assert out["password"] == "${FILEBEAT_ES_PASSWORD}"
    assert out["ssl"] == {"enabled": True, "verification_mode": "full",
                          "certificate_authorities": ["/etc/filebeat/tls/ca.crt"],
                          "certificate": "/etc/filebeat/tls/client.crt", "key": "/etc/filebeat/tls/client.key"}
    ca = (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "tls" / "ca.crt").read_text()
    with host.sudo():
        assert host.file("/etc/filebeat/tls").mode == 0o700
        assert host.file("/etc/filebeat/tls/ca.crt").content_string.strip() == ca.strip()
        key = host.file("/etc/filebeat/tls/client.key")
        assert (key.user, key.mode) == ("root", 0o600)
        assert "PRIVATE KEY" in key.content_string


def test_common_fields_tags_and_logging(config):
    assert config["fields"] == {"environment": "molecule"}
    assert config["tags"] == ["clawbot"]
    assert config["logging.level"] == "info"


# --------------------------------------------------------------------- inputs and real lines

def test_every_input_is_there_with_a_unique_id(config, inputs):
    assert list(inputs) == ["clawbot-app", "nginx-access", "nginx-error", "mysql-slow", "journal"]
    assert len(config["filebeat.inputs"]) == len(inputs)


def test_inputs_read_where_the_other_roles_write(inputs):
    bot_unit = DEFAULTS["bot_app"]["bot_app_service"] + ".service"
    assert inputs["clawbot-app"]["include_matches.match"] == [f"_SYSTEMD_UNIT={bot_unit}"]
    assert inputs["nginx-access"]["paths"] == [DEFAULTS["nginx"]["nginx_access_log"]]
    assert inputs["nginx-error"]["paths"] == [DEFAULTS["nginx"]["nginx_error_log"]]
    assert inputs["mysql-slow"]["paths"] == [DEFAULTS["mysql"]["mysql_slow_query_log_file"]]
    # The bot writes to standard output only (no logging.file in the role's config), which the
    # unit leaves to the journal; nginx's servers log with the clawbot_json format.
    unit = (ROOT / "roles/bot_app/templates/clawbot-app.service.j2").read_text()
    assert "StandardOutput" not in unit and "clawbot-app serve" in unit
    assert "'logging': {'level': bot_app_log_level, 'access_log': bot_app_access_log}" in (
        ROOT / "roles/bot_app/vars/main.yml").read_text()
    site = (ROOT / "roles/nginx/templates/clawbot.conf.j2").read_text()
    assert "access_log {{ nginx_access_log }} clawbot_json;" in site
    assert "error_log {{ nginx_error_log }} {{ nginx_error_log_level }};" in site
    assert "slow_query_log_file = {{ mysql_slow_query_log_file }}" in (
        ROOT / "roles/mysql/templates/server.cnf.j2").read_text()


def expand_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """decode_json_fields' expand_keys: "a.b": 1 becomes {"a": {"b": 1}}; a clash is an error."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            assert isinstance(node, dict), f"{key} clashes with another key"
        assert last not in node, f"{key} clashes with another key"
        node[last] = value
    return out


def test_bot_lines_decode_into_ecs_fields(inputs):
    decode = processor(inputs["clawbot-app"], "decode_json_fields")
    assert decode == {"fields": ["message"], "target": "", "overwrite_keys": True, "expand_keys": True,
                      "add_error_key": True}
    bot = lines("bot.jsonl")
    kinds = set()
    for line in bot:
        doc = json.loads(line)
        # @timestamp: RFC 3339 in UTC with milliseconds (what Filebeat takes as the event time).
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["@timestamp"]), line
        assert isinstance(doc["message"], str) and doc["message"], line
        assert doc["log.level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert all(re.fullmatch(r"@timestamp|[a-z_]+(\.[a-z_]+)*", key) for key in doc), line
        expanded = expand_keys(doc)
        assert expanded["log"]["level"] == doc["log.level"]
        kinds.add(doc["log.logger"])
    # Both writers of the bot are in the fixture: the logging formatter and the access log.
    assert "clawbot_app.access" in kinds and len(kinds) > 1
    access = [json.loads(line) for line in bot if '"clawbot_app.access"' in line]
    assert {"http.request.method", "url.path", "http.response.status_code", "trace.id"} <= set(access[0])


def test_nginx_access_lines_have_every_field_the_input_names(inputs):
    inp = inputs["nginx-access"]
    ndjson = inp["parsers"][0]["ndjson"]
    prefix = ndjson["target"] + "."
    assert prefix == "nginx.access."
    stamp = processor(inp, "timestamp")
    renames = processor(inp, "rename")["fields"]
    dropped = processor(inp, "drop_fields")["fields"]
    named = [stamp["field"], *(r["from"] for r in renames), *dropped]
    assert all(name.startswith(prefix) for name in named), named
    for value in stamp["test"]:
        parse_go_time(value, stamp["layouts"][0])
    access = lines("nginx-access.jsonl")
    assert len(access) >= 3
    for line in access:
        doc = {"nginx": {"access": json.loads(line)}}
        for name in named:
            get_path(doc, name)
        parse_go_time(get_path(doc, stamp["field"]), stamp["layouts"][0])
    # ECS targets, and the request id becomes trace.id as in the bot's lines.
    assert {r["to"] for r in renames} >= {"source.address", "trace.id", "http.request.method", "url.path",
                                          "http.response.status_code", "user_agent.original"}


def test_nginx_access_fixture_has_the_current_log_format():
    """The fixture lines were written with the log_format roles/nginx has now."""
    site = (ROOT / "roles/nginx/templates/clawbot.conf.j2").read_text()
    block = re.search(r"^log_format clawbot_json .*?';$", site, re.S | re.M)
    assert block
    keys = re.findall(r"'\"?[{,]?\"(\w+)\":", block.group(0))
    assert keys and all(list(json.loads(line)) == keys for line in lines("nginx-access.jsonl"))


def dissect(tokenizer: str, text: str) -> dict[str, str] | None:
    """Beats' dissect: literal delimiters between %{key}s; %{+key} appends with its delimiter."""
    parts = re.split(r"(%\{[^}]*\})", tokenizer)
    pattern, names = "", []
    for index, part in enumerate(parts):
        if part.startswith("%{"):
            names.append(part[2:-1])
            last = index == len(parts) - 2 and parts[-1] == ""
            pattern += "(.*)" if last else "(.*?)"
        else:
            pattern += re.escape(part)
    match = re.fullmatch(pattern, text, re.S)
    if not match:
        return None
    out: dict[str, str] = {}
    for i, (name, value) in enumerate(zip(names, match.groups(), strict=True)):
        if name.startswith("+"):
            delimiter = parts[2 * i]
            out[name[1:]] += delimiter + value
        else:
            out[name] = value
    return out


def test_nginx_error_lines_dissect_into_time_and_level(inputs):
    inp = inputs["nginx-error"]
    dis = processor(inp, "dissect")
    stamp = processor(inp, "timestamp")
    prefix = dis["target_prefix"] + "."
    for value in stamp["test"]:
        parse_go_time(value, stamp["layouts"][0])
    errors = lines("nginx-error.log")
    assert errors
    for line in errors:
        fields = dissect(dis["tokenizer"], line)
        assert fields is not None, line
        doc = {"nginx": {"error": fields}}
        parse_go_time(get_path(doc, stamp["field"]), stamp["layouts"][0])
        for rename in processor(inp, "rename")["fields"]:
            assert get_path(doc, rename["from"]) in {"debug", "info", "notice", "warn", "error", "crit",
                                                      "alert", "emerg"}
        assert fields["pid"].isdigit() and fields["error"]
        assert prefix + "time" == stamp["field"]


def multiline_events(pattern: str, negate: bool, match: str, text: list[str]) -> list[list[str]]:
    """Filebeat's multiline "pattern" type with match: after."""
    assert match == "after"
    events: list[list[str]] = []
    for line in text:
        # negate: lines NOT matching are appended to the previous one; else the matching ones are.
        starts = bool(re.search(pattern, line)) == negate
        if starts or not events:
            events.append([line])
        else:
            events[-1].append(line)
    return events


def test_mysql_slow_log_becomes_one_event_per_query(inputs):
    inp = inputs["mysql-slow"]
    multi = inp["parsers"][0]["multiline"]
    assert multi["type"] == "pattern"
    slow = lines("mysql-slow.log")
    events = multiline_events(multi["pattern"], multi["negate"], multi["match"], slow)
    kept = ["\n".join(e) for e in events if not any(re.search(x, e[0]) for x in inp["exclude_lines"])]
    queries = sum(1 for line in slow if line.startswith("# User@Host: "))
    assert queries >= 3 and len(kept) == queries
    for event in kept:
        assert event.startswith("# User@Host: ") and "\n# Query_time: " in event and "SET timestamp=" in event
        assert event.rstrip().endswith(";")
        assert "# Time: " not in event and "started with:" not in event
    # The multi-line statement stays in one event.
    assert any("SELECT SLEEP(0.2), v\nFROM t\nWHERE id > 0;" in event for event in kept)


def test_journal_input_leaves_the_bot_to_its_own_input(inputs):
    journal = inputs["journal"]
    assert journal["include_matches.match"] == [f"PRIORITY={n}" for n in range(7)]
    assert processor(journal, "drop_event") == {"when": {"equals": {"systemd.unit": "clawbot-app.service"}}}


# ----------------------------------------------------------------------- what was skipped

def test_nothing_that_needs_the_binary_ran(host):
    assert not host.file("/usr/share/filebeat").exists
    assert not host.file("/var/lib/filebeat/filebeat.keystore").exists
    assert host.run("systemctl cat filebeat.service").rc != 0
    assert not host.package("filebeat").is_installed


# ------------------------------------------------------------------------ input validation

def converge(extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """converge.yml once more with extra vars, against Molecule's inventory (molecule.yml)."""
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO_DIR / "converge.yml"),
         "-e", json.dumps(extra_vars)], capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(("extra", "message"), [
    ({"filebeat_output_type": "kafka"},
     "value of filebeat_output_type must be one of: logstash, elasticsearch, got: kafka"),
    ({"filebeat_output_hosts": []}, "filebeat_output_hosts must be a non-empty list"),
    ({"filebeat_output_type": "logstash", "filebeat_output_hosts": ["https://ls.example.test:5044"]},
     "filebeat_output_hosts must be a non-empty list"),
])
def test_invalid_settings_fail_before_any_change(host, extra, message):
    with host.sudo():
        before = host.check_output(f"sha256sum {CONFIG}")
    run = converge(extra)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and message in " ".join(out.split()), out[-3000:]
    with host.sudo():
        assert host.check_output(f"sha256sum {CONFIG}") == before
