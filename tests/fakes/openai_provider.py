"""The one fake OpenAI-compatible model provider of this repository (real HTTP/1.1 on loopback).

Self-contained on purpose: Python 3.11 standard library only (``uvloop`` is used when it can be
imported), so the same file runs in-process from tests, as the benchmark's model
(``python tests/fakes/openai_provider.py --port P --latency 0.1 --api-key sk-bench``) and as a
systemd service inside a Debian 12 container with ``/usr/bin/python3`` (Molecule ``key_rotation``).

Wire protocol (what the stack calls; see tests/fakes/README.md):

* ``POST .../v1/chat/completions``: a ``chat.completion`` object, or with ``"stream": true`` an
  SSE stream of ``chat.completion.chunk`` events (HTTP/1.1 chunked) ending with ``data: [DONE]``.
  The reply text is ``"<name>: <last user message> [n=<number of messages>]"`` so tests see which
  provider answered and how much context it got.
* ``GET .../v1/models``: a ``list`` of one model.
* Any path prefix before ``/v1`` is accepted (proxies and Azure-style gateways mount it deeper).
* Bearer key check against ``api_key`` (one key or a set of keys) and/or ``keys_file`` (one key
  a line, re-read on every request). A missing or wrong key gets OpenAI's real 401 body
  (``invalid_api_key``). No key configured: no check.
* Bad requests (malformed JSON, no body, no ``messages``) get OpenAI's 400 error shape; unknown
  URLs a 404 ``Invalid URL`` error; a malformed HTTP request a 400 and the connection closed.

Runtime knobs on :class:`FakeModel` (tests set them between requests; ``reset()`` restores the
construction values): ``latency`` (seconds), ``fail_next`` (HTTP statuses for the next chat
requests), ``always_status``, ``hang`` (never answer), ``respond_next`` (``(status, json_body)``
answers for the next requests on any endpoint, before any check; ``(status, json_body, "gzip")``
sends the body gzip-compressed with ``Content-Encoding: gzip``), ``models_body`` (the
``/v1/models`` answer), ``api_key``. Recorded: ``calls`` (method, path, Authorization header and
status of every request), ``authorizations`` (their Authorization headers) and ``requests`` (chat
request bodies); ``record=False`` records nothing (benchmark, long runs). ``log_file``: one JSON
line per answered request with the SHA-256 prefix of the key it carried (never the key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gzip
import hashlib
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
HANG_SECONDS = 3600.0
REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
           429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


# --------------------------------------------------------------------------- OpenAI error bodies


def openai_error(message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def mask_key(key: str) -> str:
    """How OpenAI shows a rejected key in its 401 message: the first 3 and last 4 characters."""
    if len(key) <= 10:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def invalid_api_key_body(key: str) -> dict[str, Any]:
    """OpenAI's 401 body for a missing or wrong key."""
    if not key:
        return openai_error("You didn't provide an API key. You need to provide your API key in an Authorization "
                            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
                            "field (with blank username) if you're accessing the API from your browser and are "
                            "prompted for a username and password. You can obtain an API key from "
                            "https://platform.openai.com/account/api-keys.")
    return openai_error(f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.", code="invalid_api_key")


BAD_JSON_BODY = openai_error(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have "
    "trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)")


def key_fingerprint(key: str) -> str | None:
    """What the log file records instead of a key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


# --------------------------------------------------------------------------- behaviour and state


@dataclass
class Call:
    """One request as the fake saw it (``status`` is set when it is answered)."""

    method: str
    path: str
    authorization: str | None
    status: int | None = None


@dataclass
class FakeModel:
    """What the fake answers, its runtime knobs and what it recorded (see the module docstring)."""

    name: str = "fake"
    model: str = "fake-model"
    api_key: str | set[str] | frozenset[str] | None = None
    keys_file: str | Path | None = None
    log_file: str | Path | None = None
    latency: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    always_status: int | None = None
    hang: bool = False
    respond_next: list[tuple[Any, ...]] = field(default_factory=list)
    models_body: dict[str, Any] | None = None
    record: bool = True
    calls: list[Call] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    KNOBS = ("api_key", "latency", "fail_next", "always_status", "hang", "respond_next", "models_body")

    def __post_init__(self) -> None:
        self._initial = {name: copy.copy(getattr(self, name)) for name in self.KNOBS}
        self._log_lock = threading.Lock()

    def reset(self) -> None:
        """The knobs back to their construction values; forget what was recorded."""
        for name, value in self._initial.items():
            setattr(self, name, copy.copy(value))
        self.calls.clear()
        self.requests.clear()

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request, in order."""
        return [call.authorization for call in self.calls]

    # -- keys

    def accepted_keys(self) -> set[str] | None:
        """The keys accepted now, or None when no key is required."""
        if self.api_key is None and self.keys_file is None:
            return None
        keys: set[str] = set()
        if isinstance(self.api_key, str):
            keys.add(self.api_key)
        elif self.api_key is not None:
            keys.update(self.api_key)
        if self.keys_file is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                keys.update(line.strip() for line in Path(self.keys_file).read_text().splitlines() if line.strip())
        return keys

    # -- answers

    def reply_text(self, body: dict[str, Any]) -> str:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        if isinstance(last, list):  # content parts
            last = "".join(part.get("text", "") for part in last if isinstance(part, dict))
        return f"{self.name}: {last if last is not None else ''} [n={len(body.get('messages') or [])}]"

    def completion(self, text: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def chunks(self, text: str) -> list[bytes]:
        """SSE events of a streamed completion: one chunk a word, then ``[DONE]``."""
        events = []
        for i, word in enumerate(text.split(" ")):
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": self.model,
                     "choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word}}]}
            events.append(f"data: {json.dumps(chunk)}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        return events

    def models(self) -> dict[str, Any]:
        if self.models_body is not None:
            return self.models_body
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                            "owned_by": "clawbot-tests"}]}

    def log(self, method: str, path: str, status: int, key: str) -> None:
        if self.log_file is None:
            return
        line = json.dumps({"time": time.time(), "method": method, "path": path, "status": status,
                           "key_sha256": key_fingerprint(key)})
        with self._log_lock, open(self.log_file, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


# --------------------------------------------------------------------------- HTTP/1.1 on asyncio


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def _route(path: str) -> str | None:
    path = path.rstrip("/")
    for endpoint in ("/v1/chat/completions", "/v1/models"):
        if path.endswith(endpoint):
            return endpoint
    return None


def _bearer(headers: dict[str, str]) -> str:
    scheme, value = (headers.get("authorization", "") + " ").split(" ", 1)
    return value.strip() if scheme.lower() == "bearer" else ""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: requests are parsed as bytes arrive and answered in order."""

    def __init__(self, fake: FakeModel, connections: set[_Connection]):
        self.fake = fake
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: deque[HttpRequest | BadRequest] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.continued = False
        self.current: tuple[HttpRequest, str, Call] | None = None  # the request being answered

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf += data
        try:
            while (request := self._parse()) is not None:
                self.pending.append(request)
        except BadRequest as exc:  # answered in turn, then the connection closes
            self.closing = True
            self.pending.append(exc)
        if self.pending and (self.worker is None or self.worker.done()):
            self.worker = asyncio.get_running_loop().create_task(self._work())

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- parsing

    def _parse(self) -> HttpRequest | None:
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buf) > MAX_HEADER_BYTES:
                raise BadRequest(431, "request headers too large")
            return None
        lines = bytes(self.buf[:head_end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400, "malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(400, "malformed header line")
            headers[name.lower()] = value.strip()
        start = head_end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = self._dechunk(start)
            if parsed is None:
                return None
            body, end = parsed
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise BadRequest(400, "invalid Content-Length") from None
            if length < 0 or length > MAX_BODY_BYTES:
                raise BadRequest(413 if length > 0 else 400, "invalid Content-Length")
            if len(self.buf) < start + length:
                self._maybe_continue(headers)
                return None
            body, end = bytes(self.buf[start:start + length]), start + length
        del self.buf[:end]
        self.continued = False
        return HttpRequest(parts[0], parts[1], parts[2], headers, body)

    def _dechunk(self, pos: int) -> tuple[bytes, int] | None:
        body = bytearray()
        while True:
            line_end = self.buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            try:
                size = int(bytes(self.buf[pos:line_end]).split(b";")[0], 16)
            except ValueError:
                raise BadRequest(400, "malformed chunk size") from None
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0 and self.buf[line_end:line_end + 4] != b"\r\n\r\n":
                    return None
                return bytes(body), (trailer_end if trailer_end >= 0 else line_end) + 4
            if len(body) + size > MAX_BODY_BYTES:
                raise BadRequest(413, "body too large")
            if len(self.buf) < line_end + 2 + size + 2:
                return None
            body += self.buf[line_end + 2:line_end + 2 + size]
            pos = line_end + 2 + size + 2

    def _maybe_continue(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue" and not self.continued and self.transport:
            self.continued = True
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- answering

    async def _work(self) -> None:
        while self.pending:
            request = self.pending.popleft()
            if isinstance(request, BadRequest):
                self._send(request.status, openai_error(str(request)), close=True)
                return
            await self._answer(request)
            if not request.keep_alive:
                self._close()
                return

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _answered(self, status: int) -> None:
        """Record and log the answer before it is written: whoever reads it may look at once."""
        if self.current is not None:
            request, key, call = self.current
            self.current = None
            call.status = status
            self.fake.log(request.method, request.path, status, key)

    def _send(self, status: int, payload: Any, close: bool = False, gzipped: bool = False) -> None:
        self._answered(status)
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\ncontent-type: application/json\r\n"
        if gzipped:
            body = gzip.compress(body)
            head += "content-encoding: gzip\r\n"
        head += f"content-length: {len(body)}\r\n"
        if close:
            head += "connection: close\r\n"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head.encode() + b"\r\n" + body)
        if close:
            self._close()

    async def _answer(self, request: HttpRequest) -> None:
        fake = self.fake
        key = _bearer(request.headers)
        call = Call(request.method, request.path, request.headers.get("authorization"))
        if fake.record:
            fake.calls.append(call)
        self.current = (request, key, call)
        endpoint = _route(request.path)
        if fake.respond_next and endpoint is not None:
            status, payload, *encoding = fake.respond_next.pop(0)
            self._send(status, payload, gzipped=encoding == ["gzip"])
            return
        method = "POST" if endpoint == "/v1/chat/completions" else "GET"
        if endpoint is None or request.method != method:
            self._send(404, openai_error(f"Invalid URL ({request.method} {request.path})"))
            return
        accepted = fake.accepted_keys()
        if accepted is not None and key not in accepted:
            self._send(401, invalid_api_key_body(key))
            return
        if endpoint == "/v1/models":
            self._send(200, fake.models())
            return
        try:
            body = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self._send(400, BAD_JSON_BODY)
            return
        if fake.record:
            fake.requests.append(body)
        if not isinstance(body.get("messages"), list):
            self._send(400, openai_error("Missing required parameter: 'messages'.", param="messages",
                                         code="missing_required_parameter"))
            return
        await self._complete(body)

    async def _complete(self, body: dict[str, Any]) -> None:
        fake = self.fake
        if fake.hang:
            await asyncio.sleep(HANG_SECONDS)
        if fake.latency:
            await asyncio.sleep(fake.latency)
        if fake.fail_next:
            self._send(fake.fail_next.pop(0), openai_error("injected", "server_error"))
        elif fake.always_status:
            self._send(fake.always_status, openai_error("injected", "server_error"))
        elif body.get("stream"):
            await self._stream(fake.chunks(fake.reply_text(body)))
        else:
            self._send(200, fake.completion(fake.reply_text(body)))

    async def _stream(self, events: list[bytes]) -> None:
        self._answered(200)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
            await asyncio.sleep(0)
        transport.write(b"0\r\n\r\n")


# --------------------------------------------------------------------------- running it


async def serve(fake: FakeModel, sock: socket.socket, started: threading.Event | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve ``fake`` on the listening socket ``sock`` until ``stop`` is set (forever without one)."""
    loop = asyncio.get_running_loop()
    connections: set[_Connection] = set()
    server = await loop.create_server(lambda: _Connection(fake, connections), sock=sock, backlog=4096)
    if started is not None:
        started.set()
    try:
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()
    finally:
        server.close()
        for connection in list(connections):
            connection.abort()
        await server.wait_closed()


def listening_socket(host: str = DEFAULT_HOST, port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class FakeModelServer:
    """Serve a :class:`FakeModel` on a free 127.0.0.1 port from a daemon thread.

    ``FakeModelServer(FakeModel(...)).start()`` or ``with FakeModelServer(...) as server:``;
    ``base_url`` (no ``/v1``), ``port``, ``fake``, ``stop()``. ``max_lifetime`` (seconds) stops
    it anyway, as a safety net for a test that forgets to.
    """

    def __init__(self, fake: FakeModel | None = None, port: int = 0, max_lifetime: float | None = None):
        self.fake = fake if fake is not None else FakeModel()
        self._sock = listening_socket(DEFAULT_HOST, port)
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://{DEFAULT_HOST}:{self.port}"
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"fake-openai-{self.port}", daemon=True)
        self._watchdog = threading.Timer(max_lifetime, self.stop) if max_lifetime else None

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self.fake, self._sock, self._started, self._stop)

        asyncio.run(main())

    def start(self) -> FakeModelServer:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake model server did not start")
        if self._watchdog is not None:
            self._watchdog.daemon = True
            self._watchdog.start()
        return self

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
            if threading.current_thread() is not self._thread:
                self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> FakeModelServer:
        if not self._thread.is_alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port, printed on stdout")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each chat answer")
    parser.add_argument("--name", default="fake", help="first word of every reply")
    parser.add_argument("--model", default="fake-model", help="model id in answers and /v1/models")
    parser.add_argument("--api-key", action="append", help="accepted key (repeatable)")
    parser.add_argument("--keys-file", type=Path, help="accepted keys, one a line, re-read on every request")
    parser.add_argument("--log-file", type=Path, help="append one JSON line per request (key as SHA-256 prefix)")
    args = parser.parse_args(argv)
    fake = FakeModel(name=args.name, model=args.model, api_key=set(args.api_key) if args.api_key else None,
                     keys_file=args.keys_file, log_file=args.log_file, latency=args.latency, record=False)
    sock = listening_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        import uvloop  # type: ignore[import-not-found]  # optional, faster
    except ImportError:
        uvloop = None
    with contextlib.suppress(KeyboardInterrupt):
        if uvloop is not None:
            uvloop.run(serve(fake, sock))
        else:
            asyncio.run(serve(fake, sock))


if __name__ == "__main__":
    sys.exit(main())
