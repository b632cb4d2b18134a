"""Run the app under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from clawbot_app.config import CONFIG_ENV, Settings
from clawbot_app.db import migrate
from clawbot_app.logging_setup import setup_logging, uvicorn_log_config

log = logging.getLogger("clawbot_app.server")

# prometheus_client's multiprocess switch. It is read when prometheus_client is imported: this
# module must not import it (nor clawbot_app.metrics) before use_metrics_dir() decided.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# SIGHUP makes uvicorn start a new worker and retire an old one only once the new one answers;
# uvicorn's default of 5 s gave up (and kept the old worker) on a busy 2-core host. The same
# time bounds how long a worker may leave the supervisor's liveness ping unanswered.
WORKER_START_SECONDS = 60


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
    use_metrics_dir(settings, workers)
    if workers > 1:
        uvicorn.run("clawbot_app.app:factory", factory=True, host=host, port=port,
                    workers=workers, timeout_worker_healthcheck=WORKER_START_SECONDS,
                    **uvicorn_options(settings))
        return 0
    from clawbot_app.app import create_app

    app = create_app(settings, config_path=config_path)
    # uvicorn re-raises the captured SIGTERM/SIGINT after a graceful shutdown; exit 0 then.
    signal.signal(signal.SIGTERM, _exit_clean)
    uvicorn.run(app, host=host, port=port, **uvicorn_options(settings))
    return 0


def metrics_dir(settings: Settings) -> Path:
    """Where the workers keep their metric files: ``metrics/`` in the service's systemd
    ``RuntimeDirectory=`` (``$RUNTIME_DIRECTORY``, a tmpfs), else in ``storage.data_dir``."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime or settings.storage.data_path) / "metrics"


def use_metrics_dir(settings: Settings, workers: int) -> None:
    """Multiprocess metrics for several workers (``clawbot_app.metrics``): an emptied private
    directory in ``$PROMETHEUS_MULTIPROC_DIR``, which the spawned workers inherit. One process
    keeps its metrics in memory: the variable is unset, whatever the environment said."""
    if workers <= 1:
        os.environ.pop(MULTIPROC_ENV, None)
        return
    path = metrics_dir(settings)
    prepare_multiprocess_dir(path)
    os.environ[MULTIPROC_ENV] = str(path)


def prepare_multiprocess_dir(path: Path) -> None:
    """Create ``path`` (0700) or empty it of a previous run's files, before any worker starts.
    Refuses a directory of another owner; takes write access away from group and others."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise SystemExit(f"{path}: metrics directory is owned by uid {info.st_uid}, "
                         f"not by this service's")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    for entry in os.scandir(path):
        if entry.name.endswith(".db") and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


def _exit_clean(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
