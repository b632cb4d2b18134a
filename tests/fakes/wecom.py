"""The one fake of WeCom (WeChat Work, qyapi.weixin.qq.com): group robot webhooks, the application
API (access tokens, app messages) and a stand-in for a bot's app callback.

Wire facts: ../shared/notes/im-protocols.md ("WeCom group robot") and the WeCom developer docs
(developer.work.weixin.qq.com: "Group robot configuration", "Get access_token" 91039, "Send app
messages" 90236, "Callback crypto" 90968, the global error codes 90313). Every API answer is HTTP
200 with ``errcode``/``errmsg``; unknown paths are 404.

Group robot: ``POST /cgi-bin/webhook/send?key=KEY`` with a JSON body; no signing, the key is the
credential.

* wrong or missing key: ``93000`` "invalid webhook url";
* ``text`` (``text.content`` at most 2048 bytes) and ``markdown`` (``markdown.content`` at most
  4096 bytes, UTF-8) are accepted; over the limit: ``40058``; any other body or message type:
  ``40008`` "invalid message type";
* more than ``rate_limit_per_minute`` messages in 60 s: ``45009`` "api freq out of limit"
  (the platform's limit is 20 per minute per robot).

Application API (one self-built app of one corp):

* ``GET /cgi-bin/gettoken?corpid=&corpsecret=``: ``{"errcode": 0, "errmsg": "ok", "access_token",
  "expires_in"}``; no corpsecret ``41004``, no corpid ``41002`` (WeCom checks the secret's presence
  first), unknown corpid ``40013`` "invalid corpid", wrong secret ``40001`` "invalid credential".
  Like WeCom, a token still valid is handed out again.
* ``POST /cgi-bin/message/send?access_token=T`` (the token is checked first, as on the platform):
  none ``41001``, unknown or revoked ``40014`` "invalid access_token", expired ``42001``
  "access_token expired"; then not JSON ``47001``, wrong ``agentid`` ``40056``, no recipient
  ``81013``, other message types ``40008``, empty content ``44004``; text content over 2048 bytes is
  truncated (as documented), markdown over 2048 bytes ``45002``. Success:
  ``{"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": ...}``.
* ``GET /cgi-bin/agent/get?access_token=T&agentid=ID``: the app's details; another agentid ``40056``.

Callback crypto (WXBizMsgCrypt, the scheme DingTalk's event crypto copies): AES-256-CBC, key =
b64decode(EncodingAESKey + "="), IV = key[:16], PKCS#7 to 32-byte blocks, plaintext = random16 ||
uint32 BE length || msg || receive id (the CorpID), msg_signature = SHA-1 over the sorted token,
timestamp (seconds), nonce and ciphertext. Written independently of
``plugins/module_utils/im_protocols.py`` and ``bot_app/src/clawbot_app/im/``.

Serve it with ``FakeServer(FakeWeCom(...))`` from :mod:`.httpd`. Standard library plus ``cryptography``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import itertools
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .httpd import Recorder, Request, Response, bot_error, json_response, take_gateway_failure, text_response

WEBHOOK_PATH = "/cgi-bin/webhook/send"
GETTOKEN_PATH = "/cgi-bin/gettoken"
MESSAGE_SEND_PATH = "/cgi-bin/message/send"
AGENT_GET_PATH = "/cgi-bin/agent/get"


def errmsg(text: str, errcode: int) -> str:
    """WeCom's errmsg shape: the English text, a hint, the caller's IP and the error code tool."""
    return f"{text}, hint: [1700000000_fake], from ip: 127.0.0.1, more info at " \
           f"https://open.work.weixin.qq.com/devtool/query?e={errcode}"


INVALID_KEY = errmsg("invalid webhook url", 93000)
# Texts seen in WeCom answers (SDK test logs, API probes); 40014 came without a hint on message/send.
INVALID_CORPID = errmsg("invalid corpid", 40013)
INVALID_CREDENTIAL = errmsg("invalid credential", 40001)
CORPSECRET_MISSING = errmsg("corpsecret missing", 41004)
CORPID_MISSING = errmsg("corpid missing", 41002)
ACCESS_TOKEN_MISSING = errmsg("access_token missing", 41001)
INVALID_ACCESS_TOKEN = "invalid access_token"
ACCESS_TOKEN_EXPIRED = errmsg("access_token expired", 42001)
INVALID_AGENTID = errmsg("invalid agentid", 40056)
# 81013 (global error codes: "UserID, party ID and tag ID all invalid or not allowed") is what WeCom
# answers when no recipient is valid; the docs say touser/toparty/totag must not all be empty but do
# not name the code for that case, and no recorded answer to an all-empty request was found: 81013
# (not 40035) is an assumption.
ALL_RECIPIENTS_INVALID = errmsg("user & party & tag all invalid", 81013)
DATA_FORMAT_ERROR = errmsg("data format error", 47001)
INVALID_MESSAGE_TYPE = errmsg("invalid message type", 40008)
EMPTY_CONTENT = errmsg("empty content", 44004)
CONTENT_SIZE_OUT_OF_LIMIT = errmsg("content size out of limit", 45002)

TEXT_MAX_BYTES = 2048
MARKDOWN_MAX_BYTES = 4096
PLATFORM_RATE_LIMIT = 20
# "Send app messages" (developer.work.weixin.qq.com/document/path/90236): text.content "最长不超过2048个
# 字节, 超过将截断" (at most 2048 bytes, truncated beyond); markdown.content "最长不超过2048个字节, 必须是
# utf8编码" (at most 2048 bytes, UTF-8; no truncation documented, so the fake refuses it with 45002,
# the global code "content size out of limit").
APP_TEXT_MAX_BYTES = 2048
APP_MARKDOWN_MAX_BYTES = 2048
TOKEN_EXPIRES_IN = 7200
CALLBACK_WINDOW_S = 3600


def _content(body: Any) -> tuple[str, str] | None:
    """``(msgtype, content)`` of a text or markdown robot message, else None."""
    if not isinstance(body, dict) or body.get("msgtype") not in ("text", "markdown"):
        return None
    part = body.get(body["msgtype"])
    if not isinstance(part, dict) or not isinstance(part.get("content"), str):
        return None
    return body["msgtype"], part["content"]


def _truncate_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


class FakeWeCom:
    """WeCom's robot webhook and application API on one server.

    Recorded: ``robot_messages`` (accepted robot bodies), ``app_messages`` (accepted
    ``message/send`` bodies, text truncated as delivered), ``token_requests`` (one
    ``{"corpid", "errcode"}`` per ``gettoken`` call; never the secret).
    Knobs: ``webhook_key``, ``rate_limit_per_minute`` (None: no limit), ``fail_first`` (answer that
    many requests with a gateway 503), ``expire_all_tokens()`` (42001 from then on),
    ``revoke_all_tokens()`` (40014), ``reset()`` (knobs, tokens and recorders as constructed).
    ``clock`` (seconds) drives the robot rate limit and the token lifetime.
    """

    def __init__(self, webhook_key: str = "wecom-fake-key", *, corp_id: str = "wwfakecorp0000001",
                 corp_secret: str = "wecom-fake-corp-secret", agent_id: int = 1000002,
                 access_token: str | None = None, expires_in: int = TOKEN_EXPIRES_IN,
                 rate_limit_per_minute: int | None = PLATFORM_RATE_LIMIT, fail_first: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.webhook_key = webhook_key
        self.corp_id = corp_id
        self.corp_secret = corp_secret
        self.agent_id = agent_id
        self.access_token = access_token
        self.expires_in = expires_in
        self.rate_limit_per_minute = rate_limit_per_minute
        self.fail_first = fail_first
        self._initial = (rate_limit_per_minute, fail_first)
        self.robot_messages = Recorder()
        self.app_messages = Recorder()
        self.token_requests = Recorder()
        self.base_url: str | None = None
        self._clock = clock
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> issued at (clock); revoked tokens are removed
        self._expired: set[str] = set()
        self._serial = itertools.count(1)
        self._msgids = itertools.count(1)
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("POST", WEBHOOK_PATH): self._webhook_send,
            ("GET", GETTOKEN_PATH): self._gettoken,
            ("POST", MESSAGE_SEND_PATH): self._message_send,
            ("GET", AGENT_GET_PATH): self._agent_get,
        }

    def reset(self) -> None:
        with self._lock:
            self.rate_limit_per_minute, self.fail_first = self._initial
            self._sent.clear()
            self._tokens.clear()
            self._expired.clear()
            self._serial = itertools.count(1)
            self._msgids = itertools.count(1)
        self.robot_messages.clear()
        self.app_messages.clear()
        self.token_requests.clear()

    def expire_all_tokens(self) -> None:
        """Every token issued so far answers 42001 from now on (a new ``gettoken`` issues a fresh one)."""
        with self._lock:
            self._expired.update(self._tokens)

    def revoke_all_tokens(self) -> None:
        """Every token issued so far answers 40014 from now on, as after the secret was reset."""
        with self._lock:
            self._tokens.clear()
            self._expired.clear()

    def __call__(self, request: Request) -> Response:
        failure = take_gateway_failure(self)
        if failure is not None:
            return failure
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return json_response({"errcode": 404, "errmsg": "invalid url"}, 404)
        return handler(request)

    # ----------------------------------------------------------------------- group robot

    def _throttled(self) -> bool:
        if self.rate_limit_per_minute is None:
            return False
        now = self._clock()
        with self._lock:
            while self._sent and now - self._sent[0] >= 60:
                self._sent.popleft()
            if len(self._sent) >= self.rate_limit_per_minute:
                return True
            self._sent.append(now)
        return False

    def _webhook_send(self, request: Request) -> Response:
        if request.query.get("key") != self.webhook_key:
            return json_response({"errcode": 93000, "errmsg": INVALID_KEY})
        body = request.json()
        message = _content(body)
        if message is None:
            return json_response({"errcode": 40008, "errmsg": "invalid message type"})
        msgtype, content = message
        limit = MARKDOWN_MAX_BYTES if msgtype == "markdown" else TEXT_MAX_BYTES
        if len(content.encode("utf-8")) > limit:
            return json_response({"errcode": 40058, "errmsg": f"{msgtype}.content exceed max length {limit}"})
        if self._throttled():
            return json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        self.robot_messages.add(body)
        return json_response({"errcode": 0, "errmsg": "ok"})

    # ----------------------------------------------------------------------- application API

    def _issue_token(self) -> str:
        """The token still valid (WeCom hands it out again), else a new one."""
        now = self._clock()
        with self._lock:
            for token, issued in self._tokens.items():
                if token not in self._expired and now - issued < self.expires_in:
                    return token
            token = self.access_token or f"wecom-token-{next(self._serial):06d}"
            self._tokens[token] = now
            self._expired.discard(token)
            return token

    def _gettoken(self, request: Request) -> Response:
        corpid, secret = request.query.get("corpid"), request.query.get("corpsecret")
        if not secret:
            answer = {"errcode": 41004, "errmsg": CORPSECRET_MISSING}
        elif not corpid:
            answer = {"errcode": 41002, "errmsg": CORPID_MISSING}
        elif corpid != self.corp_id:
            answer = {"errcode": 40013, "errmsg": INVALID_CORPID}
        elif not hmac.compare_digest(secret.encode(), self.corp_secret.encode()):
            answer = {"errcode": 40001, "errmsg": INVALID_CREDENTIAL}
        else:
            answer = {"errcode": 0, "errmsg": "ok", "access_token": self._issue_token(),
                      "expires_in": self.expires_in}
        self.token_requests.add({"corpid": corpid, "errcode": answer["errcode"]})
        return json_response(answer)

    def _token_problem(self, request: Request) -> Response | None:
        token = request.query.get("access_token")
        if not token:
            return json_response({"errcode": 41001, "errmsg": ACCESS_TOKEN_MISSING})
        with self._lock:
            issued = self._tokens.get(token)
            expired = token in self._expired
        if issued is None:
            return json_response({"errcode": 40014, "errmsg": INVALID_ACCESS_TOKEN})
        if expired or self._clock() - issued >= self.expires_in:
            return json_response({"errcode": 42001, "errmsg": ACCESS_TOKEN_EXPIRED})
        return None

    def _message_send(self, request: Request) -> Response:
        problem = self._token_problem(request)
        if problem is not None:
            return problem
        body = request.json()
        if not isinstance(body, dict):
            return json_response({"errcode": 47001, "errmsg": DATA_FORMAT_ERROR})
        agentid = body.get("agentid")
        if isinstance(agentid, str) and agentid.isdigit():
            agentid = int(agentid)  # WeCom takes "1000002" as well as 1000002
        if isinstance(agentid, bool) or agentid != self.agent_id:
            return json_response({"errcode": 40056, "errmsg": INVALID_AGENTID})
        if not any(isinstance(body.get(name), str) and body[name].strip() for name in ("touser", "toparty", "totag")):
            return json_response({"errcode": 81013, "errmsg": ALL_RECIPIENTS_INVALID})
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown"):
            return json_response({"errcode": 40008, "errmsg": INVALID_MESSAGE_TYPE})
        part = body.get(msgtype)
        content = part.get("content") if isinstance(part, dict) else None
        if not isinstance(content, str) or not content:
            return json_response({"errcode": 44004, "errmsg": EMPTY_CONTENT})
        delivered = dict(body)
        if msgtype == "markdown" and len(content.encode("utf-8")) > APP_MARKDOWN_MAX_BYTES:
            return json_response({"errcode": 45002, "errmsg": CONTENT_SIZE_OUT_OF_LIMIT})
        if msgtype == "text" and len(content.encode("utf-8")) > APP_TEXT_MAX_BYTES:
            delivered["text"] = dict(part, content=_truncate_utf8(content, APP_TEXT_MAX_BYTES))
        self.app_messages.add(delivered)
        msgid = f"fake_msgid_{next(self._msgids):012d}"
        return json_response({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": msgid})

    def _agent_get(self, request: Request) -> Response:
        problem = self._token_problem(request)
        if problem is not None:
            return problem
        if request.query.get("agentid") != str(self.agent_id):
            return json_response({"errcode": 40056, "errmsg": INVALID_AGENTID})
        return json_response({"errcode": 0, "errmsg": "ok", "agentid": self.agent_id, "name": "clawbot (fake)",
                              "square_logo_url": "", "description": "", "allow_userinfos": {"user": []},
                              "allow_partys": {"partyid": []}, "allow_tags": {"tagid": []}, "close": 0,
                              "redirect_domain": "", "report_location_flag": 0, "isreportenter": 0,
                              "home_url": "", "customized_publish_status": 1})


# --------------------------------------------------------------------------- callback crypto


class WeComCipher:
    """WXBizMsgCrypt as the WeCom docs describe it (see the module docstring)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str):
        self.token = token
        self.receive_id = receive_id.encode()
        self.key = base64.b64decode(encoding_aes_key + "=")
        if len(self.key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes")

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypt])).encode()).hexdigest()

    def encrypt(self, message: str, receive_id: bytes | None = None, random16: bytes | None = None) -> str:
        msg = message.encode()
        framed = (random16 or os.urandom(16)) + struct.pack(">I", len(msg)) + msg + (receive_id or self.receive_id)
        padder = padding.PKCS7(256).padder()
        encryptor = self._cipher().encryptor()
        raw = encryptor.update(padder.update(framed) + padder.finalize()) + encryptor.finalize()
        return base64.b64encode(raw).decode()

    def decrypt(self, encrypt: str) -> tuple[str, bytes]:
        """``(message, receive_id)``; ValueError when it does not decrypt."""
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(base64.b64decode(encrypt, validate=True)) + decryptor.finalize()
        unpadder = padding.PKCS7(256).unpadder()
        framed = unpadder.update(padded) + unpadder.finalize()
        if len(framed) < 20:
            raise ValueError("plaintext too short")
        (length,) = struct.unpack(">I", framed[16:20])
        if 20 + length > len(framed):
            raise ValueError("message length exceeds the plaintext")
        return framed[20:20 + length].decode(), framed[20 + length:]


# --------------------------------------------------------------------------- client side (what WeCom sends)


def verification_query(token: str, encoding_aes_key: str, corp_id: str, message: str = "1616140317555161061",
                       *, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
    """The query of WeCom's URL verification ``GET``: ``msg_signature``, ``timestamp`` (seconds, now
    by default), ``nonce`` and ``echostr`` (``message`` encrypted for ``corp_id``). A correct callback
    answers ``message``."""
    cipher = WeComCipher(token, encoding_aes_key, corp_id)
    ts = str(int(time.time())) if timestamp is None else timestamp
    nn = str(int.from_bytes(os.urandom(4), "big")) if nonce is None else nonce
    echostr = cipher.encrypt(message)
    return {"msg_signature": cipher.signature(ts, nn, echostr), "timestamp": ts, "nonce": nn, "echostr": echostr}


def query_string(query: dict[str, str]) -> str:
    """``query`` URL-encoded (base64 ``+``, ``/`` and ``=`` escaped, as WeCom sends them)."""
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in query.items())


def text_message_xml(corp_id: str, from_user: str, content: str, *, agent_id: int = 1000002,
                     msg_id: str = "4561255354251345929", create_time: int | None = None) -> str:
    """The plaintext XML of a text message a member sends to the app (the shape of the docs' example)."""
    created = int(time.time()) if create_time is None else create_time
    return (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName>\n"
            f"<FromUserName><![CDATA[{from_user}]]></FromUserName>\n<CreateTime>{created}</CreateTime>\n"
            f"<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[{content}]]></Content>\n"
            f"<MsgId>{msg_id}</MsgId>\n<AgentID>{agent_id}</AgentID>\n</xml>")


def encrypted_post(token: str, encoding_aes_key: str, corp_id: str, plaintext_xml: str, *,
                   agent_id: int = 1000002, timestamp: str | None = None,
                   nonce: str | None = None) -> tuple[dict[str, str], bytes]:
    """``(query, body)`` of an encrypted callback ``POST``: ``msg_signature``, ``timestamp``, ``nonce``
    and the XML envelope ``<xml><ToUserName/><Encrypt/><AgentID/></xml>`` around ``plaintext_xml``."""
    cipher = WeComCipher(token, encoding_aes_key, corp_id)
    ts = str(int(time.time())) if timestamp is None else timestamp
    nn = str(int.from_bytes(os.urandom(4), "big")) if nonce is None else nonce
    encrypt = cipher.encrypt(plaintext_xml)
    body = (f"<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<AgentID><![CDATA[{agent_id}]]></AgentID></xml>").encode()
    return {"msg_signature": cipher.signature(ts, nn, encrypt), "timestamp": ts, "nonce": nn}, body


def envelope_encrypt(body: bytes) -> str | None:
    """The ``Encrypt`` element of a callback ``POST`` body, or None when the body is not that XML."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    element = root.find("Encrypt")
    return element.text if element is not None and element.text else None


# --------------------------------------------------------------------------- a bot's callback


CALLBACK_MODES = ("ok", "bad_signature", "wrong_plaintext", "echo_ciphertext", "quoted", "trailing_newline")


class WeComCallback:
    """What a bot's WeCom app callback answers. ``GET`` (URL verification): check ``msg_signature``
    over the sorted token, timestamp, nonce and echostr (401 ``invalid_signature``), the timestamp
    within 1 h (401 ``stale_timestamp``), decrypt ``echostr`` and check the receive id is the CorpID
    (400 ``invalid_event``), answer the message as ``text/plain``. ``POST`` (encrypted XML message):
    the same checks over the ``Encrypt`` element, then an empty 200.

    Stands in for endpoints that misbehave, which the real bot cannot be made to do: ``mode``
    ``bad_signature`` (refuses every request with 401, as a bot holding another token does),
    ``wrong_plaintext`` (answers another number), ``echo_ciphertext`` (answers the echostr as
    received), ``quoted`` (answers the message as a JSON string), ``trailing_newline``.
    Recorded: ``verifications`` (decrypted echostr messages), ``messages`` (decrypted XML).
    """

    def __init__(self, token: str, encoding_aes_key: str, corp_id: str, mode: str = "ok"):
        if mode not in CALLBACK_MODES:
            raise ValueError(f"mode must be one of {CALLBACK_MODES}")
        self.cipher = WeComCipher(token, encoding_aes_key, corp_id)
        self.mode = mode
        self.verifications = Recorder()
        self.messages = Recorder()

    def _open(self, request: Request, encrypt: str | None) -> str | Response:
        """The decrypted message, or the error answer."""
        query = request.query
        signature, timestamp, nonce = query.get("msg_signature"), query.get("timestamp"), query.get("nonce")
        if self.mode == "bad_signature" or not (signature and timestamp and nonce is not None and encrypt) \
                or not hmac.compare_digest(self.cipher.signature(timestamp, nonce, encrypt), signature.lower()):
            return bot_error(401, "invalid_signature", "msg_signature mismatch")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > CALLBACK_WINDOW_S:
            return bot_error(401, "stale_timestamp", "timestamp outside the allowed window")
        try:
            message, receive_id = self.cipher.decrypt(encrypt)
        except (ValueError, UnicodeDecodeError, struct.error):
            return bot_error(400, "invalid_event", "event rejected")
        if not hmac.compare_digest(receive_id, self.cipher.receive_id):
            return bot_error(400, "invalid_event", "event rejected")
        return message

    def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            echostr = request.query.get("echostr")
            opened = self._open(request, echostr)
            if isinstance(opened, Response):
                return opened
            self.verifications.add(opened)
            answer = {"wrong_plaintext": str(int(opened) + 1) if opened.isdigit() else opened + "x",
                      "echo_ciphertext": echostr, "quoted": f'"{opened}"',
                      "trailing_newline": opened + "\n"}.get(self.mode, opened)
            return text_response(answer)
        if request.method == "POST":
            opened = self._open(request, envelope_encrypt(request.body))
            if isinstance(opened, Response):
                return opened
            self.messages.add(opened)
            return text_response("")
        return bot_error(405, "method_not_allowed", "GET or POST")
