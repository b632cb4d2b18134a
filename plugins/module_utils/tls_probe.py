# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Look at the certificate a TLS server presents: is it trusted, for this name, and for how long.

:func:`probe` makes a verifying handshake (system trust store, or only ``ca_path`` when given, as
``ansible.module_utils.urls`` does). When verification fails it says why (expired, hostname mismatch,
self-signed, unknown CA, ...) and reads the certificate again without verification, so the caller
still learns the expiry date. Connection failures (refused, timeout, DNS) come back classified, never
as exceptions. Parsing the certificate needs the ``cryptography`` package.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import traceback

try:
    from cryptography import x509
    from cryptography.hazmat.backends import default_backend
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

# OpenSSL X509_V_ERR_* codes (see openssl/x509_vfy.h) and what they mean for a callback URL.
_VERIFY_REASONS = {
    2: "unknown_ca",  # unable to get issuer certificate
    9: "not_yet_valid",
    10: "expired",
    18: "self_signed",  # depth zero self-signed certificate
    19: "unknown_ca",  # self-signed certificate in chain (a root nobody trusts)
    20: "unknown_ca",  # unable to get local issuer certificate
    21: "unknown_ca",  # unable to verify the first certificate
    62: "hostname_mismatch",
    64: "hostname_mismatch",  # IP address mismatch
}

REASON_TEXT = {
    "expired": "certificate has expired",
    "not_yet_valid": "certificate is not yet valid",
    "hostname_mismatch": "certificate is not valid for this host name",
    "self_signed": "certificate is self-signed",
    "unknown_ca": "certificate is not signed by a trusted CA",
    "untrusted": "certificate verification failed",
    "refused": "connection refused",
    "timeout": "timed out",
    "dns": "host name does not resolve",
    "tls": "TLS handshake failed",
    "transport": "connection failed",
}


class TlsProbeResult:
    """Outcome of :func:`probe`.

    ``verified`` is True when chain and host name verified; ``reason`` (a key of :data:`REASON_TEXT`)
    says why not. ``not_after``/``days_left``/``issuer``/``subject`` are set whenever a certificate was
    read, verified or not.
    """

    def __init__(self, verified=False, reason=None, detail=None, certificate=None, now=None):
        self.verified = verified
        self.reason = reason
        self.detail = detail
        self.not_after = None
        self.days_left = None
        self.issuer = None
        self.subject = None
        if certificate is not None:
            self._read(certificate, now or datetime.datetime.now(datetime.timezone.utc))  # noqa: UP017 - Python 3.8 targets

    def _read(self, cert, now):
        not_after = _not_valid_after(cert)
        self.not_after = not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.days_left = int((not_after - now).total_seconds() // 86400)
        self.issuer = cert.issuer.rfc4514_string()
        self.subject = cert.subject.rfc4514_string()

    @property
    def has_certificate(self):
        return self.not_after is not None

    @property
    def message(self):
        if self.reason is None:
            return "certificate verified"
        text = REASON_TEXT.get(self.reason, self.reason)
        return f"{text}: {self.detail}" if self.detail else text


def _not_valid_after(cert):
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:  # cryptography < 42 returns a naive UTC datetime
        value = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017 - Python 3.8
    return value


def verify_reason(exc):
    """Classify an ``ssl.SSLCertVerificationError``."""
    return _VERIFY_REASONS.get(getattr(exc, "verify_code", None), "untrusted")


def _connection_reason(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout", None
    if isinstance(exc, ConnectionRefusedError):
        return "refused", None
    if isinstance(exc, socket.gaierror):
        return "dns", None
    if isinstance(exc, ssl.SSLError):
        return "tls", getattr(exc, "reason", None) or str(exc)
    return "transport", str(exc)


def _context(verify, ca_path):
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_path)


def _peer_certificate_der(host, port, timeout, context):
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        return tls.getpeercert(binary_form=True)


def _load_certificate(der):
    """The parsed certificate, or None when the server sent none or one we cannot parse."""
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der, default_backend())
    except ValueError:
        return None


def probe(host, port=443, timeout=10.0, ca_path=None, now=None):
    """Handshake with ``host:port`` and report on its certificate (see :class:`TlsProbeResult`)."""
    try:
        der = _peer_certificate_der(host, port, timeout, _context(True, ca_path))
        return TlsProbeResult(verified=True, certificate=_load_certificate(der), now=now)
    except ssl.SSLCertVerificationError as exc:
        reason = verify_reason(exc)
        detail = getattr(exc, "verify_message", None)
    except (OSError, ssl.SSLError) as exc:
        reason, detail = _connection_reason(exc)
        return TlsProbeResult(reason=reason, detail=detail)
    try:
        der = _peer_certificate_der(host, port, timeout, _context(False, None))
    except (OSError, ssl.SSLError):
        return TlsProbeResult(reason=reason, detail=detail)
    return TlsProbeResult(reason=reason, detail=detail, certificate=_load_certificate(der), now=now)
