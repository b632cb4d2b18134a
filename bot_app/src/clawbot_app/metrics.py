"""Prometheus metrics, one registry per service instance."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.http_latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.model_calls = Counter(
            "model_calls_total", "Model provider calls", ["provider", "outcome"], registry=r)
        self.model_latency = Histogram(
            "model_call_duration_seconds", "Model provider call latency", ["provider"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.callback_verification_failures = Counter(
            "callback_verification_failures_total", "IM callback signature/token failures",
            ["platform"], registry=r)
        self.active_sessions = Gauge(
            "active_sessions", "Dialog sessions active within the session TTL", registry=r)
        self.conversation_spooled = Counter(
            "conversation_log_spooled_total", "Conversation rows spooled to disk", registry=r)
        self.conversation_replayed = Counter(
            "conversation_log_replayed_total", "Spooled rows replayed into the DB", registry=r)
        self.conversation_dead_letter = Counter(
            "clawbot_conversation_dead_letter_total", "Conversation rows the DB rejected, moved to "
            "<data_dir>/spool/dead-letter.jsonl (never replayed automatically)", registry=r)
        self.conversation_journal_errors = Counter(
            "clawbot_conversation_journal_errors_total",
            "Journal writes that failed (those rows are not crash safe)", registry=r)
        self.rate_limited = Counter(
            "rate_limited_total", "Requests rejected by the tenant rate limit", registry=r)
        self.keyring_current = Gauge(
            "clawbot_keyring_current_info", "Current key id of each loaded keyring file (1)",
            ["keyring", "key_id"], registry=r)
        self._keyring_labels: set[tuple[str, str]] = set()

    def set_keyring_current(self, current: Mapping[str, str]) -> None:
        """Publish ``{keyring label: current key id}``; label sets no longer current go away.

        Called when keyrings are loaded (start, SIGHUP), so scrapes stay cheap.
        """
        labels = set(current.items())
        for keyring, key_id in self._keyring_labels - labels:
            self.keyring_current.remove(keyring, key_id)
        for keyring, key_id in labels:
            self.keyring_current.labels(keyring=keyring, key_id=key_id).set(1)
        self._keyring_labels = labels

    def render(self) -> bytes:
        return generate_latest(self.registry)
