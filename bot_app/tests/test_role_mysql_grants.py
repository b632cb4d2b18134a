"""The bot against the grants of the collection's ``mysql`` role, exactly as the role sets them.

The privilege lists are read from ``roles/mysql/defaults/main.yml`` (not repeated here): on the
suite's real MariaDB a fresh database gets a migrator and a DML-only account with those lists.
The migrator runs the real migrations; the DML account runs the bot's real write paths (tokens
and their audit rows, the conversation-log writer, the IM dedupe table with its update and purge)
and must fail to migrate or change the schema. Grants that are too narrow fail the first part,
grants that are too wide the second.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa
import yaml
from fakes.openai_provider import FakeModelServer
from sqlalchemy.exc import DBAPIError

from clawbot_app.config import Settings
from clawbot_app.db import migrate
from clawbot_app.db.engine import Database, sync_url, utcnow
from clawbot_app.db.schema import (
    api_tokens,
    audit_log,
    conversation_log,
    dialog_sessions,
    im_dedupe,
)
from clawbot_app.db.tokens import revoke_token
from clawbot_app.dedupe import DatabaseDedupe
from tests.conftest import MariaDB
from tests.support import running_app, settings_dict

ROLE_DEFAULTS = Path(__file__).parents[2] / "roles/mysql/defaults/main.yml"
TEXT = "你好，世界 🦀"  # noqa: RUF001 - the full-width comma is part of the text
ACCESS_DENIED = {1142, 1044, 1045}  # table command denied, database access denied, login denied


@dataclass(frozen=True)
class RoleGrants:
    app: list[str]
    migrator: list[str]
    encoding: str
    collation: str


def role_grants() -> RoleGrants:
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return RoleGrants(app=defaults["mysql_app_privileges"],
                      migrator=defaults["mysql_migrator_privileges"],
                      encoding=defaults["mysql_database_encoding"],
                      collation=defaults["mysql_database_collation"])


@dataclass(frozen=True)
class Accounts:
    app_url: str  # the DML account on the migrated database
    migrator_url: str
    spare_app_url: str  # the DML account on a second, empty database with the same grants


@pytest.fixture(scope="module")
def accounts(mariadb: MariaDB) -> Iterator[Accounts]:
    grants = role_grants()
    suffix = uuid.uuid4().hex[:8]
    # No "_" in the names: in GRANT ... ON `db`.* it would be a wildcard.
    db, spare = f"grants{suffix}", f"grants{suffix}spare"
    app, migrator = f"app{suffix}", f"migrator{suffix}"
    password = uuid.uuid4().hex
    statements = [
        *(f"CREATE DATABASE `{name}` CHARACTER SET {grants.encoding} COLLATE {grants.collation}"
          for name in (db, spare)),
        # The role's host part for the bot on the same host over TCP (skip-name-resolve is on).
        *(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'"
          for user in (app, migrator)),
        f"GRANT {', '.join(grants.app)} ON `{db}`.* TO '{app}'@'127.0.0.1'",
        f"GRANT {', '.join(grants.app)} ON `{spare}`.* TO '{app}'@'127.0.0.1'",
        f"GRANT {', '.join(grants.migrator)} ON `{db}`.* TO '{migrator}'@'127.0.0.1'",
    ]
    _as_root(mariadb, statements)
    base = f"mysql://{{}}:{password}@127.0.0.1:{mariadb.port}/{{}}"
    try:
        yield Accounts(app_url=base.format(app, db), migrator_url=base.format(migrator, db),
                       spare_app_url=base.format(app, spare))
    finally:
        _as_root(mariadb, [f"DROP DATABASE IF EXISTS `{db}`", f"DROP DATABASE IF EXISTS `{spare}`",
                           f"DROP USER IF EXISTS '{app}'@'127.0.0.1'",
                           f"DROP USER IF EXISTS '{migrator}'@'127.0.0.1'"])


def _as_root(mariadb: MariaDB, statements: list[str]) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _denied(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return bool(getattr(orig, "args", None)) and orig.args[0] in ACCESS_DENIED


@pytest.fixture(scope="module")
def migrated(accounts: Accounts) -> Accounts:
    """``clawbot-app migrate`` (the same ``migrate.upgrade``) as the migrator account."""
    migrate.upgrade(accounts.migrator_url)
    url = accounts.migrator_url
    assert migrate.current_revision(url) == migrate.head_revision(url)
    return accounts


def test_role_lists_are_read() -> None:
    grants = role_grants()
    assert grants.app and grants.migrator, grants  # an empty list would make the rest meaningless


async def test_bot_writes_with_the_dml_account(tmp_path: Path, primary: FakeModelServer,
                                               migrated: Accounts) -> None:
    # The start-up check `clawbot-app serve` makes on an external database (reads alembic_version).
    assert migrate.pending(migrated.app_url) is False
    settings = Settings.model_validate(settings_dict(
        tmp_path, primary.base_url, storage={"database_url": migrated.app_url}))
    tenant = f"grants-{uuid.uuid4().hex[:6]}"
    async with running_app(settings) as h:
        assert (await h.client.get("/ready")).status_code == 200
        token = await h.token(tenant=tenant)  # INSERT api_tokens + audit_log
        reply = await h.chat(token, message=TEXT)
        assert reply.status_code == 200, reply.text
        await h.services.writer.flush()  # the conversation-log writer: dialog session + 2 log rows
        assert h.services.writer.spool.pending_rows() == 0
        assert h.services.writer.spool.dead_rows() == 0
        engine = h.services.db.engine
        async with engine.connect() as conn:
            logged = (await conn.execute(sa.select(conversation_log)
                                         .where(conversation_log.c.tenant_id == tenant))).all()
            sessions = (await conn.execute(sa.select(dialog_sessions)
                                           .where(dialog_sessions.c.tenant_id == tenant))).all()
            token_id = (await conn.execute(sa.select(api_tokens.c.id)
                                           .where(api_tokens.c.tenant_id == tenant))).scalar_one()
        assert sorted(row.role for row in logged) == ["assistant", "user"]
        assert len(sessions) == 1
        user_row = next(row for row in logged if row.role == "user")
        keyring = h.services.keyring
        assert keyring.decrypt(user_row.key_id, user_row.content, user_row.id) == TEXT

        assert await revoke_token(engine, token_id) is True  # UPDATE api_tokens + audit_log
        assert (await h.chat(token, message="x")).status_code == 401
        async with engine.connect() as conn:
            actions = (await conn.execute(sa.select(audit_log.c.action)
                                          .where(audit_log.c.target == str(token_id)))).scalars()
            assert sorted(actions) == ["token.create", "token.revoke"]

    # IM replay protection in the database: INSERT, UPDATE of an expired key, DELETE (purge).
    db = Database(migrated.app_url)
    try:
        dedupe = DatabaseDedupe(db)
        key = f"grants:{uuid.uuid4()}"
        assert await dedupe.mark_seen(key, 0) is True
        assert await dedupe.mark_seen(key, 60) is True  # expired entry taken over (UPDATE)
        assert await dedupe.mark_seen(key, 60) is False
        assert await dedupe.purge(utcnow() + dt.timedelta(seconds=120)) >= 1
        async with db.engine.connect() as conn:
            count = sa.select(sa.func.count()).select_from(im_dedupe)
            left = (await conn.execute(count)).scalar_one()
        assert left == 0
    finally:
        await db.close()


def test_dml_account_cannot_migrate(migrated: Accounts) -> None:
    """Same grants on an empty database: the first CREATE TABLE of the migrations is refused."""
    with pytest.raises(DBAPIError) as refused:
        migrate.upgrade(migrated.spare_app_url)
    assert _denied(refused.value), refused.value


@pytest.mark.parametrize("ddl", [
    "CREATE TABLE grants_probe (id INT PRIMARY KEY)",
    "ALTER TABLE conversation_log ADD COLUMN grants_probe INT",
    "CREATE INDEX ix_grants_probe ON audit_log (actor)",
    "DROP TABLE im_dedupe",
])
def test_dml_account_cannot_change_the_schema(migrated: Accounts, ddl: str) -> None:
    engine = sa.create_engine(sync_url(migrated.app_url), poolclass=sa.pool.NullPool)
    try:
        with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
            conn.execute(sa.text(ddl))
        assert _denied(refused.value), refused.value
    finally:
        engine.dispose()
