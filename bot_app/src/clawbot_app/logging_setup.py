"""JSON-lines logging with Elastic Common Schema field names."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any

from clawbot_app.config import LoggingSettings

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class EcsJsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "log.logger": record.name,
            "process.pid": record.process,
        }
        ecs = getattr(record, "ecs", None)
        if isinstance(ecs, dict):
            doc.update(ecs)
        if record.exc_info and record.exc_info[0] is not None:
            doc["error.type"] = record.exc_info[0].__name__
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


_HANDLER_TAG = "_clawbot_handler"


def setup_logging(cfg: LoggingSettings) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            root.removeHandler(h)
            h.close()
    fmt = EcsJsonFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if cfg.file:
        path = os.path.expanduser(cfg.file)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        setattr(h, _HANDLER_TAG, True)
        root.addHandler(h)
    root.setLevel(cfg.level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("aiohttp", "aiosqlite", "sqlalchemy", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def uvicorn_log_config() -> dict[str, Any]:
    """Let uvicorn's loggers propagate to our root handlers (no own formatting)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": {"level": "INFO", "propagate": True, "handlers": []},
            "uvicorn.error": {"level": "INFO", "propagate": True, "handlers": []},
            "uvicorn.access": {"level": "WARNING", "propagate": False, "handlers": []},
        },
    }
