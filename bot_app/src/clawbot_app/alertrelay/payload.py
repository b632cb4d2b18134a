"""Alertmanager's webhook notification (``"version": "4"``), as the relay accepts it.

One notification is one alert group: ``receiver``, ``status``, ``alerts`` (each ``status``,
``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``),
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``, ``truncatedAlerts``
(Alertmanager docs, "webhook_config"). Types are strict (a number is no label value); unknown
keys are ignored, so a newer Alertmanager that adds fields still gets through.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clawbot_app.jsonbody import JsonBodyError, loads_object

Status = Literal["firing", "resolved"]
MAX_ALERTS = 10000
_FRACTION = re.compile(r"(\.\d{6})\d+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Alert(_Model):  # field names are Alertmanager's (camelCase)
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class Notification(_Model):
    version: Literal["4"] = "4"
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Status
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1, max_length=MAX_ALERTS)

    def counts(self) -> tuple[int, int]:
        """``(firing, resolved)`` among the alerts sent (not counting ``truncatedAlerts``)."""
        firing = sum(1 for a in self.alerts if a.status == "firing")
        return firing, len(self.alerts) - firing


class PayloadError(ValueError):
    """The body is not an Alertmanager notification; ``str(exc)`` is safe to answer with.
    ``kind``: ``json`` (not a JSON object this service reads) or ``shape`` (JSON, but not a
    notification)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def parse_notification(raw: bytes) -> Notification:
    try:
        data = loads_object(raw)
    except JsonBodyError as exc:
        raise PayloadError(str(exc), "json") from None
    try:
        return Notification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PayloadError(f"{where}: {first['msg']}{more}", "shape") from None


def parse_time(value: str) -> dt.datetime | None:
    """An RFC 3339 time as Alertmanager writes it (Go: nanoseconds, ``Z``); None when empty,
    unparsable or Go's zero time (``0001-01-01T00:00:00Z``, the ``endsAt`` of a firing alert)."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None
    if parsed.year <= 1:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
