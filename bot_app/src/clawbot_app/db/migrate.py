"""Programmatic Alembic: upgrade to head, report pending revisions."""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from clawbot_app.db.engine import ensure_sqlite_dir, sync_url


def alembic_config(url: str | URL) -> Config:
    ini = resources.files("clawbot_app.migrations") / "alembic.ini"
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", "clawbot_app:migrations")
    cfg.attributes["url"] = sync_url(url)  # the URL object: migrations/env.py connects with it
    return cfg


def current_revision(url: str | URL) -> str | None:
    ensure_sqlite_dir(url)
    engine = sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(url: str | URL) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def pending(url: str | URL) -> bool:
    return current_revision(url) != head_revision(url)


def upgrade(url: str | URL) -> None:
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), "head")
