"""Passwords kept out of the URLs, against the suite's real Redis and MariaDB: a Redis ACL user
(over the Unix socket and TCP) with ``storage.redis_password``; a DML-only database account with
``storage.database_password`` for the service and a migrator account with
``storage.migration_database_url`` + ``storage.migration_password_file`` for ``migrate``.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis
import yaml
from fakes.openai_provider import FakeModelServer
from redis.exceptions import ConnectionError as RedisConnectionError

from clawbot_app.cli import main
from clawbot_app.config import Settings, load_settings
from clawbot_app.db import migrate
from clawbot_app.server import prepare_database
from clawbot_app.store import RedisStore, redis_client
from tests.conftest import MariaDB, RedisProc
from tests.support import running_app, settings_dict
from tests.test_role_mysql_grants import role_grants

# Characters a URL would need escaped: the separate passwords must not.
ODD = " p@ss/w%rd:#?&="


@dataclass(frozen=True)
class RedisUser:
    name: str
    password: str


@pytest.fixture
def redis_user(redis_server: RedisProc) -> Iterator[RedisUser]:
    """An ACL user on the session's Redis, limited to the bot's key prefix."""
    user = RedisUser(f"bot{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12) + ODD)
    admin = redis.Redis(port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", user.name, "reset", "on", f">{user.password}",
                          "~clawbot:*", "+@all", "-@dangerous")
    try:
        yield user
    finally:
        admin.execute_command("ACL", "DELUSER", user.name)
        admin.close()


def _redis_urls(server: RedisProc, user: str) -> dict[str, str]:
    return {"unix": f"unix://{server.socket}?username={user}",
            "tcp": f"redis://{user}@127.0.0.1:{server.port}/0",
            "tcp, another password in the URL": f"redis://{user}:wrong@127.0.0.1:{server.port}/0"}


@pytest.mark.parametrize("form", ["unix", "tcp", "tcp, another password in the URL"])
async def test_redis_acl_user_with_a_separate_password(tmp_path: Path, primary: FakeModelServer,
                                                       redis_server: RedisProc,
                                                       redis_user: RedisUser, form: str) -> None:
    url = _redis_urls(redis_server, redis_user.name)[form]
    settings = Settings.model_validate(settings_dict(
        tmp_path, primary.base_url,
        storage={"redis_url": url, "redis_password": redis_user.password}))
    async with running_app(settings) as h:
        assert isinstance(h.services.store, RedisStore)
        assert await h.services.store.redis.acl_whoami() == redis_user.name
        ready = await h.client.get("/ready")
        assert ready.json()["checks"]["redis"] == {"status": "ok"}, ready.text
        tok = await h.token()
        first = await h.chat(tok, message="a")
        second = await h.chat(tok, message="b", session_id=first.json()["session_id"])
        assert second.json()["reply"] == "primary: b [n=3]"  # the turns came back from Redis


async def test_redis_without_the_password(redis_server: RedisProc, redis_user: RedisUser) -> None:
    urls = _redis_urls(redis_server, redis_user.name)
    # Only the URL (no password, or a wrong one), or a wrong separate password.
    clients = [*(redis_client(url) for url in urls.values()),
               redis_client(urls["unix"], password="not-it")]
    for client in clients:
        try:
            with pytest.raises(RedisConnectionError, match="invalid username-password pair"):
                await client.ping()
        finally:
            await client.aclose()


@dataclass(frozen=True)
class Accounts:
    port: int
    database: str
    app: str
    app_password: str
    migrator: str
    migrator_password: str

    def url(self, user: str) -> str:
        return f"mysql://{user}@127.0.0.1:{self.port}/{self.database}"


@pytest.fixture(scope="module")
def accounts(mariadb: MariaDB) -> Iterator[Accounts]:
    """A fresh database with the mysql role's DML and migrator grants, passwords with ``ODD``."""
    grants = role_grants()
    suffix = uuid.uuid4().hex[:8]
    acc = Accounts(mariadb.port, f"creds{suffix}", f"app{suffix}", uuid.uuid4().hex + ODD,
                   f"migrator{suffix}", uuid.uuid4().hex + ODD)
    _as_root(mariadb, [
        (f"CREATE DATABASE `{acc.database}` CHARACTER SET {grants.encoding} "
         f"COLLATE {grants.collation}", ()),
        (f"CREATE USER '{acc.app}'@'127.0.0.1' IDENTIFIED BY %s", (acc.app_password,)),
        (f"CREATE USER '{acc.migrator}'@'127.0.0.1' IDENTIFIED BY %s", (acc.migrator_password,)),
        (f"GRANT {', '.join(grants.app)} ON `{acc.database}`.* TO '{acc.app}'@'127.0.0.1'", ()),
        (f"GRANT {', '.join(grants.migrator)} ON `{acc.database}`.* "
         f"TO '{acc.migrator}'@'127.0.0.1'", ())])
    try:
        yield acc
    finally:
        _as_root(mariadb, [(f"DROP DATABASE IF EXISTS `{acc.database}`", ()),
                           (f"DROP USER IF EXISTS '{acc.app}'@'127.0.0.1'", ()),
                           (f"DROP USER IF EXISTS '{acc.migrator}'@'127.0.0.1'", ())])


def _as_root(mariadb: MariaDB, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement, args in statements:
                cur.execute(statement, args or None)
    finally:
        conn.close()


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _config(tmp_path: Path, acc: Accounts, name: str, **storage: Any) -> str:
    """Config + 0600 secrets file: the service is the DML account, its password in the secrets
    file only."""
    secrets_file = _private(tmp_path / "secrets.yaml", yaml.safe_dump(
        {"storage": {"database_password": acc.app_password}}))
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump({
        "secrets_file": str(secrets_file), "logging": {"level": "WARNING"},
        "storage": {"data_dir": str(tmp_path / "data"), "database_url": acc.url(acc.app),
                    **storage}}))
    return str(cfg)


async def test_migrate_as_migrator_serve_as_dml_account(
        tmp_path: Path, primary: FakeModelServer, accounts: Accounts,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("CLAWBOT")]:
        monkeypatch.delenv(k)
    acc = accounts
    pw_file = _private(tmp_path / "migrator.pw", acc.migrator_password + "\n")
    dml_only = _config(tmp_path, acc, "dml.yaml")
    missing_pw = _config(tmp_path, acc, "missing.yaml",
                         migration_database_url=acc.url(acc.migrator),
                         migration_password_file=str(tmp_path / "absent.pw"))
    cfg = _config(tmp_path, acc, "cfg.yaml", migration_database_url=acc.url(acc.migrator),
                  migration_password_file=str(pw_file))
    passwords = (acc.app_password, acc.migrator_password, ODD.strip())

    # serve's start-up check connects as the DML account (never reading the migrator's file)
    # and finds the empty schema: it could log in.
    with pytest.raises(SystemExit) as stale:
        prepare_database(load_settings(missing_pw))
    assert stale.value.code == 3

    assert main(["migrate", "--config", dml_only]) == 1  # DML grants: no CREATE TABLE
    out = capsys.readouterr()
    assert out.out == ""
    assert f"migrating mysql://{acc.app}:***@127.0.0.1:{acc.port}/{acc.database}\n" in out.err
    assert "migration failed: OperationalError: (1142, " in out.err and "denied" in out.err
    assert not any(p in out.err for p in passwords)

    assert main(["migrate", "--config", missing_pw]) == 2
    err = capsys.readouterr().err
    assert f"storage.migration_password_file: cannot read {tmp_path / 'absent.pw'}: " \
           "No such file or directory" in err
    assert main(["config", "check", "--config", missing_pw]) == 0  # check never reads it
    assert not any(p in capsys.readouterr().out for p in passwords)

    assert main(["migrate", "--config", cfg]) == 0
    out = capsys.readouterr()
    head = migrate.head_revision(acc.url(acc.app))
    assert head and out.out == f"database at revision {head}\n"
    assert out.err == (f"migrating mysql://{acc.migrator}:***@127.0.0.1:{acc.port}/"
                       f"{acc.database}\n")
    assert not any(p in out.out + out.err for p in passwords)
    assert not (tmp_path / "data").exists()  # an external database: data_dir left alone

    prepare_database(load_settings(missing_pw))  # up to date for the DML account now: no exit
    service = Settings.model_validate(settings_dict(tmp_path, primary.base_url, storage={
        "database_url": acc.url(acc.app), "database_password": acc.app_password,
        "migration_database_url": acc.url(acc.migrator),
        "migration_password_file": str(tmp_path / "absent.pw")}))
    async with running_app(service) as h:
        assert str(h.services.db.url) == \
            f"mysql://{acc.app}:***@127.0.0.1:{acc.port}/{acc.database}"
        assert (await h.client.get("/ready")).json()["checks"]["database"] == {"status": "ok"}
        tok = await h.token()  # INSERT as the DML account
        assert (await h.chat(tok, message="hi")).status_code == 200
