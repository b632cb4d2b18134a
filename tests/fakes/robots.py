"""The three group robots on one port, as a program: DingTalk, Feishu and WeCom webhooks for the
alert relay's end-to-end tests (Molecule runs it as a service in the container).

    python3 -m fakes.robots --host 127.0.0.1 --port 18900 --record FILE \\
        --dingtalk-token T --dingtalk-secret SEC... --feishu-token T --feishu-secret S --wecom-key K

Run it from a directory that holds the ``fakes`` package; it needs the Python standard library
and ``cryptography`` only (Debian: python3 + python3-cryptography). The paths do not collide:
``POST /robot/send`` (DingTalk), ``POST /open-apis/bot/v2/hook/<token>`` (Feishu),
``POST /cgi-bin/webhook/send?key=`` (WeCom). Each platform's fake checks the request as the
platform does (signatures included), and every request, accepted or not, is appended to FILE as
one JSON line: ``{"time", "platform", "path", "status", "accepted", "errcode", "body"}``
(``path`` without the query string, which holds the tokens).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .dingtalk import FakeDingTalk
from .feishu import HOOK_PREFIX, FakeFeishu
from .httpd import Request, Response, _Handler, json_response
from .wecom import WEBHOOK_PATH, FakeWeCom

MAX_RECORDED_BODY_CHARS = 65536


def platform_of(path: str) -> str | None:
    if path == "/robot/send":
        return "dingtalk"
    if path.startswith(HOOK_PREFIX):
        return "feishu"
    if path == WEBHOOK_PATH:
        return "wecom"
    return None


def _errcode(response: Response) -> int | None:
    try:
        data = json.loads(response.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    for key in ("errcode", "code", "StatusCode"):  # DingTalk/WeCom, Feishu, old Lark hooks
        if isinstance(data.get(key), int):
            return data[key]
    return None


class Robots:
    """Dispatch to the three fakes and record each request; ``app``/``record`` as
    :class:`.httpd.FakeServer`'s handler expects of a fake server."""

    def __init__(self, dingtalk: FakeDingTalk, feishu: FakeFeishu, wecom: FakeWeCom,
                 record_file: Path | None):
        self.fakes = {"dingtalk": dingtalk, "feishu": feishu, "wecom": wecom}
        self.record_file = record_file
        self._lock = threading.Lock()

    def record(self, request: Request) -> None:
        """Recording happens after the answer (it says whether the request was accepted)."""

    def app(self, request: Request) -> Response:
        platform = platform_of(request.path)
        if platform is None or request.method != "POST":
            response = json_response({"errcode": 404, "errmsg": "not found"}, 404)
        else:
            response = self.fakes[platform](request)
        self._write(request, platform, response)
        return response

    def _write(self, request: Request, platform: str | None, response: Response) -> None:
        if self.record_file is None:
            return
        errcode = _errcode(response)
        body: Any = request.json()
        if body is None:
            body = request.body.decode("utf-8", "replace")[:MAX_RECORDED_BODY_CHARS]
        line = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "platform": platform, "path": request.path, "status": response.status,
                "accepted": response.status == 200 and errcode == 0, "errcode": errcode,
                "body": body}
        with self._lock, self.record_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


class RobotsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], robots: Robots):
        self.fake = robots  # what httpd's request handler calls
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up is no reason to print a stack trace


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m fakes.robots",
                                description="The DingTalk, Feishu and WeCom group robot webhooks on one port.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18900, help="0: any free port (printed)")
    p.add_argument("--record", metavar="FILE", type=Path, help="append one JSON line per request")
    p.add_argument("--dingtalk-token", default="robot-token")
    p.add_argument("--dingtalk-secret", default=None, help="SEC...; none: the robot does not sign")
    p.add_argument("--feishu-token", default="hook-token")
    p.add_argument("--feishu-secret", default=None, help="none: the bot does not sign")
    p.add_argument("--wecom-key", default="wecom-fake-key")
    p.add_argument("--wecom-rate-limit", type=int, default=20, help="messages per minute; 0: none")
    return p


def make_robots(args: argparse.Namespace) -> Robots:
    return Robots(FakeDingTalk(robot_token=args.dingtalk_token, robot_secret=args.dingtalk_secret),
                  FakeFeishu(hook_token=args.feishu_token, hook_secret=args.feishu_secret),
                  FakeWeCom(args.wecom_key, rate_limit_per_minute=args.wecom_rate_limit or None),
                  args.record)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = RobotsServer((args.host, args.port), make_robots(args))
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
