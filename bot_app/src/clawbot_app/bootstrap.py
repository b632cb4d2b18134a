"""Build and tear down the :class:`Services` container."""

from __future__ import annotations

import asyncio
import logging
import time

from clawbot_app.accesslog import AccessLog
from clawbot_app.auth import TokenService
from clawbot_app.chat import ChatService
from clawbot_app.config import Settings
from clawbot_app.crypto import Keyring
from clawbot_app.db import migrate
from clawbot_app.db.engine import Database
from clawbot_app.dedupe import make_dedupe
from clawbot_app.httpclient import HttpClient
from clawbot_app.logwriter import ConversationWriter
from clawbot_app.metrics import Metrics
from clawbot_app.providers import ProviderClient
from clawbot_app.ratelimit import RateLimiter
from clawbot_app.services import Services
from clawbot_app.store import make_store

log = logging.getLogger("clawbot_app.bootstrap")


async def build_services(settings: Settings) -> Services:
    settings.storage.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.storage.is_embedded_sqlite:
        await asyncio.to_thread(migrate.upgrade, settings.storage.service_url())
    metrics = Metrics()
    db = Database.from_settings(settings)
    store = make_store(settings.storage.redis_url, settings.storage.redis_secret)
    http = await HttpClient.open()  # model calls and IM platform APIs share one pool
    keyring = Keyring.from_settings(settings)
    writer = ConversationWriter(settings, db, metrics)
    await writer.start()
    chat = ChatService(settings, store, db, keyring, writer, ProviderClient(http, metrics),
                       metrics)
    services = Services(
        settings=settings, http=http, db=db, store=store,
        dedupe=make_dedupe(settings.storage.redis_url, store, db), metrics=metrics, keyring=keyring,
        writer=writer, tokens=TokenService(settings, db),
        rate_limiter=RateLimiter(settings, store, db, metrics), chat=chat,
        started_at=time.time(), access_log=AccessLog(settings.logging))
    services.publish_key_ids()
    return services


async def close_services(services: Services, timeout: float = 10.0) -> None:
    await services.drain(timeout)
    await services.writer.stop(timeout)
    await services.http.aclose()
    await services.store.close()
    await services.db.close()
    services.access_log.close()
