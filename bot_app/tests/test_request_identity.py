"""Who sent a request and under which trace id: ``server.forwarded_allow_ips`` (uvicorn's proxy
headers, checked through the access log of a real ``clawbot-app serve``, with one worker and
with several), and the bounds on a client-chosen ``X-Request-ID`` / ``traceparent``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from clawbot_app.config import Settings
from clawbot_app.middleware import trace_id_from
from tests.serve_support import Proc, clean_env
from tests.support import free_port, running_app, settings_dict

GENERATED = re.compile(r"[0-9a-f]{32}")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _access_client(tmp_path: Path, procs: list[Proc], forwarded_for: str,
                   **server: Any) -> str:
    """``client.address`` in the access log line of one ``GET /health`` sent from 127.0.0.1
    with ``X-Forwarded-For: forwarded_for``."""
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"server": {"port": port, **server},
                                   "storage": {"data_dir": str(tmp_path / "data")},
                                   "logging": {"level": "INFO"}}))
    proc = Proc(["serve", "--config", str(cfg)], clean_env(tmp_path), port,
                tmp_path / "serve.log")
    procs.append(proc)
    r = httpx.get(f"{proc.url}/health", headers={"X-Forwarded-For": forwarded_for})
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the access log is flushed every 100 ms
        lines = [json.loads(line) for line in proc.log.read_text().splitlines()
                 if '"clawbot_app.access"' in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert proc.stop() == 0
    [line] = lines
    assert line["url.path"] == "/health"
    return str(line["client.address"])


@pytest.mark.parametrize(("server", "forwarded_for", "client"), [
    ({}, "203.0.113.7", "203.0.113.7"),  # default: the proxy on 127.0.0.1 / ::1 is believed
    ({"forwarded_allow_ips": ["192.0.2.1"]}, "203.0.113.7", "127.0.0.1"),
    # Workers get the list too (127.0.0.5 is trusted only through it), and a CIDR network: the
    # first address from the right that is not a trusted proxy is the client.
    ({"forwarded_allow_ips": ["127.0.0.0/8"], "workers": 2}, "198.51.100.9, 127.0.0.5",
     "198.51.100.9"),
], ids=["default", "other-proxy", "cidr-workers"])
def test_forwarded_for_only_from_trusted_proxies(tmp_path: Path, procs: list[Proc],
                                                 server: dict[str, Any], forwarded_for: str,
                                                 client: str) -> None:
    assert _access_client(tmp_path, procs, forwarded_for, **server) == client


@pytest.mark.parametrize(("traceparent", "request_id", "expected"), [
    (None, b"req-42", "req-42"),
    (None, b"A.b_c-9", "A.b_c-9"),
    (None, b"x" * 64, "x" * 64),
    (TRACEPARENT.encode(), b"req-42", "4bf92f3577b34da6a3ce929d0e0e4736"),
    (TRACEPARENT.encode() + b"-future", None, "4bf92f3577b34da6a3ce929d0e0e4736"),
    (TRACEPARENT.upper().encode(), b"req-42", "req-42"),  # the trace context is lowercase hex
    (b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01", b"req-42", "req-42"),  # all-zero: invalid
    (b"00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01", None, None),
    (b"garbage", None, None),
    (None, b"x" * 65, None),  # too long
    (None, b"", None),
    (None, b"a b", None),
    (None, b'a"b', None),
    (None, b"a/b", None),
    (None, b"<script>", None),
    (None, "é".encode("latin-1"), None),
    (None, "é".encode(), None),
])
def test_trace_id_from_headers(traceparent: bytes | None, request_id: bytes | None,
                               expected: str | None) -> None:
    trace_id = trace_id_from(traceparent, request_id)
    if expected is None:
        assert GENERATED.fullmatch(trace_id), trace_id
    else:
        assert trace_id == expected


async def test_trace_id_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_app(Settings.model_validate(
            settings_dict(tmp_path, logging={"level": "INFO"}))) as h:
        ok = await h.client.get("/health", headers={"X-Request-ID": "lb-7f3a.1"})
        bad = await h.client.get("/health", headers={"X-Request-ID": b"x\xff" + b"y" * 200})
        both = await h.client.get("/health", headers=[("X-Request-ID", "<x>"),
                                                      ("X-Request-ID", "second-ok")])
        traced = await h.client.get("/health", headers={"traceparent": TRACEPARENT,
                                                        "X-Request-ID": "lb-7f3a.1"})
    assert ok.headers["x-trace-id"] == "lb-7f3a.1"
    assert GENERATED.fullmatch(bad.headers["x-trace-id"])
    assert GENERATED.fullmatch(both.headers["x-trace-id"])  # the first X-Request-ID counts
    assert traced.headers["x-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    access = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if '"clawbot_app.access"' in line]
    assert [a["trace.id"] for a in access] == [r.headers["x-trace-id"]
                                               for r in (ok, bad, both, traced)]
    assert {a["client.address"] for a in access} == {"127.0.0.1"}  # httpx's ASGI client
