"""``GET /openapi.json`` and schemathesis against the real ``clawbot-app serve`` process.

One server (uvloop + httptools, embedded SQLite, a fake model) serves the whole module. The
schema is loaded from its live ``/openapi.json`` and every operation is fuzzed, with and
without a valid token, under a fixed seed: no 5xx, every answer as documented (status, content
type, headers, body schema).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from fakes.openai_provider import FakeModel, FakeModelServer
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clawbot_app.schemas import ChatRequest
from tests.serve_support import Proc, clean_env, create_token
from tests.support import free_port

MAX_CHARS = 300
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
OPERATIONS = ["GET /health", "HEAD /health", "GET /ready", "HEAD /ready", "GET /metrics",
              "POST /api/v1/chat"]
# A deeper local run: CLAWBOT_TEST_FUZZ_EXAMPLES=2000 (and a new seed: ..._FUZZ_RANDOM=1).
FUZZ = settings(max_examples=int(os.environ.get("CLAWBOT_TEST_FUZZ_EXAMPLES", "60")),
                derandomize=not os.environ.get("CLAWBOT_TEST_FUZZ_RANDOM"),
                database=None, deadline=None, suppress_health_check=list(HealthCheck))


@dataclass
class Live:
    url: str
    token: str
    log: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("openapi")
    model = FakeModelServer(FakeModel(name="fuzz", model="m-fuzz", api_key="sk-fuzz",
                                      record=False)).start()
    port = free_port()
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "server": {"port": port, "graceful_timeout_seconds": 5},
        "storage": {"data_dir": str(tmp / "data")},
        "logging": {"level": "WARNING", "access_log": False},
        "rate_limit": {"per_tenant_per_minute": 0},
        "limits": {"max_message_chars": MAX_CHARS, "max_body_bytes": 4096},
        "models": {"default": "fuzz", "providers": {"fuzz": {
            "base_url": model.base_url, "api_key": "sk-fuzz", "model": "m-fuzz",
            "timeout_seconds": 5, "max_retries": 0}}},
    }))
    env = clean_env(tmp)
    token = create_token(cfg, env, user="fuzzer")
    log = tmp / "serve.log"
    proc = Proc(["serve", "--config", str(cfg)], env, port, log)
    try:
        yield Live(proc.url, token, log)
    finally:
        proc.stop()
        model.stop()
    # Anything the server logged at ERROR (an unhandled exception is logged, then answered 500).
    lines = log.read_text().splitlines()
    errors = [line for line in lines if "Traceback" in line or (
        line.startswith("{") and json.loads(line).get("log.level") in ("error", "critical"))]
    assert not errors, "\n".join(errors[:20])


@pytest.fixture(scope="module")
def api_schema(live: Live) -> schemathesis.BaseSchema:
    """The schema as the live server publishes it (and validated as OpenAPI 3.1)."""
    loaded = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    loaded.validate()
    return loaded


# -- the document --------------------------------------------------------------------------

def test_document_is_generated_from_the_models(live: Live) -> None:
    r = httpx.get(f"{live.url}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/health", "/ready", "/metrics", "/openapi.json",
                                 "/api/v1/chat"}
    chat = doc["paths"]["/api/v1/chat"]["post"]
    assert chat["security"] == [{"bearerAuth": []}]
    bearer = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert set(chat["responses"]) == {"200", "400", "401", "413", "422", "429", "502", "503",
                                      "504"}
    assert set(chat["responses"]["200"]["content"]) == {"application/json",
                                                        "text/event-stream"}
    # The request schema is the model's own, plus the running server's message limit.
    expected = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    expected["properties"]["message"]["maxLength"] = MAX_CHARS
    assert doc["components"]["schemas"]["ChatRequest"] == expected
    for name in ("ChatResponse", "ErrorResponse", "ErrorDetail", "HealthResponse",
                 "ReadyResponse", "CheckResult", "StreamEvent"):
        assert name in doc["components"]["schemas"]
    assert doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}}


def test_document_is_valid_openapi_3_1(live: Live) -> None:
    """Valid against the OpenAPI 3.1 meta-schema (schemathesis checks it); the fuzzing below
    covers every operation but ``GET /openapi.json``, which a schema loaded from that URL
    leaves out."""
    loaded = schemathesis.openapi.from_dict(httpx.get(f"{live.url}/openapi.json").json())
    loaded.validate()
    labels = {op.ok().label for op in loaded.get_all_operations()}
    assert labels == {"GET /health", "HEAD /health", "GET /ready", "HEAD /ready",
                      "GET /metrics", "GET /openapi.json", "POST /api/v1/chat"}


# -- fuzzing -------------------------------------------------------------------------------
# schemathesis' pytest integration (`schemathesis.pytest.from_fixture`) does not run under
# pytest 9.2 (it reads `Node._nodeid`), so each operation is driven by its documented
# `APIOperation.as_strategy()` under `@given`: the same cases, the same checks.

def _fuzz(schema: schemathesis.BaseSchema, label: str, mode: GenerationMode,
          send: Callable[[schemathesis.Case], None]) -> int:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    count = 0

    @FUZZ
    @given(case=operation.as_strategy(mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal count
        count += 1
        send(case)

    run()
    return count


@pytest.mark.parametrize(("label", "mode"), [
    *((label, GenerationMode.POSITIVE) for label in OPERATIONS),
    ("POST /api/v1/chat", GenerationMode.NEGATIVE),
])
def test_fuzz_authenticated(api_schema: schemathesis.BaseSchema, live: Live, label: str,
                            mode: GenerationMode) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}

    def send(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=auth, checks=[*CHECKS, ignored_auth], timeout=10)

    examples = _fuzz(api_schema, label, mode, send)
    assert examples >= (FUZZ.max_examples if label.startswith("POST") else 1)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_unauthenticated_chat_learns_nothing_but_401(
        api_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    """Without a valid token (none, a generated one, a broken header) every JSON object gets
    401: no field is looked at. Only a body that is not a JSON object, or too large, is
    refused before the token (400, 413)."""

    def send(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CHECKS, timeout=10)
        if isinstance(case.body, dict) and response.status_code != 413:
            assert response.status_code == 401, (case.headers, case.body, response.text)
        else:
            assert response.status_code in (400, 401, 413), (case.body, response.text)

    assert _fuzz(api_schema, "POST /api/v1/chat", mode, send) >= FUZZ.max_examples


# -- regressions and what uvicorn answers itself -------------------------------------------

@pytest.mark.parametrize(("body", "field", "text"), [
    ({"message": "hi", "session_id": "abc\n"}, "session_id", "1-128 characters"),
    ({"message": "hi", "user_id": 7}, "user_id", "1-128 characters"),
    ({"message": "hi", "stream": "true"}, "stream", "'stream' must be a boolean"),
    ({"message": "hi", "stream": 1}, "stream", "'stream' must be a boolean"),
    ({"message": "hi", "token": 5}, "token", "'token' must be a string"),
    ({"message": 5, "session_id": "bad id"}, "message", "'message' must be a string"),
    ({"message": None}, "message", "'message' must be a string"),
    ({"message": ""}, "message", "'message' must not be empty"),
    ({"message": " \t\n"}, "message", "'message' must not be empty"),
    ({"message": "x" * (MAX_CHARS + 1)}, "message", f"longer than {MAX_CHARS} characters"),
])
def test_field_errors_name_the_field(live: Live, body: dict[str, object], field: str,
                                     text: str) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}
    r = httpx.post(f"{live.url}/api/v1/chat", json=body, headers=auth)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and field in err["message"]
    assert text in err["message"]
    # Without a token the same body learns nothing but 401.
    r = httpx.post(f"{live.url}/api/v1/chat", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_unknown_fields_are_ignored(live: Live) -> None:
    auth = {"Authorization": f"Bearer {live.token}"}
    r = httpx.post(f"{live.url}/api/v1/chat", headers=auth,
                   json={"message": "hi", "extra": {"nested": [1, None]}, "Message": 5})
    assert r.status_code == 200 and r.json()["reply"] == "fuzz: hi [n=1]"


def _raw(live: Live, data: bytes, close_write: bool = False) -> bytes:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), 5) as s:
        s.sendall(data)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _count(live: Live, status: int) -> float:
    text = httpx.get(f"{live.url}/metrics").text
    key = f'http_requests_total{{method="POST",route="/api/v1/chat",status="{status}"}} '
    line = next((x for x in text.splitlines() if x.startswith(key)), None)
    return float(line.split()[-1]) if line else 0.0


def test_client_gone_before_the_body_is_499_not_500(live: Live) -> None:
    """Regression: a client that closed the connection mid-body (or sent a chunked body the
    parser rejects after the headers) made `request.body()` raise ClientDisconnect, which was
    a 500 with two ERROR stack traces in the log. Now it is 499 in the access log and
    metrics, and nothing at ERROR (the fixture checks the log)."""
    before = _count(live, 499)
    head = (b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + live.token.encode())
    assert _raw(live, head + b"\r\nContent-Length: 100\r\n\r\n{\"message\":",
                close_write=True) == b""
    bad_chunk = _raw(live, head + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert bad_chunk.startswith(b"HTTP/1.1 400 "), bad_chunk[:200]
    deadline = time.monotonic() + 5
    while _count(live, 499) < before + 2:
        assert time.monotonic() < deadline, httpx.get(f"{live.url}/metrics").text
        time.sleep(0.05)
    assert _count(live, 500) == 0


def test_malformed_http_is_uvicorns_plain_400(live: Live) -> None:
    """A request httptools cannot parse never reaches the app: uvicorn answers a plain-text
    400 itself, without X-Trace-Id (documented in the README)."""
    for request in (b"GARBAGE\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nX-Request-ID: a\x01b\r\n\r\n",
                    b"POST /api/v1/chat HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        answer = _raw(live, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"content-type: text/plain" in head.lower()
        assert b"x-trace-id" not in head.lower()
        assert body == b"Invalid HTTP request received."


def test_uvicorn_sets_no_header_size_limit(live: Live) -> None:
    """uvicorn with httptools has no header size limit (there is no 431): a 256 KB header is
    read like any other. The README says to set the limit in the reverse proxy."""
    r = httpx.get(f"{live.url}/health", headers={"X-Big": "a" * 256 * 1024})
    assert r.status_code == 200
