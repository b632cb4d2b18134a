"""The relay's own Prometheus metrics (one registry per relay instance)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from clawbot_app.alertrelay.config import Receiver

_SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OUTCOMES = ("sent", "failed")


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.notifications = Counter(
            "clawbot_alert_relay_notifications_total",
            "Alertmanager notifications by how their delivery to the robot ended",
            ["receiver", "platform", "outcome"], registry=r)
        self.attempts = Counter(
            "clawbot_alert_relay_attempts_total",
            "Send attempts to a robot (result: sent, rate_limited, server_error, rejected, "
            "network_error, timeout)", ["receiver", "platform", "result"], registry=r)
        self.send_duration = Histogram(
            "clawbot_alert_relay_send_duration_seconds", "Duration of one send attempt",
            ["platform"], buckets=_SEND_BUCKETS, registry=r)
        self.requests = Counter(
            "clawbot_alert_relay_requests_total", "Incoming HTTP requests by answer status",
            ["status"], registry=r)
        self.reloads = Counter(
            "clawbot_alert_relay_config_reloads_total", "SIGHUP reloads (outcome: ok, rejected)",
            ["outcome"], registry=r)

    def declare(self, receivers: Iterable[Receiver]) -> None:
        """Start every receiver's sent/failed series at 0, so rate() and alerts see them."""
        for receiver in receivers:
            for outcome in OUTCOMES:
                self.notifications.labels(receiver.name, receiver.platform, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
