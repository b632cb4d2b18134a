"""``secrets_file``, separate database/Redis passwords, the migration settings and
``server.forwarded_allow_ips`` in the configuration (the backends themselves:
``test_credentials_backends.py``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.openai_provider import FakeModelServer
from sqlalchemy.engine import make_url

from clawbot_app.cli import main
from clawbot_app.config import ConfigError, load_settings
from clawbot_app.services import Services
from tests.support import running_app, settings_dict

DB = "mysql://bot@db.internal:3306/clawbot"


def _yaml(path: Path, doc: Any, mode: int = 0o600) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    path.chmod(mode)
    return path


def _config(tmp_path: Path, secrets: Any, mode: int = 0o600, **main_doc: Any) -> Path:
    """``cfg.yaml`` naming ``secrets.yaml`` (written with ``secrets`` and ``mode``)."""
    secrets_file = _yaml(tmp_path / "secrets.yaml", secrets, mode)
    return _yaml(tmp_path / "cfg.yaml", {"secrets_file": str(secrets_file), **main_doc}, 0o640)


def _errors(cfg: Path, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        load_settings(str(cfg), environ=environ or {})
    return ei.value.errors


# -- secrets_file ----------------------------------------------------------------------------------

def test_secrets_file_is_merged_and_env_comes_last(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        {"storage": {"database_password": "db-pw-1", "redis_password": "redis-pw-1"},
         "models": {"providers": {"a": {"api_key": "sk-from-secrets"}}},
         "feishu": {"app_secret": "feishu-secret"}},
        storage={"database_url": DB, "redis_url": "redis://bot@127.0.0.1:6379/0",
                 "writer_batch_size": 7},
        models={"providers": {"a": {"base_url": "http://h", "model": "m", "api_key": "sk-main"}}},
        feishu={"app_id": "cli_1"})
    s = load_settings(str(cfg), environ={})
    assert s.storage.writer_batch_size == 7 and s.storage.redis_url.endswith("6379/0")
    assert s.storage.service_url().password == "db-pw-1"
    assert s.storage.redis_secret == "redis-pw-1"
    assert s.models.providers["a"].secret() == "sk-from-secrets"  # the secrets file wins
    assert s.models.providers["a"].model == "m" and s.feishu.app_id == "cli_1"  # merged, kept
    env = {"CLAWBOT__STORAGE__DATABASE_PASSWORD": "db-pw-env",
           "CLAWBOT__MODELS__PROVIDERS__A__API_KEY": "sk-env"}
    s2 = load_settings(str(cfg), environ=env)
    assert s2.storage.service_url().password == "db-pw-env"
    assert s2.models.providers["a"].secret() == "sk-env"
    dumped = repr(s) + str(s.model_dump()) + str(s.storage.service_url())
    for secret in ("db-pw-1", "redis-pw-1", "sk-from-secrets", "feishu-secret"):
        assert secret not in dumped


def test_secrets_file_named_by_the_environment(tmp_path: Path) -> None:
    secrets = _yaml(tmp_path / "s.yaml", {"storage": {"database_password": "pw"}})
    s = load_settings(None, environ={"CLAWBOT__SECRETS_FILE": str(secrets),
                                     "CLAWBOT__STORAGE__DATABASE_URL": DB})
    assert s.storage.service_url().password == "pw" and s.secrets_file == str(secrets)
    cfg = _config(tmp_path, {"storage": {"database_password": "from-main's-file"}},
                  storage={"database_url": DB})
    s2 = load_settings(str(cfg), environ={"CLAWBOT__SECRETS_FILE": str(secrets)})
    assert s2.storage.service_url().password == "pw"  # the environment names another file
    s3 = load_settings(str(cfg), environ={"CLAWBOT__SECRETS_FILE": ""})  # and can switch it off
    assert s3.storage.database_password is None


def test_an_empty_secrets_file_changes_nothing(tmp_path: Path) -> None:
    s = load_settings(str(_config(tmp_path, "", server={"port": 1234})), environ={})
    assert s.server.port == 1234


@pytest.mark.parametrize(("mode", "allowed"), [
    (0o600, True), (0o400, True), (0o640, True), (0o660, True),
    (0o604, False), (0o602, False), (0o601, False), (0o644, False), (0o666, False)])
def test_secrets_file_mode(tmp_path: Path, mode: int, allowed: bool) -> None:
    cfg = _config(tmp_path, {"storage": {"database_password": "pw-hidden"}}, mode,
                  storage={"database_url": DB})
    if allowed:
        assert load_settings(str(cfg), environ={}).storage.service_url().password == "pw-hidden"
        return
    [(key, reason)] = _errors(cfg)
    assert key == "secrets_file"
    assert reason == (f"{tmp_path / 'secrets.yaml'}: mode {mode:04o} lets others read or write "
                      "it; allow only owner and group (e.g. chmod 0600)")


def test_secrets_file_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    target = _yaml(tmp_path / "real.yaml", {"storage": {"database_password": "pw-hidden"}})
    link = tmp_path / "link.yaml"
    link.symlink_to(target)  # the link's own mode (0777) means nothing
    cfg = _yaml(tmp_path / "cfg.yaml", {"secrets_file": str(link), "storage": {"database_url": DB}})
    assert load_settings(str(cfg), environ={}).storage.service_url().password == "pw-hidden"
    target.chmod(0o644)
    [(key, reason)] = _errors(cfg)
    assert key == "secrets_file"
    assert reason.startswith(f"{link} (a symlink to {target}): mode 0644 lets others read")


@pytest.mark.parametrize(("doc", "reason"), [
    (["pw-hidden"], "top level must be a mapping, not list"),
    ("pw-hidden", "top level must be a mapping, not str"),
    ("storage: {database_password: pw-hidden\n", "invalid YAML at line 2"),
    ({"secrets_file": "/etc/other.yaml"}, "cannot itself set 'secrets_file'"),
])
def test_secrets_file_content_errors(tmp_path: Path, doc: Any, reason: str) -> None:
    [(key, message)] = _errors(_config(tmp_path, doc))
    assert key == "secrets_file" and message == f"{tmp_path / 'secrets.yaml'}: {reason}"
    assert "pw-hidden" not in message


def test_secrets_file_that_cannot_be_read(tmp_path: Path) -> None:
    missing = _yaml(tmp_path / "cfg.yaml", {"secrets_file": str(tmp_path / "nope.yaml")})
    assert _errors(missing) == [
        ("secrets_file", f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory")]
    (tmp_path / "dir").mkdir(mode=0o700)
    directory = _yaml(tmp_path / "cfg.yaml", {"secrets_file": str(tmp_path / "dir")})
    assert _errors(directory) == [("secrets_file", f"{tmp_path / 'dir'}: not a regular file")]
    os.mkfifo(tmp_path / "fifo", 0o600)  # must not block waiting for a writer
    fifo = _yaml(tmp_path / "cfg.yaml", {"secrets_file": str(tmp_path / "fifo")})
    assert _errors(fifo) == [("secrets_file", f"{tmp_path / 'fifo'}: not a regular file")]
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe pw")
    binary.chmod(0o600)
    not_text = _yaml(tmp_path / "cfg.yaml", {"secrets_file": str(binary)})
    assert _errors(not_text) == [("secrets_file", f"cannot read {binary}: not UTF-8 text")]
    wrong_type = _yaml(tmp_path / "cfg.yaml", {"secrets_file": ["a.yaml"]})
    assert _errors(wrong_type) == [("secrets_file", "must be the path of a YAML file")]


def test_wrong_typed_secrets_are_not_echoed(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """pydantic's errors carry the input; only the key path and the message may be shown."""
    cfg = _config(tmp_path, {
        "storage": {"database_password": 987654321, "redis_password": ["hunter2-list"]},
        "feishu": {"app_secret": {"nested": "hunter2-map"}},
        "models": {"providers": {"a": {"api_key": 31415926535}}}},
        storage={"database_url": "mysql://bot:pw-in-url-0@db:noport/x",
                 "redis_url": "redis://bot:pw-in-url-1@h:noport/0"},
        models={"providers": {"a": {"base_url": "http://h", "model": "m"}}})
    assert main(["config", "check", "--config", str(cfg)]) == 1
    out = capsys.readouterr()
    for key in ("storage.database_password:", "storage.redis_password:", "feishu.app_secret:",
                "models.providers.a.api_key:", "storage.database_url: Value error, is not a "
                "valid URL", "storage.redis_url: Value error, is not a valid Redis URL"):
        assert key in out.err, out.err
    for secret in ("987654321", "hunter2", "31415926535", "pw-in-url"):
        assert secret not in out.out + out.err
    errors = _errors(cfg)
    assert not any(secret in str(errors) for secret in ("987654321", "hunter2", "31415926535"))


async def test_sighup_rereads_the_secrets_file(tmp_path: Path, primary: FakeModelServer,
                                               reload: Callable[[Services, str], bool]) -> None:
    data = settings_dict(tmp_path, primary.base_url)
    del data["models"]["providers"]["primary"]["api_key"]
    cfg = _config(tmp_path, {"models": {"providers": {"primary": {"api_key": "sk-primary"}}}},
                  **data)
    async with running_app(load_settings(str(cfg), environ={})) as h:
        tok = await h.token()
        assert (await h.chat(tok, message="one")).status_code == 200
        assert primary.fake.authorizations[-1] == "Bearer sk-primary"

        primary.fake.api_key = "sk-rotated"
        _yaml(tmp_path / "secrets.yaml",
              {"models": {"providers": {"primary": {"api_key": "sk-rotated"}}}})
        assert reload(h.services, str(cfg))
        assert (await h.chat(tok, message="two")).status_code == 200
        assert primary.fake.authorizations[-1] == "Bearer sk-rotated"

        _yaml(tmp_path / "secrets.yaml",
              {"models": {"providers": {"primary": {"api_key": "sk-third"}}}}, 0o644)
        assert not reload(h.services, str(cfg))  # refused: the running key stays
        assert (await h.chat(tok, message="three")).status_code == 200
        assert primary.fake.authorizations[-1] == "Bearer sk-rotated"


# -- database and Redis passwords, migration settings --------------------------------------------

def test_database_password_replaces_the_urls(tmp_path: Path) -> None:
    password = "p@ss/w%rd:#?&= x"
    cfg = _config(tmp_path, {"storage": {"database_password": password}},
                  storage={"database_url": "mysql://bot:old-pw@db:3306/clawbot?charset=utf8mb4"})
    url = load_settings(str(cfg), environ={}).storage.service_url()
    assert url.password == password and url.username == "bot"
    assert url.query == {"charset": "utf8mb4"} and url.host == "db" and url.port == 3306
    assert str(url) == repr(url) == "mysql://bot:***@db:3306/clawbot?charset=utf8mb4"
    rendered = url.render_as_string(hide_password=False)  # escaped: parses back the same
    assert "p@ss/w%rd:#?&" not in rendered and make_url(rendered).password == password


def test_without_a_separate_password_the_url_is_used_as_is(tmp_path: Path) -> None:
    s = load_settings(None, environ={"CLAWBOT__STORAGE__DATABASE_URL": "mysql://u:in-url@h/d",
                                     "CLAWBOT__STORAGE__DATABASE_PASSWORD": ""})
    assert s.storage.service_url().password == "in-url"  # empty counts as not set
    assert s.storage.migration_url().password == "in-url"  # migrations: same account


def test_migration_url_and_password_file(tmp_path: Path) -> None:
    pw_file = tmp_path / "migrator.pw"
    pw_file.write_text("mig/pw@1\n")
    pw_file.chmod(0o600)
    cfg = _config(tmp_path, {"storage": {"database_password": "svc-pw"}}, storage={
        "database_url": "mysql://bot@db/clawbot",
        "migration_database_url": "mysql://migrator:url-pw@db/clawbot",
        "migration_password_file": str(pw_file)})
    st = load_settings(str(cfg), environ={}).storage
    assert st.service_url().username == "bot" and st.service_url().password == "svc-pw"
    url = st.migration_url()
    assert (url.username, url.password) == ("migrator", "mig/pw@1")  # newline stripped
    assert str(url) == "mysql://migrator:***@db/clawbot"
    no_file = _config(tmp_path, {}, storage={"database_url": "mysql://bot:svc@db/clawbot",
                                             "migration_password_file": str(pw_file)})
    url2 = load_settings(str(no_file), environ={}).storage.migration_url()
    assert (url2.username, url2.password) == ("bot", "mig/pw@1")  # the service URL, other pw


@pytest.mark.parametrize(("content", "mode", "reason"), [
    (None, 0o600, "cannot read {path}: No such file or directory"),
    ("", 0o600, "{path}: the file is empty"),
    ("\n\n", 0o600, "{path}: the file is empty"),
    ("pw-hidden\nmore\n", 0o600, "{path}: must hold only the password, on one line"),
    ("pw-hidden\n", 0o644, "{path}: mode 0644 lets others read or write it"),
])
def test_migration_password_file_errors(tmp_path: Path, content: str | None, mode: int,
                                        reason: str) -> None:
    pw_file = tmp_path / "migrator.pw"
    if content is not None:
        pw_file.write_text(content)
        pw_file.chmod(mode)
    cfg = _config(tmp_path, {}, storage={"database_url": DB,
                                         "migration_password_file": str(pw_file)})
    st = load_settings(str(cfg), environ={}).storage  # loading never reads the file
    with pytest.raises(ConfigError) as ei:
        st.migration_url()
    [(key, message)] = ei.value.errors
    assert key == "storage.migration_password_file"
    assert message.startswith(reason.format(path=pw_file)) and "pw-hidden" not in message


@pytest.mark.parametrize(("storage", "errors"), [
    ({"database_password": "pw"}, [("storage.database_password",
                                    "needs a mysql:// storage.database_url")]),
    ({"database_url": "sqlite:////tmp/x.db", "database_password": "pw"},
     [("storage.database_password", "needs a mysql:// storage.database_url")]),
    ({"migration_database_url": DB, "migration_password_file": "/nonexistent"},
     [("storage.migration_database_url", "needs a mysql:// storage.database_url"),
      ("storage.migration_password_file", "needs a mysql:// storage.database_url")]),
    ({"database_url": DB, "migration_database_url": "sqlite:////tmp/x.db"},
     [("storage.migration_database_url", "must be a mysql:// URL, like storage.database_url")]),
    ({"database_url": "mysql://db.internal/clawbot", "database_password": "pw"},
     [("storage.database_url", "needs a user name to go with storage.database_password")]),
    ({"redis_password": "pw"}, [("storage.redis_password", "needs storage.redis_url")]),
])
def test_storage_credential_errors(tmp_path: Path, storage: dict[str, str],
                                   errors: list[tuple[str, str]]) -> None:
    assert _errors(_yaml(tmp_path / "cfg.yaml", {"storage": storage})) == errors


def test_config_check_with_every_credential_setting(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`config check` validates all of it without the migrator's password file (the service
    user cannot read that one) and prints no secret."""
    for k in [k for k in os.environ if k.startswith("CLAWBOT")]:
        monkeypatch.delenv(k)
    cfg = _config(tmp_path, {
        "storage": {"database_password": "db-hidden", "redis_password": "redis-hidden"},
        "models": {"providers": {"a": {"api_key": "sk-hidden"}}}},
        server={"forwarded_allow_ips": ["10.0.0.0/8", "::1"]},
        storage={"database_url": "mysql://bot@db.internal/clawbot",
                 "migration_database_url": "mysql://migrator@db.internal/clawbot",
                 "migration_password_file": str(tmp_path / "not-readable-here.pw"),
                 "redis_url": "unix:///run/redis-clawbot/redis-server.sock?username=clawbot"},
        models={"providers": {"a": {"base_url": "http://h", "model": "m"}}})
    assert main(["config", "check", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("configuration OK") and out.err == ""
    assert "hidden" not in out.out


# -- server.forwarded_allow_ips ------------------------------------------------------------------

def test_forwarded_allow_ips(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).server.forwarded_allow_ips == ["127.0.0.1", "::1"]
    cfg = _yaml(tmp_path / "c.yaml", {"server": {"forwarded_allow_ips": [
        "10.0.0.0/8", "192.0.2.7", "2001:DB8:0:0::/32", "::ffff:10.1.2.3", "192.0.2.8/32"]}})
    assert load_settings(str(cfg), environ={}).server.forwarded_allow_ips == [
        "10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::ffff:a01:203", "192.0.2.8/32"]
    env = {"CLAWBOT__SERVER__FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2,::1"}
    assert load_settings(None, environ=env).server.forwarded_allow_ips == [
        "10.0.0.1", "10.0.0.2", "::1"]
    nobody = _yaml(tmp_path / "n.yaml", {"server": {"forwarded_allow_ips": []}})
    assert load_settings(str(nobody), environ={}).server.forwarded_allow_ips == []


def test_forwarded_allow_ips_errors(tmp_path: Path) -> None:
    cfg = _yaml(tmp_path / "c.yaml", {"server": {"forwarded_allow_ips": [
        "127.0.0.1", "*", "10.0.0.1/8", "localhost", "10.0.0.0/33", 7]}})
    errors = dict(_errors(cfg))
    assert list(errors) == [f"server.forwarded_allow_ips.{i}" for i in (1, 2, 3, 4, 5)]
    assert "'*' does not appear to be an IPv4 or IPv6 address" in errors[
        "server.forwarded_allow_ips.1"]
    assert "has host bits set" in errors["server.forwarded_allow_ips.2"]
    assert "valid string" in errors["server.forwarded_allow_ips.5"]


# -- the README's deployment example -------------------------------------------------------------

def test_readme_deployment_example_is_valid(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("### Secrets and credentials"):readme.index("### Reverse proxy")]
    blocks = {m.group(1): m.group(2) for m in
              re.finditer(r"```(?:yaml|text)\n# /etc/clawbot/(\S+).*?\n(.*?)```", section, re.S)}
    assert set(blocks) == {"config.yaml", "secrets.yaml", "migrator.password"}
    etc = tmp_path / "etc"
    etc.mkdir()
    for name, text in blocks.items():
        text = text.replace("/etc/clawbot/", f"{etc}/").replace("/var/lib/", f"{tmp_path}/")
        _yaml(etc / name, text, 0o640 if name == "config.yaml" else 0o600)
    s = load_settings(str(etc / "config.yaml"), environ={})
    assert s.storage.service_url().password == "…" and s.storage.redis_secret == "…"
    assert s.storage.migration_url().username == "clawbot_migrator"
    assert s.models.providers["openai"].secret() == "sk-…"
    assert main(["config", "check", "--config", str(etc / "config.yaml")]) == 0
    assert "…" not in capsys.readouterr().out
