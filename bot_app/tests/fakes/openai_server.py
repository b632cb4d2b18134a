"""Fake OpenAI-compatible ``/v1/chat/completions`` server (real HTTP on 127.0.0.1).

Reply text is ``"<name>: <last user message> [n=<number of messages>]"`` so tests can see
which provider answered and how much context it got. Behaviour is tunable at runtime:
``latency`` (seconds), ``fail_next`` (list of HTTP statuses returned by the next requests),
``always_status``, ``hang`` (never answer), ``api_key`` (required bearer key; ``reset()``
restores the one given at construction). ``authorizations`` records each request's
``Authorization`` header.

Run standalone: ``python -m tests.fakes.openai_server --port 9000 --latency 0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class FakeModel:
    name: str = "fake"
    model: str = "fake-model"
    api_key: str | None = None
    latency: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    always_status: int | None = None
    hang: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    record: bool = True

    def __post_init__(self) -> None:
        self._initial_api_key = self.api_key

    def reset(self) -> None:
        self.api_key = self._initial_api_key
        self.authorizations.clear()
        self.latency = 0.0
        self.fail_next.clear()
        self.always_status = None
        self.hang = False
        self.requests.clear()

    def reply_text(self, body: dict[str, Any]) -> str:
        msgs = body.get("messages") or []
        last = next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")
        return f"{self.name}: {last} [n={len(msgs)}]"

    async def completions(self, request: Request) -> Response:
        if self.record:
            self.authorizations.append(request.headers.get("authorization"))
        if self.api_key is not None:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse({"error": {"message": "invalid api key"}}, 401)
        body = await request.json()
        if self.record:
            self.requests.append(body)
        if self.hang:
            await asyncio.sleep(3600)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail_next:
            return JSONResponse({"error": {"message": "injected"}}, self.fail_next.pop(0))
        if self.always_status:
            return JSONResponse({"error": {"message": "injected"}}, self.always_status)
        text = self.reply_text(body)
        if body.get("stream"):
            return StreamingResponse(self._stream(text), media_type="text/event-stream")
        return JSONResponse({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    async def _stream(self, text: str) -> Any:
        words = text.split(" ")
        for i, word in enumerate(words):
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                     "model": self.model, "choices": [{"index": 0, "delta": {
                         "content": word if i == 0 else " " + word}}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(0)
        yield b"data: [DONE]\n\n"

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions,
                                       methods=["POST"])])


class FakeModelServer:
    """Serve a :class:`FakeModel` from a background thread on a free loopback port."""

    def __init__(self, fake: FakeModel):
        self.fake = fake
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off",
                                loop="asyncio", access_log=False, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def start(self) -> FakeModelServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(5)
        self.sock.close()


class _LeanProtocol(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 responder for the benchmark (non-streaming only).

    Leaves more of a small machine's CPU to the service under test than uvicorn+Starlette.
    """

    def __init__(self, fake: FakeModel):
        self.fake = fake
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            auth = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
                elif name.lower() == "authorization":
                    auth = value.strip()
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4:head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length:]
            asyncio.get_running_loop().create_task(self._answer(body, auth))

    async def _answer(self, raw: bytes, auth: str) -> None:
        if self.fake.api_key is not None and auth != f"Bearer {self.fake.api_key}":
            status, payload = "401 Unauthorized", {"error": {"message": "invalid api key"}}
        else:
            await asyncio.sleep(self.fake.latency)
            body = json.loads(raw)
            status, payload = "200 OK", {
                "id": "chatcmpl-fake", "object": "chat.completion", "model": self.fake.model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": self.fake.reply_text(body)}}]}
        out = json.dumps(payload).encode()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(out)}\r\n\r\n".encode() + out)


async def _serve_lean(fake: FakeModel, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _LeanProtocol(fake), "127.0.0.1", port,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--name", default="fake")
    p.add_argument("--api-key")
    p.add_argument("--lean", action="store_true", help="minimal asyncio server (benchmark)")
    args = p.parse_args()
    fake = FakeModel(name=args.name, api_key=args.api_key, latency=args.latency, record=False)
    if args.lean:
        import uvloop

        uvloop.run(_serve_lean(fake, args.port))
        return
    uvicorn.run(fake.app(), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, loop="uvloop", http="httptools", backlog=4096)


if __name__ == "__main__":
    main()
