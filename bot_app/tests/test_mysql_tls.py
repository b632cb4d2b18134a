"""MariaDB over TLS with the async driver: the ``ssl_*`` options of a mysql:// URL become an
``ssl.SSLContext`` (aiomysql rejects PyMySQL's dict form at the handshake), the server certificate
and its name are verified, and a wrong CA or name is refused.

A private mariadbd with ``require_secure_transport`` and a throw-away CA (openssl), on loopback.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from clawbot_app.db.engine import Database, mysql_tls
from tests.conftest import MariaDB


def _ca_and_cert(base: Path, name: str, san: str) -> None:
    """ca.crt, and server.crt/server.key for `san`, under base/name."""
    out = base / name
    out.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = {"cwd": out, "check": True, "capture_output": True}
    subprocess.run(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", f"/CN={name} CA",
                    "-keyout", "ca.key", "-out", "ca.crt"], **run)
    subprocess.run(["openssl", "req", *ec, "-subj", "/CN=db", "-keyout", "server.key",
                    "-out", "server.csr"], **run)
    (out / "san.ext").write_text(f"subjectAltName={san}\n")
    subprocess.run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt",
                    "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                    "-out", "server.crt"], **run)


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MariaDB, Path]]:
    if not shutil.which("openssl"):
        pytest.fail("openssl is needed for the TLS test (Debian: apt-get install openssl)",
                    pytrace=False)
    certs = tmp_path_factory.mktemp("mysql-tls")
    _ca_and_cert(certs, "good", "IP:127.0.0.1")
    _ca_and_cert(certs, "other", "DNS:db.example.internal")
    good = certs / "good"
    db = MariaDB(extra_args=(f"--ssl-ca={good / 'ca.crt'}", f"--ssl-cert={good / 'server.crt'}",
                             f"--ssl-key={good / 'server.key'}", "--require-secure-transport=ON"),
                 tls_ca=str(good / "ca.crt"))
    try:
        db.install()
        db.start()
        yield db, certs
    finally:
        db.cleanup()


async def _refusal(url: str) -> str:
    """What refused the connection: the messages of the whole exception chain (the driver reports
    a TLS failure as "Can't connect" and keeps the ssl error as its cause)."""
    try:
        await _cipher(url)
    except Exception as exc:  # noqa: BLE001 - the chain is what the test reads
        chain, seen = [], exc
        while seen is not None:
            chain.append(f"{type(seen).__name__}: {seen}")
            seen = seen.__cause__ or seen.__context__
        return " <- ".join(chain)
    pytest.fail(f"{url} connected")


async def _cipher(url: str) -> str:
    database = Database(url)
    try:
        await database.ping()
        async with database.engine.connect() as conn:
            row = (await conn.execute(sa.text("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))).one()
        return str(row[1])
    finally:
        await database.engine.dispose()


async def test_the_async_engine_connects_over_verified_tls(
        tls_mariadb: tuple[MariaDB, Path]) -> None:
    db, certs = tls_mariadb
    cipher = await _cipher(f"{db.url}?ssl_ca={certs / 'good' / 'ca.crt'}")
    assert cipher, "the session is not encrypted"


async def test_plain_connections_are_refused_by_the_server(
        tls_mariadb: tuple[MariaDB, Path]) -> None:
    db, _ = tls_mariadb
    assert "Access denied" in await _refusal(db.url)


async def test_a_certificate_from_another_ca_is_refused(tls_mariadb: tuple[MariaDB, Path]) -> None:
    db, certs = tls_mariadb
    refusal = await _refusal(f"{db.url}?ssl_ca={certs / 'other' / 'ca.crt'}")
    assert "SSLCertVerificationError" in refusal and "CERTIFICATE_VERIFY_FAILED" in refusal, refusal


async def test_the_server_name_is_checked_unless_told_otherwise(
        tls_mariadb: tuple[MariaDB, Path]) -> None:
    """A certificate of the right CA but for another name: refused, accepted with
    ssl_check_hostname=false (the CA still verified)."""
    db, certs = tls_mariadb
    # The good CA signed a certificate for 127.0.0.1: ask for "localhost" instead.
    url = f"{db.url.replace('127.0.0.1', 'localhost')}?ssl_ca={certs / 'good' / 'ca.crt'}"
    refusal = await _refusal(url)
    assert "SSLCertVerificationError" in refusal and "mismatch" in refusal, refusal
    assert await _cipher(url + "&ssl_check_hostname=false")


def test_tls_options_leave_the_url_and_build_the_context(tmp_path: Path) -> None:
    _ca_and_cert(tmp_path, "unit", "IP:127.0.0.1")
    url = make_url(f"mysql+aiomysql://u@h/db?charset=utf8mb4&ssl_ca={tmp_path / 'unit' / 'ca.crt'}")
    stripped, context = mysql_tls(url)
    assert dict(stripped.query) == {"charset": "utf8mb4"}
    assert context is not None and context.check_hostname is True
    unchanged, none = mysql_tls(make_url("mysql+aiomysql://u@h/db"))
    assert none is None and str(unchanged) == "mysql+aiomysql://u@h/db"
