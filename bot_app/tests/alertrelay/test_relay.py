"""The relay app end to end: a real Alertmanager payload in, signed messages out to the fake
robots on loopback (which check signatures as the platforms do), retries, metrics, input errors,
and no secret in the logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from fakes.httpd import FakeServer, closed_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawbot_app.logging_setup import EcsJsonFormatter
from tests.alertrelay.support import (
    DT_SECRET,
    FS_SECRET,
    SECRETS,
    TOKEN,
    notification,
    receivers,
    resolved,
    running_relay,
    write_config,
)

Robots = tuple[FakeServer, FakeServer, FakeServer]


def config(tmp_path: Path, robots: Robots, **extra: object) -> Path:
    dingtalk, feishu, wecom = robots
    return write_config(tmp_path, receivers(dingtalk.base_url, feishu.base_url, wecom.base_url),
                        **extra)


async def test_dingtalk_gets_a_signed_chinese_markdown_message(tmp_path: Path,
                                                               robots: Robots) -> None:
    dingtalk = robots[0]
    async with running_relay(config(tmp_path, robots)) as relay:
        answer = await relay.post("ops-dingtalk", notification())
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "sent", "receiver": "ops-dingtalk"}
        assert await relay.metric("clawbot_alert_relay_notifications_total",
                                  receiver="ops-dingtalk", platform="dingtalk",
                                  outcome="sent") == 1
        assert await relay.metric("clawbot_alert_relay_notifications_total",
                                  receiver="ops-feishu", platform="feishu", outcome="failed") == 0
    (message,) = dingtalk.app.robot_messages.items()
    assert message["msgtype"] == "markdown"
    assert message["markdown"]["title"] == "[告警中:2] HighCpuUsage"
    assert "**级别:** critical" in message["markdown"]["text"]
    # The fake accepted the signature; check it independently from the request it received.
    (request,) = [r for r in dingtalk.requests if r.path == "/robot/send"]
    ts = request.query["timestamp"]
    mac = hmac.new(DT_SECRET.encode(), f"{ts}\n{DT_SECRET}".encode(), hashlib.sha256).digest()
    assert request.query["sign"] == base64.b64encode(mac).decode()
    assert abs(int(ts) - time.time() * 1000) < 60_000


async def test_feishu_gets_a_signed_text_message(tmp_path: Path, robots: Robots) -> None:
    feishu = robots[1]
    async with running_relay(config(tmp_path, robots)) as relay:
        answer = await relay.post("ops-feishu", resolved())
        assert answer.status_code == 200, answer.text
    (body,) = feishu.app.hook_messages.items()
    assert body["msg_type"] == "text"
    assert body["content"]["text"].startswith("[RESOLVED:2] HighCpuUsage\nSeverity: critical")
    mac = hmac.new(f"{body['timestamp']}\n{FS_SECRET}".encode(), b"", hashlib.sha256).digest()
    assert body["sign"] == base64.b64encode(mac).decode()


async def test_wecom_gets_markdown_within_its_limit(tmp_path: Path, robots: Robots) -> None:
    wecom = robots[2]
    data = notification()
    template = data["alerts"][0]
    data["alerts"] = [{**template, "labels": {**template["labels"], "host": f"h{i}"}}
                      for i in range(300)]
    async with running_relay(config(tmp_path, robots)) as relay:
        answer = await relay.post("ops-wecom", data)
        assert answer.status_code == 200, answer.text
    (body,) = wecom.app.robot_messages.items()
    assert body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert len(content.encode()) <= 4096
    assert "… and 290 more alert(s) not shown" in content  # max_alerts_per_message: 10


async def test_wrong_secret_is_failed_not_retried_and_502(tmp_path: Path, robots: Robots,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    dingtalk, feishu, wecom = robots
    recv = receivers(dingtalk.base_url, feishu.base_url, wecom.base_url)
    recv[0]["secret"] = "SECanother-secret-0000"
    recv[1]["secret"] = "another-feishu-secret"
    caplog.set_level(logging.INFO, logger="clawbot_app")
    async with running_relay(write_config(tmp_path, recv)) as relay:
        for name, platform, code in (("ops-dingtalk", "dingtalk", 310000),
                                     ("ops-feishu", "feishu", 19021)):
            answer = await relay.post(name, notification())
            assert answer.status_code == 502
            assert answer.json()["error"] == {
                "code": "delivery_failed", "message": f"{platform} robot: rejected (code {code})"}
            labels = {"receiver": name, "platform": platform}
            assert await relay.metric("clawbot_alert_relay_notifications_total", **labels,
                                      outcome="failed") == 1
            assert await relay.metric("clawbot_alert_relay_attempts_total", **labels,
                                      result="rejected") == 1  # permanent: one attempt
    assert dingtalk.app.robot_messages.items() == [] and feishu.app.hook_messages.items() == []
    assert sum(r.levelname == "ERROR" for r in caplog.records) == 2


async def test_gateway_503_is_retried_then_sent(tmp_path: Path, robots: Robots) -> None:
    dingtalk = robots[0]
    dingtalk.app.fail_first = 2
    async with running_relay(config(tmp_path, robots)) as relay:
        answer = await relay.post("ops-dingtalk", notification())
        assert answer.status_code == 200, answer.text
        labels = {"receiver": "ops-dingtalk", "platform": "dingtalk"}
        assert await relay.metric("clawbot_alert_relay_attempts_total", **labels,
                                  result="server_error") == 2
        assert await relay.metric("clawbot_alert_relay_attempts_total", **labels,
                                  result="sent") == 1
        assert await relay.metric("clawbot_alert_relay_send_duration_seconds_count",
                                  platform="dingtalk") == 3
    assert len(dingtalk.app.robot_messages) == 1


async def test_retries_are_bounded_then_502(tmp_path: Path, robots: Robots) -> None:
    robots[2].app.fail_first = 10
    async with running_relay(config(tmp_path, robots)) as relay:
        answer = await relay.post("ops-wecom", notification())
        assert answer.status_code == 502
        labels = {"receiver": "ops-wecom", "platform": "wecom"}
        assert await relay.metric("clawbot_alert_relay_attempts_total", **labels,
                                  result="server_error") == 3
        assert await relay.metric("clawbot_alert_relay_notifications_total", **labels,
                                  outcome="failed") == 1


async def test_rate_limit_answer_is_retried(tmp_path: Path, robots: Robots) -> None:
    wecom = robots[2]
    wecom.app.rate_limit_per_minute = 1
    async with running_relay(config(tmp_path, robots)) as relay:
        assert (await relay.post("ops-wecom", notification())).status_code == 200
        assert (await relay.post("ops-wecom", notification())).status_code == 502
        assert await relay.metric("clawbot_alert_relay_attempts_total", receiver="ops-wecom",
                                  platform="wecom", result="rate_limited") == 3


async def test_unreachable_robot_is_a_network_error(tmp_path: Path, robots: Robots) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    async with running_relay(write_config(tmp_path, receivers(dead, dead, dead))) as relay:
        answer = await relay.post("ops-feishu", notification())
        assert answer.status_code == 502
        assert await relay.metric("clawbot_alert_relay_attempts_total", receiver="ops-feishu",
                                  platform="feishu", result="network_error") == 3


async def test_slow_robot_times_out_within_the_deadline(tmp_path: Path, robots: Robots) -> None:
    from fakes.httpd import SilentTlsPort

    with SilentTlsPort() as silent:  # accepts the connection, never answers
        url = f"http://127.0.0.1:{silent.port}"
        path = write_config(tmp_path, receivers(url, url, url),
                            retry={"attempts": 5, "initial_delay_seconds": 0.01,
                                   "timeout_seconds": 0.3, "deadline_seconds": 0.8})
        async with running_relay(path) as relay:
            started = time.monotonic()
            answer = await relay.post("ops-wecom", notification())
            elapsed = time.monotonic() - started
            assert answer.status_code == 502
            assert elapsed < 2.0
            assert 2 <= await relay.metric("clawbot_alert_relay_attempts_total",
                                           receiver="ops-wecom", platform="wecom",
                                           result="timeout") <= 3


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-000000000", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", "Bearer 令牌".encode()])
async def test_bad_or_missing_token_is_401(tmp_path: Path, robots: Robots,
                                           header: str | bytes | None) -> None:
    async with running_relay(config(tmp_path, robots)) as relay:
        answer = await relay.post("ops-dingtalk", notification(), token=None,
                                  headers={"Authorization": header} if header else {})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "unauthorized"
        assert await relay.metric("clawbot_alert_relay_requests_total", status="401") == 1
    assert robots[0].app.robot_messages.items() == []


async def test_input_errors_are_4xx(tmp_path: Path, robots: Robots) -> None:
    async with running_relay(config(tmp_path, robots, max_body_bytes=4096)) as relay:
        cases = [
            (await relay.post("nobody", notification()), 404, "unknown_receiver"),
            (await relay.post("ops-wecom", b"{not json"), 400, "malformed_json"),
            (await relay.post("ops-wecom", b"[1, 2]"), 400, "malformed_json"),
            (await relay.post("ops-wecom", b"\xff\xfe"), 400, "malformed_json"),
            (await relay.post("ops-wecom", {"status": "firing"}), 422, "invalid_notification"),
            (await relay.post("ops-wecom", notification(alerts=[])), 422, "invalid_notification"),
            (await relay.post("ops-wecom", notification(version="3")), 422,
             "invalid_notification"),
            (await relay.post("ops-wecom", notification(status=1)), 422, "invalid_notification"),
            (await relay.post("ops-wecom", b"[" * 100 + b"]" * 100), 400, "malformed_json"),
            (await relay.post("ops-wecom", b"x" * 5000), 413, "body_too_large"),
            (await relay.client.get("/alerts/ops-wecom"), 405, "method_not_allowed"),
            (await relay.client.get("/nope"), 404, "not_found"),
        ]
        for answer, status, code in cases:
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
        assert "alerts: List should have at least 1 item" in cases[5][0].json()["error"]["message"]
        # a streamed body without Content-Length is cut at the limit too
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1024

        answer = await relay.client.post("/alerts/ops-wecom", content=chunks(),
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 413
        assert await relay.metric("clawbot_alert_relay_requests_total", status="422") == 4
    assert robots[2].app.robot_messages.items() == []


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=20),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=12), children, max_size=4),
                     max_leaves=20)
_keys = st.sampled_from(["status", "alerts", "labels", "annotations", "version", "receiver",
                         "groupLabels", "commonLabels", "externalURL", "truncatedAlerts",
                         "startsAt", "generatorURL"])
_shaped = st.recursive(_json, lambda children: st.dictionaries(_keys, children, max_size=6),
                       max_leaves=25)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_json, _shaped, st.binary(max_size=64)))
async def test_arbitrary_bodies_never_get_a_5xx(tmp_path: Path, body: object) -> None:
    # No robot listens: a body the relay takes ends in 502 "delivery_failed" (the robot's
    # fault, not the input's); every body it refuses must get a 4xx, never a 5xx.
    dead = f"http://127.0.0.1:{closed_port()}"
    path = write_config(tmp_path, receivers(dead, dead, dead), retry={"attempts": 1})
    async with running_relay(path) as relay:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = await relay.post("ops-wecom", raw)
        refused = 400 <= answer.status_code < 500
        undeliverable = answer.status_code == 502 and \
            answer.json()["error"]["code"] == "delivery_failed"
        assert refused or undeliverable, (answer.status_code, answer.text)


async def test_a_valid_notification_with_odd_content_is_delivered(tmp_path: Path,
                                                                  robots: Robots) -> None:
    data = notification(truncatedAlerts=3, externalURL="not a url")
    data["alerts"][0].update(startsAt="yesterday", generatorURL="", annotations={},
                             labels={"alertname": "X" * 5000, "note": "[a](b) **c** \n\n# d"})
    async with running_relay(config(tmp_path, robots)) as relay:
        for name in ("ops-dingtalk", "ops-feishu", "ops-wecom"):
            answer = await relay.post(name, data)
            assert answer.status_code == 200, (name, answer.text)


async def test_no_secret_in_logs(tmp_path: Path, robots: Robots,
                                 caplog: pytest.LogCaptureFixture) -> None:
    dingtalk, feishu, wecom = robots
    dingtalk.app.fail_first = 1
    bad = receivers(dingtalk.base_url, feishu.base_url, f"http://127.0.0.1:{closed_port()}")
    bad[1]["secret"] = "another-feishu-secret"
    caplog.set_level(logging.DEBUG)
    async with running_relay(write_config(tmp_path, bad)) as relay:
        for name in ("ops-dingtalk", "ops-feishu", "ops-wecom"):
            await relay.post(name, notification())
        await relay.post("ops-dingtalk", notification(), token="wrong-token-for-the-relay")
    formatter = EcsJsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any('"clawbot.alert_relay.result": "server_error"' in line for line in lines)
    assert any('"clawbot.alert_relay.result": "network_error"' in line for line in lines)
    signs = [r.query["sign"] for r in dingtalk.requests if "sign" in r.query]
    signs += [json.loads(r.body)["sign"] for r in feishu.requests if r.body]
    assert signs
    text = "\n".join(lines)
    for secret in (*SECRETS, "another-feishu-secret", *signs, quote_plus(signs[0])):
        assert secret not in text


async def test_health_and_metrics(tmp_path: Path, robots: Robots) -> None:
    async with running_relay(config(tmp_path, robots)) as relay:
        assert (await relay.client.get("/health")).json() == {"status": "ok"}
        metrics = await relay.client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        for name in ("notifications_total", "attempts_total", "send_duration_seconds",
                     "requests_total"):
            assert f"# TYPE clawbot_alert_relay_{name.removesuffix('_total')}" in metrics.text
        # /health and the first /metrics (each counted once its answer starts)
        assert await relay.metric("clawbot_alert_relay_requests_total", status="200") == 2
