"""Async engine construction and URL normalisation (sqlite -> aiosqlite, mysql -> aiomysql)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:  # the config imports the token file parser, which needs utcnow from here
    from clawbot_app.config import Settings


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def async_url(url: str) -> str:
    url = re.sub(r"^sqlite(\+\w+)?://", "sqlite+aiosqlite://", url)
    return re.sub(r"^(mysql|mariadb)(\+\w+)?://", "mysql+aiomysql://", url)


def sync_url(url: str) -> str:
    url = re.sub(r"^sqlite(\+\w+)?://", "sqlite://", url)
    return re.sub(r"^(mysql|mariadb)(\+\w+)?://", "mysql+pymysql://", url)


def ensure_sqlite_dir(url: str) -> None:
    m = re.match(r"^sqlite(\+\w+)?:///(.+)$", url)
    if m and m.group(2) != ":memory:":
        Path(m.group(2)).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> AsyncEngine:
    ensure_sqlite_dir(url)
    aurl = async_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if aurl.startswith("mysql"):
        kwargs.update(pool_size=10, max_overflow=10, pool_recycle=3600,
                      connect_args={"connect_timeout": 3})
    else:
        kwargs.update(connect_args={"timeout": 5})
    engine = create_async_engine(aurl, **kwargs)
    if aurl.startswith("sqlite"):
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

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(settings.storage.effective_database_url)

    async def ping(self, timeout: float = 3.0) -> None:
        async def _q() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        await asyncio.wait_for(_q(), timeout)

    async def close(self) -> None:
        await self.engine.dispose()
