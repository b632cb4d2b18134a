"""Service container shared by every HTTP handler (``request.app.state.services``).

Contract for the IM callbacks (``clawbot_app.im``)
--------------------------------------------------
``services = request.app.state.services`` exposes:

* ``services.settings`` -- the current validated :class:`clawbot_app.config.Settings`. It is
  *replaced* (not mutated) on SIGHUP, so read it at the start of each request and keep the local
  reference. ``settings.dingtalk.{app_key, app_secret, token, aes_key, api_base}`` and
  ``settings.feishu.{app_id, app_secret, verification_token, encrypt_key, api_base}``; secrets are
  ``pydantic.SecretStr`` (``.get_secret_value()``), may be ``None`` when not configured.
* ``services.http`` -- the shared :class:`clawbot_app.httpclient.HttpClient` (one aiohttp
  connection pool for model calls and platform APIs; ``post_json``). Never close it.
* ``services.chat`` -- :class:`clawbot_app.chat.ChatService`::

      result = await services.chat.reply(tenant_id=..., user_id=..., session_id=...,
                                         message=..., path="")
      result.reply, result.model, result.session_id

  Raises subclasses of :class:`clawbot_app.errors.ApiError` (``.status``, ``.code``,
  ``.message``): ``NoProviderError`` (503), ``UpstreamError`` (502), ``UpstreamTimeout`` (504),
  ``ValidationFailed`` (422, message empty/too long).
* ``services.dedupe.mark_seen(key, ttl_seconds) -> bool`` -- True the first time ``key`` is seen
  within the TTL (Redis ``SET NX EX`` when Redis is configured, the ``im_dedupe`` table of the
  service's database otherwise), so replays stay replays after a restart.
* ``services.metrics.callback_verification_failures`` -- prometheus ``Counter`` with label
  ``platform`` (``.labels(platform="feishu").inc()``).
* ``services.spawn(coro)`` -- run after-response background work; the task is tracked, its
  exceptions are logged, and it is awaited (drained) on graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from clawbot_app.accesslog import AccessLog
from clawbot_app.auth import TokenService
from clawbot_app.chat import ChatService
from clawbot_app.config import Settings
from clawbot_app.crypto import Keyring
from clawbot_app.db.engine import Database
from clawbot_app.dedupe import Dedupe
from clawbot_app.httpclient import HttpClient
from clawbot_app.logwriter import ConversationWriter
from clawbot_app.metrics import Metrics
from clawbot_app.ratelimit import RateLimiter
from clawbot_app.store import Store

log = logging.getLogger("clawbot_app.services")


@dataclass
class Services:
    settings: Settings
    http: HttpClient
    db: Database
    store: Store
    dedupe: Dedupe
    metrics: Metrics
    keyring: Keyring
    writer: ConversationWriter
    tokens: TokenService
    rate_limiter: RateLimiter
    chat: ChatService
    started_at: float
    access_log: AccessLog
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; tracked and drained on shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for spawned background tasks (bounded by ``timeout``)."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()

    def apply_settings(self, settings: Settings) -> None:
        """Swap in a reloaded configuration (SIGHUP). In-flight requests keep their snapshot.

        The tokens file and the encryption keyring are applied as ``load_settings`` parsed and
        validated them (``settings.file_tokens``, ``settings.keyring``): no second read. For
        settings built without ``load_settings`` they are read here first, so a broken file
        raises before anything of the running configuration is replaced.
        """
        file_tokens = self.tokens.read_file(settings)
        self.keyring.reload(settings)
        self.tokens.apply_settings(settings, file_tokens)
        self.settings = settings
        self.access_log.configure(settings.logging)
        self.rate_limiter.apply_settings(settings)
        self.chat.apply_settings(settings)
        self.publish_key_ids()

    def publish_key_ids(self) -> None:
        """Set ``clawbot_keyring_current_info`` and
        ``clawbot_keyring_current_created_timestamp_seconds`` from the keyrings loaded now."""
        current = {"encryption": self.keyring.current}
        created: dict[str, float] = {}
        if self.keyring.current_created is not None:
            created["encryption"] = self.keyring.current_created
        for name, provider in self.settings.models.providers.items():
            if provider.api_key_file is not None:
                current[f"provider:{name}"] = provider.api_key_file.current
                if provider.api_key_file.current_created is not None:
                    created[f"provider:{name}"] = provider.api_key_file.current_created
        current.update(self.tokens.keyring_ids)
        created.update(self.tokens.keyring_created)
        self.metrics.set_keyring_current(current, created)
