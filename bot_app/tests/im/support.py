"""Shared test support: settings, a minimal services container and a fake chat service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
from starlette.applications import Starlette

from clawbot_app.config import Settings
from clawbot_app.httpclient import HttpClient
from clawbot_app.im.builders import build_dingtalk_robot_request
from clawbot_app.im.common import SeenKeys
from clawbot_app.im.routes import routes
from clawbot_app.metrics import Metrics
from clawbot_app.store import InProcessStore

# Published DingTalk vector key (43 chars) reused as this app's encodingAesKey.
DT_AES_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
DT_APP_KEY = "dingtestappkey0001"
DT_APP_SECRET = "dt-app-secret-0123456789"
DT_TOKEN = "dt-event-token"
FS_APP_ID = "cli_test0123456789"
FS_APP_SECRET = "fs-app-secret-0123456789"
FS_VERIFICATION_TOKEN = "fs-verification-token"
FS_ENCRYPT_KEY = "fs-encrypt-key"
WC_CORP_ID = "wwfakecorp0000001"  # tests/fakes/wecom.py FakeWeCom's defaults
WC_CORP_SECRET = "wecom-fake-corp-secret"
WC_AGENT_ID = 1000002
WC_TOKEN = "wc-callback-token"
WC_AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"


def make_settings(
    *, feishu_base: str = "http://127.0.0.1:9", dingtalk_base: str = "http://127.0.0.1:9",
    feishu: dict[str, Any] | None = None, dingtalk: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None, wecom_base: str = "http://127.0.0.1:9",
    wecom: dict[str, Any] | None = None, im: dict[str, Any] | None = None,
) -> Settings:
    fs: dict[str, Any] = {
        "app_id": FS_APP_ID, "app_secret": FS_APP_SECRET,
        "verification_token": FS_VERIFICATION_TOKEN, "encrypt_key": FS_ENCRYPT_KEY,
        "api_base": feishu_base,
    }
    dt: dict[str, Any] = {
        "app_key": DT_APP_KEY, "app_secret": DT_APP_SECRET, "token": DT_TOKEN,
        "aes_key": DT_AES_KEY, "api_base": dingtalk_base,
    }
    wc: dict[str, Any] = {
        "corp_id": WC_CORP_ID, "corp_secret": WC_CORP_SECRET, "agent_id": WC_AGENT_ID,
        "token": WC_TOKEN, "encoding_aes_key": WC_AES_KEY, "api_base": wecom_base,
    }
    fs.update(feishu or {})
    dt.update(dingtalk or {})
    wc.update(wecom or {})
    data: dict[str, Any] = {"feishu": fs, "dingtalk": dt, "wecom": wc, "im": im or {}}
    if limits:
        data["limits"] = limits
    return Settings.model_validate(data)


@dataclass
class FakeChat:
    calls: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    error: BaseException | None = None
    answer: str | None = None  # the reply to give (default: "echo: <message>")

    async def reply(self, *, tenant_id: str, user_id: str, session_id: str, message: str,
                    path: str = "") -> Any:
        self.calls.append({"tenant_id": tenant_id, "user_id": user_id,
                           "session_id": session_id, "message": message, "path": path})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        reply = f"echo: {message}" if self.answer is None else self.answer
        return SimpleNamespace(reply=reply, model="fake-model",
                               session_id=session_id)


@dataclass
class TestServices:
    __test__ = False

    settings: Settings
    http: HttpClient
    chat: FakeChat = field(default_factory=FakeChat)
    dedupe: SeenKeys = field(default_factory=InProcessStore)  # tests put Redis or the DB here
    metrics: Metrics = field(default_factory=Metrics)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float = 10.0) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)

    def failures(self, platform: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "callback_verification_failures_total", {"platform": platform})
        return value or 0.0


def build_app(services: Any) -> Starlette:
    app = Starlette(routes=list(routes))
    app.state.services = services
    return app


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def resend_robot_message(client: httpx.AsyncClient, settings: Settings,
                               body: dict[str, Any], times: int = 3) -> list[int]:
    """Post ``body`` ``times`` times as DingTalk resends it: each with a new timestamp and sign.
    Returns the status codes."""
    now = int(time.time() * 1000)
    statuses = []
    for n in range(times):
        headers, raw = build_dingtalk_robot_request(settings, body, timestamp_ms=now + n)
        resp = await client.post("/dingtalk/callback", content=raw, headers=headers)
        statuses.append(resp.status_code)
    return statuses
