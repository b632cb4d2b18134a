"""Run the app under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from clawbot_app.config import CONFIG_ENV, Settings
from clawbot_app.db import migrate
from clawbot_app.logging_setup import setup_logging, uvicorn_log_config

log = logging.getLogger("clawbot_app.server")


def prepare_database(settings: Settings) -> None:
    """Auto-migrate the embedded SQLite DB; refuse to start on a stale external DB.

    The check runs as the service's own account (``storage.database_url``): ``clawbot-app
    migrate`` may use another one (``storage.migration_database_url``).
    """
    url = settings.storage.service_url()
    if settings.storage.is_embedded_sqlite:
        settings.storage.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        migrate.upgrade(url)
        return
    try:
        is_pending = migrate.pending(url)
    except Exception as exc:  # DB down at boot: start anyway, logs get spooled
        log.warning("cannot check migrations (%s); starting anyway", type(exc).__name__)
        return
    if is_pending:
        print("database schema is not up to date: run `clawbot-app migrate` first",
              file=sys.stderr)
        raise SystemExit(3)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn runs with, in one process or with workers (host, port, workers aside).

    X-Forwarded-For / X-Forwarded-Proto are believed only from ``server.forwarded_allow_ips``
    (uvicorn's proxy headers middleware; addresses and CIDR networks).
    """
    return {"loop": "uvloop", "http": "httptools", "lifespan": "on", "access_log": False,
            "log_config": uvicorn_log_config(), "proxy_headers": True,
            "forwarded_allow_ips": list(settings.server.forwarded_allow_ips),
            "timeout_graceful_shutdown": settings.server.graceful_timeout_seconds}


def serve(settings: Settings, config_path: str | None, host: str | None = None,
          port: int | None = None, workers: int | None = None) -> int:
    setup_logging(settings.logging)
    prepare_database(settings)
    if config_path:
        os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    host = host or settings.server.host
    port = port or settings.server.port
    workers = workers or settings.server.workers
    log.info("listening on %s:%d (%d worker(s))", host, port, workers)
    if workers > 1:
        uvicorn.run("clawbot_app.app:factory", factory=True, host=host, port=port,
                    workers=workers, **uvicorn_options(settings))
        return 0
    from clawbot_app.app import create_app

    app = create_app(settings, config_path=config_path)
    # uvicorn re-raises the captured SIGTERM/SIGINT after a graceful shutdown; exit 0 then.
    signal.signal(signal.SIGTERM, _exit_clean)
    uvicorn.run(app, host=host, port=port, **uvicorn_options(settings))
    return 0


def _exit_clean(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
