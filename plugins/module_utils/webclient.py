# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP for clawbot.stack modules: JSON requests with timeouts, retries and redacted URLs.

Built on ``ansible.module_utils.urls.open_url`` so proxies, ``validate_certs`` and ``ca_path``
behave like every other Ansible module. HTTP error statuses are results, not exceptions: the
DingTalk/Feishu APIs answer bad credentials with 400 and a JSON body the caller wants to read.
Only transport failures (DNS, refused, TLS, timeout) raise :class:`HttpFailure`.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.urls import open_url

RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
MAX_BODY_BYTES = 1024 * 1024


class HttpFailure(Exception):
    """The request never got an HTTP answer. The message never contains the query string."""

    def __init__(self, message, url, reason="transport"):
        super().__init__(message)
        self.message = message
        self.url = url
        self.reason = reason


class HttpResult:
    def __init__(self, status, headers, body, url):
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url

    def json(self):
        """The body as JSON, or None when it is not a JSON document."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")


def redact_url(url):
    """``url`` without its query and credentials: tokens and secrets travel in both."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def _classify(exc):
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError) or isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate", getattr(reason, "verify_message", None) or str(reason)
    if isinstance(reason, ssl.SSLError):
        return "tls", str(reason)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timeout", "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(reason, socket.gaierror):
        return "dns", "name does not resolve"
    text = str(reason)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "certificate", text
    return "transport", text


def request(method, url, json_body=None, data=None, headers=None, timeout=10.0, retries=2,
            backoff=0.5, validate_certs=True, ca_path=None, retry_statuses=RETRY_STATUSES,
            sleep=None):
    """Send one request, retrying transport failures and ``retry_statuses`` with backoff.

    Returns :class:`HttpResult` for any HTTP answer (2xx-5xx); raises :class:`HttpFailure`
    when no answer came after ``retries`` extra attempts. A certificate failure is not retried.
    ``sleep`` (default ``time.sleep``, looked up at call time) waits between attempts.
    """
    sleep = sleep or time.sleep
    send_headers = {"Accept": "application/json"}
    if headers:
        send_headers.update(headers)
    payload = data
    if json_body is not None:
        payload = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
        send_headers.setdefault("Content-Type", "application/json; charset=utf-8")
    safe_url = redact_url(url)
    attempt = 0
    while True:
        try:
            resp = open_url(url, data=payload, headers=send_headers, method=method, timeout=timeout,
                            validate_certs=validate_certs, ca_path=ca_path, follow_redirects="none",
                            http_agent="clawbot.stack", use_proxy=True)
            result = HttpResult(resp.getcode(), dict(resp.headers), resp.read(MAX_BODY_BYTES), safe_url)
        except HTTPError as exc:
            body = exc.read(MAX_BODY_BYTES) if exc.fp is not None else b""
            result = HttpResult(exc.code, dict(exc.headers or {}), body, safe_url)
        except (URLError, OSError, ssl.SSLError) as exc:
            reason, detail = _classify(exc)
            if reason == "certificate" or attempt >= retries:
                raise HttpFailure(f"{method} {safe_url} failed ({reason}): {detail}",
                                  safe_url, reason) from None
            attempt += 1
            sleep(backoff * (2 ** (attempt - 1)))
            continue
        if result.status in retry_statuses and attempt < retries:
            attempt += 1
            sleep(backoff * (2 ** (attempt - 1)))
            continue
        return result
