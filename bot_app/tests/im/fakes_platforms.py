"""Fake Feishu Open API and DingTalk robot servers speaking the real wire protocol.

Each fake is a Starlette app served by uvicorn on a real 127.0.0.1 socket in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any, *, lifespan: str = "off") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, loop="asyncio",
                                access_log=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


class Recorder:
    """Thread-safe list of recorded requests with a blocking wait."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def add(self, item: dict[str, Any]) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def items(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# --------------------------------------------------------------------------- Feishu


@dataclass
class FakeFeishu:
    """``/open-apis/auth/v3/tenant_access_token/internal`` and ``/im/v1/messages/{id}/reply``."""

    app_id: str
    app_secret: str
    expire: int = 7200
    token_requests: Recorder = field(default_factory=Recorder)
    replies: Recorder = field(default_factory=Recorder)
    rejected_replies: Recorder = field(default_factory=Recorder)
    valid_tokens: set[str] = field(default_factory=set)
    throttle_next: int = 0
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.valid_tokens.clear()
            self.throttle_next = 0
        self.token_requests.clear()
        self.replies.clear()
        self.rejected_replies.clear()

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    async def _token(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"code": 9499, "msg": "Bad Request"}, status_code=400)
        self.token_requests.add(body)
        if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
            return JSONResponse({"code": 10014, "msg": "app secret invalid"})
        token = f"t-fake{next(self._counter):06d}"
        with self._lock:
            self.valid_tokens.add(token)
        return JSONResponse(
            {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": self.expire}
        )

    async def _reply(self, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self._lock:
            token_ok = token in self.valid_tokens
            throttled = self.throttle_next > 0
            if throttled:
                self.throttle_next -= 1
        message_id = request.path_params["message_id"]
        if not token_ok:
            self.rejected_replies.add({"message_id": message_id, "reason": "token"})
            return JSONResponse(
                {"code": 99991663, "msg": "Invalid access token for authorization."},
                status_code=400,
            )
        if throttled:
            return JSONResponse({"code": 99991400, "msg": "request trigger frequency limit"},
                                status_code=429)
        try:
            body = json.loads(await request.body())
            content = body["content"]
            if body.get("msg_type") != "text" or not isinstance(content, str):
                raise ValueError("bad msg_type/content")
            text = json.loads(content)["text"]
            if not isinstance(text, str):
                raise ValueError("text must be a string")
        except (ValueError, KeyError, TypeError):
            self.rejected_replies.add({"message_id": message_id, "reason": "content"})
            return JSONResponse({"code": 230001, "msg": "invalid message content"},
                                status_code=400)
        self.replies.add({"message_id": message_id, "text": text, "token": token})
        return JSONResponse(
            {"code": 0, "msg": "success",
             "data": {"message_id": f"om_reply_{message_id}", "msg_type": "text"}}
        )

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/open-apis/auth/v3/tenant_access_token/internal", self._token,
                  methods=["POST"]),
            Route("/open-apis/im/v1/messages/{message_id}/reply", self._reply, methods=["POST"]),
        ])


# --------------------------------------------------------------------------- DingTalk


@dataclass
class FakeDingTalk:
    """``/robot/sendBySession`` (sessionWebhook) and signed ``/robot/send`` (group robot)."""

    robot_access_token: str = "robot-token"
    robot_secret: str = "SECfake-robot-secret"
    session_messages: Recorder = field(default_factory=Recorder)
    robot_messages: Recorder = field(default_factory=Recorder)

    def reset(self) -> None:
        self.session_messages.clear()
        self.robot_messages.clear()

    @staticmethod
    def _valid_text(body: Any) -> bool:
        if not isinstance(body, dict) or body.get("msgtype") != "text":
            return False
        text = body.get("text")
        return isinstance(text, dict) and isinstance(text.get("content"), str)

    async def _send_by_session(self, request: Request) -> JSONResponse:
        session = request.query_params.get("session")
        if not session:
            return JSONResponse({"errcode": 300001, "errmsg": "session is empty"})
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"errcode": 40035, "errmsg": "invalid json"})
        if not self._valid_text(body):
            return JSONResponse({"errcode": 40035, "errmsg": "invalid msgtype"})
        self.session_messages.add({"session": session, "text": body["text"]["content"]})
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    async def _robot_send(self, request: Request) -> JSONResponse:
        q = request.query_params
        if q.get("access_token") != self.robot_access_token:
            return JSONResponse({"errcode": 300005, "errmsg": "token is not exist"})
        ts = q.get("timestamp", "")
        if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3600_000:
            return JSONResponse({"errcode": 310000, "errmsg": "invalid timestamp"})
        mac = hmac.new(self.robot_secret.encode(), f"{ts}\n{self.robot_secret}".encode(),
                       hashlib.sha256).digest()
        # Starlette already URL-decoded the query value.
        if not hmac.compare_digest(base64.b64encode(mac).decode(), q.get("sign", "")):
            return JSONResponse({"errcode": 310000, "errmsg": "sign not match"})
        body = json.loads(await request.body())
        self.robot_messages.add(body)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/robot/sendBySession", self._send_by_session, methods=["POST"]),
            Route("/robot/send", self._robot_send, methods=["POST"]),
        ])
