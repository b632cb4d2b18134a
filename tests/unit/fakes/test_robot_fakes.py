"""The WeCom fake and the three-robots program (tests/fakes/wecom.py, tests/fakes/robots.py) over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from ansible_collections.clawbot.stack.tests.fakes import wecom
from ansible_collections.clawbot.stack.tests.fakes.httpd import FakeServer

FAKES = Path(wecom.__file__).resolve().parent


def post(url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wecom_server(clock: Clock) -> Iterator[FakeServer]:
    with FakeServer(wecom.FakeWeCom("good-key", rate_limit_per_minute=3, clock=clock), max_lifetime=60) as server:
        yield server


def send_url(server: FakeServer, key: str = "good-key") -> str:
    return f"{server.base_url}/cgi-bin/webhook/send?key={key}"


def test_wecom_accepts_text_and_markdown_with_the_right_key(wecom_server: FakeServer) -> None:
    text = {"msgtype": "text", "text": {"content": "disk full"}}
    markdown = {"msgtype": "markdown", "markdown": {"content": "# 告警\n**disk** full"}}
    assert post(send_url(wecom_server), text) == (200, {"errcode": 0, "errmsg": "ok"})
    assert post(send_url(wecom_server), markdown) == (200, {"errcode": 0, "errmsg": "ok"})
    status, answer = post(send_url(wecom_server, "wrong"), text)
    assert (status, answer["errcode"]) == (200, 93000) and "invalid webhook url" in answer["errmsg"]
    assert post(f"{wecom_server.base_url}/cgi-bin/webhook/send", text)[1]["errcode"] == 93000
    assert wecom_server.app.robot_messages.items() == [text, markdown]


@pytest.mark.parametrize(("body", "errcode"), [
    ({"msgtype": "markdown", "markdown": {"content": "警" * 1365 + "a"}}, 0),  # 4096 bytes
    ({"msgtype": "markdown", "markdown": {"content": "警" * 1365 + "ab"}}, 40058),  # 4097 bytes
    ({"msgtype": "text", "text": {"content": "x" * 2048}}, 0),
    ({"msgtype": "text", "text": {"content": "x" * 2049}}, 40058),
    ({"msgtype": "image", "image": {"base64": "", "md5": ""}}, 40008),
    ({"msgtype": "markdown", "markdown": {"content": 42}}, 40008),
    ({"msgtype": "text"}, 40008),
    (b"not json", 40008),
    ([], 40008),
])
def test_wecom_message_rules(wecom_server: FakeServer, body: Any, errcode: int) -> None:
    assert post(send_url(wecom_server), body)[1]["errcode"] == errcode
    assert len(wecom_server.app.robot_messages) == (1 if errcode == 0 else 0)


def test_wecom_rate_limit_per_minute(wecom_server: FakeServer, clock: Clock) -> None:
    message = {"msgtype": "text", "text": {"content": "x"}}
    assert [post(send_url(wecom_server), message)[1]["errcode"] for attempt in range(4)] == [0, 0, 0, 45009]
    clock.now += 59
    assert post(send_url(wecom_server), message)[1]["errcode"] == 45009
    clock.now += 1
    assert post(send_url(wecom_server), message)[1]["errcode"] == 0
    assert len(wecom_server.app.robot_messages) == 4


def test_wecom_fail_first_unknown_path_and_reset(wecom_server: FakeServer) -> None:
    fake = wecom_server.app
    fake.fail_first = 1
    message = {"msgtype": "text", "text": {"content": "x"}}
    assert post(send_url(wecom_server), message)[0] == 503
    assert post(send_url(wecom_server), message)[1]["errcode"] == 0
    assert post(f"{wecom_server.base_url}/cgi-bin/other", message)[0] == 404
    fake.rate_limit_per_minute = 0
    fake.reset()
    assert fake.rate_limit_per_minute == 3 and fake.robot_messages.items() == []


# --------------------------------------------------------------------------- python3 -m fakes.robots


@pytest.fixture
def robots(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The program run from a copy of the package, as a container runs it."""
    shutil.copytree(FAKES, tmp_path / "fakes", ignore=shutil.ignore_patterns("__pycache__"))
    record = tmp_path / "record.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "fakes.robots", "--port", "0", "--record", str(record),
                             "--dingtalk-token", "dt", "--dingtalk-secret", "SECdt", "--feishu-token", "fs",
                             "--feishu-secret", "fs-secret", "--wecom-key", "wk"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield line.split()[-1], record
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def dingtalk_sign(secret: str, timestamp: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(mac).decode())


def feishu_sign(secret: str, timestamp: str) -> str:
    return base64.b64encode(hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()


def test_robots_program_serves_and_records_all_three(robots: tuple[str, Path]) -> None:
    base, record = robots
    ms, s = str(int(time.time() * 1000)), str(int(time.time()))
    dt_message = {"msgtype": "markdown", "markdown": {"title": "t", "text": "告警"}}
    fs_text = {"msg_type": "text", "content": {"text": "hi"}}
    answers = [
        post(f"{base}/robot/send?access_token=dt&timestamp={ms}&sign={dingtalk_sign('SECdt', ms)}", dt_message),
        post(f"{base}/robot/send?access_token=dt&timestamp={ms}&sign={dingtalk_sign('SECwrong', ms)}", dt_message),
        post(f"{base}/open-apis/bot/v2/hook/fs", {"timestamp": s, "sign": feishu_sign("fs-secret", s), **fs_text}),
        post(f"{base}/open-apis/bot/v2/hook/fs", {"timestamp": s, "sign": feishu_sign("wrong", s), **fs_text}),
        post(f"{base}/cgi-bin/webhook/send?key=wk", {"msgtype": "markdown", "markdown": {"content": "x"}}),
        post(f"{base}/cgi-bin/webhook/send?key=bad", {"msgtype": "markdown", "markdown": {"content": "x"}}),
        post(f"{base}/elsewhere", b"raw body"),
    ]
    assert [a[0] for a in answers] == [200] * 6 + [404]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["platform"], r["path"], r["accepted"], r["errcode"]) for r in lines] == [
        ("dingtalk", "/robot/send", True, 0),
        ("dingtalk", "/robot/send", False, 310000),
        ("feishu", "/open-apis/bot/v2/hook/fs", True, 0),
        ("feishu", "/open-apis/bot/v2/hook/fs", False, 19021),
        ("wecom", "/cgi-bin/webhook/send", True, 0),
        ("wecom", "/cgi-bin/webhook/send", False, 93000),
        (None, "/elsewhere", False, 404),
    ]
    assert lines[0]["body"] == dt_message and lines[6]["body"] == "raw body"
    assert all(r["time"].endswith("+00:00") for r in lines)
    assert "SECdt" not in record.read_text() and "key=wk" not in record.read_text()
