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
from tests.support import write_keyring


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
    assert ei.value.errors == [("encryption.keyring_file",
                                f"{kr}: key 'k1' must be 32 bytes (AES-256)")]


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


def _provider(**extra: object) -> dict[str, object]:
    return {"models": {"providers": {"a": {"base_url": "http://h", "model": "m", **extra}}}}


def test_api_key_file(tmp_path: Path) -> None:
    kr = write_keyring(tmp_path / "model.json", "k2", {"k1": "sk-old-1", "k2": "sk-new-2"})
    cfg = _write(tmp_path, _provider(api_key_file=str(kr)))
    s = load_settings(str(cfg), environ={"MODEL_API_KEY": "sk-env"})  # env never overrides
    p = s.models.providers["a"]
    assert p.secret() == "sk-new-2" and p.api_key is None
    assert p.api_key_file is not None and p.api_key_file.current == "k2"
    dumped = s.model_dump()
    assert dumped["models"]["providers"]["a"]["api_key_file"] == str(kr)
    assert "sk-new-2" not in repr(s) + str(dumped) and "sk-old-1" not in repr(s)
    via_env = load_settings(None, environ={
        "CLAWBOT__MODELS__PROVIDERS__A__BASE_URL": "http://h",
        "CLAWBOT__MODELS__PROVIDERS__A__MODEL": "m",
        "CLAWBOT__MODELS__PROVIDERS__A__API_KEY_FILE": str(kr)})
    assert via_env.models.providers["a"].secret() == "sk-new-2"


def test_api_key_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kr = write_keyring(tmp_path / "model.json", "k1", {"k1": "sk-hidden-9"})
    both = _write(tmp_path, _provider(api_key="sk-inline-8", api_key_file=str(kr)), "both.yaml")
    with pytest.raises(ConfigError) as ei:
        load_settings(str(both), environ={})
    [(path, reason)] = ei.value.errors
    assert path == "models.providers.a" and "api_key and api_key_file are mutually" in reason
    assert "sk-inline-8" not in str(ei.value) and "sk-hidden-9" not in str(ei.value)

    missing = _write(tmp_path, _provider(api_key_file=str(tmp_path / "nope.json")), "m.yaml")
    assert main(["config", "check", "--config", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"models.providers.a.api_key_file: Value error, {tmp_path / 'nope.json'}: " \
           "cannot read keyring" in err

    broken = tmp_path / "broken.json"
    broken.write_text('{"current": "k1", "keys": {"k1": "sk-hidden-9"')
    spaced = write_keyring(tmp_path / "spaced.json", "k1", {"k1": "sk-hidden-9\n"})
    for bad, reason in ((broken, "keyring is not valid JSON"),
                        (spaced, "current key 'k1' is not usable as an API key")):
        cfg = _write(tmp_path, _provider(api_key_file=str(bad)), "bad.yaml")
        assert main(["config", "check", "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert "models.providers.a.api_key_file:" in err and str(bad) in err and reason in err
        assert "sk-hidden-9" not in err


def test_tokens_file_errors_are_config_errors(tmp_path: Path) -> None:
    ring = write_keyring(tmp_path / "probe.json", "k1", {"k1": "tok-hidden-1"})
    cases = [
        ({"tokens": [{"token": "tok-hidden-2"}]}, "entry 1: 'user' is required"),
        ({"tokens": [{"user": "u"}]}, "entry 1: needs exactly one of sha256, token, keyring_file"),
        ({"tokens": [{"user": "u", "token": "tok-hidden-2", "keyring_file": str(ring)}]},
         "entry 1: needs exactly one of"),
        ({"tokens": [{"user": "u", "sha256": "tok-hidden-2"}]},
         "entry 1: 'sha256' must be 64 hex digits"),
        ({"tokens": [{"user": "ok", "keyring_file": str(ring)},
                     {"user": "u", "keyring_file": str(tmp_path / "gone.json")}]},
         f"entry 2: {tmp_path / 'gone.json'}: cannot read keyring"),
        ({"tokens": [{"user": "u", "keyring_file": str(ring), "expires_at": "tomorrow"}]},
         "entry 1: 'expires_at' must be an ISO 8601 timestamp"),
        ({"tokens": "tok-hidden-2"}, "'tokens' must be a list"),
        ("tokens: [{token: tok-hidden-2, user: [}]", "invalid YAML at line 1"),
    ]
    for doc, reason in cases:
        tokens = _write(tmp_path, doc, "tokens.yaml")
        cfg = _write(tmp_path, {"auth": {"tokens_file": str(tokens)}})
        with pytest.raises(ConfigError) as ei:
            load_settings(str(cfg), environ={})
        [(path, message)] = ei.value.errors
        assert path == "auth.tokens_file" and message.startswith(f"{tokens}: ")
        assert reason in message, (doc, message)
        assert "tok-hidden" not in message
