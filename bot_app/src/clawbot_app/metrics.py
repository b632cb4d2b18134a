"""Prometheus metrics, one registry per service instance."""

from __future__ import annotations

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
        self.rate_limited = Counter(
            "rate_limited_total", "Requests rejected by the tenant rate limit", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
