"""Fake DingTalk / Feishu servers for the im_app_check tests.

Everything listens on 127.0.0.1 only, serves from daemon threads and stops when its ``with`` block
ends (or, as a safety net, after ``max_lifetime`` seconds). The fakes speak the real wire protocol
(status codes, JSON shapes, error codes) from the protocol notes, and their crypto is written here
independently of ``plugins/module_utils/im_protocols.py`` (following the bot service's receiving
side), so a test that passes shows the module and an independent implementation agree.

Also here: a throwaway PKI built with ``cryptography`` (test CA, valid/expired/wrong-host/self-signed/
unknown-CA/expiring-soon server certificates) and helpers for a refused port and a TLS port that never
answers.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"

# --------------------------------------------------------------------------- HTTP plumbing


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        self.server.fake.requests.append(request)
        response = self.server.fake.app(request)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeServer, tls_context: ssl.SSLContext | None):
        self.fake = fake
        self.tls_context = tls_context
        super().__init__((HOST, 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(5)
        try:
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client rejected our certificate: exactly what some tests want
        with tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-request are part of the tests


class FakeServer:
    """A threaded HTTP(S) server on 127.0.0.1 whose answers come from ``app(Request) -> Response``."""

    def __init__(self, app: Any, tls_context: ssl.SSLContext | None = None, max_lifetime: float = 120.0):
        self.app = app
        self.requests: list[Request] = []
        self._server = _Server(self, tls_context)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._watchdog = threading.Timer(max_lifetime, self.stop)
        self._watchdog.daemon = True
        self._stopped = threading.Event()
        scheme = "https" if tls_context else "http"
        self.port = self._server.server_address[1]
        self.url = f"{scheme}://{HOST}:{self.port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def calls(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]


class SilentTlsPort:
    """A port that accepts TCP connections (kernel backlog) but never speaks: TLS handshakes time out."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self.url = f"https://{HOST}:{self.port}/callback"

    def __enter__(self) -> SilentTlsPort:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._sock.close()


def closed_port() -> int:
    """A local port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- DingTalk

DINGTALK_BAD_CREDENTIALS_MESSAGE = "无效的clientId或者clientSecret"
DINGTALK_LEGACY_BAD_MESSAGE = "不合法的corpid或corpsecret"
DINGTALK_SIGN_NOT_MATCH = "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
DINGTALK_INVALID_TIMESTAMP = "invalid timestamp, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"


def dingtalk_robot_sign(secret: str, timestamp: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


class DingTalkApi:
    """``api.dingtalk.com`` (oauth2) + ``oapi.dingtalk.com`` (gettoken, robot/send) on one server."""

    def __init__(self, app_key: str, app_secret: str, oauth2_token: str, legacy_token: str,
                 robot_token: str | None = None, robot_secret: str | None = None, reject_legacy: bool = False,
                 fail_first: int = 0):
        self.app_key = app_key
        self.app_secret = app_secret
        self.oauth2_token = oauth2_token
        self.legacy_token = legacy_token
        self.robot_token = robot_token
        self.robot_secret = robot_secret
        self.reject_legacy = reject_legacy
        self.fail_first = fail_first  # answer that many requests with 503 first
        self.messages: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return text_response("<html>503 Service Temporarily Unavailable</html>", 503)
        if request.method == "POST" and request.path == "/v1.0/oauth2/accessToken":
            return self._oauth2(request)
        if request.method == "GET" and request.path == "/gettoken":
            return self._gettoken(request)
        if request.method == "POST" and request.path == "/robot/send":
            return self._robot_send(request)
        return json_response({"code": "InvalidAction.NotFound", "message": "Specified api is not found"}, 404)

    def _oauth2(self, request: Request) -> Response:
        body = request.json() or {}
        if body.get("appKey") == self.app_key and body.get("appSecret") == self.app_secret:
            return json_response({"accessToken": self.oauth2_token, "expireIn": 7200})
        return json_response({"code": "invalidClientIdOrSecret", "message": DINGTALK_BAD_CREDENTIALS_MESSAGE,
                              "requestid": "A2F3C1B0-0000-0000-0000-000000000000"}, 400)

    def _gettoken(self, request: Request) -> Response:
        good = request.query.get("appkey") == self.app_key and request.query.get("appsecret") == self.app_secret
        if good and not self.reject_legacy:
            return json_response({"errcode": 0, "access_token": self.legacy_token, "errmsg": "ok",
                                  "expires_in": 7200})
        return json_response({"errcode": 40089, "errmsg": DINGTALK_LEGACY_BAD_MESSAGE})

    def _robot_send(self, request: Request) -> Response:
        if request.query.get("access_token") != self.robot_token:
            return json_response({"errcode": 300005, "errmsg": "token is not exist"})
        if self.robot_secret:
            timestamp = request.query.get("timestamp", "")
            if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000:
                return json_response({"errcode": 310000, "errmsg": DINGTALK_INVALID_TIMESTAMP})
            expected = dingtalk_robot_sign(self.robot_secret, timestamp)
            if not hmac.compare_digest(expected, request.query.get("sign", "")):
                return json_response({"errcode": 310000, "errmsg": DINGTALK_SIGN_NOT_MATCH})
        body = request.json()
        if not isinstance(body, dict) or body.get("msgtype") != "text":
            return json_response({"errcode": 40035, "errmsg": "缺少参数 json"})
        self.messages.append(body)
        return json_response({"errcode": 0, "errmsg": "ok"})


class DingTalkEventCipher:
    """DingTalk event crypto written from the protocol notes (32-byte PKCS#7, ownerKey framing)."""

    def __init__(self, token: str, aes_key: str, owner_key: str):
        self.token = token
        self.owner_key = owner_key.encode()
        self.key = base64.b64decode(aes_key + "=")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def encrypt(self, plaintext: str, owner_key: bytes | None = None) -> str:
        msg = plaintext.encode()
        framed = os.urandom(16) + struct.pack(">I", len(msg)) + msg + (owner_key or self.owner_key)
        padder = padding.PKCS7(256).padder()
        padded = padder.update(framed) + padder.finalize()
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()

    def decrypt(self, encrypt: str) -> tuple[str, bytes]:
        """``(message, owner_key)``; ValueError when it does not decrypt."""
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(base64.b64decode(encrypt, validate=True)) + decryptor.finalize()
        unpadder = padding.PKCS7(256).unpadder()
        framed = unpadder.update(padded) + unpadder.finalize()
        (length,) = struct.unpack(">I", framed[16:20])
        return framed[20:20 + length].decode(), framed[20 + length:]


class DingTalkCallback:
    """The bot's DingTalk event endpoint (verify, check time window, decrypt, answer encrypted "success").

    ``mode`` makes it misbehave in one way: ``bad_signature`` (answer signed with another token),
    ``wrong_owner`` (answer encrypted for another owner key), ``plain_success`` (unencrypted text
    ``success``), ``wrong_plaintext`` (encrypted ``fail``).
    """

    def __init__(self, token: str, aes_key: str, owner_key: str, mode: str = "good"):
        self.cipher = DingTalkEventCipher(token, aes_key, owner_key)
        self.mode = mode
        self.events: list[Any] = []

    def __call__(self, request: Request) -> Response:
        query = request.query
        signature = query.get("msg_signature") or query.get("signature")
        timestamp = query.get("timeStamp") or query.get("timestamp")
        nonce = query.get("nonce")
        body = request.json()
        encrypt = body.get("encrypt") if isinstance(body, dict) else None
        if not isinstance(encrypt, str) or not encrypt:
            return _bot_error(400, "bad_request", "missing encrypt field")
        if not (signature and timestamp is not None and nonce is not None) or not hmac.compare_digest(
                self.cipher.signature(timestamp, nonce, encrypt), signature.lower()):
            return _bot_error(401, "invalid_signature", "msg_signature mismatch")
        if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000:
            return _bot_error(401, "stale_timestamp", "timestamp outside the allowed window")
        try:
            plaintext, owner = self.cipher.decrypt(encrypt)
        except (ValueError, struct.error):
            return _bot_error(400, "decrypt_failed", "cannot decrypt event")
        if owner != self.cipher.owner_key:
            return _bot_error(403, "owner_key_mismatch", "owner key mismatch")
        self.events.append(json.loads(plaintext))
        return self._answer()

    def _answer(self) -> Response:
        if self.mode == "plain_success":
            return text_response("success")
        owner = b"another-owner-key" if self.mode == "wrong_owner" else None
        encrypt = self.cipher.encrypt("fail" if self.mode == "wrong_plaintext" else "success", owner)
        timestamp, nonce = str(int(time.time() * 1000)), os.urandom(4).hex()
        signature = self.cipher.signature(timestamp, nonce, encrypt)
        if self.mode == "bad_signature":
            signature = DingTalkEventCipher("another-token", "A" * 43, "x").signature(timestamp, nonce, encrypt)
        return json_response({"msg_signature": signature, "encrypt": encrypt, "timeStamp": timestamp, "nonce": nonce})


def _bot_error(status: int, code: str, message: str) -> Response:
    """The bot service's error shape."""
    return json_response({"error": {"code": code, "message": message}}, status)


# --------------------------------------------------------------------------- Feishu / Lark

FEISHU_SIGN_FAIL = "sign match fail or timestamp is not within one hour from current time"


def feishu_hook_sign(secret: str, timestamp: str) -> str:
    mac = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


class FeishuApi:
    """``open.feishu.cn`` / ``open.larksuite.com``: tenant token and custom bot webhooks."""

    def __init__(self, app_id: str, app_secret: str, tenant_token: str, hook_token: str | None = None,
                 hook_secret: str | None = None, legacy_hook_shape: bool = False):
        self.app_id = app_id
        self.app_secret = app_secret
        self.tenant_token = tenant_token
        self.hook_token = hook_token
        self.hook_secret = hook_secret
        self.legacy_hook_shape = legacy_hook_shape  # old hooks answer {"StatusCode","StatusMessage"}
        self.messages: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/open-apis/auth/v3/tenant_access_token/internal":
            return self._tenant_token(request)
        if request.method == "POST" and request.path.startswith("/open-apis/bot/v2/hook/"):
            return self._hook(request, request.path.rsplit("/", 1)[-1])
        return json_response({"code": 404, "msg": "404 page not found"}, 404)

    def _tenant_token(self, request: Request) -> Response:
        body = request.json() or {}
        if body.get("app_id") != self.app_id:
            return json_response({"code": 10003, "msg": "invalid param"}, 400)
        if body.get("app_secret") != self.app_secret:
            return json_response({"code": 10014, "msg": "app secret invalid"})
        return json_response({"code": 0, "msg": "ok", "tenant_access_token": self.tenant_token, "expire": 7200})

    def _hook(self, request: Request, token: str) -> Response:
        if token != self.hook_token:
            return json_response({"code": 19001, "msg": "param invalid: incoming webhook access token invalid",
                                  "data": {}})
        body = request.json() or {}
        if self.hook_secret:
            timestamp = str(body.get("timestamp", ""))
            fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 3600
            if not fresh or not hmac.compare_digest(feishu_hook_sign(self.hook_secret, timestamp),
                                                    str(body.get("sign", ""))):
                return json_response({"code": 19021, "msg": FEISHU_SIGN_FAIL, "data": {}})
        if body.get("msg_type") != "text":
            return json_response({"code": 9499, "msg": "Bad Request", "data": {}}, 400)
        self.messages.append(body)
        if self.legacy_hook_shape:
            return json_response({"Extra": None, "StatusCode": 0, "StatusMessage": "success"})
        return json_response({"code": 0, "msg": "success", "data": {}})


def feishu_cipher_key(encrypt_key: str) -> bytes:
    return hashlib.sha256(encrypt_key.encode()).digest()


def feishu_decrypt(encrypt_key: str, encrypt: str) -> str:
    raw = base64.b64decode(encrypt, validate=True)
    decryptor = Cipher(algorithms.AES(feishu_cipher_key(encrypt_key)), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(padded) + unpadder.finalize()).decode()


class FeishuCallback:
    """The bot's Feishu endpoint for ``url_verification`` (signature over raw bytes, decrypt, token, echo).

    ``mode``: ``wrong_challenge`` (echo another challenge), ``no_challenge`` (answer ``{}``).
    """

    def __init__(self, verification_token: str | None, encrypt_key: str | None, mode: str = "good"):
        self.verification_token = verification_token
        self.encrypt_key = encrypt_key
        self.mode = mode
        self.payloads: list[dict[str, Any]] = []
        self.signed: list[bool] = []

    def __call__(self, request: Request) -> Response:
        signed = False
        provided = request.headers.get("x-lark-signature")
        if self.encrypt_key and provided is not None:
            material = (request.headers.get("x-lark-request-timestamp", "")
                        + request.headers.get("x-lark-request-nonce", "") + self.encrypt_key).encode()
            if not hmac.compare_digest(hashlib.sha256(material + request.body).hexdigest(), provided.lower()):
                return _bot_error(401, "invalid_signature", "X-Lark-Signature mismatch")
            signed = True
        payload = request.json()
        if not isinstance(payload, dict):
            return _bot_error(400, "malformed_json", "body is not valid JSON")
        if "encrypt" in payload:
            if not self.encrypt_key:
                return _bot_error(503, "not_configured", "feishu: encrypt key not configured")
            try:
                payload = json.loads(feishu_decrypt(self.encrypt_key, payload["encrypt"]))
            except ValueError:
                return _bot_error(400, "decrypt_failed", "cannot decrypt event")
        self.payloads.append(payload)
        self.signed.append(signed)
        if payload.get("type") != "url_verification":
            return json_response({})
        if self.verification_token and payload.get("token") != self.verification_token:
            return _bot_error(401, "invalid_token", "verification token mismatch")
        if self.mode == "no_challenge":
            return json_response({})
        challenge = payload.get("challenge")
        if self.mode == "wrong_challenge":
            challenge = "not-the-challenge-you-sent"
        return json_response({"challenge": challenge})


# --------------------------------------------------------------------------- test PKI


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
