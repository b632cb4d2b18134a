"""Run the relay under uvicorn (one process) with SIGHUP reload and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType

import uvicorn

from clawbot_app.alertrelay.app import RelayState, create_app
from clawbot_app.alertrelay.config import LoadedConfig, load_relay_config
from clawbot_app.config import LoggingSettings
from clawbot_app.configfile import ConfigError
from clawbot_app.logging_setup import setup_logging, uvicorn_log_config

log = logging.getLogger("clawbot_app.alertrelay")


def reload_config(state: RelayState) -> bool:
    """SIGHUP: read the config file and the token file again; keep the running ones when the
    new ones are invalid. The listen address only changes with a restart."""
    old = state.loaded
    try:
        new = load_relay_config(old.path)
    except ConfigError as exc:
        state.metrics.reloads.labels("rejected").inc()
        log.error("config reload rejected, keeping the running configuration",
                  extra={"ecs": {"error.message": str(exc)}})
        return False
    setup_logging(LoggingSettings(level=new.config.log_level))
    state.replace(new)
    state.metrics.reloads.labels("ok").inc()
    if new.config.listen != old.config.listen:
        log.warning("listen address changed: it takes effect on restart")
    log.info("configuration reloaded", extra={"ecs": {
        "clawbot.alert_relay.receivers": [r.name for r in new.config.receivers]}})
    return True


def _install_sighup(state: RelayState) -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_config, state)


def _remove_sighup(state: RelayState) -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def serve(loaded: LoadedConfig) -> int:
    config = loaded.config
    setup_logging(LoggingSettings(level=config.log_level))
    app = create_app(RelayState(loaded), on_start=_install_sighup, on_stop=_remove_sighup)
    log.info("listening on %s:%d", config.listen.host, config.listen.port)
    # uvicorn re-raises the captured SIGTERM/SIGINT after a graceful shutdown (requests in
    # flight finish within graceful_timeout_seconds); exit 0 then, as the bot does.
    signal.signal(signal.SIGTERM, _exit_clean)
    uvicorn.run(app, host=config.listen.host, port=config.listen.port, loop="uvloop",
                http="httptools", lifespan="on", access_log=False,
                log_config=uvicorn_log_config(),
                timeout_graceful_shutdown=config.graceful_timeout_seconds)
    return 0


def _exit_clean(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
