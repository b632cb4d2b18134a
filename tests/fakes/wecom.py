"""The one fake of WeCom (WeChat Work, qyapi.weixin.qq.com): group robot webhooks.

Wire facts: ../shared/notes/im-protocols.md ("WeCom group robot") and the WeCom developer docs
("Group robot configuration"): ``POST /cgi-bin/webhook/send?key=KEY`` with a JSON body; no
signing, the key is the credential; every answer is HTTP 200 with ``errcode``/``errmsg``.

* wrong or missing key: ``93000`` "invalid webhook url";
* ``text`` (``text.content`` at most 2048 bytes) and ``markdown`` (``markdown.content`` at most
  4096 bytes, UTF-8) are accepted; over the limit: ``40058``; any other body or message type:
  ``40008`` "invalid message type";
* more than ``rate_limit_per_minute`` messages in 60 s: ``45009`` "api freq out of limit"
  (the platform's limit is 20 per minute per robot).

Issue 15 adds the WeCom application API here (one WeCom fake): add routes to ``_routes``.
Serve it with ``FakeServer(FakeWeCom(...))`` from :mod:`.httpd`. Standard library only.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from .httpd import Recorder, Request, Response, json_response, take_gateway_failure

WEBHOOK_PATH = "/cgi-bin/webhook/send"
INVALID_KEY = "invalid webhook url, hint: [1700000000_fake], from ip: 127.0.0.1, more info at " \
              "https://open.work.weixin.qq.com/devtool/query?e=93000"
TEXT_MAX_BYTES = 2048
MARKDOWN_MAX_BYTES = 4096
PLATFORM_RATE_LIMIT = 20


def _content(body: Any) -> tuple[str, str] | None:
    """``(msgtype, content)`` of a text or markdown robot message, else None."""
    if not isinstance(body, dict) or body.get("msgtype") not in ("text", "markdown"):
        return None
    part = body.get(body["msgtype"])
    if not isinstance(part, dict) or not isinstance(part.get("content"), str):
        return None
    return body["msgtype"], part["content"]


class FakeWeCom:
    """WeCom's robot webhook. Recorded: ``robot_messages`` (accepted bodies).

    Knobs: ``webhook_key``, ``rate_limit_per_minute`` (None: no limit), ``fail_first`` (answer
    that many requests with a gateway 503), ``reset()``. ``base_url`` is where a test served it.
    """

    def __init__(self, webhook_key: str = "wecom-fake-key", *,
                 rate_limit_per_minute: int | None = PLATFORM_RATE_LIMIT, fail_first: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.webhook_key = webhook_key
        self.rate_limit_per_minute = rate_limit_per_minute
        self.fail_first = fail_first
        self._initial = (rate_limit_per_minute, fail_first)
        self.robot_messages = Recorder()
        self.base_url: str | None = None
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", WEBHOOK_PATH): self._webhook_send,
        }

    def reset(self) -> None:
        with self._lock:
            self.rate_limit_per_minute, self.fail_first = self._initial
            self._sent.clear()
        self.robot_messages.clear()

    def __call__(self, request: Request) -> Response:
        failure = take_gateway_failure(self)
        if failure is not None:
            return failure
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return json_response({"errcode": 404, "errmsg": "invalid url"}, 404)
        return handler(request)

    def _throttled(self) -> bool:
        if self.rate_limit_per_minute is None:
            return False
        now = self._clock()
        with self._lock:
            while self._sent and now - self._sent[0] >= 60:
                self._sent.popleft()
            if len(self._sent) >= self.rate_limit_per_minute:
                return True
            self._sent.append(now)
        return False

    def _webhook_send(self, request: Request) -> Response:
        if request.query.get("key") != self.webhook_key:
            return json_response({"errcode": 93000, "errmsg": INVALID_KEY})
        body = request.json()
        message = _content(body)
        if message is None:
            return json_response({"errcode": 40008, "errmsg": "invalid message type"})
        msgtype, content = message
        limit = MARKDOWN_MAX_BYTES if msgtype == "markdown" else TEXT_MAX_BYTES
        if len(content.encode("utf-8")) > limit:
            return json_response({"errcode": 40058, "errmsg": f"{msgtype}.content exceed max length {limit}"})
        if self._throttled():
            return json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        self.robot_messages.add(body)
        return json_response({"errcode": 0, "errmsg": "ok"})
