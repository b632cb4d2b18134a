"""Alert relay test support: an Alertmanager payload, relay config files, the relay in process."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from clawbot_app.alertrelay.app import RelayState, create_app
from clawbot_app.alertrelay.config import LoadedConfig, load_relay_config

TOKEN = "relay-bearer-token-0123456789"
DT_TOKEN = "dt-robot-access-token-abcdef"
DT_SECRET = "SECdt-robot-secret-0123456789"
FS_TOKEN = "fs-hook-token-abcdef"
FS_SECRET = "fs-hook-secret-0123456789"
WC_KEY = "wc-robot-key-abcdef"
SECRETS = (TOKEN, DT_TOKEN, DT_SECRET, FS_TOKEN, FS_SECRET, WC_KEY)

# What Alertmanager 0.25 posts (webhook_config, "version": "4"), two alerts of one group.
NOTIFICATION: dict[str, Any] = {
    "receiver": "ops",
    "status": "firing",
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "HighCpuUsage", "severity": "critical", "team": "clawbot",
                    "host": "web1", "instance": "10.0.0.11:9100", "job": "node"},
         "annotations": {"summary": "CPU above 85% for 5 minutes",
                         "description": "CPU on web1 is 97%"},
         "startsAt": "2024-05-01T10:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prometheus.local:9090/graph?g0.expr=cpu+%3E+0.85",
         "fingerprint": "c1a2b3"},
        {"status": "firing",
         "labels": {"alertname": "HighCpuUsage", "severity": "critical", "team": "clawbot",
                    "host": "web2", "instance": "10.0.0.12:9100", "job": "node"},
         "annotations": {"summary": "CPU above 85% for 5 minutes",
                         "description": "CPU on web2 is 91%"},
         "startsAt": "2024-05-01T10:01:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prometheus.local:9090/graph?g0.expr=cpu+%3E+0.85",
         "fingerprint": "d4e5f6"},
    ],
    "groupLabels": {"alertname": "HighCpuUsage"},
    "commonLabels": {"alertname": "HighCpuUsage", "severity": "critical", "team": "clawbot",
                     "job": "node"},
    "commonAnnotations": {"summary": "CPU above 85% for 5 minutes"},
    "externalURL": "http://alertmanager.local:9093",
    "version": "4",
    "groupKey": "{}:{alertname=\"HighCpuUsage\"}",
    "truncatedAlerts": 0,
}


def notification(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(NOTIFICATION)
    data.update(changes)
    return data


def resolved() -> dict[str, Any]:
    data = notification(status="resolved")
    for alert in data["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2024-05-01T10:20:00Z"
    return data


def receivers(dingtalk: str, feishu: str, wecom: str) -> list[dict[str, Any]]:
    """One receiver per platform at the fakes' base URLs."""
    return [
        {"name": "ops-dingtalk", "platform": "dingtalk", "language": "zh", "secret": DT_SECRET,
         "webhook_url": f"{dingtalk}/robot/send?access_token={DT_TOKEN}"},
        {"name": "ops-feishu", "platform": "feishu", "secret": FS_SECRET,
         "webhook_url": f"{feishu}/open-apis/bot/v2/hook/{FS_TOKEN}"},
        {"name": "ops-wecom", "platform": "wecom",
         "webhook_url": f"{wecom}/cgi-bin/webhook/send?key={WC_KEY}"},
    ]


def write_config(tmp: Path, receivers: list[dict[str, Any]], **extra: Any) -> Path:
    """The relay's YAML (0600) and its token file (0600) in ``tmp``."""
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    path = tmp / "relay.yaml"
    data = {"listen": {"host": "127.0.0.1", "port": 18790}, "auth_token_file": str(token_file),
            "language": "en", "external_url": "https://alertmanager.example/",
            "retry": {"attempts": 3, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.05,
                      "timeout_seconds": 5},
            "receivers": receivers, **extra}
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    path.chmod(0o600)
    return path


class Relay:
    """The relay app in process (lifespan driven by hand) and an ASGI client."""

    def __init__(self, loaded: LoadedConfig):
        self.state = RelayState(loaded)
        self.app = create_app(self.state)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://relay")

    async def post(self, receiver: str, body: Any, *, token: str | None = TOKEN,
                   headers: dict[str, str | bytes] | None = None) -> httpx.Response:
        all_headers: dict[str, str | bytes] = (
            {"Authorization": f"Bearer {token}"} if token is not None else {})
        all_headers.update(headers or {})
        if isinstance(body, bytes):
            return await self.client.post(f"/alerts/{receiver}", content=body,
                                          headers=all_headers)
        return await self.client.post(f"/alerts/{receiver}", json=body, headers=all_headers)

    async def metric(self, name: str, **labels: str) -> float:
        """One sample's value from GET /metrics (0 when the series is absent)."""
        text = (await self.client.get("/metrics")).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series.startswith(name + "{") and _sorted_labels(series) == want:
                return float(value)
            if series == name and not labels:
                return float(value)
        return 0.0


def _sorted_labels(series: str) -> str:
    inner = series[series.index("{") + 1:-1]
    return ",".join(sorted(inner.split(","))) if inner else ""


@contextlib.asynccontextmanager
async def running_relay(config_path: Path) -> AsyncIterator[Relay]:
    relay = Relay(load_relay_config(str(config_path)))
    await relay.state.start()
    try:
        yield relay
    finally:
        await relay.client.aclose()
        await relay.state.stop()
