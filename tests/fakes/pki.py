"""A throwaway PKI for TLS tests, built with ``cryptography``.

:func:`make_pki` writes a test CA and server certificates: ``valid``, ``expired``, ``wrong_host``,
``self_signed``, ``unknown_ca`` (signed by a CA nobody trusts) and ``expiring_soon``
(``EXPIRING_SOON_DAYS`` left). Serve one with ``FakeServer(app, tls_context=pki.server_context(name))``.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .httpd import HOST


@dataclass
class Pki:
    """PEM files of a throwaway PKI. ``certs[name]`` is ``(cert_path, key_path)``."""

    ca_bundle: Path
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def server_context(self, name: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = self.certs[name]
        context.load_cert_chain(str(cert), str(key))
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clawbot tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(subject: x509.Name, public_key: Any, issuer: x509.Name, signing_key: Any,
                 not_before: datetime.datetime, not_after: datetime.datetime, ca: bool,
                 sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


LOCAL_SANS = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address(HOST))]
EXPIRING_SOON_DAYS = 5


def make_pki(directory: Path) -> Pki:
    """Test CA plus server certificates: ``valid``, ``expired``, ``wrong_host``, ``self_signed``,
    ``unknown_ca`` (signed by a CA nobody trusts) and ``expiring_soon`` (EXPIRING_SOON_DAYS left)."""
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - tests may run on Python 3.8+
    day = datetime.timedelta(days=1)
    ca_key, other_ca_key = _key(), _key()
    ca_name, other_ca_name = _name("clawbot test CA"), _name("clawbot untrusted CA")
    ca = _certificate(ca_name, ca_key.public_key(), ca_name, ca_key, now - day, now + 3650 * day, ca=True)
    pki = Pki(ca_bundle=directory / "ca.crt")
    pki.ca_bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(name: str, issuer: x509.Name, signer: Any, not_before: datetime.datetime,
             not_after: datetime.datetime, sans: list[x509.GeneralName]) -> None:
        key = _key()
        cert = _certificate(_name(f"{name}.clawbot.test"), key.public_key(), issuer, signer, not_before, not_after,
                            ca=False, sans=sans)
        pki.certs[name] = _write(directory, name, cert, key)

    leaf("valid", ca_name, ca_key, now - day, now + 365 * day, LOCAL_SANS)
    leaf("expired", ca_name, ca_key, now - 60 * day, now - 2 * day, LOCAL_SANS)
    leaf("wrong_host", ca_name, ca_key, now - day, now + 365 * day, [x509.DNSName("wrong.example.com")])
    leaf("unknown_ca", other_ca_name, other_ca_key, now - day, now + 365 * day, LOCAL_SANS)
    leaf("expiring_soon", ca_name, ca_key, now - 80 * day,
         now + datetime.timedelta(days=EXPIRING_SOON_DAYS, hours=12), LOCAL_SANS)
    self_key = _key()
    self_name = _name("self-signed.clawbot.test")
    self_signed = _certificate(self_name, self_key.public_key(), self_name, self_key, now - day, now + 365 * day,
                               ca=False, sans=LOCAL_SANS)
    pki.certs["self_signed"] = _write(directory, "self_signed", self_signed, self_key)
    return pki
