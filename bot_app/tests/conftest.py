"""Session fixtures: fake model servers, real Redis and real MariaDB on loopback."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes.openai_provider import FakeModel, FakeModelServer

from clawbot_app.app import reload_settings
from clawbot_app.services import Services
from tests.serve_support import Proc
from tests.support import free_port, wait_port


@pytest.fixture
def reload() -> Iterator[Callable[[Services, str], bool]]:
    """What SIGHUP does; puts back the root logger that the reload reconfigures."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield reload_settings
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """``clawbot-app serve`` processes a test started; each is stopped (SIGTERM) at the end."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def _primary_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer(FakeModel(name="primary", model="m-primary",
                                       api_key="sk-primary")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _backup_server() -> Iterator[FakeModelServer]:
    server = FakeModelServer(FakeModel(name="backup", model="m-backup",
                                       api_key="sk-backup")).start()
    yield server
    server.stop()


@pytest.fixture
def primary(_primary_server: FakeModelServer) -> FakeModelServer:
    _primary_server.fake.reset()
    return _primary_server


@pytest.fixture
def backup(_backup_server: FakeModelServer) -> FakeModelServer:
    _backup_server.fake.reset()
    return _backup_server


def _require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}"
                                    if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.fail(f"required binary '{binary}' not found on PATH: install it "
                    f"(Debian: apt-get install redis-server mariadb-server)", pytrace=False)
    return path


@dataclass
class RedisProc:
    port: int
    proc: subprocess.Popen[bytes]
    socket: Path  # the same server on a Unix socket (mode 0700)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProc]:
    binary = _require("redis-server")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="botapp-redis-")
    sock = Path(workdir) / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--unixsocket", str(sock), "--unixsocketperm", "700"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 15)
        yield RedisProc(port, proc, sock)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


class MariaDB:
    def __init__(self, extra_args: tuple[str, ...] = (), tls_ca: str | None = None) -> None:
        self.extra_args = extra_args
        self.tls_ca = tls_ca  # the readiness check connects with TLS when set
        self.install_db = _require("mariadb-install-db")
        self.mariadbd = _require("mariadbd")
        self.base = Path(tempfile.mkdtemp(prefix="botapp-mariadb-"))
        self.datadir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = self.base / "mariadbd.log"

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/clawbot"

    def install(self) -> None:
        res = subprocess.run(
            [self.install_db, "--no-defaults", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"],
            capture_output=True, timeout=120)
        if res.returncode != 0:
            pytest.fail(f"mariadb-install-db failed: {res.stderr.decode()[-2000:]}")

    def start(self) -> None:
        log = self.logfile.open("ab")
        self.proc = subprocess.Popen(
            [self.mariadbd, "--no-defaults", f"--datadir={self.datadir}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             "--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             "--innodb-log-file-size=16M", "--skip-name-resolve",
             f"--pid-file={self.base / 'mysqld.pid'}", f"--log-error={self.logfile}",
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"mariadbd exited: {self.logfile.read_text()[-2000:]}")
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                       connect_timeout=1,
                                       ssl={"ca": self.tls_ca} if self.tls_ca else None)
                with conn.cursor() as cur:
                    cur.execute("CREATE DATABASE IF NOT EXISTS clawbot "
                                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                conn.close()
                return
            except Exception as exc:  # noqa: BLE001 - retry until ready
                last = exc
                time.sleep(0.2)
        pytest.fail(f"MariaDB did not become ready: {last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    db = MariaDB()
    try:
        db.install()
        db.start()
        from clawbot_app.db import migrate

        migrate.upgrade(db.url)
        yield db
    finally:
        db.cleanup()
