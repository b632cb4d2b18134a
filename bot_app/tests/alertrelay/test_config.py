"""The relay's config file: what is accepted, and errors that name the field (never a value);
``clawbot-app alert-relay --check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clawbot_app.alertrelay.config import load_relay_config
from clawbot_app.cli import main
from clawbot_app.configfile import ConfigError
from tests.alertrelay.support import DT_SECRET, DT_TOKEN, FS_TOKEN, TOKEN, WC_KEY, write_config

DT_URL = f"https://oapi.dingtalk.com/robot/send?access_token={DT_TOKEN}"
FS_URL = f"https://open.feishu.cn/open-apis/bot/v2/hook/{FS_TOKEN}"
WC_URL = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={WC_KEY}"


def good() -> list[dict[str, Any]]:
    return [{"name": "ops-dingtalk", "platform": "dingtalk", "webhook_url": DT_URL,
             "secret": DT_SECRET, "language": "zh"},
            {"name": "ops-feishu", "platform": "feishu", "webhook_url": FS_URL, "secret": "s"},
            {"name": "ops-wecom", "platform": "wecom", "webhook_url": WC_URL}]


def errors_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_relay_config(str(path))
    return info.value.errors


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    loaded = load_relay_config(str(write_config(tmp_path, good())))
    cfg = loaded.config
    assert loaded.token == TOKEN
    assert (cfg.listen.host, cfg.listen.port, cfg.language) == ("127.0.0.1", 18790, "en")
    assert [r.platform for r in cfg.receivers] == ["dingtalk", "feishu", "wecom"]
    assert cfg.receiver("ops-dingtalk").language == "zh"  # type: ignore[union-attr]
    assert cfg.receiver("nope") is None
    assert DT_TOKEN not in repr(cfg) and DT_SECRET not in repr(cfg)  # SecretStr


@pytest.mark.parametrize(("change", "where", "reason"), [
    ({"platform": "dingtalk", "webhook_url": "http://oapi.dingtalk.com/robot/send?access_token=x"},
     "receivers.0.webhook_url", "https"),
    ({"platform": "dingtalk", "webhook_url": "https://oapi.dingtalk.com/robot/send"},
     "receivers.0.webhook_url", "access_token"),
    ({"platform": "dingtalk", "secret": "not-sec"}, "receivers.0.secret", "starts with SEC"),
    ({"platform": "feishu", "webhook_url": "https://open.feishu.cn/open-apis/bot/v2/hook/"},
     "receivers.0.webhook_url", "/open-apis/bot/v2/hook/<token>"),
    ({"platform": "wecom", "webhook_url": WC_URL, "secret": "x"}, "receivers.0.secret",
     "do not sign"),
    ({"platform": "wecom", "webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"},
     "receivers.0.webhook_url", "?key="),
    ({"platform": "slack"}, "receivers.0.platform", "'dingtalk', 'feishu' or 'wecom'"),
    ({"name": "bad name!"}, "receivers.0.name", "should match pattern"),
    ({"language": "fr"}, "receivers.0.language", "'en' or 'zh'"),
    ({"colour": "red"}, "receivers.0.colour", "Extra inputs are not permitted"),
])
def test_receiver_errors_name_the_field(tmp_path: Path, change: dict[str, Any], where: str,
                                        reason: str) -> None:
    receiver = {**good()[0], **change}
    if receiver["platform"] != "dingtalk" and "secret" not in change:
        receiver.pop("secret")
    errors = errors_of(write_config(tmp_path, [receiver]))
    assert [e[0] for e in errors] == [where]
    assert reason in errors[0][1]
    for secret in (DT_TOKEN, DT_SECRET, WC_KEY, "not-sec"):
        assert secret not in errors[0][1]


def test_plain_http_only_to_loopback(tmp_path: Path) -> None:
    for host in ("127.0.0.1:18900", "localhost", "[::1]:8080"):
        receiver = {**good()[2], "webhook_url": f"http://{host}/cgi-bin/webhook/send?key=k"}
        load_relay_config(str(write_config(tmp_path, [receiver])))
    receiver = {**good()[2], "webhook_url": "http://10.0.0.5/cgi-bin/webhook/send?key=k"}
    assert errors_of(write_config(tmp_path, [receiver]))[0][0] == "receivers.0.webhook_url"


def test_top_level_errors(tmp_path: Path) -> None:
    errors = errors_of(write_config(tmp_path, [], language="de", retry={"attempts": 0}))
    assert {e[0] for e in errors} == {"receivers", "language", "retry.attempts"}
    dup = errors_of(write_config(tmp_path, [good()[2], good()[2]]))
    assert dup == [("receivers.1.name", "duplicate receiver name 'ops-wecom'")]
    bad_url = errors_of(write_config(tmp_path, good(), external_url="ftp://x"))
    assert bad_url == [("external_url", "must be an http:// or https:// URL")]


def test_token_file_rules(tmp_path: Path) -> None:
    path = write_config(tmp_path, good())
    token = tmp_path / "token"
    token.chmod(0o644)
    assert errors_of(path)[0][0] == "auth_token_file"
    token.chmod(0o600)
    token.write_text("short\n")
    assert errors_of(path) == [("auth_token_file", "the token must have at least 16 characters")]
    token.unlink()
    assert errors_of(path)[0][0] == "auth_token_file"


def test_config_file_must_be_private(tmp_path: Path) -> None:
    path = write_config(tmp_path, good())
    path.chmod(0o644)
    (where, reason), = errors_of(path)
    assert where == "<file>" and "chmod 0600" in reason


def test_check_exits_0_for_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, good())
    assert main(["alert-relay", "--check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "relay configuration OK" in out and "ops-dingtalk (dingtalk)" in out
    assert DT_TOKEN not in out


def test_check_exits_1_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    receiver = {**good()[0], "secret": "wrong-secret-value"}
    path = write_config(tmp_path, [receiver])
    assert main(["alert-relay", "--check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "receivers.0.secret: a DingTalk robot's signing secret starts with SEC" in err
    assert "wrong-secret-value" not in err and DT_TOKEN not in err


def test_relay_needs_its_own_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alert-relay", "--check"]) == 2
    assert "--config PATH is required" in capsys.readouterr().err
