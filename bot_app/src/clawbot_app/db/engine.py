"""Async engine construction and URL normalisation (sqlite -> aiosqlite, mysql -> aiomysql).

URLs are SQLAlchemy ``URL`` objects wherever a password may be in them: ``str()`` and ``repr()``
of those mask it, and the password is never rendered into a string to be parsed again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:  # the config imports the token file parser, which needs utcnow from here
    from clawbot_app.config import Settings


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# SQLAlchemy backend name -> the driver this service uses with it.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "mysql": "mysql+aiomysql",
                  "mariadb": "mysql+aiomysql"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def _with_driver(url: str | URL, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    return parsed.set(drivername=drivers.get(parsed.get_backend_name(), parsed.drivername))


def async_url(url: str | URL) -> URL:
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str | URL) -> URL:
    return _with_driver(url, _SYNC_DRIVERS)


def display_url(url: str | URL) -> str:
    """The URL to print or log: its password (if any) is masked."""
    return make_url(url).render_as_string(hide_password=True)


def ensure_sqlite_dir(url: str | URL) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database \
            and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str | URL) -> AsyncEngine:
    """An async engine for ``url`` (a string, or a URL whose password need not be rendered)."""
    ensure_sqlite_dir(url)
    aurl = async_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if aurl.get_backend_name() == "mysql":
        kwargs.update(pool_size=10, max_overflow=10, pool_recycle=3600,
                      connect_args={"connect_timeout": 3})
    else:
        kwargs.update(connect_args={"timeout": 5})
    engine = create_async_engine(aurl, **kwargs)
    if aurl.get_backend_name() == "sqlite":
        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()
    return engine


class Database:
    """Owns the async engine; ``ping`` backs the readiness probe."""

    def __init__(self, url: str | URL):
        self.url = make_url(url)  # str() masks the password
        self.engine = make_engine(self.url)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.storage.service_url())

    async def ping(self, timeout: float = 3.0) -> None:
        async def _q() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        await asyncio.wait_for(_q(), timeout)

    async def close(self) -> None:
        await self.engine.dispose()
