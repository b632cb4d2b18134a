"""playbooks/im_check.yml end to end: the real bot's DingTalk, Feishu and WeCom callbacks behind TLS
on loopback, fake DingTalk/Feishu/WeCom APIs speaking their real wire protocol, ansible-playbook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_collections.clawbot.stack.tests.fakes.dingtalk import FakeDingTalk
from ansible_collections.clawbot.stack.tests.fakes.feishu import FakeFeishu
from ansible_collections.clawbot.stack.tests.fakes.httpd import FakeServer
from ansible_collections.clawbot.stack.tests.fakes.pki import make_pki
from ansible_collections.clawbot.stack.tests.fakes.wecom import FakeWeCom
from playbook_support import BotProcess, run_playbook

# Test values only (fake platforms on loopback).
DINGTALK = {"app_key": "dingintegrationkey", "app_secret": "dt-secret-integration-0001",
            "token": "dt-event-token-0001", "aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "robot_token": "dt-robot-access-token-0001", "robot_secret": "SECintegration0001"}
FEISHU = {"app_id": "cli_integration", "app_secret": "fs-secret-integration-0001",
          "verification_token": "fs-verification-token-0001", "encrypt_key": "fs-encrypt-key-0001",
          "hook_token": "fs-hook-token-0001", "hook_secret": "fs-hook-secret-0001"}
WECOM = {"corp_id": "wwintegration00001", "corp_secret": "wc-corp-secret-integration-0001", "agent_id": 1000005,
         "token": "wc-callback-token-0001", "encoding_aes_key": "WeComIntegrationEncodingAESKey0123456789abc",
         "webhook_key": "wc-robot-key-integration-0001"}
SECRETS = [v for d in (DINGTALK, FEISHU, WECOM) for k, v in d.items()
           if k not in ("app_key", "app_id", "corp_id", "agent_id")]


@dataclass
class Stack:
    bot: BotProcess
    dingtalk: FakeDingTalk
    dingtalk_server: FakeServer
    feishu: FakeFeishu
    feishu_server: FakeServer
    wecom: FakeWeCom
    wecom_server: FakeServer
    ca: Path
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("im-check")
    pki = make_pki(workdir)
    config = workdir / "bot.yml"
    config.write_text(yaml.safe_dump({
        "storage": {"data_dir": str(workdir / "data")},
        "logging": {"level": "WARNING"},
        "dingtalk": {"app_key": DINGTALK["app_key"], "app_secret": DINGTALK["app_secret"],
                     "token": DINGTALK["token"], "aes_key": DINGTALK["aes_key"]},
        "feishu": {"app_id": FEISHU["app_id"], "app_secret": FEISHU["app_secret"],
                   "verification_token": FEISHU["verification_token"], "encrypt_key": FEISHU["encrypt_key"]},
        "wecom": {k: WECOM[k] for k in ("corp_id", "corp_secret", "agent_id", "token", "encoding_aes_key")},
    }))
    cert, key = pki.certs["valid"]
    bot = BotProcess(config, cert, key, pki.ca_bundle)
    dingtalk = FakeDingTalk(DINGTALK["app_key"], DINGTALK["app_secret"], oauth2_token="dt-oauth2-issued",
                            legacy_token="dt-legacy-issued", robot_token=DINGTALK["robot_token"],
                            robot_secret=DINGTALK["robot_secret"])
    feishu = FakeFeishu(FEISHU["app_id"], FEISHU["app_secret"], tenant_token="t-issued",
                        hook_token=FEISHU["hook_token"], hook_secret=FEISHU["hook_secret"])
    wecom = FakeWeCom(WECOM["webhook_key"], corp_id=WECOM["corp_id"], corp_secret=WECOM["corp_secret"],
                      agent_id=WECOM["agent_id"])
    with FakeServer(dingtalk, max_lifetime=600) as dt_server, FakeServer(feishu, max_lifetime=600) as fs_server, \
            FakeServer(wecom, max_lifetime=600) as wc_server:
        bot.start()
        try:
            yield Stack(bot, dingtalk, dt_server, feishu, fs_server, wecom, wc_server, pki.ca_bundle, workdir)
        finally:
            bot.stop()


def _apps(stack: Stack, **overrides: Any) -> list[dict[str, Any]]:
    dingtalk = {
        "name": "dingtalk-helpdesk", "platform": "dingtalk",
        "app_key": DINGTALK["app_key"], "app_secret": DINGTALK["app_secret"],
        "api_base": stack.dingtalk_server.base_url, "oapi_base": stack.dingtalk_server.base_url,
        "callback_url": f"{stack.bot.url}/dingtalk/callback", "ca_path": str(stack.ca),
        "token": DINGTALK["token"], "aes_key": DINGTALK["aes_key"],
        "webhook_url": f"{stack.dingtalk_server.base_url}/robot/send?access_token={DINGTALK['robot_token']}",
        "webhook_secret": DINGTALK["robot_secret"], "send_test_message": True,
    }
    feishu = {
        "name": "feishu-helpdesk", "platform": "feishu",
        "app_id": FEISHU["app_id"], "app_secret": FEISHU["app_secret"], "api_base": stack.feishu_server.base_url,
        "callback_url": f"{stack.bot.url}/feishu/callback", "ca_path": str(stack.ca),
        "verification_token": FEISHU["verification_token"], "encrypt_key": FEISHU["encrypt_key"],
        "webhook_url": f"{stack.feishu_server.base_url}/open-apis/bot/v2/hook/{FEISHU['hook_token']}",
        "webhook_secret": FEISHU["hook_secret"], "send_test_message": True,
    }
    wecom = {
        "name": "wecom-helpdesk", "platform": "wecom",
        "corp_id": WECOM["corp_id"], "corp_secret": WECOM["corp_secret"], "agent_id": WECOM["agent_id"],
        "api_base": stack.wecom_server.base_url,
        "callback_url": f"{stack.bot.url}/wecom/callback", "ca_path": str(stack.ca),
        "token": WECOM["token"], "aes_key": WECOM["encoding_aes_key"],
        "webhook_url": f"{stack.wecom_server.base_url}/cgi-bin/webhook/send?key={WECOM['webhook_key']}",
        "send_test_message": True,
    }
    apps = {"dingtalk": dingtalk, "feishu": feishu, "wecom": wecom}
    for name, changes in overrides.items():
        apps[name].update(changes)
    return list(apps.values())


def _sent(stack: Stack) -> tuple[int, int, int]:
    return (len(stack.dingtalk.robot_messages), len(stack.feishu.hook_messages),
            len(stack.wecom.robot_messages))


def _run(stack: Stack, apps: list[dict[str, Any]], *args: str) -> Any:
    vars_file = stack.workdir / "vars.json"
    vars_file.write_text(json.dumps({"im_check_hosts": "localhost", "im_check_apps": apps}))
    vars_file.chmod(0o600)
    return run_playbook("playbooks/im_check.yml", "-e", f"@{vars_file}", *args)


def _assert_no_secret(output: str) -> None:
    leaked = [s for s in SECRETS if s in output]
    assert not leaked, f"secrets in the playbook output: {len(leaked)}"


def test_every_check_passes_against_the_real_bot(stack: Stack) -> None:
    sent_before = _sent(stack)
    result = _run(stack, _apps(stack), "-v")
    assert result.returncode == 0, result.output
    for app in ("dingtalk-helpdesk (dingtalk)", "feishu-helpdesk (feishu)", "wecom-helpdesk (wecom)"):
        assert (f"{app}: OK -- credentials=ok; callback_tls=ok; callback_verification=ok; webhook=ok"
                in result.output), result.output
    assert "All 3 IM app(s) passed their required checks." in result.output
    assert _sent(stack) == tuple(n + 1 for n in sent_before)
    _assert_no_secret(result.output)


def test_check_mode_sends_no_message(stack: Stack) -> None:
    sent_before = _sent(stack)
    result = _run(stack, _apps(stack), "--check")
    assert result.returncode == 0, result.output
    assert result.output.count("callback_verification=ok; webhook=skipped") == 3, result.output
    assert _sent(stack) == sent_before


def test_wrong_secrets_fail_the_run_with_the_platform_codes(stack: Stack) -> None:
    apps = _apps(stack, feishu={"app_secret": "fs-wrong-secret-0002"},
                 dingtalk={"token": "dt-wrong-event-token-0002"},
                 wecom={"corp_secret": "wc-wrong-secret-0002", "token": "wc-wrong-token-0002"})
    SECRETS.extend(["fs-wrong-secret-0002", "dt-wrong-event-token-0002", "wc-wrong-secret-0002",
                    "wc-wrong-token-0002"])
    result = _run(stack, apps)
    assert result.returncode != 0
    assert "feishu-helpdesk (feishu): FAILED credentials" in result.output
    assert "[10014 app secret invalid]" in result.output
    assert "dingtalk-helpdesk (dingtalk): FAILED callback_verification" in result.output
    assert "wecom-helpdesk (wecom): FAILED credentials, callback_verification" in result.output, result.output
    assert "[40001 invalid credential" in result.output
    assert "IM app checks failed: dingtalk-helpdesk, feishu-helpdesk, wecom-helpdesk" in result.output
    _assert_no_secret(result.output)


def test_bad_input_is_reported_per_app(stack: Stack) -> None:
    apps = _apps(stack, dingtalk={"aes_key": "too-short"})
    result = _run(stack, apps)
    assert result.returncode != 0
    assert "aes_key" in result.output
    assert "IM app checks failed: dingtalk-helpdesk" in result.output
    assert "feishu-helpdesk (feishu): OK" in result.output
