"""Shared helpers of the site scenario's tests (run inside the container through docker exec)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from playbook_runner import run_playbook  # re-exported to the test modules

__all__ = ["run_playbook"]

CONFIG = "/etc/clawbot/config.yaml"


@pytest.fixture(scope="module")
def api_token(host) -> str:
    """A token made the way an operator makes one (`clawbot-app token create`, printed once)."""
    out = host.check_output(
        f"clawbot-app token create --user verify --tenant verify --days 1 --config {CONFIG} 2>/dev/null")
    token = out.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Za-z0-9_.~-]{20,}", token), "clawbot-app token create printed no token"
    return token


def https_chat(host, token: str, body: dict, *, url: str = "https://localhost/api/v1/chat",
               headers: tuple[str, ...] = ()) -> tuple[int, dict, str]:
    """POST a chat through nginx; returns (status, JSON body, response headers)."""
    args = []
    for h in (f"Authorization: Bearer {token}", "Content-Type: application/json", *headers):
        args += ["-H", h]
    cmd = ("curl -sk -o /tmp/verify-chat.json -D /tmp/verify-chat.headers -w '%%{http_code}' --max-time 20"
           + " %s" * len(args) + " --data %s %s")
    status = int(host.check_output(cmd, *args, json.dumps(body), url))
    payload = host.file("/tmp/verify-chat.json").content_string
    headers_text = host.file("/tmp/verify-chat.headers").content_string
    return status, (json.loads(payload) if payload.strip() else {}), headers_text
