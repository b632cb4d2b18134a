#!/usr/bin/env python3
"""Stand-in for an OpenAI-compatible model provider, for the key_rotation Molecule scenario.

Speaks the real wire protocol of the two endpoints the stack uses: ``GET /v1/models`` (what
clawbot.stack.key_rotate verifies a new API key with) and ``POST /v1/chat/completions`` (what the
bot calls). Accepted API keys are read from a file on every request, so the scenario can accept
the old and the new key during a rotation. Each request is logged as one JSON line with the
SHA-256 prefix of the key it carried (never the key), for the tests to see which key the bot used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

INVALID_KEY = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                         "param": None, "code": "invalid_api_key"}}


class Handler(BaseHTTPRequestHandler):
    keys_file: Path
    log_file: Path
    protocol_version = "HTTP/1.1"

    def _key(self) -> str:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""

    def _authorised(self, key: str) -> bool:
        accepted = {line.strip() for line in self.keys_file.read_text().splitlines() if line.strip()}
        return bool(key) and key in accepted

    def _send(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        key = self._key()
        record = {"time": time.time(), "method": self.command, "path": self.path, "status": status,
                  "key_sha256": hashlib.sha256(key.encode()).hexdigest()[:16] if key else None}
        with self.log_file.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        elif not self._authorised(self._key()):
            self._send(401, INVALID_KEY)
        else:
            self._send(200, {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "clawbot-tests"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        if not self._authorised(self._key()):
            self._send(401, INVALID_KEY)
            return
        body = json.loads(raw or b"{}")
        messages = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        self._send(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"echo: {last}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18800)
    parser.add_argument("--keys-file", type=Path, required=True)
    parser.add_argument("--log-file", type=Path, required=True)
    args = parser.parse_args()
    Handler.keys_file = args.keys_file
    Handler.log_file = args.log_file
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
