"""The fake OpenAI-compatible provider (tests/fakes/openai_provider.py) speaks what it claims to."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.clawbot.stack.tests.fakes import openai_provider
from ansible_collections.clawbot.stack.tests.fakes.openai_provider import FakeModel, FakeModelServer

KEY = "sk-test-provider-0123456789abcdef"
CHAT = {"model": "fake-model", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hello there"}]}


def reply(port: int, method: str, path: str, body: bytes | dict | None = None, key: str | None = KEY,
          conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of one request."""
    status, _headers, answer = request(port, method, path, body, key, conn)
    return status, answer


def request(port: int, method: str, path: str, body: bytes | dict | None = None, key: str | None = KEY,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.fixture
def server():
    with FakeModelServer(FakeModel(name="p", api_key=KEY), max_lifetime=60) as running:
        yield running


def test_chat_completion_reply_format_and_records(server: FakeModelServer) -> None:
    status, headers, body = request(server.port, "POST", "/v1/chat/completions", CHAT)
    assert (status, headers["content-type"]) == (200, "application/json")
    doc = json.loads(body)
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "p: hello there [n=2]"}
    assert server.fake.requests == [CHAT]
    assert server.fake.authorizations == [f"Bearer {KEY}"]
    assert [(c.method, c.path, c.status) for c in server.fake.calls] == [("POST", "/v1/chat/completions", 200)]


def test_401_is_openais_invalid_api_key_body(server: FakeModelServer) -> None:
    status, body = reply(server.port, "POST", "/v1/chat/completions", CHAT, key="sk-wrong-0000000000000000")
    error = json.loads(body)["error"]
    assert status == 401
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_api_key", None)
    assert error["message"].startswith("Incorrect API key provided: sk-")
    assert "sk-wrong-0000000000000000" not in error["message"]
    status, body = reply(server.port, "GET", "/v1/models", key=None)
    assert status == 401
    assert json.loads(body)["error"]["message"].startswith("You didn't provide an API key.")
    assert server.fake.requests == []


def test_sse_stream_framing(server: FakeModelServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        body = json.dumps(dict(CHAT, stream=True)).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (KEY.encode(), len(body), body))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, chunked = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: text/event-stream" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    payload, rest = b"", chunked
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        payload, rest = payload + rest[:size], rest[size + 2:]
    events = payload.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events[:-1])
    chunks = [json.loads(event[6:]) for event in events[:-2]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks) == "p: hello there [n=2]"


def test_models_under_any_prefix_and_keep_alive(server: FakeModelServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for path in ("/v1/models", "/openai/v1/models/"):
        status, body = reply(server.port, "GET", path, conn=conn)
        assert status == 200
        assert json.loads(body)["data"][0]["id"] == "fake-model"
    conn.close()


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "could not parse the JSON body"),
    (b"", "could not parse the JSON body"),
    (b"[1, 2]", "could not parse the JSON body"),
    (b'{"model": "m"}', "Missing required parameter: 'messages'"),
])
def test_bad_requests_get_a_400_and_the_server_keeps_serving(server: FakeModelServer, body: bytes,
                                                             fragment: str) -> None:
    status, answer = reply(server.port, "POST", "/v1/chat/completions", body)
    assert status == 400
    assert fragment in json.loads(answer)["error"]["message"]
    assert request(server.port, "POST", "/v1/chat/completions", CHAT)[0] == 200


def test_unknown_url_and_malformed_http(server: FakeModelServer) -> None:
    status, body = reply(server.port, "GET", "/v1/chat/completions")
    assert status == 404
    assert json.loads(body)["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert sock.recv(65536) == b""  # closed


def test_knobs_and_reset(server: FakeModelServer) -> None:
    fake = server.fake
    fake.fail_next[:] = [503]
    fake.respond_next.append((200, {"object": "list"}))
    assert request(server.port, "GET", "/v1/models", key="anything")[2] == b'{"object": "list"}'
    assert request(server.port, "POST", "/v1/chat/completions", CHAT)[0] == 503
    fake.always_status = 429
    assert request(server.port, "POST", "/v1/chat/completions", CHAT)[0] == 429
    fake.api_key = {"sk-a", "sk-b"}
    assert request(server.port, "POST", "/v1/chat/completions", CHAT, key="sk-b")[0] == 429
    fake.reset()
    assert (fake.api_key, fake.always_status, fake.calls, fake.requests) == (KEY, None, [], [])
    assert request(server.port, "POST", "/v1/chat/completions", CHAT)[0] == 200


def test_keys_file_is_read_on_every_request_and_log_has_no_key(tmp_path: Path) -> None:
    keys, log = tmp_path / "keys", tmp_path / "log.jsonl"
    keys.write_text("sk-old\n")
    with FakeModelServer(FakeModel(keys_file=keys, log_file=log, record=False), max_lifetime=60) as server:
        assert request(server.port, "GET", "/v1/models", key="sk-old")[0] == 200
        assert request(server.port, "GET", "/v1/models", key="sk-new")[0] == 401
        keys.write_text("sk-new\n\n")
        assert request(server.port, "GET", "/v1/models", key="sk-new")[0] == 200
        assert request(server.port, "POST", "/v1/chat/completions", CHAT, key="sk-old")[0] == 401
        keys.unlink()
        assert request(server.port, "GET", "/v1/models", key="sk-new")[0] == 401
        assert server.fake.calls == []
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(rec["method"], rec["path"], rec["status"]) for rec in lines] == [
        ("GET", "/v1/models", 200), ("GET", "/v1/models", 401), ("GET", "/v1/models", 200),
        ("POST", "/v1/chat/completions", 401), ("GET", "/v1/models", 401)]
    assert lines[0]["key_sha256"] == hashlib.sha256(b"sk-old").hexdigest()[:16]
    assert "sk-old" not in log.read_text() and "sk-new" not in log.read_text()


def test_hang_never_answers_and_stop_still_returns_at_once() -> None:
    server = FakeModelServer(FakeModel(hang=True)).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.5)
    with pytest.raises(TimeoutError):
        request(server.port, "POST", "/v1/chat/completions", CHAT, conn=conn)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(ConnectionRefusedError):
        request(server.port, "GET", "/v1/models")


def test_cli_as_the_container_runs_it(tmp_path: Path) -> None:
    keys, log = tmp_path / "keys", tmp_path / "log.jsonl"
    keys.write_text("sk-cli\n")
    script = Path(openai_provider.__file__)
    with subprocess.Popen([sys.executable, "-I", str(script), "--port", "0", "--name", "echo", "--keys-file",
                           str(keys), "--log-file", str(log)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:")
            port = int(line.rsplit(":", 1)[1])
            chat = {"messages": [{"role": "user", "content": "after rotation"}]}
            status, body = reply(port, "POST", "/v1/chat/completions", chat, key="sk-cli")
            assert status == 200
            assert json.loads(body)["choices"][0]["message"]["content"] == "echo: after rotation [n=1]"
        finally:
            proc.terminate()
            proc.wait(10)
    assert json.loads(log.read_text())["key_sha256"] == hashlib.sha256(b"sk-cli").hexdigest()[:16]
