"""State after playbooks/rotate_keys.yml ran on a bot whose keys were past their age (see ../prepare.yml)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testinfra.modules.ansible import AnsibleException

KEYS = "/etc/clawbot/keys"
# The stand-in model server's request log (tests/harness/standin-model.yml).
STANDIN_LOG = "/var/log/clawbot-standin-model/requests.jsonl"
# node exporter's textfile collector directory (key_rotation_textfile_dir, Debian's default).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
# keyring file -> the bot's `keyring` metric label, and its max_age_days in this scenario.
LABELS = {"encryption.json": ("encryption", 90), "probe-token.json": ("tokens:key-rotation-probe", 30),
          "model-main.json": ("provider:main", 180)}
OLD = {
    "encryption.json": "k20250101T000000Z-0e0e",
    "probe-token.json": "k20250101T000000Z-0p0p",
    "model-main.json": "k20250101T000000Z-0m0m",
}


def _keyring(host, name: str) -> dict:
    return json.loads(host.file(f"{KEYS}/{name}").content_string)


def _chat(host, token: str) -> tuple[int, dict]:
    body = json.dumps({"message": "after rotation", "session_id": "verify"})
    # testinfra shell-quotes each argument itself.
    out = host.check_output(
        "curl -s -o /tmp/chat.json -w '%%{http_code}' -H %s "
        "-H 'Content-Type: application/json' --data %s http://127.0.0.1:18789/api/v1/chat",
        f"Authorization: Bearer {token}", body)
    return int(out), json.loads(host.file("/tmp/chat.json").content_string)


@pytest.mark.parametrize("name", sorted(OLD))
def test_keyring_file_is_private_to_the_bot(host, name: str) -> None:
    f = host.file(f"{KEYS}/{name}")
    assert f.user == "clawbot"
    assert f.group == "clawbot"
    assert f.mode == 0o600


@pytest.mark.parametrize("name", sorted(OLD))
def test_rotated_with_the_old_key_kept_as_previous(host, name: str) -> None:
    ring = _keyring(host, name)
    assert ring["version"] == 1
    assert ring["current"] != OLD[name]
    assert set(ring["keys"]) == {ring["current"], OLD[name]}
    today = dt.datetime.now(dt.UTC).date()
    created = dt.datetime.fromisoformat(ring["meta"][ring["current"]]["created"].replace("Z", "+00:00"))
    assert abs((created.date() - today).days) <= 1
    assert ring["meta"][OLD[name]]["retired"] is not None
    assert ring["meta"][ring["current"]]["retired"] is None


def test_generated_keys_have_the_requested_format(host) -> None:
    enc = _keyring(host, "encryption.json")
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", enc["keys"][enc["current"]])
    probe = _keyring(host, "probe-token.json")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", probe["keys"][probe["current"]])


def test_model_api_key_switched_to_the_vault_value(host) -> None:
    ring = _keyring(host, "model-main.json")
    assert ring["keys"][ring["current"]] == "sk-molecule-fake-new"
    assert ring["meta"][ring["current"]]["source"] == "external"


def test_bot_reports_the_new_key_ids(host) -> None:
    metrics = host.check_output("curl -sf http://127.0.0.1:18789/metrics")
    for name, label in (("encryption.json", "encryption"), ("probe-token.json", "tokens:key-rotation-probe"),
                        ("model-main.json", "provider:main")):
        current = _keyring(host, name)["current"]
        reported = {tuple(sorted(m.group(1).split(","))) for m in
                    re.finditer(r"^clawbot_keyring_current_info\{([^}]*)\} 1\.0$", metrics, re.M)}
        assert (f'key_id="{current}"', f'keyring="{label}"') in reported


def _samples(text: str, name: str) -> dict[str, float]:
    return {s.labels["keyring"]: s.value for family in text_string_to_metric_families(text)
            if family.name == name for s in family.samples}


def test_bot_reports_when_the_current_keys_were_created(host) -> None:
    metrics = host.check_output("curl -sf http://127.0.0.1:18789/metrics")
    reported = _samples(metrics, "clawbot_keyring_current_created_timestamp_seconds")
    expected = {}
    for name, (label, _) in LABELS.items():
        ring = _keyring(host, name)
        created = ring["meta"][ring["current"]]["created"]
        expected[label] = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    assert reported == expected


def test_rotation_policy_published_for_node_exporter(host) -> None:
    directory = host.file(TEXTFILE_DIR)
    assert directory.is_directory and directory.user == "root" and directory.mode == 0o755
    assert directory.listdir() == ["clawbot_keyrings.prom"]  # no temporary file left behind
    f = host.file(f"{TEXTFILE_DIR}/clawbot_keyrings.prom")
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    families = list(text_string_to_metric_families(f.content_string))
    assert [(family.name, family.type) for family in families] == [("clawbot_keyring_max_age_seconds", "gauge")]
    assert _samples(f.content_string, "clawbot_keyring_max_age_seconds") == {
        label: days * 86400 for label, days in LABELS.values()}


def test_new_probe_token_works_and_model_sees_the_new_key(host) -> None:
    probe = _keyring(host, "probe-token.json")
    status, doc = _chat(host, probe["keys"][probe["current"]])
    assert status == 200, doc
    assert re.fullmatch(r"standin-model: after rotation \[n=\d+\]", doc["reply"]), doc  # the provider's reply format
    last = json.loads(host.file(STANDIN_LOG).content_string.splitlines()[-1])
    assert last["path"] == "/v1/chat/completions"
    assert last["key_sha256"] == hashlib.sha256(b"sk-molecule-fake-new").hexdigest()[:16]


def test_previous_probe_token_still_works_in_its_grace_period(host) -> None:
    status, doc = _chat(host, "molecule-old-probe-token")
    assert status == 200, doc


def test_unknown_token_is_refused(host) -> None:
    status, doc = _chat(host, "not-a-token")
    assert status == 401
    assert "error" in doc


def test_new_conversation_rows_use_the_new_encryption_key(host) -> None:
    current = _keyring(host, "encryption.json")["current"]
    key_id = host.check_output(
        "sqlite3 /var/lib/clawbot/clawbot.sqlite3 "
        "\"SELECT key_id FROM conversation_log ORDER BY created_at DESC, rowid DESC LIMIT 1\"")
    assert key_id == current
    content = host.check_output(
        "sqlite3 /var/lib/clawbot/clawbot.sqlite3 "
        "\"SELECT content FROM conversation_log ORDER BY created_at DESC, rowid DESC LIMIT 1\"")
    assert "after rotation" not in content  # encrypted at rest


def test_new_key_was_verified_with_the_provider_before_use(host) -> None:
    lines = [json.loads(x) for x in host.file(STANDIN_LOG).content_string.splitlines()]
    new = hashlib.sha256(b"sk-molecule-fake-new").hexdigest()[:16]
    first_use = next(i for i, rec in enumerate(lines) if rec["key_sha256"] == new)
    assert lines[first_use]["path"] == "/v1/models"
    assert lines[first_use]["status"] == 200


def test_key_the_provider_rejects_changes_nothing(host) -> None:
    before = host.file(f"{KEYS}/model-main.json").content_string
    # testinfra raises AnsibleException only when the result says "failed", which the --tree output
    # of ansible-core 2.19 leaves out; a failed run is recognised by its message and missing results.
    try:
        result = host.ansible("clawbot.stack.key_rotate",
                              f"path={KEYS}/model-main.json secret=sk-molecule-not-accepted "
                              "verify_url=http://127.0.0.1:18800/v1 owner=clawbot group=clawbot",
                              check=False, become=True)
    except AnsibleException as exc:
        result = exc.result
    assert "rotated" not in result
    assert "secret was rejected by http://127.0.0.1:18800/v1/models: HTTP 401" in result["msg"]
    assert "the keyring was not changed" in result["msg"]
    assert "sk-molecule-not-accepted" not in json.dumps(result)
    assert host.file(f"{KEYS}/model-main.json").content_string == before
    last = json.loads(host.file(STANDIN_LOG).content_string.splitlines()[-1])
    assert (last["path"], last["status"]) == ("/v1/models", 401)
