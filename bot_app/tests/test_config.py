"""Configuration loading, env overrides, ``config check``."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import yaml

from clawbot_app.cli import main
from clawbot_app.config import ConfigError, load_settings


def _write(tmp_path: Path, doc: object, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return p


def test_defaults_without_config() -> None:
    s = load_settings(None, environ={})
    assert (s.server.host, s.server.port) == ("127.0.0.1", 18789)
    assert s.session.ttl_seconds == 1800 and s.session.max_turns == 10
    assert s.limits.max_message_chars == 2048
    assert s.storage.redis_url == "" and s.storage.is_embedded_sqlite
    assert s.storage.effective_database_url.startswith("sqlite:///")
    assert s.logging.include_content is False
    assert s.default_provider is None


def test_yaml_and_env_overrides(tmp_path: Path) -> None:
    cfg = _write(tmp_path, {
        "server": {"port": 1000},
        "models": {"default": "a", "providers": {
            "a": {"base_url": "http://127.0.0.1:1/v1", "model": "x"}}},
    })
    env = {
        "CLAWBOT_CONFIG": str(cfg),
        "CLAWBOT__SERVER__PORT": "2000",
        "CLAWBOT__SESSION__MAX_TURNS": "3",
        "CLAWBOT__MODELS__PROVIDERS__A__TEMPERATURE": "0.1",
        "CLAWBOT__MODELS__PROVIDERS__A__API_KEY": "12345",
        "CLAWBOT__FEISHU__APP_SECRET": "s3cr3t",
        "CLAWBOT__LOGGING__INCLUDE_CONTENT": "true",
    }
    s = load_settings(None, environ=env)
    assert s.server.port == 2000
    assert s.session.max_turns == 3
    p = s.models.providers["a"]
    assert p.temperature == 0.1 and p.max_tokens == 2048 and p.base_url.endswith("/v1")
    assert p.api_key is not None and p.api_key.get_secret_value() == "12345"
    assert s.feishu.app_secret is not None and s.feishu.app_secret.get_secret_value() == "s3cr3t"
    assert s.logging.include_content is True
    assert "s3cr3t" not in repr(s) and "12345" not in str(s.model_dump())


def test_model_api_key_env(tmp_path: Path) -> None:
    cfg = _write(tmp_path, {"models": {"providers": {
        "only": {"base_url": "http://127.0.0.1:1", "model": "x"}}}})
    s = load_settings(str(cfg), environ={"MODEL_API_KEY": "sk-env"})
    assert s.default_provider == "only"
    assert s.models.providers["only"].api_key.get_secret_value() == "sk-env"  # type: ignore
    cfg2 = _write(tmp_path, {"models": {"providers": {
        "only": {"base_url": "http://127.0.0.1:1", "model": "x", "api_key": "sk-file"}}}}, "2.y")
    s2 = load_settings(str(cfg2), environ={"MODEL_API_KEY": "sk-env"})
    assert s2.models.providers["only"].api_key.get_secret_value() == "sk-file"  # type: ignore


def test_all_errors_listed(tmp_path: Path) -> None:
    cfg = _write(tmp_path, {
        "server": {"port": 70000, "bogus": 1},
        "session": {"ttl_seconds": "soon"},
        "models": {"providers": {"a": {"base_url": "ftp://x", "model": "m",
                                       "api_key": "sk-very-secret"}}},
        "logging": {"level": "LOUD"},
        "dingtalk": {"aes_key": "tooshort-secret"},
    })
    with pytest.raises(ConfigError) as ei:
        load_settings(str(cfg), environ={})
    paths = [p for p, _ in ei.value.errors]
    for expected in ("server.port", "server.bogus", "session.ttl_seconds",
                     "models.providers.a.base_url", "logging.level", "dingtalk.aes_key"):
        assert expected in paths, paths
    assert "sk-very-secret" not in str(ei.value) and "tooshort-secret" not in str(ei.value)


def test_semantic_errors(tmp_path: Path) -> None:
    cfg = _write(tmp_path, {"models": {
        "default": "nope",
        "providers": {"a": {"base_url": "http://h", "model": "m"},
                      "b": {"base_url": "http://h", "model": "m"}},
        "routes": [{"path_prefix": "/zh/", "provider": "ghost"}],
        "fallback": ["phantom"]},
        "encryption": {"keyring_file": str(tmp_path / "missing.json")}})
    with pytest.raises(ConfigError) as ei:
        load_settings(str(cfg), environ={})
    paths = [p for p, _ in ei.value.errors]
    assert paths == ["models.default", "models.routes.0.provider", "models.fallback.0",
                     "encryption.keyring_file"]
    bad_route = _write(tmp_path, {"models": {"providers": {"a": {"base_url": "http://h",
                                                                 "model": "m"}},
                                             "routes": [{"regex": "(", "provider": "a"},
                                                        {"provider": "a"}]}}, "r.yaml")
    with pytest.raises(ConfigError) as ei2:
        load_settings(str(bad_route), environ={})
    assert [p for p, _ in ei2.value.errors] == ["models.routes.0", "models.routes.1"]


def test_bad_keyring_reported(tmp_path: Path) -> None:
    kr = tmp_path / "kr.json"
    kr.write_text(json.dumps({"current": "k1", "keys": {"k1": base64.b64encode(b"x" * 16)
                                                         .decode()}}))
    cfg = _write(tmp_path, {"encryption": {"keyring_file": str(kr)}})
    with pytest.raises(ConfigError) as ei:
        load_settings(str(cfg), environ={})
    assert ei.value.errors == [("encryption.keyring_file", "key 'k1' must be 32 bytes (AES-256)")]


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("CLAWBOT")]:
        monkeypatch.delenv(k)
    good = _write(tmp_path, {"models": {"providers": {
        "a": {"base_url": "http://h", "model": "m", "api_key": "sk-hidden-1"}}}})
    assert main(["config", "check", "--config", str(good)]) == 0
    out = capsys.readouterr()
    assert "configuration OK" in out.out and "sk-hidden-1" not in out.out + out.err
    bad = _write(tmp_path, {"server": {"port": 0}, "storage": {"redis_url": "http://x"},
                            "feishu": {"app_secret": ["sk-hidden-2"]}}, "bad.yaml")
    assert main(["config", "check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "3 error(s)" in err
    assert "server.port:" in err and "storage.redis_url:" in err and "feishu.app_secret" in err
    assert "sk-hidden-2" not in err
    monkeypatch.setenv("CLAWBOT_CONFIG", str(bad))
    monkeypatch.setenv("CLAWBOT__SERVER__PORT", "8080")
    assert main(["config", "check"]) == 1
    err = capsys.readouterr().err
    assert "2 error(s)" in err and "server.port" not in err
    broken = _write(tmp_path, "server: [unclosed", "broken.yaml")
    assert main(["config", "check", "--config", str(broken)]) == 1
    assert "invalid YAML" in capsys.readouterr().err
    assert main(["config", "check", "--config", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err
