"""Fixtures: fake platform servers on 127.0.0.1 and the callback app wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fakes.dingtalk import FakeDingTalk
from fakes.feishu import FakeFeishu
from fakes.httpd import FakeServer
from fakes.wecom import FakeWeCom

from clawbot_app.httpclient import HttpClient

from .support import FS_APP_ID, FS_APP_SECRET, TestServices, build_app, make_settings

SESSION_LIFETIME = 3600.0  # the servers live for the whole test session


@pytest.fixture(scope="session")
def _feishu_server() -> Iterator[FakeFeishu]:
    fake = FakeFeishu(app_id=FS_APP_ID, app_secret=FS_APP_SECRET)
    with FakeServer(fake, max_lifetime=SESSION_LIFETIME) as server:
        fake.base_url = server.base_url
        yield fake


@pytest.fixture(scope="session")
def _dingtalk_server() -> Iterator[FakeDingTalk]:
    fake = FakeDingTalk()
    with FakeServer(fake, max_lifetime=SESSION_LIFETIME) as server:
        fake.base_url = server.base_url
        yield fake


@pytest.fixture(scope="session")
def _wecom_server() -> Iterator[FakeWeCom]:
    fake = FakeWeCom()
    with FakeServer(fake, max_lifetime=SESSION_LIFETIME) as server:
        fake.base_url = server.base_url
        yield fake


@pytest.fixture
def wecom_fake(_wecom_server: FakeWeCom) -> FakeWeCom:
    _wecom_server.reset()
    return _wecom_server


@pytest.fixture
def feishu_fake(_feishu_server: FakeFeishu) -> FakeFeishu:
    _feishu_server.reset()
    return _feishu_server


@pytest.fixture
def dingtalk_fake(_dingtalk_server: FakeDingTalk) -> FakeDingTalk:
    _dingtalk_server.reset()
    return _dingtalk_server


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
    feishu_fake: FakeFeishu, dingtalk_fake: FakeDingTalk, wecom_fake: FakeWeCom,
    settings_overrides: dict[str, Any]
) -> AsyncIterator[Harness]:
    settings = make_settings(
        feishu_base=feishu_fake.base_url,
        dingtalk_base=dingtalk_fake.base_url,
        wecom_base=wecom_fake.base_url,
        **settings_overrides,
    )
    outbound = await HttpClient.open()
    try:
        services = TestServices(settings=settings, http=outbound)
        app = build_app(services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot.test") as client:
            yield Harness(services=services, client=client, app=app)
            await services.drain()
    finally:
        await outbound.aclose()
