"""Alembic environment: runs with a synchronous driver (sqlite3 / PyMySQL)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from clawbot_app.db.schema import metadata

config = context.config
# clawbot_app.db.migrate passes a URL object, so that a password is never rendered into text; the
# ini option is the fallback for a plain `alembic` run with an ini file that sets it.
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
