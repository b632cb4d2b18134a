"""Async engine construction and URL normalisation (sqlite -> aiosqlite, mysql -> aiomysql).

URLs are SQLAlchemy ``URL`` objects wherever a password may be in them: ``str()`` and ``repr()``
of those mask it, and the password is never rendered into a string to be parsed again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
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


# TLS options in a mysql:// URL's query, as PyMySQL names them (the sync driver of `migrate`).
_MYSQL_TLS_PARAMS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_check_hostname", "ssl_verify_cert")


def _query_value(value: str | tuple[str, ...]) -> str:
    return value[-1] if isinstance(value, tuple) else value


def mysql_tls(url: URL) -> tuple[URL, ssl.SSLContext | None]:
    """The URL without its ``ssl_*`` options, and the TLS context they describe.

    PyMySQL takes those options as a dict, but aiomysql needs an ``ssl.SSLContext`` (given the
    dict, its handshake fails with "'dict' object has no attribute 'wrap_bio'"). The context
    verifies the server's certificate against ``ssl_ca`` (the system store without it) and its
    name against the URL's host, unless ``ssl_check_hostname=false`` (name) or
    ``ssl_verify_cert=false`` (both); ``ssl_cert``/``ssl_key`` add a client certificate."""
    query = dict(url.query)
    options = {name: _query_value(query.pop(name)) for name in _MYSQL_TLS_PARAMS if name in query}
    if not options:
        return url, None
    context = ssl.create_default_context(cafile=options.get("ssl_ca") or None)
    if options.get("ssl_cert"):
        context.load_cert_chain(options["ssl_cert"], options.get("ssl_key") or None)
    if options.get("ssl_verify_cert", "true").lower() in ("false", "0", "no"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif options.get("ssl_check_hostname", "true").lower() in ("false", "0", "no"):
        context.check_hostname = False
    return url.set(query=query), context


def make_engine(url: str | URL) -> AsyncEngine:
    """An async engine for ``url`` (a string, or a URL whose password need not be rendered)."""
    ensure_sqlite_dir(url)
    aurl = async_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if aurl.get_backend_name() == "mysql":
        aurl, tls = mysql_tls(aurl)
        connect_args: dict[str, Any] = {"connect_timeout": 3}
        if tls is not None:
            connect_args["ssl"] = tls
        kwargs.update(pool_size=10, max_overflow=10, pool_recycle=3600, connect_args=connect_args)
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
