"""The one fake of Feishu / Lark: its Open API and custom bot webhooks, and a stand-in for a bot's event endpoint.

Wire facts follow ../shared/notes/im-protocols.md (Feishu sections 1-4), the Feishu Open Platform
docs and their published decryption vector. The crypto here is written independently of
``plugins/module_utils/im_protocols.py`` and ``bot_app/src/clawbot_app/im/``.

* :class:`FakeFeishu`: ``open.feishu.cn`` / ``open.larksuite.com``:
  ``POST /open-apis/auth/v3/tenant_access_token/internal``,
  ``POST /open-apis/im/v1/messages/{message_id}/reply`` (tenant token checked, ``content`` must be
  a JSON string, throttling with HTTP 429 / 99991400) and ``POST /open-apis/bot/v2/hook/{token}``
  (custom bot webhook with ``timestamp`` + ``sign`` verification).
* :class:`FeishuCallback`: what a bot's event endpoint answers to ``url_verification`` (signature
  over the raw body, decryption, token check, challenge echo), with modes that misbehave.
* :func:`hook_sign`, :func:`decrypt`: the signing and event crypto.

Serve an app with ``FakeServer(app)`` from :mod:`.httpd`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .httpd import Recorder, Request, Response, bot_error, json_response

SIGN_FAIL = "sign match fail or timestamp is not within one hour from current time"
REPLY_PREFIX = "/open-apis/im/v1/messages/"
HOOK_PREFIX = "/open-apis/bot/v2/hook/"


def hook_sign(secret: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key=timestamp + "\\n" + secret, msg=b"")): key and message are DingTalk's reversed."""
    mac = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def cipher_key(encrypt_key: str) -> bytes:
    return hashlib.sha256(encrypt_key.encode()).digest()


def decrypt(encrypt_key: str, encrypt: str) -> str:
    """Feishu event decryption: key = SHA-256(encrypt_key), IV = first 16 bytes, 16-byte PKCS#7."""
    raw = base64.b64decode(encrypt, validate=True)
    decryptor = Cipher(algorithms.AES(cipher_key(encrypt_key)), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(padded) + unpadder.finalize()).decode()


CONTENT_MAX_BYTES = {"text": 150 * 1024, "interactive": 30 * 1024}
"""Feishu "Send message": a text message's content up to 150 KB, a card's up to 30 KB."""


def _reply_content(msg_type: object, raw: object) -> tuple[str | None, dict[str, Any] | None]:
    """``(text, card)`` of a reply Feishu accepts: the text of a ``text`` message, or for an
    ``interactive`` card (JSON 1.0 ``elements`` or 2.0 ``body.elements``) the contents of its
    ``markdown``/``div`` elements joined by blank lines, with the card itself. ``(None, None)``
    for anything else."""
    try:
        content = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None, None
    if not isinstance(content, dict):
        return None, None
    if msg_type == "text":
        text = content.get("text")
        return (text, None) if isinstance(text, str) else (None, None)
    if msg_type != "interactive":
        return None, None
    body = content.get("body")
    elements = body.get("elements") if isinstance(body, dict) else content.get("elements")
    if not isinstance(elements, list) or not elements:
        return None, None
    texts = []
    for element in elements:
        if not isinstance(element, dict) or not isinstance(element.get("tag"), str):
            return None, None
        inner = element.get("text") if element["tag"] == "div" else element
        value = inner.get("content") if isinstance(inner, dict) else None
        if element["tag"] in ("markdown", "div") and not isinstance(value, str):
            return None, None
        if isinstance(value, str):
            texts.append(value)
    return "\n\n".join(texts), content


class FakeFeishu:
    """Feishu's Open API (tenant token, message reply) and custom bot webhooks.

    ``tenant_token``: the token issued every time (None: a new ``t-fake000001``... each time).
    Recorded: ``token_requests`` (request bodies), ``replies`` (``{"message_id", "text", "token"}``),
    ``rejected_replies`` (``{"message_id", "reason"}``), ``hook_messages`` (accepted webhook bodies).
    Knobs: ``expire``, ``throttle_next`` (answer that many replies with 429), ``revoke_all_tokens()``,
    ``legacy_hook_shape`` (old hooks answer ``{"StatusCode", "StatusMessage"}``).
    ``base_url`` is where a test served it (set by that test).
    """

    def __init__(self, app_id: str = "cli_fake_app", app_secret: str = "fs-fake-app-secret", *,
                 tenant_token: str | None = None, expire: int = 7200, hook_token: str | None = None,
                 hook_secret: str | None = None, legacy_hook_shape: bool = False):
        self.app_id = app_id
        self.app_secret = app_secret
        self.tenant_token = tenant_token
        self.expire = expire
        self.hook_token = hook_token
        self.hook_secret = hook_secret
        self.legacy_hook_shape = legacy_hook_shape
        self._initial = (expire, legacy_hook_shape)
        self.throttle_next = 0
        self.valid_tokens: set[str] = set()
        self.token_requests = Recorder()
        self.replies = Recorder()
        self.rejected_replies = Recorder()
        self.hook_messages = Recorder()
        self.base_url: str | None = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.valid_tokens.clear()
            self.throttle_next = 0
        self.expire, self.legacy_hook_shape = self._initial
        for recorder in (self.token_requests, self.replies, self.rejected_replies, self.hook_messages):
            recorder.clear()

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def __call__(self, request: Request) -> Response:
        if request.method == "POST":
            if request.path == "/open-apis/auth/v3/tenant_access_token/internal":
                return self._tenant_token(request)
            if request.path.startswith(REPLY_PREFIX) and request.path.endswith("/reply"):
                message_id = request.path[len(REPLY_PREFIX):-len("/reply")]
                if message_id and "/" not in message_id:
                    return self._reply(request, message_id)
            if request.path.startswith(HOOK_PREFIX):
                return self._hook(request, request.path[len(HOOK_PREFIX):])
        return json_response({"code": 404, "msg": "404 page not found"}, 404)

    def _tenant_token(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return json_response({"code": 9499, "msg": "Bad Request"}, 400)
        self.token_requests.add(body)
        if body.get("app_id") != self.app_id:
            return json_response({"code": 10003, "msg": "invalid param"}, 400)
        if body.get("app_secret") != self.app_secret:
            return json_response({"code": 10014, "msg": "app secret invalid"})
        token = self.tenant_token or f"t-fake{next(self._counter):06d}"
        with self._lock:
            self.valid_tokens.add(token)
        return json_response({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": self.expire})

    def _reply(self, request: Request, message_id: str) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with self._lock:
            token_ok = token in self.valid_tokens
            throttled = token_ok and self.throttle_next > 0
            if throttled:
                self.throttle_next -= 1
        if not token_ok:
            self.rejected_replies.add({"message_id": message_id, "reason": "token"})
            return json_response({"code": 99991663, "msg": "Invalid access token for authorization."}, 400)
        if throttled:
            return json_response({"code": 99991400, "msg": "request trigger frequency limit"}, 429)
        body = request.json()
        msg_type = body.get("msg_type") if isinstance(body, dict) else None
        raw = body.get("content") if isinstance(body, dict) else None
        if isinstance(raw, str) and len(raw.encode("utf-8")) > CONTENT_MAX_BYTES.get(str(msg_type), 0):
            self.rejected_replies.add({"message_id": message_id, "reason": "too long"})
            return json_response({"code": 230025, "msg": "The length of the message content reaches its limit."}, 400)
        text, card = _reply_content(msg_type, raw)
        if text is None:
            self.rejected_replies.add({"message_id": message_id, "reason": "content"})
            return json_response({"code": 230001, "msg": "invalid message content"}, 400)
        self.replies.add({"message_id": message_id, "msg_type": msg_type, "text": text, "card": card,
                          "token": token})
        return json_response({"code": 0, "msg": "success",
                              "data": {"message_id": f"om_reply_{message_id}", "msg_type": msg_type}})

    def _hook(self, request: Request, token: str) -> Response:
        if token != self.hook_token:
            return json_response({"code": 19001, "msg": "param invalid: incoming webhook access token invalid",
                                  "data": {}})
        body = request.json()
        if not isinstance(body, dict):
            return json_response({"code": 9499, "msg": "Bad Request", "data": {}}, 400)
        if self.hook_secret:
            timestamp = str(body.get("timestamp", ""))
            fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 3600
            if not fresh or not hmac.compare_digest(hook_sign(self.hook_secret, timestamp), str(body.get("sign", ""))):
                return json_response({"code": 19021, "msg": SIGN_FAIL, "data": {}})
        if body.get("msg_type") != "text":
            return json_response({"code": 9499, "msg": "Bad Request", "data": {}}, 400)
        self.hook_messages.add(body)
        if self.legacy_hook_shape:
            return json_response({"Extra": None, "StatusCode": 0, "StatusMessage": "success"})
        return json_response({"code": 0, "msg": "success", "data": {}})


class FeishuCallback:
    """What a bot's Feishu event endpoint answers to ``url_verification``: signature over the raw
    bytes, decryption, token check, challenge echo. Stands in for endpoints that misbehave, which the
    real bot cannot be made to do.

    ``mode``: ``wrong_challenge`` (echo another challenge), ``no_challenge`` (answer ``{}``).
    Recorded: ``payloads`` (decrypted) and ``signed`` (whether each request carried a valid signature).
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
                return bot_error(401, "invalid_signature", "X-Lark-Signature mismatch")
            signed = True
        payload = request.json()
        if not isinstance(payload, dict):
            return bot_error(400, "malformed_json", "body is not valid JSON")
        if "encrypt" in payload:
            if not self.encrypt_key:
                return bot_error(503, "not_configured", "feishu: encrypt key not configured")
            try:
                payload = json.loads(decrypt(self.encrypt_key, payload["encrypt"]))
            except ValueError:
                return bot_error(400, "decrypt_failed", "cannot decrypt event")
        self.payloads.append(payload)
        self.signed.append(signed)
        if payload.get("type") != "url_verification":
            return json_response({})
        if self.verification_token and payload.get("token") != self.verification_token:
            return bot_error(401, "invalid_token", "verification token mismatch")
        if self.mode == "no_challenge":
            return json_response({})
        challenge = payload.get("challenge")
        if self.mode == "wrong_challenge":
            challenge = "not-the-challenge-you-sent"
        return json_response({"challenge": challenge})
