"""Fixtures: the three fake robots (tests/fakes), each on its own loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.dingtalk import FakeDingTalk
from fakes.feishu import FakeFeishu
from fakes.httpd import FakeServer
from fakes.wecom import FakeWeCom

from tests.alertrelay.support import DT_SECRET, DT_TOKEN, FS_SECRET, FS_TOKEN, WC_KEY


@pytest.fixture(scope="session")
def _robot_servers() -> Iterator[tuple[FakeServer, FakeServer, FakeServer]]:
    servers = (FakeServer(FakeDingTalk(robot_token=DT_TOKEN, robot_secret=DT_SECRET)),
               FakeServer(FakeFeishu(hook_token=FS_TOKEN, hook_secret=FS_SECRET)),
               FakeServer(FakeWeCom(WC_KEY, rate_limit_per_minute=None)))
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def robots(_robot_servers: tuple[FakeServer, FakeServer, FakeServer]
           ) -> tuple[FakeServer, FakeServer, FakeServer]:
    """``(dingtalk, feishu, wecom)`` servers, their fakes reset."""
    for server in _robot_servers:
        server.app.reset()
    return _robot_servers
