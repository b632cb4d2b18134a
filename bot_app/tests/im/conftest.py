"""Fixtures: fake platform servers on 127.0.0.1 and the callback app wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .fakes_platforms import FakeDingTalk, FakeFeishu, ServerThread
from .support import FS_APP_ID, FS_APP_SECRET, TestServices, build_app, make_settings


@pytest.fixture(scope="session")
def _feishu_server() -> Iterator[tuple[FakeFeishu, ServerThread]]:
    fake = FakeFeishu(app_id=FS_APP_ID, app_secret=FS_APP_SECRET)
    server = ServerThread(fake.app()).start()
    yield fake, server
    server.stop()


@pytest.fixture(scope="session")
def _dingtalk_server() -> Iterator[tuple[FakeDingTalk, ServerThread]]:
    fake = FakeDingTalk()
    server = ServerThread(fake.app()).start()
    yield fake, server
    server.stop()


@pytest.fixture
def feishu_fake(_feishu_server: tuple[FakeFeishu, ServerThread]) -> FakeFeishu:
    fake, server = _feishu_server
    fake.reset()
    fake.base_url = server.base_url  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def dingtalk_fake(_dingtalk_server: tuple[FakeDingTalk, ServerThread]) -> FakeDingTalk:
    fake, server = _dingtalk_server
    fake.reset()
    fake.base_url = server.base_url  # type: ignore[attr-defined]
    return fake


@dataclass
class Harness:
    services: TestServices
    client: httpx.AsyncClient
    app: Any


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or via parametrisation) to change settings."""
    return {}


@pytest.fixture
async def harness(
    feishu_fake: FakeFeishu, dingtalk_fake: FakeDingTalk, settings_overrides: dict[str, Any]
) -> AsyncIterator[Harness]:
    settings = make_settings(
        feishu_base=feishu_fake.base_url,  # type: ignore[attr-defined]
        dingtalk_base=dingtalk_fake.base_url,  # type: ignore[attr-defined]
        **settings_overrides,
    )
    async with httpx.AsyncClient(timeout=5.0) as outbound:
        services = TestServices(settings=settings, http=outbound)
        app = build_app(services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot.test") as client:
            yield Harness(services=services, client=client, app=app)
            await services.drain()
