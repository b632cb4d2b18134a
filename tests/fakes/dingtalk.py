"""The one fake of DingTalk: its Open API and robot webhooks, and a stand-in for a bot's event endpoint.

Wire facts follow ../shared/notes/im-protocols.md (DingTalk sections 1-4), the official docs and
the published DingTalk-Callback-Crypto vector. The crypto here is written independently of
``plugins/module_utils/im_protocols.py`` and ``bot_app/src/clawbot_app/im/``, so a test passing
against this fake shows two implementations agree.

* :class:`FakeDingTalk`: ``api.dingtalk.com`` and ``oapi.dingtalk.com`` on one server:
  ``POST /v1.0/oauth2/accessToken``, ``GET /gettoken``, ``POST /robot/send`` (group robot webhook,
  ``timestamp`` + ``sign`` verification) and ``POST /robot/sendBySession`` (the ``sessionWebhook``
  a bot replies through).
* :class:`DingTalkCallback`: what a bot's event callback answers (verify, decrypt, reply with the
  encrypted ``success``), with modes that misbehave in one way each.
* :func:`robot_sign`, :class:`EventCipher`: the signing and event crypto.

Serve an app with ``FakeServer(app)`` from :mod:`.httpd`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import threading
import time
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .httpd import Recorder, Request, Response, bot_error, json_response, take_gateway_failure, text_response

OAUTH2_BAD_CREDENTIALS = "无效的clientId或者clientSecret"
LEGACY_BAD_CREDENTIALS = "不合法的corpid或corpsecret"
SIGN_NOT_MATCH = "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
INVALID_TIMESTAMP = "invalid timestamp, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
TOKEN_NOT_EXIST = "token is not exist"
MISSING_JSON = "缺少参数 json"
TIMESTAMP_WINDOW_MS = 3600 * 1000


def robot_sign(secret: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret)); URL-encoding is the caller's."""
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def _fresh_ms(timestamp: str) -> bool:
    return timestamp.isdigit() and abs(time.time() * 1000 - int(timestamp)) <= TIMESTAMP_WINDOW_MS


def _robot_message(body: Any) -> dict[str, Any] | None:
    """The body when it is a text or markdown robot message DingTalk accepts, else None."""
    if not isinstance(body, dict):
        return None
    if body.get("msgtype") == "text":
        text = body.get("text")
        return body if isinstance(text, dict) and isinstance(text.get("content"), str) else None
    if body.get("msgtype") == "markdown":
        markdown = body.get("markdown")
        ok = isinstance(markdown, dict) and all(isinstance(markdown.get(k), str) for k in ("title", "text"))
        return body if ok else None
    return None


class FakeDingTalk:
    """DingTalk's Open API and robot webhooks (one server stands for both hosts).

    Recorded: ``robot_messages`` (bodies accepted on ``/robot/send``) and ``session_messages``
    (``{"session", "text"}``, plus ``"title"`` for markdown, accepted on ``/robot/sendBySession``).
    Knobs: ``robot_secret`` (None: the robot does not sign), ``reject_legacy`` (``gettoken``
    refuses good credentials), ``fail_first`` (answer that many requests with a gateway 503).
    ``base_url`` is where a test served it (set by that test).
    """

    def __init__(self, app_key: str = "dingfakeappkey", app_secret: str = "dt-fake-app-secret", *,
                 oauth2_token: str = "dt-fake-oauth2-token", legacy_token: str = "dt-fake-legacy-token",
                 robot_token: str = "robot-token", robot_secret: str | None = "SECfake-robot-secret",
                 reject_legacy: bool = False, fail_first: int = 0):
        self.app_key = app_key
        self.app_secret = app_secret
        self.oauth2_token = oauth2_token
        self.legacy_token = legacy_token
        self.robot_token = robot_token
        self.robot_secret = robot_secret
        self.reject_legacy = reject_legacy
        self.fail_first = fail_first
        self._initial = (robot_secret, reject_legacy, fail_first)
        self.robot_messages = Recorder()
        self.session_messages = Recorder()
        self.base_url: str | None = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.robot_secret, self.reject_legacy, self.fail_first = self._initial
        self.robot_messages.clear()
        self.session_messages.clear()

    def __call__(self, request: Request) -> Response:
        failure = take_gateway_failure(self)
        if failure is not None:
            return failure
        route = (request.method, request.path)
        if route == ("POST", "/v1.0/oauth2/accessToken"):
            return self._oauth2(request)
        if route == ("GET", "/gettoken"):
            return self._gettoken(request)
        if route == ("POST", "/robot/send"):
            return self._robot_send(request)
        if route == ("POST", "/robot/sendBySession"):
            return self._send_by_session(request)
        return json_response({"code": "InvalidAction.NotFound", "message": "Specified api is not found"}, 404)

    def _oauth2(self, request: Request) -> Response:
        body = request.json()
        if isinstance(body, dict) and body.get("appKey") == self.app_key and body.get("appSecret") == self.app_secret:
            return json_response({"accessToken": self.oauth2_token, "expireIn": 7200})
        return json_response({"code": "invalidClientIdOrSecret", "message": OAUTH2_BAD_CREDENTIALS,
                              "requestid": "A2F3C1B0-0000-0000-0000-000000000000"}, 400)

    def _gettoken(self, request: Request) -> Response:
        good = request.query.get("appkey") == self.app_key and request.query.get("appsecret") == self.app_secret
        if good and not self.reject_legacy:
            return json_response({"errcode": 0, "access_token": self.legacy_token, "errmsg": "ok",
                                  "expires_in": 7200})
        return json_response({"errcode": 40089, "errmsg": LEGACY_BAD_CREDENTIALS})

    def _robot_send(self, request: Request) -> Response:
        if request.query.get("access_token") != self.robot_token:
            return json_response({"errcode": 300005, "errmsg": TOKEN_NOT_EXIST})
        if self.robot_secret:
            timestamp = request.query.get("timestamp", "")
            if not _fresh_ms(timestamp):
                return json_response({"errcode": 310000, "errmsg": INVALID_TIMESTAMP})
            if not hmac.compare_digest(robot_sign(self.robot_secret, timestamp), request.query.get("sign", "")):
                return json_response({"errcode": 310000, "errmsg": SIGN_NOT_MATCH})
        body = _robot_message(request.json())
        if body is None:
            return json_response({"errcode": 40035, "errmsg": MISSING_JSON})
        self.robot_messages.add(body)
        return json_response({"errcode": 0, "errmsg": "ok"})

    def _send_by_session(self, request: Request) -> Response:
        session = request.query.get("session")
        if not session:
            return json_response({"errcode": 300001, "errmsg": "session is empty"})
        body = _robot_message(request.json())
        if body is None:
            return json_response({"errcode": 40035, "errmsg": MISSING_JSON})
        at = body.get("at") if isinstance(body.get("at"), dict) else {}
        record = {"session": session, "msgtype": body["msgtype"], "at": at.get("atUserIds") or []}
        if body["msgtype"] == "text":
            record["text"] = body["text"]["content"]
        else:
            record.update(title=body["markdown"]["title"], text=body["markdown"]["text"])
        self.session_messages.add(record)
        return json_response({"errcode": 0, "errmsg": "ok"})


# --------------------------------------------------------------------------- event subscription crypto


class EventCipher:
    """DingTalk event crypto from the protocol notes: AES-256-CBC, IV = key[:16], 32-byte PKCS#7,
    plaintext = random16 || uint32 BE length || message || ownerKey; SHA-1 signature over the sorted
    token, timestamp, nonce and ciphertext."""

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
    """What a bot's DingTalk event endpoint answers: verify the signature, check the time window,
    decrypt, check the owner key, answer the encrypted ``success``. Stands in for endpoints that
    misbehave, which the real bot cannot be made to do.

    ``mode`` makes it misbehave in one way: ``bad_signature`` (answer signed with another token),
    ``wrong_owner`` (answer encrypted for another owner key), ``plain_success`` (unencrypted text
    ``success``), ``wrong_plaintext`` (encrypted ``fail``). ``events``: the decrypted events.
    """

    def __init__(self, token: str, aes_key: str, owner_key: str, mode: str = "good"):
        self.cipher = EventCipher(token, aes_key, owner_key)
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
            return bot_error(400, "bad_request", "missing encrypt field")
        if not (signature and timestamp is not None and nonce is not None) or not hmac.compare_digest(
                self.cipher.signature(timestamp, nonce, encrypt), signature.lower()):
            return bot_error(401, "invalid_signature", "msg_signature mismatch")
        if not _fresh_ms(timestamp):
            return bot_error(401, "stale_timestamp", "timestamp outside the allowed window")
        try:
            plaintext, owner = self.cipher.decrypt(encrypt)
        except (ValueError, struct.error):
            return bot_error(400, "decrypt_failed", "cannot decrypt event")
        if owner != self.cipher.owner_key:
            return bot_error(403, "owner_key_mismatch", "owner key mismatch")
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
            signature = EventCipher("another-token", "A" * 43, "x").signature(timestamp, nonce, encrypt)
        return json_response({"msg_signature": signature, "encrypt": encrypt, "timeStamp": timestamp, "nonce": nonce})
