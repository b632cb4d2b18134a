#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules import below DOCUMENTATION, EXAMPLES and RETURN
# Copyright: clawbot.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: im_app_check
short_description: Check a DingTalk, Feishu (Lark) or WeCom app registration without changing it
version_added: 0.1.0
author:
  - clawbot.stack contributors (@clawbot)
description:
  - Checks that a DingTalk, Feishu (Lark) or WeCom (WeChat Work) app registration works, the way the
    platform will use it, and changes nothing on the platform or the host.
  - C(credentials) asks the platform for an access token with O(app_key) and O(app_secret) (O(corp_id)
    and O(corp_secret) for WeCom). DingTalk is asked twice, through the OAuth2 API
    (C(POST /v1.0/oauth2/accessToken)) and the legacy API (C(GET /gettoken)); both must succeed. Feishu
    and Lark are asked for a tenant access token (C(POST /open-apis/auth/v3/tenant_access_token/internal)).
    WeCom is asked with C(GET /cgi-bin/gettoken) and, when O(agent_id) is set, for the app's details
    (C(GET /cgi-bin/agent/get)) with that token, which fails when the secret belongs to another app.
    Tokens are never returned.
  - C(callback_tls) connects to the public O(callback_url), which must be HTTPS, and checks that its
    certificate chain and host name verify and that the certificate is valid for at least
    O(cert_min_days) more days.
  - C(callback_verification) sends the callback the same verification request the platform sends when
    the URL is registered and checks the answer. Feishu and Lark get a C(url_verification) challenge
    (encrypted and signed with C(X-Lark-Signature) when O(encrypt_key) is set) and must echo the
    challenge. DingTalk gets an encrypted C(check_url) event and must answer with the encrypted string
    C(success), signed with O(token) and encrypted for O(owner_key). WeCom gets its URL verification
    C(GET ?msg_signature=&timestamp=&nonce=&echostr=) (a random message encrypted with O(aes_key) for
    O(corp_id), signed with O(token), the current time in seconds, a random nonce) and must answer with the
    decrypted message as the bare body.
  - C(webhook) sends O(test_message) to the group robot O(webhook_url), signed with O(webhook_secret)
    (WeCom robots are not signed), only when O(send_test_message=true) and never in check mode.
  - Each check reports the platform's own error code and message. The module fails when a check named
    in O(required_checks) fails; other failed checks become warnings. A check without the options it
    needs is skipped, which is not a failure.
options:
  platform:
    description:
      - The IM platform of the app. V(lark) is Feishu's international edition; V(wecom) is WeCom
        (WeChat Work, 企业微信).
    type: str
    required: true
    choices: [dingtalk, feishu, lark, wecom]
  app_key:
    description:
      - The app's AppKey (DingTalk, also called Client ID) or App ID (Feishu, Lark).
      - Needed, with O(app_secret), for the C(credentials) check. Not for O(platform=wecom) (see O(corp_id)).
    type: str
    aliases: [app_id]
  app_secret:
    description:
      - The app's AppSecret (DingTalk, also called Client Secret) or App Secret (Feishu, Lark).
        Not for O(platform=wecom) (see O(corp_secret)).
    type: str
  corp_id:
    description:
      - WeCom CorpID (企业ID) of the organisation. Only for O(platform=wecom).
      - Needed, with O(corp_secret), for the C(credentials) check and, with O(token) and O(aes_key), for
        C(callback_verification) (callback messages are encrypted for the CorpID).
    type: str
  corp_secret:
    description:
      - WeCom Secret of the self-built app (the app's own secret, not the contacts secret).
        Only for O(platform=wecom).
    type: str
  agent_id:
    description:
      - WeCom AgentId of the app. Only for O(platform=wecom).
      - When set, C(credentials) also reads the app's details with the token, which fails (C(40056) or
        C(301002)) when O(corp_secret) belongs to another app.
    type: int
  api_base:
    description:
      - Base URL of the platform's Open API.
      - When omitted, V(https://api.dingtalk.com) for DingTalk, V(https://open.feishu.cn) for Feishu,
        V(https://open.larksuite.com) for Lark and V(https://qyapi.weixin.qq.com) for WeCom.
    type: str
  oapi_base:
    description:
      - Base URL of DingTalk's legacy API, used for C(gettoken). Only for O(platform=dingtalk).
      - When omitted, V(https://oapi.dingtalk.com).
    type: str
  callback_url:
    description:
      - The public event callback (request) URL registered for the app.
      - Needed for the C(callback_tls) and C(callback_verification) checks.
    type: str
  verification_token:
    description:
      - Feishu/Lark Verification Token of the app; sent in the C(url_verification) request.
      - Needed for C(callback_verification) on Feishu and Lark. Only for O(platform=feishu) and O(platform=lark).
    type: str
  encrypt_key:
    description:
      - Feishu/Lark Encrypt Key of the app. When set, the verification request is encrypted and signed
        like Feishu does. Only for O(platform=feishu) and O(platform=lark).
    type: str
  token:
    description:
      - DingTalk event subscription Token, or the Token of the WeCom app's API receiving settings.
        Needed, with O(aes_key), for C(callback_verification) on DingTalk and WeCom.
        Only for O(platform=dingtalk) and O(platform=wecom).
    type: str
  aes_key:
    description:
      - DingTalk event subscription C(encodingAesKey), or the WeCom app's C(EncodingAESKey), exactly
        43 characters. Only for O(platform=dingtalk) and O(platform=wecom).
    type: str
  owner_key:
    description:
      - The key DingTalk binds encrypted events to, checked on both sides. The AppKey for internal apps,
        the CorpId or SuiteKey for others. Only for O(platform=dingtalk).
      - Defaults to O(app_key).
    type: str
  webhook_url:
    description:
      - Group robot webhook URL (DingTalk C(https://oapi.dingtalk.com/robot/send?access_token=...),
        Feishu/Lark C(https://open.feishu.cn/open-apis/bot/v2/hook/...), WeCom
        C(https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...)). Treated as a secret because the
        access token (the key for WeCom) is part of it.
    type: str
  webhook_secret:
    description:
      - Signing secret of the group robot (DingTalk C(SEC...)). Without it the message is sent unsigned.
        Not for O(platform=wecom) (WeCom robots are not signed).
    type: str
  send_test_message:
    description:
      - Send O(test_message) to O(webhook_url) to check the robot accepts signed messages. The message
        is visible in the group. Never sent in check mode.
    type: bool
    default: false
  test_message:
    description:
      - Text of the test message. DingTalk robots secured by keywords need one of them in it.
    type: str
    default: "clawbot.stack im_app_check: test message"
  validate_certs:
    description:
      - Verify TLS certificates. When V(false), the callback certificate's chain and host name are still
        checked and reported but do not fail C(callback_tls); its expiry still does.
    type: bool
    default: true
  ca_path:
    description:
      - PEM bundle of CA certificates to verify the callback's certificate with, in place of the system
        trust store (like O(ansible.builtin.uri#module:ca_path)). Used by C(callback_tls) and
        C(callback_verification) only; the platform APIs are always verified against the system store.
    type: path
  timeout:
    description:
      - Timeout in seconds of each connection and request.
    type: float
    default: 10
  retries:
    description:
      - How many times a request is repeated after a transport failure or an HTTP 429/5xx answer.
    type: int
    default: 2
  cert_min_days:
    description:
      - C(callback_tls) fails when the callback certificate expires within this many days.
    type: int
    default: 14
  required_checks:
    description:
      - Checks whose failure fails the module. A failure of any other check is a warning.
    type: list
    elements: str
    choices: [credentials, callback_tls, callback_verification, webhook]
    default: [credentials, callback_tls, callback_verification, webhook]
attributes:
  check_mode:
    support: full
    description: Every check runs in check mode except C(webhook), which would post a message and is skipped.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
  idempotent:
    support: full
    description: The module never changes anything (C(changed) is always false).
notes:
  - The C(callback_tls) handshake connects directly, without a proxy.
  - DingTalk and WeCom limit a group robot to 20 messages a minute; Feishu custom bots to 100 a minute.
  - The bot must accept the verification's timestamp, which is the current time of the host running the module.
requirements:
  - cryptography
seealso:
  - name: DingTalk event subscription
    description: Encrypted HTTP push events and their C(check_url) verification.
    link: https://open.dingtalk.com/document/orgapp/configure-event-subcription
  - name: Feishu event subscription
    description: Request URL verification and encrypted events.
    link: https://open.feishu.cn/document/server-docs/event-subscription-guide/event-subscription-configure-/request-url-configuration-case
  - name: WeCom callback crypto
    description: URL verification and encrypted callback messages of WeCom apps.
    link: https://developer.work.weixin.qq.com/document/path/90968
"""

EXAMPLES = r"""
- name: Check the DingTalk app before enabling the bot
  clawbot.stack.im_app_check:
    platform: dingtalk
    app_key: "{{ dingtalk_app_key }}"
    app_secret: "{{ dingtalk_app_secret }}"
    callback_url: https://bot.example.com/im/dingtalk
    token: "{{ dingtalk_event_token }}"
    aes_key: "{{ dingtalk_aes_key }}"

- name: Check the Feishu app and post a signed test message to the alert group
  clawbot.stack.im_app_check:
    platform: feishu
    app_id: "{{ feishu_app_id }}"
    app_secret: "{{ feishu_app_secret }}"
    callback_url: https://bot.example.com/im/feishu
    verification_token: "{{ feishu_verification_token }}"
    encrypt_key: "{{ feishu_encrypt_key }}"
    webhook_url: "{{ feishu_alert_webhook }}"
    webhook_secret: "{{ feishu_alert_secret }}"
    send_test_message: true

- name: Lark (international); only the credentials must pass, report the rest
  clawbot.stack.im_app_check:
    platform: lark
    app_id: "{{ lark_app_id }}"
    app_secret: "{{ lark_app_secret }}"
    callback_url: https://bot.example.com/im/feishu
    verification_token: "{{ lark_verification_token }}"
    required_checks: [credentials]
  register: lark_check

- name: Check the WeCom app, its callback and the alert group robot
  clawbot.stack.im_app_check:
    platform: wecom
    corp_id: "{{ wecom_corp_id }}"
    corp_secret: "{{ wecom_app_secret }}"
    agent_id: 1000002
    callback_url: https://bot.example.com/wecom/callback
    token: "{{ wecom_callback_token }}"
    aes_key: "{{ wecom_encoding_aes_key }}"
    webhook_url: "{{ wecom_alert_webhook }}"
    send_test_message: true

- name: Show how long the callback certificate is still valid
  ansible.builtin.debug:
    msg: "{{ lark_check.checks.callback_tls.details.days_left }} days"
"""

RETURN = r"""
platform:
  description: The platform checked.
  returned: always
  type: str
  sample: dingtalk
checks:
  description:
    - One result per check, keyed by check name. Every result has C(status) (V(ok), V(failed) or V(skipped)),
      C(required) (whether a failure fails the module), C(code) (the platform's error code, or the HTTP
      status, or null when there is neither), C(message) (the platform's message or why the check failed
      or was skipped) and C(details) (a dict, see each check).
    - No result contains a secret or an access token.
  returned: always
  type: dict
  contains:
    credentials:
      description:
        - Token request with O(app_key) and O(app_secret) (O(corp_id) and O(corp_secret) for WeCom).
          C(details.endpoint) and C(details.expires_in) (seconds) for Feishu/Lark and WeCom; for DingTalk
          C(details.oauth2) and C(details.legacy), each with C(status), C(code), C(message), C(endpoint)
          and C(expires_in). For WeCom with O(agent_id), C(details.agent) with C(status), C(code), C(message)
          and C(endpoint) of the app details request. C(code) is the platform's C(errcode) (WeCom
          C(40001) for a wrong secret, C(40013) for an unknown CorpID).
      returned: always
      type: dict
      sample:
        status: failed
        required: true
        code: invalidClientIdOrSecret
        message: "oauth2: invalidClientIdOrSecret ...; legacy: ok"
        details:
          oauth2:
            status: failed
            code: invalidClientIdOrSecret
            message: "..."
            endpoint: https://api.dingtalk.com/v1.0/oauth2/accessToken
          legacy:
            status: ok
            code: 0
            message: ok
            endpoint: https://oapi.dingtalk.com/gettoken?...
            expires_in: 7200
    callback_tls:
      description:
        - Certificate of O(callback_url). C(details) has C(endpoint), C(verified), C(reason) (why verification
          failed - V(expired), V(hostname_mismatch), V(self_signed), V(unknown_ca), V(not_yet_valid),
          V(untrusted) - or why there was no handshake - V(refused), V(timeout), V(dns), V(tls), V(transport);
          null when verified), C(not_after) (UTC, ISO 8601), C(days_left), C(issuer) and C(subject).
      returned: always
      type: dict
      sample:
        status: ok
        required: true
        code: null
        message: certificate valid until 2027-03-01T12:00:00Z (98 days left)
        details:
          endpoint: https://bot.example.com/im/feishu
          verified: true
          reason: null
          not_after: "2027-03-01T12:00:00Z"
          days_left: 98
          issuer: CN=R11,O=Let's Encrypt,C=US
          subject: CN=bot.example.com
    callback_verification:
      description:
        - The platform's URL verification request sent to O(callback_url). C(code) is the HTTP status of
          the answer. C(details) has C(endpoint) and C(encrypted) (whether the request was encrypted).
        - For WeCom the message says why an HTTP 200 answer is wrong (the encrypted echostr sent back, the
          plaintext quoted or with whitespace, another plaintext).
      returned: always
      type: dict
      sample:
        status: failed
        required: true
        code: 200
        message: "the answer carries another challenge: {\"challenge\":\"abc\"}"
        details: {endpoint: "https://bot.example.com/im/feishu", encrypted: true}
    webhook:
      description:
        - Test message sent to O(webhook_url). C(code) is DingTalk's or WeCom's C(errcode) (WeCom C(93000) for
          a wrong key) or Feishu's C(code) (C(StatusCode) on older hooks). C(details) has C(endpoint) (without
          the access token or key) and C(signed).
      returned: always
      type: dict
      sample:
        status: failed
        required: true
        code: 310000
        message: "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
        details: {endpoint: "https://oapi.dingtalk.com/robot/send?...", signed: true}
failed_checks:
  description: Names of the required checks that failed.
  returned: always
  type: list
  elements: str
  sample: [credentials]
"""

import json
import os
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.clawbot.stack.plugins.module_utils import im_protocols as protocols
from ansible_collections.clawbot.stack.plugins.module_utils import tls_probe
from ansible_collections.clawbot.stack.plugins.module_utils.webclient import HttpFailure, redact_url, request

CHECKS = ("credentials", "callback_tls", "callback_verification", "webhook")
DINGTALK = "dingtalk"
WECOM = "wecom"
PLATFORMS = ("dingtalk", "feishu", "lark", "wecom")
DEFAULT_API_BASES = {
    "dingtalk": "https://api.dingtalk.com",
    "feishu": "https://open.feishu.cn",
    "lark": "https://open.larksuite.com",
    "wecom": "https://qyapi.weixin.qq.com",
}
DEFAULT_OAPI_BASE = "https://oapi.dingtalk.com"
# The platforms each platform-specific option applies to; set for another platform, it is an input error.
PLATFORM_OPTIONS = {
    "app_key": ("dingtalk", "feishu", "lark"),
    "app_secret": ("dingtalk", "feishu", "lark"),
    "oapi_base": ("dingtalk",),
    "verification_token": ("feishu", "lark"),
    "encrypt_key": ("feishu", "lark"),
    "token": ("dingtalk", "wecom"),
    "aes_key": ("dingtalk", "wecom"),
    "owner_key": ("dingtalk",),
    "corp_id": ("wecom",),
    "corp_secret": ("wecom",),
    "agent_id": ("wecom",),
    "webhook_secret": ("dingtalk", "feishu", "lark"),
}
SECRET_OPTIONS = ("app_secret", "corp_secret", "verification_token", "encrypt_key", "token", "aes_key", "webhook_url",
                  "webhook_secret")
EXCERPT_CHARS = 200
MASK = "********"


def argument_spec():
    return dict(
        platform=dict(type="str", required=True, choices=list(PLATFORMS)),
        app_key=dict(type="str", aliases=["app_id"], no_log=False),
        app_secret=dict(type="str", no_log=True),
        corp_id=dict(type="str"),
        corp_secret=dict(type="str", no_log=True),
        agent_id=dict(type="int"),
        api_base=dict(type="str"),
        oapi_base=dict(type="str"),
        callback_url=dict(type="str"),
        verification_token=dict(type="str", no_log=True),
        encrypt_key=dict(type="str", no_log=True),
        token=dict(type="str", no_log=True),
        aes_key=dict(type="str", no_log=True),
        owner_key=dict(type="str", no_log=False),
        webhook_url=dict(type="str", no_log=True),
        webhook_secret=dict(type="str", no_log=True),
        send_test_message=dict(type="bool", default=False),
        test_message=dict(type="str", default="clawbot.stack im_app_check: test message"),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        timeout=dict(type="float", default=10),
        retries=dict(type="int", default=2),
        cert_min_days=dict(type="int", default=14),
        required_checks=dict(type="list", elements="str", choices=list(CHECKS), default=list(CHECKS)),
    )


# --------------------------------------------------------------------------- secrets and text


class Redactor:
    """Replaces every known secret value in strings, lists and dicts by a mask (or a masked form)."""

    def __init__(self, values=()):
        self._replacements = {}
        for value in values:
            self.add(value)

    def add(self, value, replacement=MASK):
        if isinstance(value, str) and value:
            self._replacements[value] = replacement

    def text(self, value):
        for secret in sorted(self._replacements, key=len, reverse=True):
            value = value.replace(secret, self._replacements[secret])
        return value

    def deep(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return dict((key, self.deep(item)) for key, item in value.items())
        if isinstance(value, (list, tuple)):
            return [self.deep(item) for item in value]
        return value


def webhook_url_secrets(url):
    """The access token inside a webhook URL: query values (DingTalk) and the hook path segment (Feishu)."""
    parts = urlsplit(url)
    values = [value for name, value in parse_qsl(parts.query) if value]
    path = parts.path.rstrip("/")
    if "/hook/" in path:
        values.append(path.rsplit("/", 1)[-1])
    return values


def webhook_endpoint(url):
    """``url`` without query (DingTalk's access token) and with a Feishu hook token masked."""
    endpoint = redact_url(url)
    for value in webhook_url_secrets(url):
        endpoint = endpoint.replace(value, MASK)
    return endpoint


def redactor_for(params):
    """A :class:`Redactor` for every secret option; the webhook URL becomes its masked endpoint."""
    redactor = Redactor(params.get(name) for name in SECRET_OPTIONS if name != "webhook_url")
    url = params.get("webhook_url")
    if url:
        for value in webhook_url_secrets(url):
            redactor.add(value)
        redactor.add(url, webhook_endpoint(url))
    return redactor


def excerpt(text):
    text = " ".join(text.split())
    if len(text) > EXCERPT_CHARS:
        return text[:EXCERPT_CHARS] + "..."
    return text


# --------------------------------------------------------------------------- results


def check_result(status, code=None, message="", **details):
    return {"status": status, "required": False, "code": code, "message": message, "details": details}


def skipped(message, **details):
    return check_result("skipped", None, message, **details)


def transport_failure(exc, **details):
    return check_result("failed", None, exc.message, reason=exc.reason, **details)


def _dict_json(resp):
    body = resp.json()
    return body if isinstance(body, dict) else None


class Checks:
    """The four checks, each returning a result dict; shared settings and the HTTP client live here."""

    def __init__(self, params, check_mode, redactor):
        self.params = params
        self.check_mode = check_mode
        self.redactor = redactor
        self.platform = params["platform"]

    def http(self, method, url, callback=False, **kwargs):
        """One request with the module's timeout/retries; ``ca_path`` only applies to the callback."""
        return request(method, url, timeout=self.params["timeout"], retries=self.params["retries"],
                       validate_certs=self.params["validate_certs"],
                       ca_path=self.params["ca_path"] if callback else None, **kwargs)

    def remember_token(self, body, *names):
        for name in names:
            self.redactor.add(body.get(name))

    def answer_text(self, resp):
        """Status and the start of the body, secrets masked before cutting (no half secret survives)."""
        return f"HTTP {resp.status}: {excerpt(self.redactor.text(resp.text)) or '(empty body)'}"

    # ----------------------------------------------------------------------- credentials

    def credentials(self):
        if self.platform == WECOM:
            missing = [name for name in ("corp_id", "corp_secret") if not self.params[name]]
            if missing:
                return skipped(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")
            return self._wecom_credentials()
        if not (self.params["app_key"] and self.params["app_secret"]):
            return skipped("app_key and app_secret are not set")
        if self.platform == DINGTALK:
            return self._dingtalk_credentials()
        return self._feishu_credentials()

    def _dingtalk_credentials(self):
        subs = {"oauth2": self._dingtalk_oauth2(), "legacy": self._dingtalk_legacy()}
        failed = [name for name, sub in subs.items() if sub["status"] != "ok"]
        if not failed:
            return check_result("ok", None, "oauth2 and legacy access tokens issued", **subs)
        message = "; ".join(f"{name}: {_sub_summary(sub)}" for name, sub in subs.items())
        return check_result("failed", subs[failed[0]]["code"], message, **subs)

    def _call(self, method, url, json_body=None):
        """``(resp, body dict, endpoint)`` of a platform API call, or ``(None, HttpFailure, endpoint)``."""
        endpoint = redact_url(url)
        try:
            resp = self.http(method, url, json_body=json_body) if json_body is not None else self.http(method, url)
        except HttpFailure as exc:
            return None, exc, endpoint
        return resp, _dict_json(resp) or {}, endpoint

    def _outcome(self, resp, body, ok, code_key, msg_key, ok_code=0):
        """``(status, code, message)``: ok; else the platform's code and message; else the HTTP
        status and an excerpt of the answer."""
        if ok:
            return "ok", ok_code, str(body.get(msg_key, "ok"))
        if body.get(code_key) not in (None, ""):
            return "failed", body[code_key], str(body.get(msg_key, ""))
        return "failed", resp.status, self.answer_text(resp)

    def _dingtalk_oauth2(self):
        resp, body, endpoint = self._call("POST", self.params["api_base"] + "/v1.0/oauth2/accessToken",
                                          {"appKey": self.params["app_key"], "appSecret": self.params["app_secret"]})
        if resp is None:
            return _sub_result("failed", None, body.message, endpoint)
        self.remember_token(body, "accessToken", "refreshToken")
        ok = resp.status == 200 and body.get("accessToken")
        status, code, message = self._outcome(resp, body, ok, "code", "message", ok_code=resp.status)
        if ok:
            message = "access token issued"
        return _sub_result(status, code, message, endpoint, body.get("expireIn") if ok else None)

    def _dingtalk_legacy(self):
        query = urlencode({"appkey": self.params["app_key"], "appsecret": self.params["app_secret"]})
        resp, body, endpoint = self._call("GET", f"{self.params['oapi_base']}/gettoken?{query}")
        if resp is None:
            return _sub_result("failed", None, body.message, endpoint)
        self.remember_token(body, "access_token")
        ok = body.get("errcode") == 0 and body.get("access_token")
        status, code, message = self._outcome(resp, body, ok, "errcode", "errmsg")
        return _sub_result(status, code, message, endpoint, body.get("expires_in") if ok else None)

    def _feishu_credentials(self):
        resp, body, endpoint = self._call(
            "POST", self.params["api_base"] + "/open-apis/auth/v3/tenant_access_token/internal",
            {"app_id": self.params["app_key"], "app_secret": self.params["app_secret"]})
        if resp is None:
            return transport_failure(body, endpoint=endpoint)
        self.remember_token(body, "tenant_access_token", "app_access_token")
        ok = body.get("code") == 0 and body.get("tenant_access_token")
        status, code, message = self._outcome(resp, body, ok, "code", "msg")
        details = dict(endpoint=endpoint, expires_in=body.get("expire")) if ok else dict(endpoint=endpoint)
        return check_result(status, code, message, **details)

    def _wecom_credentials(self):
        query = urlencode({"corpid": self.params["corp_id"], "corpsecret": self.params["corp_secret"]})
        resp, body, endpoint = self._call("GET", f"{self.params['api_base']}/cgi-bin/gettoken?{query}")
        if resp is None:
            return transport_failure(body, endpoint=endpoint)
        self.remember_token(body, "access_token")
        ok = body.get("errcode") == 0 and body.get("access_token")
        status, code, message = self._outcome(resp, body, ok, "errcode", "errmsg")
        if not ok:
            return check_result(status, code, message, endpoint=endpoint)
        details = dict(endpoint=endpoint, expires_in=body.get("expires_in"))
        if self.params["agent_id"] is None:
            return check_result("ok", 0, message, **details)
        agent = self._wecom_agent(body["access_token"])
        details["agent"] = agent
        if agent["status"] == "ok":
            return check_result("ok", 0, f"access token issued; agent {self.params['agent_id']}: ok", **details)
        message = f"access token issued; agent {self.params['agent_id']}: {_sub_summary(agent)}"
        return check_result("failed", agent["code"], message, **details)

    def _wecom_agent(self, access_token):
        """GET /cgi-bin/agent/get: does the secret belong to the app ``agent_id``?"""
        query = urlencode({"access_token": access_token, "agentid": self.params["agent_id"]})
        resp, body, endpoint = self._call("GET", f"{self.params['api_base']}/cgi-bin/agent/get?{query}")
        if resp is None:
            return _sub_result("failed", None, body.message, endpoint)
        status, code, message = self._outcome(resp, body, body.get("errcode") == 0, "errcode", "errmsg")
        return _sub_result(status, code, message, endpoint)

    # ----------------------------------------------------------------------- callback TLS

    def callback_tls(self):
        url = self.params["callback_url"]
        if not url:
            return skipped("callback_url is not set")
        parts = urlsplit(url)
        endpoint = redact_url(url)
        if parts.scheme != "https":
            return check_result("failed", None, "callback_url is not HTTPS", endpoint=endpoint)
        probe = tls_probe.probe(parts.hostname, parts.port or 443, timeout=self.params["timeout"],
                                ca_path=self.params["ca_path"])
        details = dict(endpoint=endpoint, verified=probe.verified, reason=probe.reason, not_after=probe.not_after,
                       days_left=probe.days_left, issuer=probe.issuer, subject=probe.subject)
        if not probe.has_certificate:
            return check_result("failed", None, probe.message, **details)
        validity = f"valid until {probe.not_after} ({probe.days_left} days left)"
        if probe.days_left < 0:
            validity = f"expired on {probe.not_after}"
        if not probe.verified and self.params["validate_certs"]:
            return check_result("failed", None, f"{probe.message}; {validity}", **details)
        prefix = "certificate"
        if not probe.verified:
            prefix = f"certificate not verified ({probe.message}, ignored: validate_certs=false);"
        if probe.days_left < self.params["cert_min_days"]:
            message = f"{prefix} {validity}, less than cert_min_days={self.params['cert_min_days']}"
            return check_result("failed", None, message, **details)
        return check_result("ok", None, f"{prefix} {validity}", **details)

    # ----------------------------------------------------------------------- callback verification

    def callback_verification(self):
        url = self.params["callback_url"]
        if not url:
            return skipped("callback_url is not set")
        if self.platform == DINGTALK:
            missing = [name for name in ("token", "aes_key") if not self.params[name]]
            if not self.params["owner_key"]:
                missing.append("owner_key (or app_key)")
            if missing:
                return skipped(f"not set: {', '.join(missing)}", endpoint=redact_url(url))
            return self._dingtalk_check_url(url)
        if self.platform == WECOM:
            missing = [name for name in ("token", "aes_key", "corp_id") if not self.params[name]]
            if missing:
                return skipped(f"not set: {', '.join(missing)}", endpoint=redact_url(url))
            return self._wecom_url_verification(url)
        if not self.params["verification_token"]:
            return skipped("verification_token is not set", endpoint=redact_url(url))
        return self._feishu_url_verification(url)

    def _feishu_url_verification(self, url):
        challenge = secrets.token_urlsafe(18)
        payload = {"challenge": challenge, "token": self.params["verification_token"], "type": "url_verification"}
        encrypt_key = self.params["encrypt_key"]
        if encrypt_key:
            body, headers = protocols.feishu_encrypted_request(encrypt_key, payload)
        else:
            body, headers = json.dumps(payload, separators=(",", ":")).encode("utf-8"), {}
        headers["Content-Type"] = "application/json; charset=utf-8"
        details = dict(endpoint=redact_url(url), encrypted=bool(encrypt_key))
        try:
            resp = self.http("POST", url, callback=True, data=body, headers=headers)
        except HttpFailure as exc:
            return transport_failure(exc, **details)
        if resp.status != 200:
            return check_result("failed", resp.status, f"callback refused the challenge: {self.answer_text(resp)}",
                                **details)
        answer = _dict_json(resp)
        if answer is None or "challenge" not in answer:
            return check_result("failed", resp.status, f"the answer has no challenge: {self.answer_text(resp)}",
                                **details)
        if answer["challenge"] != challenge:
            message = f"the answer carries another challenge: {self.answer_text(resp)}"
            return check_result("failed", resp.status, message, **details)
        return check_result("ok", resp.status, "url_verification challenge echoed", **details)

    def _dingtalk_check_url(self, url):
        crypto = protocols.DingTalkEventCrypto(self.params["token"], self.params["aes_key"],
                                               self.params["owner_key"])
        envelope = crypto.envelope(protocols.DINGTALK_CHECK_URL_EVENT)
        query = urlencode([("msg_signature", envelope["msg_signature"]), ("timeStamp", envelope["timeStamp"]),
                           ("nonce", envelope["nonce"])])
        details = dict(endpoint=redact_url(url), encrypted=True)
        separator = "&" if "?" in url else "?"
        try:
            resp = self.http("POST", f"{url}{separator}{query}", callback=True,
                             json_body={"encrypt": envelope["encrypt"]})
        except HttpFailure as exc:
            return transport_failure(exc, **details)
        if resp.status != 200:
            message = f"callback refused the check_url event: {self.answer_text(resp)}"
            return check_result("failed", resp.status, message, **details)
        problem = self._dingtalk_answer_problem(crypto, _dict_json(resp))
        if problem:
            return check_result("failed", resp.status, f"{problem}: {self.answer_text(resp)}", **details)
        return check_result("ok", resp.status, "check_url answered with encrypted success", **details)

    def _wecom_url_verification(self, url):
        crypto = protocols.WeComCrypto(self.params["token"], self.params["aes_key"], self.params["corp_id"])
        query, expected = crypto.verification_query()
        details = dict(endpoint=redact_url(url), encrypted=True)
        separator = "&" if "?" in url else "?"
        try:
            resp = self.http("GET", f"{url}{separator}{urlencode(query)}", callback=True)
        except HttpFailure as exc:
            return transport_failure(exc, **details)
        if resp.status != 200:
            message = f"callback refused the URL verification: {self.answer_text(resp)}"
            return check_result("failed", resp.status, message, **details)
        problem = _wecom_answer_problem(resp.body, expected, dict(query)["echostr"])
        if problem:
            return check_result("failed", resp.status, f"{problem}: {self.answer_text(resp)}", **details)
        return check_result("ok", resp.status, "echostr decrypted and answered", **details)

    def _dingtalk_answer_problem(self, crypto, answer):
        """Why a DingTalk check_url answer is wrong, or None when it is the encrypted "success"."""
        if answer is None or not isinstance(answer.get("encrypt"), str):
            return "the answer is not an encrypted DingTalk reply"
        try:
            plaintext = crypto.open_envelope(answer)
        except protocols.SignatureMismatch:
            return "the answer's msg_signature does not verify with token"
        except protocols.OwnerKeyMismatch:
            return "the answer was encrypted for another owner_key"
        except protocols.ProtocolError:
            return "the answer does not decrypt with aes_key"
        if plaintext != protocols.DINGTALK_SUCCESS:
            return f"the answer decrypts to {excerpt(self.redactor.text(plaintext))!r} instead of 'success'"
        return None

    # ----------------------------------------------------------------------- webhook

    def webhook(self):
        if not self.params["send_test_message"]:
            return skipped("send_test_message is false")
        url = self.params["webhook_url"]
        if not url:
            return skipped("webhook_url is not set")
        details = dict(endpoint=webhook_endpoint(url), signed=bool(self.params["webhook_secret"]))
        if self.check_mode:
            return skipped("check mode: no message sent", **details)
        if self.platform == DINGTALK:
            return self._errcode_webhook(protocols.dingtalk_signed_webhook_url(url, self.params["webhook_secret"]),
                                         details)
        if self.platform == WECOM:
            return self._errcode_webhook(url, details)
        return self._feishu_webhook(url, details)

    def _errcode_webhook(self, url, details):
        """DingTalk and WeCom robots: a text message, answered with ``errcode``/``errmsg``."""
        message = {"msgtype": "text", "text": {"content": self.params["test_message"]}}
        try:
            resp = self.http("POST", url, json_body=message)
        except HttpFailure as exc:
            return transport_failure(exc, **details)
        body = _dict_json(resp) or {}
        if "errcode" not in body:
            return check_result("failed", resp.status, self.answer_text(resp), **details)
        status = "ok" if body["errcode"] == 0 and resp.status == 200 else "failed"
        return check_result(status, body["errcode"], str(body.get("errmsg", "")), **details)

    def _feishu_webhook(self, url, details):
        message = protocols.feishu_webhook_body(self.params["test_message"], self.params["webhook_secret"])
        try:
            resp = self.http("POST", url, json_body=message)
        except HttpFailure as exc:
            return transport_failure(exc, **details)
        body = _dict_json(resp) or {}
        code = body.get("code", body.get("StatusCode"))
        if code is None:
            return check_result("failed", resp.status, self.answer_text(resp), **details)
        text = body.get("msg", body.get("StatusMessage", ""))
        status = "ok" if code == 0 and resp.status == 200 else "failed"
        return check_result(status, code, str(text), **details)


def _wecom_answer_problem(body, message, echostr):
    """Why a WeCom URL verification answer is not the bare decrypted ``message``, or None."""
    if body == message.encode("utf-8"):
        return None
    text = body.decode("utf-8", "replace")
    if text.strip() == echostr:
        return "the answer is the encrypted echostr, not its decrypted message"
    if text.lstrip("\ufeff").strip().strip('"') == message:
        return "the answer carries the decrypted message with quotes, whitespace or a BOM; WeCom needs it bare"
    return "the answer is not the decrypted echostr message"


def _sub_summary(sub):
    if sub["status"] == "ok":
        return "ok"
    return sub["message"] if sub["code"] is None else f"{sub['code']} {sub['message']}"


def _sub_result(status, code, message, endpoint, expires_in=None):
    result = {"status": status, "code": code, "message": message, "endpoint": endpoint}
    if expires_in is not None:
        result["expires_in"] = expires_in
    return result


# --------------------------------------------------------------------------- input


def _is_http_url(value):
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number or out of range
        return False


def _http_url_problem(name, value, secret=False):
    """Why ``value`` is not an http(s) URL (never quoting a secret), or None."""
    if _is_http_url(value):
        return None
    shown = "" if secret else f" (got {value!r})"
    return f"{name} must be an http:// or https:// URL{shown}"


def input_problem(params):
    """The first thing wrong with the options, naming the option, or None."""
    platform = params["platform"]
    wrong = [name for name, platforms in PLATFORM_OPTIONS.items()
             if params[name] is not None and platform not in platforms]
    if wrong:
        return f"{', '.join(wrong)}: not an option for platform {platform}"
    if params["aes_key"] is not None:
        decode = protocols.decode_wecom_aes_key if platform == WECOM else protocols.decode_dingtalk_aes_key
        try:
            decode(params["aes_key"])
        except ValueError as exc:
            return str(exc)
    if params["agent_id"] is not None and params["agent_id"] <= 0:
        return "agent_id must be a positive integer (the app's AgentId)"
    for name in ("api_base", "oapi_base", "callback_url", "webhook_url"):
        if params[name] is not None:
            problem = _http_url_problem(name, params[name], secret=name in SECRET_OPTIONS)
            if problem:
                return problem
    if params["timeout"] <= 0:
        return "timeout must be greater than 0"
    if params["retries"] < 0:
        return "retries must be 0 or more"
    if params["cert_min_days"] < 0:
        return "cert_min_days must be 0 or more"
    if params["ca_path"] and not os.path.isfile(params["ca_path"]):
        return f"ca_path {params['ca_path']} is not a file"
    return None


def resolved_params(params):
    """``params`` with the platform-dependent defaults filled in."""
    resolved = dict(params)
    resolved["api_base"] = (params["api_base"] or DEFAULT_API_BASES[params["platform"]]).rstrip("/")
    resolved["oapi_base"] = (params["oapi_base"] or DEFAULT_OAPI_BASE).rstrip("/")
    resolved["owner_key"] = params["owner_key"] or params["app_key"]
    return resolved


# --------------------------------------------------------------------------- main


def run_checks(params, check_mode, redactor):
    checks = Checks(params, check_mode, redactor)
    results = {}
    for name in CHECKS:
        result = getattr(checks, name)()
        result["required"] = name in params["required_checks"]
        results[name] = result
    return redactor.deep(results)


def failure_summary(name, result):
    if result["code"] is None:
        return f"{name} ({result['message']})"
    return f"{name} (code {result['code']}: {result['message']})"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_together=[("app_key", "app_secret"), ("token", "aes_key")],
        required_by={"webhook_secret": "webhook_url"},
    )
    if not (protocols.HAS_CRYPTOGRAPHY and tls_probe.HAS_CRYPTOGRAPHY):
        module.fail_json(msg=missing_required_lib("cryptography"),
                         exception=protocols.CRYPTOGRAPHY_IMPORT_ERROR or tls_probe.CRYPTOGRAPHY_IMPORT_ERROR)
    problem = input_problem(module.params)
    if problem:
        module.fail_json(msg=problem)
    params = resolved_params(module.params)
    checks = run_checks(params, module.check_mode, redactor_for(params))
    failed = [name for name in CHECKS if checks[name]["status"] == "failed" and checks[name]["required"]]
    for name in CHECKS:
        if checks[name]["status"] == "failed" and not checks[name]["required"]:
            module.warn(f"check failed but not required: {failure_summary(name, checks[name])}")
    result = dict(changed=False, platform=params["platform"], checks=checks, failed_checks=failed)
    if failed:
        summary = "; ".join(failure_summary(name, checks[name]) for name in failed)
        module.fail_json(msg=f"required checks failed: {summary}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
