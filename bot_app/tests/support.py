"""Shared helpers: free ports, settings builders, an in-process app harness."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from clawbot_app.app import create_app
from clawbot_app.config import Settings
from clawbot_app.db.tokens import create_token
from clawbot_app.services import Services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def settings_dict(data_dir: Path, primary_url: str | None = None,
                  backup_url: str | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "storage": {"data_dir": str(data_dir), "replay_interval_seconds": 0.2},
        "logging": {"level": "WARNING"},
        "auth": {"cache_ttl_seconds": 0},
    }
    if primary_url:
        providers: dict[str, Any] = {
            "primary": {"base_url": primary_url, "api_key": "sk-primary", "model": "m-primary",
                        "timeout_seconds": 2, "max_retries": 1},
        }
        if backup_url:
            providers["backup"] = {"base_url": backup_url, "api_key": "sk-backup",
                                   "model": "m-backup", "timeout_seconds": 2,
                                   "max_retries": 0}
        d["models"] = {"default": "primary", "providers": providers}
    return deep_merge(d, extra)


@dataclass
class Harness:
    app: Any
    services: Services
    client: httpx.AsyncClient

    async def token(self, user: str = "alice", tenant: str = "acme",
                    days: float | None = 1) -> str:
        tok, _ = await create_token(self.services.db.engine, user, tenant, days)
        return tok

    async def chat(self, token: str | None, path: str = "/api/v1/chat",
                   **body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post(path, json=body, headers=headers)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings, install_sighup=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot.test",
                                     timeout=30) as client:
            yield Harness(app=app, services=app.state.services, client=client)


def write_keyring(path: Path, current: str, keys: dict[str, str],
                  source: str = "generated") -> Path:
    """A version 1 keyring file as the ``key_rotate`` module writes it (urlsafe tokens, or
    ``source="external"`` secrets such as a model API key)."""
    generated = source == "generated"
    meta = {kid: {"created": "2026-01-01T00:00:00Z",
                  "retired": None if kid == current else "2026-02-01T00:00:00Z",
                  "source": source, "format": "urlsafe" if generated else "external",
                  "length": 32 if generated else None} for kid in keys}
    path.write_text(json.dumps({"version": 1, "current": current, "keys": keys, "meta": meta}))
    return path


def keyring_series(metrics_text: str) -> set[tuple[str, str]]:
    """``{(keyring, key_id)}`` of the ``clawbot_keyring_current_info`` samples that are 1."""
    return {(s.labels["keyring"], s.labels["key_id"])
            for family in text_string_to_metric_families(metrics_text)
            if family.name == "clawbot_keyring_current_info"
            for s in family.samples if s.value == 1.0}
