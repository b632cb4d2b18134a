"""Deliver one rendered message to one robot: bounded retries with exponential backoff.

Retried: network errors, timeouts, HTTP 5xx, rate limits and "system busy" answers. Not
retried: permanent rejections (bad token or key, bad signature, keyword missing, bad body),
which another attempt cannot fix; Alertmanager retries the whole notification later anyway,
because the relay answers it 502. Every attempt is counted and timed; logs name the receiver,
never its URL, token, secret or sign.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from clawbot_app.alertrelay.config import Receiver, Retry
from clawbot_app.alertrelay.metrics import RelayMetrics
from clawbot_app.alertrelay.platforms import PLATFORMS, Answer
from clawbot_app.alertrelay.render import Rendered
from clawbot_app.httpclient import HttpClient, ResponseTooLarge

log = logging.getLogger("clawbot_app.alertrelay")

Sleep = Callable[[float], Awaitable[None]]


class Delivery:
    def __init__(self, http: HttpClient, metrics: RelayMetrics, *,
                 sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.monotonic):
        self.http = http
        self.metrics = metrics
        self._sleep = sleep
        self._clock = clock

    async def _attempt(self, receiver: Receiver, message: Rendered, timeout: float) -> Answer:
        send = PLATFORMS[receiver.platform].send
        try:
            async with asyncio.timeout(timeout):
                return await send(self.http, receiver, message)
        except TimeoutError:
            return Answer("timeout", True, detail=f"no answer within {timeout:g} s")
        except (aiohttp.ClientError, ResponseTooLarge, OSError) as exc:
            # The exception's text can hold the URL (and so the token): log only its type.
            return Answer("network_error", True, detail=type(exc).__name__)

    async def deliver(self, receiver: Receiver, message: Rendered, retry: Retry) -> Answer:
        """Send until sent, a permanent rejection, ``retry.attempts`` or the deadline."""
        platform = receiver.platform
        deadline = self._clock() + retry.deadline_seconds
        answer = Answer("timeout", False, detail="deadline reached before the first attempt")
        for attempt in range(1, retry.attempts + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            started = self._clock()
            answer = await self._attempt(receiver, message, min(retry.timeout_seconds, remaining))
            self.metrics.send_duration.labels(platform).observe(self._clock() - started)
            self.metrics.attempts.labels(receiver.name, platform, answer.result).inc()
            if answer.ok or not answer.retryable:
                break
            delay = retry.delay(attempt)
            last = attempt == retry.attempts or self._clock() + delay >= deadline
            log.warning("send attempt failed%s", "" if last else ", retrying", extra={"ecs": {
                **log_fields(receiver, answer), "clawbot.alert_relay.attempt": attempt,
                "clawbot.alert_relay.retry_in_seconds": None if last else delay}})
            if last:
                break
            await self._sleep(delay)
        outcome = "sent" if answer.ok else "failed"
        self.metrics.notifications.labels(receiver.name, platform, outcome).inc()
        return answer


def log_fields(receiver: Receiver, answer: Answer) -> dict[str, object]:
    return {"clawbot.alert_relay.receiver": receiver.name,
            "clawbot.alert_relay.platform": receiver.platform,
            "clawbot.alert_relay.result": answer.result,
            "http.response.status_code": answer.status,
            "error.code": answer.code, "error.message": answer.detail or None}
