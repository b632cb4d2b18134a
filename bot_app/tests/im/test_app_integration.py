"""End to end through the real application factory (create_app + lifespan + real services).

The chat service talks to the shared fake OpenAI server (``primary`` fixture); replies go to the
fake Feishu/DingTalk servers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from clawbot_app.app import create_app
from clawbot_app.config import Settings
from clawbot_app.im.builders import (
    build_dingtalk_event_request,
    build_dingtalk_robot_request,
    build_feishu_message_request,
    build_feishu_url_verification,
    build_wecom_message_request,
    dingtalk_robot_message,
    wecom_text_message,
)
from clawbot_app.im.dingtalk_crypto import DingTalkEventCrypto
from clawbot_app.im.feishu_crypto import HEADER_SIGNATURE

from .support import (
    DT_AES_KEY,
    DT_APP_KEY,
    DT_APP_SECRET,
    DT_TOKEN,
    FS_APP_ID,
    FS_APP_SECRET,
    FS_ENCRYPT_KEY,
    FS_VERIFICATION_TOKEN,
    WC_AES_KEY,
    WC_AGENT_ID,
    WC_CORP_ID,
    WC_CORP_SECRET,
    WC_TOKEN,
    wait_for,
)


class _UvicornThread:
    """The real app (not a fake) under uvicorn on 127.0.0.1:<free port>, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio",
                                access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True)

    def start(self) -> _UvicornThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


def _settings_dict(
    tmp_path: Path, model_url: str, feishu_url: str, dingtalk_url: str,
    wecom_url: str = "http://127.0.0.1:9",
) -> dict[str, Any]:
    return {
        "storage": {"data_dir": str(tmp_path)},
        "logging": {"level": "WARNING"},
        "models": {"default": "primary", "providers": {"primary": {
            "base_url": model_url, "api_key": "sk-primary", "model": "m-primary",
            "timeout_seconds": 5, "max_retries": 0}}},
        "feishu": {"app_id": FS_APP_ID, "app_secret": FS_APP_SECRET,
                   "verification_token": FS_VERIFICATION_TOKEN, "encrypt_key": FS_ENCRYPT_KEY,
                   "api_base": feishu_url},
        "dingtalk": {"app_key": DT_APP_KEY, "app_secret": DT_APP_SECRET, "token": DT_TOKEN,
                     "aes_key": DT_AES_KEY, "api_base": dingtalk_url},
        "wecom": {"corp_id": WC_CORP_ID, "corp_secret": WC_CORP_SECRET, "agent_id": WC_AGENT_ID,
                  "token": WC_TOKEN, "encoding_aes_key": WC_AES_KEY, "api_base": wecom_url},
    }


def _settings(tmp_path: Path, model_url: str, feishu_url: str, dingtalk_url: str,
              wecom_url: str = "http://127.0.0.1:9") -> Settings:
    return Settings.model_validate(
        _settings_dict(tmp_path, model_url, feishu_url, dingtalk_url, wecom_url))


@contextlib.asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings, install_sighup=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot.test") as client:
            yield app, client


@pytest.fixture
async def real_app(tmp_path, primary, feishu_fake, dingtalk_fake):
    settings = _settings(tmp_path, primary.base_url + "/v1", feishu_fake.base_url,
                         dingtalk_fake.base_url)
    async with _running(settings) as (app, client):
        yield app, client


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/feishu/callback", "/dingtalk/callback"])
async def test_callback_body_over_the_limit_is_refused(real_app, primary, path, chunked):
    """The middleware enforces ``limits.max_body_bytes`` for the callbacks too, declared or
    not (no Content-Length): 413 in the JSON error shape, nothing reaches the model."""
    app, client = real_app
    limit = app.state.services.settings.limits.max_body_bytes
    body = b"{" + b" " * limit + b"}"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    resp = await client.post(path, content=chunks() if chunked else body,
                             headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "body_too_large"
    assert primary.fake.requests == []


async def test_feishu_message_end_to_end(real_app, primary, feishu_fake):
    app, client = real_app
    settings = app.state.services.settings
    headers, body = build_feishu_message_request(settings, text="hello model",
                                                 message_id="om_e2e")
    resp = await client.post("/feishu/callback", content=body, headers=headers)
    assert resp.status_code == 200
    await wait_for(lambda: len(feishu_fake.replies) == 1, timeout=10)
    reply = feishu_fake.replies.items()[0]
    assert reply["message_id"] == "om_e2e"
    assert reply["text"].startswith("primary: hello model")
    assert len(primary.fake.requests) == 1


async def test_feishu_ack_not_blocked_by_slow_model(real_app, primary, feishu_fake):
    app, client = real_app
    primary.fake.latency = 1.5
    headers, body = build_feishu_message_request(app.state.services.settings, text="slow")
    start = time.monotonic()
    resp = await client.post("/api/feishu/callback", content=body, headers=headers)
    assert resp.status_code == 200
    assert time.monotonic() - start < 1.0
    await wait_for(lambda: len(feishu_fake.replies) == 1, timeout=10)


async def test_feishu_redelivery_and_verification_metric(real_app, primary, feishu_fake):
    app, client = real_app
    settings = app.state.services.settings
    for _ in range(2):
        headers, body = build_feishu_message_request(settings, text="dup", event_id="ev-e2e-1")
        assert (await client.post("/feishu/callback", content=body,
                                  headers=headers)).status_code == 200
    headers, body = build_feishu_message_request(settings, text="forged")
    headers[HEADER_SIGNATURE] = "0" * 64
    resp = await client.post("/feishu/callback", content=body, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_signature"
    await wait_for(lambda: len(feishu_fake.replies) == 1, timeout=10)
    metrics = (await client.get("/metrics")).text
    assert 'callback_verification_failures_total{platform="feishu"} 1.0' in metrics
    assert len(primary.fake.requests) == 1


async def test_feishu_url_verification_end_to_end(real_app):
    app, client = real_app
    headers, body = build_feishu_url_verification(app.state.services.settings, challenge="e2e")
    resp = await client.post("/feishu/verify", content=body, headers=headers)
    assert resp.status_code == 200 and resp.json() == {"challenge": "e2e"}


async def test_dingtalk_robot_end_to_end(real_app, primary, dingtalk_fake):
    app, client = real_app
    settings = app.state.services.settings
    webhook = f"{dingtalk_fake.base_url}/robot/sendBySession?session=e2e"
    body = dingtalk_robot_message(text=" hi ding", session_webhook=webhook)
    headers, raw = build_dingtalk_robot_request(settings, body)
    resp = await client.post("/dingtalk/callback", content=raw, headers=headers)
    assert resp.status_code == 200
    await wait_for(lambda: len(dingtalk_fake.session_messages) == 1, timeout=10)
    msg = dingtalk_fake.session_messages.items()[0]
    assert msg["session"] == "e2e" and msg["text"].startswith("primary: hi ding")


async def test_dingtalk_check_url_end_to_end(real_app):
    app, client = real_app
    params, raw = build_dingtalk_event_request(app.state.services.settings,
                                               {"EventType": "check_url"})
    resp = await client.post("/api/dingtalk/callback", params=params, content=raw)
    assert resp.status_code == 200
    data = resp.json()
    crypto = DingTalkEventCrypto(DT_TOKEN, DT_AES_KEY, DT_APP_KEY)
    crypto.verify_signature(data["msg_signature"], data["timeStamp"], data["nonce"],
                            data["encrypt"])
    assert crypto.decrypt(data["encrypt"]) == "success"


async def test_callback_path_reaches_model_routing(tmp_path, primary, backup, feishu_fake):
    """The callback path is passed to chat.reply, so ``path_prefix`` route rules apply."""
    data = _settings_dict(tmp_path, primary.base_url + "/v1", feishu_fake.base_url,
                          "http://127.0.0.1:9")
    data["models"]["providers"]["backup"] = {
        "base_url": backup.base_url + "/v1", "api_key": "sk-backup", "model": "m-backup"}
    data["models"]["routes"] = [{"provider": "backup", "path_prefix": "/api/feishu"}]
    routed = Settings.model_validate(data)
    async with _running(routed) as (_app, client):
        for path in ("/api/feishu/callback", "/feishu/callback"):
            headers, body = build_feishu_message_request(routed, text=f"via {path}")
            assert (await client.post(path, content=body, headers=headers)).status_code == 200
        await wait_for(lambda: len(feishu_fake.replies) == 2, timeout=10)
    texts = sorted(r["text"] for r in feishu_fake.replies.items())
    assert texts[0].startswith("backup: via /api/feishu/callback")
    assert texts[1].startswith("primary: via /feishu/callback")


TABLE = "| tool | use |\n|---|---|\n| ruff | lint |"
"""What the user writes; the fake model echoes it, so the answer holds a markdown table."""
ROW = "- **tool**: ruff; **use**: lint"


def test_real_uvicorn_on_loopback(tmp_path, primary, feishu_fake, dingtalk_fake, wecom_fake):
    """Same app served by uvicorn on a real 127.0.0.1 socket (raw bytes over real HTTP): a
    DingTalk, a Feishu and a WeCom conversation each get the model's answer rendered as
    markdown in their platform's message shape."""
    settings = _settings(tmp_path, primary.base_url + "/v1", feishu_fake.base_url,
                         dingtalk_fake.base_url, wecom_fake.base_url)
    server = _UvicornThread(create_app(settings, install_sighup=False)).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            headers, body = build_feishu_message_request(settings, text="over tcp\n" + TABLE)
            assert client.post("/feishu/callback", content=body,
                               headers=headers).status_code == 200
            webhook = f"{dingtalk_fake.base_url}/robot/sendBySession?session=tcp"
            dt_headers, raw = build_dingtalk_robot_request(settings, dingtalk_robot_message(
                text="tcp ding\n" + TABLE, session_webhook=webhook, conversation_type="2",
                sender_staff_id="staff7"))
            assert client.post("/dingtalk/callback", content=raw,
                               headers=dt_headers).status_code == 200
            params, xml = build_wecom_message_request(settings, wecom_text_message(
                text="tcp wecom\n" + TABLE, corp_id=WC_CORP_ID, from_user="wangwu"))
            answer = client.post("/wecom/callback", params=params, content=xml)
            assert (answer.status_code, answer.content) == (200, b"")
            bad = client.post("/feishu/callback", content=body[:-2] + b"x}", headers=headers)
            assert bad.status_code == 401
        deadline = time.monotonic() + 10
        while (len(feishu_fake.replies) < 1 or len(dingtalk_fake.session_messages) < 1
               or len(wecom_fake.app_messages) < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    feishu = feishu_fake.replies.items()[0]
    assert feishu["msg_type"] == "interactive"
    card_md = feishu["card"]["elements"][0]["content"]
    assert card_md.startswith("primary: over tcp") and ROW in card_md and "|---|" not in card_md
    dingtalk = dingtalk_fake.session_messages.items()[0]
    assert dingtalk["msgtype"] == "markdown" and dingtalk["at"] == ["staff7"]
    assert dingtalk["text"].startswith("primary: tcp ding") and ROW in dingtalk["text"]
    assert dingtalk["text"].endswith("\n\n@staff7") and dingtalk["title"] == "primary: tcp ding"
    wecom = wecom_fake.app_messages.items()[0]
    assert (wecom["msgtype"], wecom["touser"]) == ("markdown", "wangwu")
    assert wecom["markdown"]["content"].startswith("primary: tcp wecom") and ROW in (
        wecom["markdown"]["content"])


async def test_a_wecom_body_over_the_limit_is_413_before_anything_is_parsed(real_app):
    _, client = real_app
    huge = b"<xml><Encrypt>" + b"A" * 70_000 + b"</Encrypt></xml>"
    resp = await client.post("/wecom/callback?msg_signature=x&timestamp=1&nonce=n", content=huge)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"
