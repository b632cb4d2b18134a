"""Unit tests for clawbot.stack's tls_probe against local TLS servers with generated certificates."""

from __future__ import annotations

import datetime
import ssl

import pytest
from ansible_collections.clawbot.stack.plugins.module_utils import tls_probe
from ansible_collections.clawbot.stack.tests.fakes.httpd import FakeServer, SilentTlsPort, closed_port, json_response
from ansible_collections.clawbot.stack.tests.fakes.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def serve(pki: Pki, cert: str) -> FakeServer:
    return FakeServer(lambda request: json_response({}), tls_context=pki.server_context(cert))


def test_valid_certificate_is_verified_with_ca_path(pki: Pki) -> None:
    with serve(pki, "valid") as server:
        result = tls_probe.probe("127.0.0.1", server.port, timeout=3, ca_path=str(pki.ca_bundle))

    assert result.verified is True
    assert result.reason is None
    assert result.message == "certificate verified"
    assert result.has_certificate
    assert result.issuer == "CN=clawbot test CA,O=clawbot tests"
    assert result.subject == "CN=valid.clawbot.test,O=clawbot tests"
    assert 363 <= result.days_left <= 365


def test_localhost_name_matches_too(pki: Pki) -> None:
    with serve(pki, "valid") as server:
        result = tls_probe.probe("localhost", server.port, timeout=3, ca_path=str(pki.ca_bundle))

    assert (result.verified, result.reason) == (True, None)


def test_days_left_and_not_after_use_the_given_clock(pki: Pki) -> None:
    with serve(pki, "valid") as server:
        now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - tests may run on Python 3.8+
        result = tls_probe.probe("127.0.0.1", server.port, timeout=3, ca_path=str(pki.ca_bundle),
                                 now=now + datetime.timedelta(days=300))

    assert 63 <= result.days_left <= 65
    not_after = datetime.datetime.strptime(result.not_after, "%Y-%m-%dT%H:%M:%SZ")
    assert (not_after - now.replace(tzinfo=None)).days in (364, 365)


@pytest.mark.parametrize(("cert", "reason", "text"), [
    ("expired", "expired", "certificate has expired"),
    ("wrong_host", "hostname_mismatch", "certificate is not valid for this host name"),
    ("unknown_ca", "unknown_ca", "certificate is not signed by a trusted CA"),
    ("self_signed", "self_signed", "certificate is self-signed"),
])
def test_verification_failures_are_classified_and_still_read(pki: Pki, cert: str, reason: str,
                                                             text: str) -> None:
    with serve(pki, cert) as server:
        result = tls_probe.probe("127.0.0.1", server.port, timeout=3, ca_path=str(pki.ca_bundle))

    assert result.verified is False
    assert result.reason == reason
    assert result.message.startswith(text)
    assert result.has_certificate and result.subject and result.issuer


def test_expired_certificate_has_negative_days_left(pki: Pki) -> None:
    with serve(pki, "expired") as server:
        result = tls_probe.probe("127.0.0.1", server.port, timeout=3, ca_path=str(pki.ca_bundle))

    assert result.days_left in (-2, -3)


def test_system_store_does_not_trust_the_test_ca(pki: Pki) -> None:
    with serve(pki, "valid") as server:
        result = tls_probe.probe("127.0.0.1", server.port, timeout=3)

    assert (result.verified, result.reason) == (False, "unknown_ca")
    assert result.days_left is not None


def test_refused() -> None:
    result = tls_probe.probe("127.0.0.1", closed_port(), timeout=3)

    assert (result.verified, result.reason, result.message) == (False, "refused", "connection refused")
    assert not result.has_certificate and result.days_left is None


def test_timeout() -> None:
    with SilentTlsPort() as port:
        result = tls_probe.probe("127.0.0.1", port.port, timeout=0.3)

    assert (result.reason, result.message) == ("timeout", "timed out")


def test_plain_http_server_is_a_tls_failure() -> None:
    with FakeServer(lambda request: json_response({})) as server:
        result = tls_probe.probe("127.0.0.1", server.port, timeout=3)

    assert result.reason == "tls"
    assert result.message.startswith("TLS handshake failed")


def test_unresolvable_name() -> None:
    result = tls_probe.probe("does-not-exist.invalid", 443, timeout=3)

    assert result.reason == "dns"


@pytest.mark.parametrize(("code", "reason"), [(10, "expired"), (18, "self_signed"), (19, "unknown_ca"),
                                              (20, "unknown_ca"), (62, "hostname_mismatch"), (9, "not_yet_valid"),
                                              (7, "untrusted")])
def test_verify_codes(code: int, reason: str) -> None:
    error = ssl.SSLCertVerificationError()
    error.verify_code = code
    assert tls_probe.verify_reason(error) == reason
