"""Server plumbing shared by the IM fakes: a threaded HTTP(S) server on loopback.

Everything listens on 127.0.0.1 only, serves from daemon threads and stops when its ``with``
block ends, on ``stop()``, or (a safety net for a test that forgets) after ``max_lifetime``
seconds. A fake is a callable ``app(Request) -> Response``; the server records every request.

Also here: a port nobody listens on and a TLS port that accepts connections but never speaks
(for TLS probe tests). Standard library only.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

HOST = "127.0.0.1"
DEFAULT_MAX_LIFETIME = 600.0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]  # URL-decoded
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not valid JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


def bot_error(status: int, code: str, message: str) -> Response:
    """The bot service's error shape (for the stand-ins of a bot's callback endpoints)."""
    return json_response({"error": {"code": code, "message": message}}, status)


App = Callable[[Request], Response]


def take_gateway_failure(fake: Any) -> Response | None:
    """The 503 an API gateway answers while ``fake.fail_first`` (decremented under ``fake._lock``)
    is positive; ``None`` when the request should go through."""
    with fake._lock:  # pylint: disable=protected-access
        failing = fake.fail_first > 0
        if failing:
            fake.fail_first -= 1
    return text_response("<html>503 Service Temporarily Unavailable</html>", 503) if failing else None


class Recorder:
    """A thread-safe list of what a fake received (the server threads add, the test reads)."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        self.server.fake.record(request)
        response = self.server.fake.app(request)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeServer, tls_context: ssl.SSLContext | None):
        self.fake = fake
        self.tls_context = tls_context
        super().__init__((HOST, 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(5)
        try:
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client rejected our certificate: exactly what some tests want
        with tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-request are part of the tests


class FakeServer:
    """Serve ``app`` over HTTP (or HTTPS with ``tls_context``) on 127.0.0.1:<free port>.

    ``base_url``, ``port``, ``app``, ``requests`` (every :class:`Request`), ``calls(path)``;
    ``start()``/``stop()`` or ``with FakeServer(app) as server:``.
    """

    def __init__(self, app: App, tls_context: ssl.SSLContext | None = None,
                 max_lifetime: float = DEFAULT_MAX_LIFETIME):
        self.app = app
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server(self, tls_context)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._watchdog = threading.Timer(max_lifetime, self.stop)
        self._watchdog.daemon = True
        self._stopped = threading.Event()
        scheme = "https" if tls_context else "http"
        self.port: int = self._server.server_address[1]
        self.base_url = f"{scheme}://{HOST}:{self.port}"

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def calls(self, path: str) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def start(self) -> FakeServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._watchdog.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SilentTlsPort:
    """A port that accepts TCP connections (kernel backlog) but never speaks: TLS handshakes time out."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(8)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"https://{HOST}:{self.port}/callback"

    def __enter__(self) -> SilentTlsPort:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._sock.close()


def closed_port() -> int:
    """A local port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]
