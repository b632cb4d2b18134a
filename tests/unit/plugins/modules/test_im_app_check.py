"""Unit tests for clawbot.stack.im_app_check, run in-process against local fake platform servers.

Every module run goes through :func:`run`, which also scans the whole result (and warnings) for every
secret value and every access token the fakes issue.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
import yaml
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils import basic
from ansible_collections.clawbot.stack.plugins.module_utils import im_protocols
from ansible_collections.clawbot.stack.plugins.modules import im_app_check
from ansible_collections.clawbot.stack.tests.fakes import dingtalk, feishu, wecom
from ansible_collections.clawbot.stack.tests.fakes.dingtalk import DingTalkCallback, FakeDingTalk
from ansible_collections.clawbot.stack.tests.fakes.feishu import FakeFeishu, FeishuCallback
from ansible_collections.clawbot.stack.tests.fakes.httpd import (
    FakeServer,
    Request,
    Response,
    SilentTlsPort,
    closed_port,
    json_response,
    text_response,
)
from ansible_collections.clawbot.stack.tests.fakes.pki import EXPIRING_SOON_DAYS, Pki, make_pki
from ansible_collections.clawbot.stack.tests.fakes.wecom import FakeWeCom, WeComCallback

# DingTalk app
DT_APP_KEY = "dingappkey7x1q2w3e4r"
DT_APP_SECRET = "dt-app-secret-Sx9f8e7d6c5b4a"
DT_EVENT_TOKEN = "dt-event-token-Qm4Zp8Lk"
DT_AES_KEY = "kJ3nV9sQ2wE8rT5yU1iO7pA4sD6fG0hJ2kL9zX3cV5b"
DT_CORP_ID = "dingcorp0a1b2c3d4e5f"
DT_ROBOT_TOKEN = "dt-robot-access-token-0abc123def"
DT_ROBOT_SECRET = "SECdt0robot0secret0a1b2c3d4e5f6g7h8"
DT_OAUTH2_TOKEN = "dt-issued-oauth2-token-ZZ91"
DT_LEGACY_TOKEN = "dt-issued-legacy-token-YY82"
# Feishu / Lark app
FS_APP_ID = "cli_a1b2c3d4e5f6a7b8"
FS_APP_SECRET = "fs-app-secret-Kq7Wz2Nm5"
FS_VERIFICATION_TOKEN = "fs-verification-token-Lp3Xc9"
FS_ENCRYPT_KEY = "fs-encrypt-key-Rt5Vb1Gh"
FS_HOOK_TOKEN = "fs-hook-token-0f9e8d7c-6b5a"
FS_HOOK_SECRET = "fs-hook-secret-Yu2Io3Pq"
FS_TENANT_TOKEN = "t-fs-issued-tenant-token-XX73"
# WeCom app
WC_CORP_ID = "ww7c1a2b3c4d5e6f70"
WC_CORP_SECRET = "wc-corp-secret-Hn3Jk5Lm7Pq9Rs1Tu"
WC_AGENT_ID = 1000002
WC_CALLBACK_TOKEN = "wc-callback-token-Vw2Xy4"
WC_AES_KEY = "Qm9zY2FsbGJhY2tBZXNLZXkwMTIzNDU2Nzg5YWJjZGV"
WC_ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
WC_ISSUED_TOKEN = "wc-issued-access-token-WW64"

SECRETS = (DT_APP_SECRET, DT_EVENT_TOKEN, DT_AES_KEY, DT_ROBOT_TOKEN, DT_ROBOT_SECRET, DT_OAUTH2_TOKEN,
           DT_LEGACY_TOKEN, FS_APP_SECRET, FS_VERIFICATION_TOKEN, FS_ENCRYPT_KEY, FS_HOOK_TOKEN, FS_HOOK_SECRET,
           FS_TENANT_TOKEN, WC_CORP_SECRET, WC_CALLBACK_TOKEN, WC_AES_KEY, WC_ROBOT_KEY, WC_ISSUED_TOKEN)
SECRET_OPTIONS = {"app_secret", "corp_secret", "verification_token", "encrypt_key", "token", "aes_key", "webhook_url",
                  "webhook_secret"}


# --------------------------------------------------------------------------- running the module


class ModuleExit(Exception):
    pass


class ModuleFail(Exception):
    pass


@dataclass
class Outcome:
    failed: bool
    result: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def checks(self) -> dict[str, Any]:
        return self.result["checks"]

    def check(self, name: str) -> dict[str, Any]:
        return self.result["checks"][name]


def assert_no_secrets(outcome: Outcome, extra: tuple[str, ...] = ()) -> None:
    dumped = json.dumps({"result": outcome.result, "warnings": outcome.warnings}, ensure_ascii=False)
    for secret in SECRETS + extra:
        assert secret not in dumped, f"secret {secret[:6]}... leaked into the module result"


def run(args: dict[str, Any], check_mode: bool = False) -> Outcome:
    """Run the module in-process with ``args``; exit_json/fail_json raise, warnings are collected."""
    module_args = dict(args)
    if check_mode:
        module_args["_ansible_check_mode"] = True
    warnings: list[str] = []

    def exit_json(self: Any, **kwargs: Any) -> None:
        raise ModuleExit(kwargs)

    def fail_json(self: Any, msg: str, **kwargs: Any) -> None:
        kwargs["msg"] = msg
        raise ModuleFail(kwargs)

    def warn(self: Any, warning: str, **kwargs: Any) -> None:
        warnings.append(warning)

    payload = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}).encode()
    with mock.patch.object(basic, "_ANSIBLE_ARGS", payload), \
            mock.patch.object(basic, "_ANSIBLE_PROFILE", "legacy"), \
            mock.patch.object(basic.AnsibleModule, "exit_json", exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", fail_json), \
            mock.patch.object(basic.AnsibleModule, "warn", warn):
        outcome = _outcome_of_main(warnings)
    assert_no_secrets(outcome)
    if "checks" in outcome.result:
        assert outcome.result["changed"] is False
    return outcome


def _outcome_of_main(warnings: list[str]) -> Outcome:
    try:
        im_app_check.main()
    except ModuleExit as exc:
        return Outcome(False, exc.args[0], warnings)
    except ModuleFail as exc:
        return Outcome(True, exc.args[0], warnings)
    raise AssertionError("the module neither exited nor failed")


def only(*names: str) -> dict[str, Any]:
    """Quick runs: no retries, short timeout, and only ``names`` required."""
    return {"retries": 0, "timeout": 3, "required_checks": list(names)}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def dingtalk_api():
    app = FakeDingTalk(DT_APP_KEY, DT_APP_SECRET, oauth2_token=DT_OAUTH2_TOKEN, legacy_token=DT_LEGACY_TOKEN,
                       robot_token=DT_ROBOT_TOKEN, robot_secret=DT_ROBOT_SECRET)
    with FakeServer(app) as server:
        yield server


@pytest.fixture
def feishu_api():
    app = FakeFeishu(FS_APP_ID, FS_APP_SECRET, tenant_token=FS_TENANT_TOKEN, hook_token=FS_HOOK_TOKEN,
                     hook_secret=FS_HOOK_SECRET)
    with FakeServer(app) as server:
        yield server


def dingtalk_args(api: FakeServer, **extra: Any) -> dict[str, Any]:
    args = {"platform": "dingtalk", "app_key": DT_APP_KEY, "app_secret": DT_APP_SECRET, "api_base": api.base_url,
            "oapi_base": api.base_url}
    args.update(only("credentials"))
    args.update(extra)
    return args


def feishu_args(api: FakeServer, platform: str = "feishu", **extra: Any) -> dict[str, Any]:
    args = {"platform": platform, "app_id": FS_APP_ID, "app_secret": FS_APP_SECRET, "api_base": api.base_url}
    args.update(only("credentials"))
    args.update(extra)
    return args


def callback_server(pki: Pki, app: Any, cert: str = "valid") -> FakeServer:
    return FakeServer(app, tls_context=pki.server_context(cert))


def dingtalk_callback_args(server: FakeServer, pki: Pki, **extra: Any) -> dict[str, Any]:
    args = {"platform": "dingtalk", "app_key": DT_APP_KEY, "app_secret": DT_APP_SECRET,
            "api_base": f"http://127.0.0.1:{closed_port()}", "callback_url": f"{server.base_url}/im/dingtalk",
            "token": DT_EVENT_TOKEN, "aes_key": DT_AES_KEY, "ca_path": str(pki.ca_bundle)}
    args.update(only("callback_tls", "callback_verification"))
    args.update(extra)
    return args


def feishu_callback_args(server: FakeServer, pki: Pki, **extra: Any) -> dict[str, Any]:
    args = {"platform": "feishu", "callback_url": f"{server.base_url}/im/feishu",
            "verification_token": FS_VERIFICATION_TOKEN, "ca_path": str(pki.ca_bundle)}
    args.update(only("callback_tls", "callback_verification"))
    args.update(extra)
    return args


# --------------------------------------------------------------------------- credentials


def test_dingtalk_good_credentials_pass_both_apis(dingtalk_api: FakeServer) -> None:
    outcome = run(dingtalk_args(dingtalk_api))

    assert not outcome.failed
    check = outcome.check("credentials")
    assert check["status"] == "ok"
    assert check["required"] is True
    oauth2, legacy = check["details"]["oauth2"], check["details"]["legacy"]
    assert (oauth2["status"], oauth2["code"], oauth2["expires_in"]) == ("ok", 200, 7200)
    assert (legacy["status"], legacy["code"], legacy["expires_in"]) == ("ok", 0, 7200)
    assert oauth2["endpoint"] == f"{dingtalk_api.base_url}/v1.0/oauth2/accessToken"
    assert legacy["endpoint"] == f"{dingtalk_api.base_url}/gettoken?..."
    (oauth2_call,) = dingtalk_api.calls("/v1.0/oauth2/accessToken")
    assert oauth2_call.json() == {"appKey": DT_APP_KEY, "appSecret": DT_APP_SECRET}
    (legacy_call,) = dingtalk_api.calls("/gettoken")
    assert legacy_call.query == {"appkey": DT_APP_KEY, "appsecret": DT_APP_SECRET}
    assert outcome.result["failed_checks"] == []
    assert outcome.result["platform"] == "dingtalk"


def test_dingtalk_bad_credentials_report_both_platform_codes(dingtalk_api: FakeServer) -> None:
    outcome = run(dingtalk_args(dingtalk_api, app_secret="dt-wrong-secret-0000"))

    assert outcome.failed
    check = outcome.check("credentials")
    assert check["status"] == "failed"
    assert check["code"] == "invalidClientIdOrSecret"
    assert check["details"]["oauth2"]["code"] == "invalidClientIdOrSecret"
    assert check["details"]["oauth2"]["message"] == dingtalk.OAUTH2_BAD_CREDENTIALS
    assert check["details"]["legacy"]["code"] == 40089
    assert check["details"]["legacy"]["message"] == dingtalk.LEGACY_BAD_CREDENTIALS
    assert outcome.result["failed_checks"] == ["credentials"]
    msg = outcome.result["msg"]
    assert "credentials" in msg and "invalidClientIdOrSecret" in msg and "40089" in msg
    assert_no_secrets(outcome, ("dt-wrong-secret-0000",))


def test_dingtalk_credentials_need_both_apis(dingtalk_api: FakeServer) -> None:
    dingtalk_api.app.reject_legacy = True
    outcome = run(dingtalk_args(dingtalk_api))

    check = outcome.check("credentials")
    assert outcome.failed and check["status"] == "failed"
    assert check["details"]["oauth2"]["status"] == "ok"
    assert check["details"]["legacy"]["status"] == "failed"
    assert check["code"] == 40089
    assert check["message"].startswith("oauth2: ok; legacy: 40089")


def test_dingtalk_oapi_base_is_used_for_gettoken(dingtalk_api: FakeServer) -> None:
    port = closed_port()
    outcome = run(dingtalk_args(dingtalk_api, oapi_base=f"http://127.0.0.1:{port}/"))

    legacy = outcome.check("credentials")["details"]["legacy"]
    assert outcome.failed
    assert legacy["code"] is None
    assert "refused" in legacy["message"]
    assert legacy["endpoint"] == f"http://127.0.0.1:{port}/gettoken?..."
    assert outcome.check("credentials")["details"]["oauth2"]["status"] == "ok"
    assert dingtalk_api.calls("/gettoken") == []


@pytest.mark.parametrize("platform", ["feishu", "lark"])
def test_feishu_good_credentials(feishu_api: FakeServer, platform: str) -> None:
    outcome = run(feishu_args(feishu_api, platform))

    check = outcome.check("credentials")
    assert not outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("ok", 0, "ok")
    assert check["details"] == {"endpoint": f"{feishu_api.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                                "expires_in": 7200}
    (call,) = feishu_api.calls("/open-apis/auth/v3/tenant_access_token/internal")
    assert call.json() == {"app_id": FS_APP_ID, "app_secret": FS_APP_SECRET}
    assert outcome.result["platform"] == platform


def test_feishu_bad_secret_reports_10014(feishu_api: FakeServer) -> None:
    outcome = run(feishu_args(feishu_api, app_secret="fs-wrong-secret-1111"))

    check = outcome.check("credentials")
    assert outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("failed", 10014, "app secret invalid")
    assert "10014" in outcome.result["msg"] and "app secret invalid" in outcome.result["msg"]
    assert_no_secrets(outcome, ("fs-wrong-secret-1111",))


def test_feishu_unknown_app_id_reports_code_from_http_400(feishu_api: FakeServer) -> None:
    outcome = run(feishu_args(feishu_api, app_id="cli_unknown"))

    check = outcome.check("credentials")
    assert (check["status"], check["code"], check["message"]) == ("failed", 10003, "invalid param")


def test_credentials_skipped_without_app_key() -> None:
    outcome = run({"platform": "feishu", **only("credentials")})

    assert not outcome.failed
    check = outcome.check("credentials")
    assert check["status"] == "skipped" and check["required"] is True
    assert check["message"] == "app_key and app_secret are not set"
    assert outcome.result["failed_checks"] == []


def test_api_transport_failure_is_a_failed_check_not_an_exception() -> None:
    port = closed_port()
    outcome = run({"platform": "feishu", "app_id": FS_APP_ID, "app_secret": FS_APP_SECRET,
                   "api_base": f"http://127.0.0.1:{port}", **only("credentials")})

    check = outcome.check("credentials")
    assert outcome.failed
    assert check["status"] == "failed" and check["code"] is None
    assert check["details"]["reason"] == "refused"
    assert f"127.0.0.1:{port}/open-apis/auth/v3/tenant_access_token/internal" in check["message"]


def test_retries_repeat_a_503(dingtalk_api: FakeServer) -> None:
    dingtalk_api.app.fail_first = 1
    outcome = run(dingtalk_args(dingtalk_api, retries=1))

    assert outcome.check("credentials")["status"] == "ok"
    assert len(dingtalk_api.calls("/v1.0/oauth2/accessToken")) == 2


def test_without_retries_a_503_is_reported_with_the_http_status(dingtalk_api: FakeServer) -> None:
    dingtalk_api.app.fail_first = 1
    outcome = run(dingtalk_args(dingtalk_api, retries=0))

    oauth2 = outcome.check("credentials")["details"]["oauth2"]
    assert (oauth2["status"], oauth2["code"]) == ("failed", 503)
    assert oauth2["message"].startswith("HTTP 503: <html>503 Service Temporarily Unavailable")


@pytest.mark.parametrize(("platform", "api_base", "expected"), [
    ("dingtalk", None, "https://api.dingtalk.com"),
    ("feishu", None, "https://open.feishu.cn"),
    ("lark", None, "https://open.larksuite.com"),
    ("lark", "http://127.0.0.1:9/", "http://127.0.0.1:9"),
    ("wecom", None, "https://qyapi.weixin.qq.com"),
])
def test_api_base_defaults_depend_on_platform(platform: str, api_base: str | None, expected: str) -> None:
    params = {"platform": platform, "api_base": api_base, "oapi_base": "https://oapi.dingtalk.com/",
              "owner_key": None, "app_key": "key"}
    resolved = im_app_check.resolved_params(params)
    assert resolved["api_base"] == expected
    assert resolved["oapi_base"] == "https://oapi.dingtalk.com"
    assert resolved["owner_key"] == "key"


# --------------------------------------------------------------------------- callback TLS


def feishu_ok_callback() -> FeishuCallback:
    return FeishuCallback(FS_VERIFICATION_TOKEN, None)


def test_callback_tls_valid_certificate(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback()) as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_tls")
    assert not outcome.failed
    assert check["status"] == "ok" and check["code"] is None
    details = check["details"]
    assert details["verified"] is True and details["reason"] is None
    assert 363 <= details["days_left"] <= 365
    assert "CN=clawbot test CA" in details["issuer"]
    assert "CN=valid.clawbot.test" in details["subject"]
    assert details["not_after"].endswith("Z")
    assert details["endpoint"] == f"{server.base_url}/im/feishu"
    assert check["message"].startswith(f"certificate valid until {details['not_after']}")


@pytest.mark.parametrize(("cert", "reason"), [
    ("expired", "expired"),
    ("wrong_host", "hostname_mismatch"),
    ("unknown_ca", "unknown_ca"),
    ("self_signed", "self_signed"),
])
def test_callback_tls_bad_certificates_fail_with_a_reason(pki: Pki, cert: str, reason: str) -> None:
    with callback_server(pki, feishu_ok_callback(), cert) as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_tls")
    assert outcome.failed
    assert check["status"] == "failed"
    assert check["details"]["reason"] == reason
    assert check["details"]["verified"] is False
    assert check["details"]["days_left"] is not None  # still read without verification
    assert "callback_tls" in outcome.result["msg"]
    # the verification request cannot pass a certificate that does not verify either
    verification = outcome.check("callback_verification")
    assert verification["status"] == "failed" and verification["code"] is None
    assert verification["details"]["reason"] == "certificate"


def test_callback_tls_expired_certificate_reports_negative_days(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback(), "expired") as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_tls")
    assert check["details"]["days_left"] < 0
    assert "expired on" in check["message"]


def test_callback_tls_uses_system_store_without_ca_path(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback()) as server:
        outcome = run(feishu_callback_args(server, pki, ca_path=None))

    assert outcome.check("callback_tls")["details"]["reason"] == "unknown_ca"


def test_callback_tls_expiring_within_cert_min_days(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback(), "expiring_soon") as server:
        soon = run(feishu_callback_args(server, pki))
        relaxed = run(feishu_callback_args(server, pki, cert_min_days=3))

    check = soon.check("callback_tls")
    assert soon.failed and check["status"] == "failed"
    assert check["details"]["verified"] is True
    assert check["details"]["days_left"] == EXPIRING_SOON_DAYS
    assert "less than cert_min_days=14" in check["message"]
    assert relaxed.check("callback_tls")["status"] == "ok"
    assert not relaxed.failed


def test_callback_tls_http_url_is_not_https() -> None:
    outcome = run({"platform": "feishu", "callback_url": "http://127.0.0.1:9/im/feishu", **only("callback_tls")})

    check = outcome.check("callback_tls")
    assert outcome.failed
    assert (check["status"], check["message"]) == ("failed", "callback_url is not HTTPS")


def test_callback_tls_validate_certs_false_reports_but_does_not_fail_chain_errors(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback(), "self_signed") as server:
        outcome = run(feishu_callback_args(server, pki, validate_certs=False, ca_path=None))

    check = outcome.check("callback_tls")
    assert not outcome.failed
    assert check["status"] == "ok"
    assert check["details"]["verified"] is False and check["details"]["reason"] == "self_signed"
    assert "ignored: validate_certs=false" in check["message"]
    assert outcome.check("callback_verification")["status"] == "ok"


def test_callback_tls_validate_certs_false_still_fails_on_expiry(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback(), "expired") as server:
        outcome = run(feishu_callback_args(server, pki, validate_certs=False))

    check = outcome.check("callback_tls")
    assert outcome.failed and check["status"] == "failed"
    assert "cert_min_days" in check["message"]


def test_callback_refused() -> None:
    outcome = run({"platform": "feishu", "callback_url": f"https://127.0.0.1:{closed_port()}/cb",
                   "verification_token": FS_VERIFICATION_TOKEN, **only("callback_tls", "callback_verification")})

    tls = outcome.check("callback_tls")
    assert tls["status"] == "failed" and tls["details"]["reason"] == "refused"
    assert tls["message"] == "connection refused"
    verification = outcome.check("callback_verification")
    assert verification["status"] == "failed" and verification["details"]["reason"] == "refused"


def test_callback_timeout() -> None:
    with SilentTlsPort() as port:
        outcome = run({"platform": "feishu", "callback_url": port.url, **only("callback_tls"), "timeout": 0.5})

    check = outcome.check("callback_tls")
    assert check["status"] == "failed" and check["details"]["reason"] == "timeout"
    assert check["details"]["days_left"] is None


def test_callback_checks_skipped_without_callback_url() -> None:
    outcome = run({"platform": "dingtalk"})

    assert not outcome.failed
    assert outcome.check("callback_tls") == {"status": "skipped", "required": True, "code": None,
                                             "message": "callback_url is not set", "details": {}}
    assert outcome.check("callback_verification")["status"] == "skipped"


# --------------------------------------------------------------------------- callback verification: Feishu


def test_feishu_plain_url_verification(pki: Pki) -> None:
    app = FeishuCallback(FS_VERIFICATION_TOKEN, None)
    with callback_server(pki, app) as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert not outcome.failed
    assert (check["status"], check["code"]) == ("ok", 200)
    assert check["details"] == {"endpoint": f"{server.base_url}/im/feishu", "encrypted": False}
    (payload,) = app.payloads
    assert payload["type"] == "url_verification"
    assert payload["token"] == FS_VERIFICATION_TOKEN
    assert len(payload["challenge"]) >= 16
    assert "x-lark-signature" not in server.requests[0].headers


def test_feishu_encrypted_url_verification_is_signed_over_the_raw_body(pki: Pki) -> None:
    app = FeishuCallback(FS_VERIFICATION_TOKEN, FS_ENCRYPT_KEY)
    with callback_server(pki, app) as server:
        outcome = run(feishu_callback_args(server, pki, encrypt_key=FS_ENCRYPT_KEY))

    check = outcome.check("callback_verification")
    assert check["status"] == "ok", check
    assert check["details"]["encrypted"] is True
    assert app.signed == [True]
    (request,) = server.requests
    assert set(request.json()) == {"encrypt"}
    assert request.headers["x-lark-request-timestamp"].isdigit()
    assert request.headers["x-lark-request-nonce"]
    assert app.payloads[0]["token"] == FS_VERIFICATION_TOKEN


def test_feishu_challenge_echoes_a_fresh_value_each_run(pki: Pki) -> None:
    app = FeishuCallback(FS_VERIFICATION_TOKEN, None)
    with callback_server(pki, app) as server:
        run(feishu_callback_args(server, pki))
        run(feishu_callback_args(server, pki))

    assert app.payloads[0]["challenge"] != app.payloads[1]["challenge"]


@pytest.mark.parametrize(("mode", "expected"), [
    ("wrong_challenge", "the answer carries another challenge: HTTP 200: {\"challenge\": \"not-the-challenge"),
    ("no_challenge", "the answer has no challenge: HTTP 200: {}"),
])
def test_feishu_wrong_answers_fail_with_what_came_back(pki: Pki, mode: str, expected: str) -> None:
    with callback_server(pki, FeishuCallback(FS_VERIFICATION_TOKEN, FS_ENCRYPT_KEY, mode)) as server:
        outcome = run(feishu_callback_args(server, pki, encrypt_key=FS_ENCRYPT_KEY))

    check = outcome.check("callback_verification")
    assert outcome.failed and outcome.result["failed_checks"] == ["callback_verification"]
    assert check["status"] == "failed" and check["code"] == 200
    assert check["message"].startswith(expected)


def test_feishu_callback_with_another_verification_token_refuses(pki: Pki) -> None:
    with callback_server(pki, FeishuCallback("fs-other-token-0000", None)) as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert (check["status"], check["code"]) == ("failed", 401)
    assert "invalid_token" in check["message"] and "verification token mismatch" in check["message"]


def test_feishu_callback_with_another_encrypt_key_rejects_the_signature(pki: Pki) -> None:
    with callback_server(pki, FeishuCallback(FS_VERIFICATION_TOKEN, "fs-other-encrypt-key")) as server:
        outcome = run(feishu_callback_args(server, pki, encrypt_key=FS_ENCRYPT_KEY))

    check = outcome.check("callback_verification")
    assert (check["status"], check["code"]) == ("failed", 401)
    assert "X-Lark-Signature mismatch" in check["message"]


def test_feishu_verification_skipped_without_verification_token(pki: Pki) -> None:
    with callback_server(pki, feishu_ok_callback()) as server:
        outcome = run(feishu_callback_args(server, pki, verification_token=None, encrypt_key=FS_ENCRYPT_KEY))

    check = outcome.check("callback_verification")
    assert (check["status"], check["message"]) == ("skipped", "verification_token is not set")
    assert server.requests == []


# --------------------------------------------------------------------------- callback verification: DingTalk


def test_dingtalk_check_url_answered_with_encrypted_success(pki: Pki) -> None:
    app = DingTalkCallback(DT_EVENT_TOKEN, DT_AES_KEY, DT_APP_KEY)
    with callback_server(pki, app) as server:
        outcome = run(dingtalk_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert not outcome.failed
    assert (check["status"], check["code"]) == ("ok", 200), check
    assert check["details"] == {"endpoint": f"{server.base_url}/im/dingtalk", "encrypted": True}
    assert app.events == [{"EventType": "check_url"}]
    (request,) = server.requests
    assert set(request.query) == {"msg_signature", "timeStamp", "nonce"}
    assert set(request.json()) == {"encrypt"}


def test_dingtalk_callback_url_with_a_query_keeps_it(pki: Pki) -> None:
    app = DingTalkCallback(DT_EVENT_TOKEN, DT_AES_KEY, DT_APP_KEY)
    with callback_server(pki, app) as server:
        outcome = run(dingtalk_callback_args(server, pki, callback_url=f"{server.base_url}/im/dingtalk?tenant=a"))

    assert outcome.check("callback_verification")["status"] == "ok"
    assert server.requests[0].query["tenant"] == "a"
    assert outcome.check("callback_verification")["details"]["endpoint"] == f"{server.base_url}/im/dingtalk?..."


@pytest.mark.parametrize(("mode", "expected"), [
    ("bad_signature", "the answer's msg_signature does not verify with token"),
    ("wrong_owner", "the answer was encrypted for another owner_key"),
    ("plain_success", "the answer is not an encrypted DingTalk reply: HTTP 200: success"),
    ("wrong_plaintext", "the answer decrypts to 'fail' instead of 'success'"),
])
def test_dingtalk_wrong_answers_fail(pki: Pki, mode: str, expected: str) -> None:
    with callback_server(pki, DingTalkCallback(DT_EVENT_TOKEN, DT_AES_KEY, DT_APP_KEY, mode)) as server:
        outcome = run(dingtalk_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert outcome.failed and outcome.result["failed_checks"] == ["callback_verification"]
    assert (check["status"], check["code"]) == ("failed", 200)
    assert check["message"].startswith(expected)


def test_dingtalk_callback_with_another_token_refuses(pki: Pki) -> None:
    with callback_server(pki, DingTalkCallback("dt-other-token", DT_AES_KEY, DT_APP_KEY)) as server:
        outcome = run(dingtalk_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert (check["status"], check["code"]) == ("failed", 401)
    assert "invalid_signature" in check["message"]


def test_dingtalk_owner_key_defaults_to_app_key_and_can_be_set(pki: Pki) -> None:
    with callback_server(pki, DingTalkCallback(DT_EVENT_TOKEN, DT_AES_KEY, DT_CORP_ID)) as server:
        default = run(dingtalk_callback_args(server, pki))
        explicit = run(dingtalk_callback_args(server, pki, owner_key=DT_CORP_ID))

    check = default.check("callback_verification")
    assert (check["status"], check["code"]) == ("failed", 403)
    assert "owner_key_mismatch" in check["message"]
    assert explicit.check("callback_verification")["status"] == "ok"


def test_dingtalk_verification_skipped_without_event_secrets(pki: Pki) -> None:
    with callback_server(pki, DingTalkCallback(DT_EVENT_TOKEN, DT_AES_KEY, DT_APP_KEY)) as server:
        outcome = run(dingtalk_callback_args(server, pki, token=None, aes_key=None, app_key=None, app_secret=None))

    check = outcome.check("callback_verification")
    assert (check["status"], check["message"]) == ("skipped", "not set: token, aes_key, owner_key (or app_key)")
    assert outcome.check("callback_tls")["status"] == "ok"
    assert server.requests == []


# --------------------------------------------------------------------------- webhook


def dingtalk_webhook_args(api: FakeServer, **extra: Any) -> dict[str, Any]:
    args = {"platform": "dingtalk", "webhook_url": f"{api.base_url}/robot/send?access_token={DT_ROBOT_TOKEN}",
            "webhook_secret": DT_ROBOT_SECRET, "send_test_message": True, **only("webhook")}
    args.update(extra)
    return args


def feishu_webhook_args(api: FakeServer, **extra: Any) -> dict[str, Any]:
    args = {"platform": "feishu", "webhook_url": f"{api.base_url}/open-apis/bot/v2/hook/{FS_HOOK_TOKEN}",
            "webhook_secret": FS_HOOK_SECRET, "send_test_message": True, **only("webhook")}
    args.update(extra)
    return args


def test_dingtalk_signed_webhook_accepted(dingtalk_api: FakeServer) -> None:
    outcome = run(dingtalk_webhook_args(dingtalk_api))

    check = outcome.check("webhook")
    assert not outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("ok", 0, "ok")
    assert check["details"] == {"endpoint": f"{dingtalk_api.base_url}/robot/send?...", "signed": True}
    sent = {"msgtype": "text", "text": {"content": "clawbot.stack im_app_check: test message"}}
    assert dingtalk_api.app.robot_messages.items() == [sent]
    (request,) = dingtalk_api.calls("/robot/send")
    assert set(request.query) == {"access_token", "timestamp", "sign"}


def test_dingtalk_webhook_wrong_secret_is_310000(dingtalk_api: FakeServer) -> None:
    outcome = run(dingtalk_webhook_args(dingtalk_api, webhook_secret="SECwrong0secret0zz"))

    check = outcome.check("webhook")
    assert outcome.failed and outcome.result["failed_checks"] == ["webhook"]
    assert (check["status"], check["code"]) == ("failed", 310000)
    assert check["message"] == dingtalk.SIGN_NOT_MATCH
    assert "310000" in outcome.result["msg"] and "sign not match" in outcome.result["msg"]
    assert_no_secrets(outcome, ("SECwrong0secret0zz",))


def test_dingtalk_webhook_unsigned_to_a_signing_robot_is_310000(dingtalk_api: FakeServer) -> None:
    outcome = run(dingtalk_webhook_args(dingtalk_api, webhook_secret=None))

    check = outcome.check("webhook")
    assert (check["status"], check["code"]) == ("failed", 310000)
    assert check["details"]["signed"] is False
    assert set(dingtalk_api.requests[0].query) == {"access_token"}


def test_dingtalk_webhook_unsigned_robot_with_custom_message(dingtalk_api: FakeServer) -> None:
    dingtalk_api.app.robot_secret = None
    outcome = run(dingtalk_webhook_args(dingtalk_api, webhook_secret=None, test_message="clawbot alert test"))

    assert outcome.check("webhook")["status"] == "ok"
    assert dingtalk_api.app.robot_messages.items()[0]["text"]["content"] == "clawbot alert test"


def test_dingtalk_webhook_bad_token_is_300005(dingtalk_api: FakeServer) -> None:
    url = f"{dingtalk_api.base_url}/robot/send?access_token=nope0"
    outcome = run(dingtalk_webhook_args(dingtalk_api, webhook_url=url))

    check = outcome.check("webhook")
    assert (check["status"], check["code"], check["message"]) == ("failed", 300005, "token is not exist")


def test_feishu_signed_webhook_accepted(feishu_api: FakeServer) -> None:
    outcome = run(feishu_webhook_args(feishu_api, test_message="飞书 test"))

    check = outcome.check("webhook")
    assert not outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("ok", 0, "success")
    assert check["details"] == {"endpoint": f"{feishu_api.base_url}/open-apis/bot/v2/hook/********", "signed": True}
    (message,) = feishu_api.app.hook_messages.items()
    assert message["msg_type"] == "text" and message["content"] == {"text": "飞书 test"}
    assert message["timestamp"].isdigit() and len(message["timestamp"]) == 10
    assert message["sign"]


def test_feishu_webhook_wrong_secret_is_19021(feishu_api: FakeServer) -> None:
    outcome = run(feishu_webhook_args(feishu_api, webhook_secret="fs-wrong-hook-secret"))

    check = outcome.check("webhook")
    assert outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("failed", 19021, feishu.SIGN_FAIL)
    assert "19021" in outcome.result["msg"]
    assert_no_secrets(outcome, ("fs-wrong-hook-secret",))


def test_lark_old_style_hook_answer_with_status_code(feishu_api: FakeServer) -> None:
    feishu_api.app.legacy_hook_shape = True
    outcome = run(feishu_webhook_args(feishu_api, platform="lark"))

    check = outcome.check("webhook")
    assert (check["status"], check["code"], check["message"]) == ("ok", 0, "success")


def test_webhook_skipped_in_check_mode_while_other_checks_run(dingtalk_api: FakeServer) -> None:
    args = dingtalk_webhook_args(dingtalk_api, app_key=DT_APP_KEY, app_secret=DT_APP_SECRET,
                                 api_base=dingtalk_api.base_url, oapi_base=dingtalk_api.base_url)
    outcome = run(args, check_mode=True)

    assert not outcome.failed
    assert outcome.check("webhook")["status"] == "skipped"
    assert outcome.check("webhook")["message"] == "check mode: no message sent"
    assert outcome.check("credentials")["status"] == "ok"
    assert dingtalk_api.calls("/robot/send") == []


def test_webhook_skipped_unless_asked(dingtalk_api: FakeServer) -> None:
    not_asked = run(dingtalk_webhook_args(dingtalk_api, send_test_message=False))
    no_url = run({"platform": "dingtalk", "send_test_message": True, **only("webhook")})

    assert (not_asked.check("webhook")["status"], not_asked.check("webhook")["message"]) == \
        ("skipped", "send_test_message is false")
    assert (no_url.check("webhook")["status"], no_url.check("webhook")["message"]) == \
        ("skipped", "webhook_url is not set")
    assert dingtalk_api.requests == []


# --------------------------------------------------------------------------- required_checks


def test_failure_of_a_check_that_is_not_required_is_a_warning(dingtalk_api: FakeServer) -> None:
    args = dingtalk_webhook_args(dingtalk_api, webhook_secret="SECwrong0secret0zz", app_key=DT_APP_KEY,
                                 app_secret=DT_APP_SECRET, api_base=dingtalk_api.base_url,
                                 oapi_base=dingtalk_api.base_url, required_checks=["credentials"])
    outcome = run(args)

    assert not outcome.failed
    assert outcome.result["failed_checks"] == []
    assert outcome.check("webhook")["status"] == "failed"
    assert outcome.check("webhook")["required"] is False
    assert outcome.check("credentials")["required"] is True
    expected = f"check failed but not required: webhook (code 310000: {dingtalk.SIGN_NOT_MATCH})"
    assert outcome.warnings == [expected]


def test_all_checks_required_by_default(dingtalk_api: FakeServer, pki: Pki) -> None:
    with callback_server(pki, DingTalkCallback(DT_EVENT_TOKEN, DT_AES_KEY, DT_APP_KEY), "expired") as server:
        args = {"platform": "dingtalk", "app_key": DT_APP_KEY, "app_secret": "dt-wrong-secret-0000",
                "api_base": dingtalk_api.base_url, "oapi_base": dingtalk_api.base_url,
                "callback_url": f"{server.base_url}/cb",
                "token": DT_EVENT_TOKEN, "aes_key": DT_AES_KEY, "ca_path": str(pki.ca_bundle),
                "webhook_url": f"{dingtalk_api.base_url}/robot/send?access_token={DT_ROBOT_TOKEN}",
                "webhook_secret": DT_ROBOT_SECRET, "send_test_message": True, "retries": 0}
        outcome = run(args)

    assert outcome.failed
    assert all(check["required"] for check in outcome.checks.values())
    assert outcome.result["failed_checks"] == ["credentials", "callback_tls", "callback_verification"]
    assert outcome.check("webhook")["status"] == "ok"
    assert outcome.result["msg"].startswith("required checks failed: credentials (code invalidClientIdOrSecret: ")
    assert "callback_tls (certificate has expired" in outcome.result["msg"]
    assert outcome.warnings == []
    assert_no_secrets(outcome, ("dt-wrong-secret-0000",))


def test_everything_passes_for_a_good_feishu_app(feishu_api: FakeServer, pki: Pki) -> None:
    app = FeishuCallback(FS_VERIFICATION_TOKEN, FS_ENCRYPT_KEY)
    with callback_server(pki, app) as server:
        args = feishu_webhook_args(feishu_api, app_id=FS_APP_ID, app_secret=FS_APP_SECRET,
                                   api_base=feishu_api.base_url, callback_url=f"{server.base_url}/im/feishu",
                                   verification_token=FS_VERIFICATION_TOKEN,
                                   encrypt_key=FS_ENCRYPT_KEY, ca_path=str(pki.ca_bundle),
                                   required_checks=list(im_app_check.CHECKS))
        outcome = run(args)

    assert not outcome.failed
    assert {name: check["status"] for name, check in outcome.checks.items()} == dict.fromkeys(im_app_check.CHECKS, "ok")
    assert outcome.result["failed_checks"] == []


# --------------------------------------------------------------------------- WeCom


@pytest.fixture
def wecom_api():
    app = FakeWeCom(WC_ROBOT_KEY, corp_id=WC_CORP_ID, corp_secret=WC_CORP_SECRET, agent_id=WC_AGENT_ID,
                    access_token=WC_ISSUED_TOKEN)
    with FakeServer(app) as server:
        yield server


def wecom_args(api: FakeServer, **extra: Any) -> dict[str, Any]:
    args = {"platform": "wecom", "corp_id": WC_CORP_ID, "corp_secret": WC_CORP_SECRET, "api_base": api.base_url}
    args.update(only("credentials"))
    args.update(extra)
    return args


def wecom_callback_args(server: FakeServer, pki: Pki, **extra: Any) -> dict[str, Any]:
    args = {"platform": "wecom", "corp_id": WC_CORP_ID, "callback_url": f"{server.base_url}/wecom/callback",
            "token": WC_CALLBACK_TOKEN, "aes_key": WC_AES_KEY, "ca_path": str(pki.ca_bundle)}
    args.update(only("callback_tls", "callback_verification"))
    args.update(extra)
    return args


def wecom_webhook_args(api: FakeServer, **extra: Any) -> dict[str, Any]:
    args = {"platform": "wecom", "webhook_url": f"{api.base_url}/cgi-bin/webhook/send?key={WC_ROBOT_KEY}",
            "send_test_message": True, **only("webhook")}
    args.update(extra)
    return args


def test_wecom_good_credentials(wecom_api: FakeServer) -> None:
    outcome = run(wecom_args(wecom_api))

    check = outcome.check("credentials")
    assert not outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("ok", 0, "ok")
    assert check["details"] == {"endpoint": f"{wecom_api.base_url}/cgi-bin/gettoken?...", "expires_in": 7200}
    (call,) = wecom_api.calls("/cgi-bin/gettoken")
    assert (call.method, call.query) == ("GET", {"corpid": WC_CORP_ID, "corpsecret": WC_CORP_SECRET})
    assert wecom_api.app.token_requests.items() == [{"corpid": WC_CORP_ID, "errcode": 0}]
    assert outcome.result["platform"] == "wecom"


def test_wecom_wrong_secret_reports_40001(wecom_api: FakeServer) -> None:
    outcome = run(wecom_args(wecom_api, corp_secret="wc-wrong-secret-0000"))

    check = outcome.check("credentials")
    assert outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("failed", 40001, wecom.INVALID_CREDENTIAL)
    assert check["details"] == {"endpoint": f"{wecom_api.base_url}/cgi-bin/gettoken?..."}
    assert outcome.result["msg"].startswith("required checks failed: credentials (code 40001: invalid credential")
    assert_no_secrets(outcome, ("wc-wrong-secret-0000",))


def test_wecom_unknown_corp_id_reports_40013(wecom_api: FakeServer) -> None:
    outcome = run(wecom_args(wecom_api, corp_id="ww0000000000000000"))

    check = outcome.check("credentials")
    assert (check["status"], check["code"], check["message"]) == ("failed", 40013, wecom.INVALID_CORPID)


def test_wecom_agent_id_is_checked_with_the_token(wecom_api: FakeServer) -> None:
    good = run(wecom_args(wecom_api, agent_id=WC_AGENT_ID))
    wrong = run(wecom_args(wecom_api, agent_id=1000099))

    check = good.check("credentials")
    assert not good.failed
    assert (check["status"], check["message"]) == ("ok", f"access token issued; agent {WC_AGENT_ID}: ok")
    assert check["details"]["agent"] == {"status": "ok", "code": 0, "message": "ok",
                                         "endpoint": f"{wecom_api.base_url}/cgi-bin/agent/get?..."}
    calls = wecom_api.calls("/cgi-bin/agent/get")
    assert [c.query for c in calls] == [{"access_token": WC_ISSUED_TOKEN, "agentid": str(WC_AGENT_ID)},
                                        {"access_token": WC_ISSUED_TOKEN, "agentid": "1000099"}]
    check = wrong.check("credentials")
    assert wrong.failed
    assert (check["status"], check["code"]) == ("failed", 40056)
    assert check["message"] == f"access token issued; agent 1000099: 40056 {wecom.INVALID_AGENTID}"
    assert check["details"]["expires_in"] == 7200


def test_wecom_revoked_token_on_agent_get_is_reported(wecom_api: FakeServer) -> None:
    """The platform answer to the second request is reported as such (here: a token revoked meanwhile)."""
    fake = wecom_api.app

    def revoking(request: Request) -> Response:
        if request.path == "/cgi-bin/agent/get":
            fake.revoke_all_tokens()
        return fake(request)

    wecom_api.app = revoking
    outcome = run(wecom_args(wecom_api, agent_id=WC_AGENT_ID))

    check = outcome.check("credentials")
    assert (check["status"], check["code"]) == ("failed", 40014)
    assert check["details"]["agent"]["message"] == "invalid access_token"


def test_wecom_credentials_skipped_without_the_secret() -> None:
    outcome = run({"platform": "wecom", "corp_id": WC_CORP_ID, **only("credentials")})

    check = outcome.check("credentials")
    assert not outcome.failed
    assert (check["status"], check["message"]) == ("skipped", "corp_secret is not set")
    both = run({"platform": "wecom", **only("credentials")}).check("credentials")
    assert both["message"] == "corp_id and corp_secret are not set"


def test_wecom_resolved_defaults() -> None:
    params = {"platform": "wecom", "api_base": None, "oapi_base": None, "owner_key": None, "app_key": None}
    resolved = im_app_check.resolved_params(params)
    assert resolved["api_base"] == "https://qyapi.weixin.qq.com"
    assert resolved["oapi_base"] == "https://oapi.dingtalk.com"


def test_wecom_callback_verification_passes_for_a_correct_callback(pki: Pki) -> None:
    callback = WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID)
    with callback_server(pki, callback) as server:
        before = int(time.time())
        outcome = run(wecom_callback_args(server, pki))
        after = int(time.time())

    check = outcome.check("callback_verification")
    assert not outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("ok", 200, "echostr decrypted and answered")
    assert check["details"] == {"endpoint": f"{server.base_url}/wecom/callback", "encrypted": True}
    assert outcome.check("callback_tls")["status"] == "ok"
    (request,) = [r for r in server.requests if r.path == "/wecom/callback"]
    assert request.method == "GET" and request.body == b""
    assert set(request.query) == {"msg_signature", "timestamp", "nonce", "echostr"}
    assert before <= int(request.query["timestamp"]) <= after  # seconds, not milliseconds
    assert request.query["nonce"].isdigit()
    # checked independently of the module: the fake's cipher verifies and decrypts what was sent
    cipher = wecom.WeComCipher(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID)
    q = request.query
    assert cipher.signature(q["timestamp"], q["nonce"], q["echostr"]) == q["msg_signature"]
    message, receive_id = cipher.decrypt(q["echostr"])
    assert receive_id == WC_CORP_ID.encode()
    assert callback.verifications.items() == [message]
    assert message.isdigit() and len(message) == 19


def test_wecom_callback_messages_are_random(pki: Pki) -> None:
    callback = WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID)
    with callback_server(pki, callback) as server:
        run(wecom_callback_args(server, pki))
        run(wecom_callback_args(server, pki))
        nonces = {r.query["nonce"] for r in server.requests if r.path == "/wecom/callback"}

    first, second = callback.verifications.items()
    assert first != second and len(nonces) == 2


@pytest.mark.parametrize(("mode", "code", "message"), [
    ("bad_signature", 401, 'callback refused the URL verification: HTTP 401: {"error": {"code": "invalid_signature"'),
    ("wrong_plaintext", 200, "the answer is not the decrypted echostr message: HTTP 200: "),
    ("echo_ciphertext", 200, "the answer is the encrypted echostr, not its decrypted message: HTTP 200: "),
    ("quoted", 200, "the answer carries the decrypted message with quotes, whitespace or a BOM; WeCom needs it bare"),
    ("trailing_newline", 200, "the answer carries the decrypted message with quotes, whitespace or a BOM"),
])
def test_wecom_callback_verification_failures(pki: Pki, mode: str, code: int, message: str) -> None:
    with callback_server(pki, WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID, mode)) as server:
        outcome = run(wecom_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert outcome.failed
    assert (check["status"], check["code"]) == ("failed", code)
    assert check["message"].startswith(message)
    assert outcome.result["failed_checks"] == ["callback_verification"]


def test_wecom_callback_of_another_corp_rejects_the_event(pki: Pki) -> None:
    with callback_server(pki, WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, "ww-another-corp")) as server:
        outcome = run(wecom_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert (check["status"], check["code"]) == ("failed", 400)
    assert '"invalid_event"' in check["message"]


def test_wecom_callback_verification_skipped_without_its_options(pki: Pki) -> None:
    with callback_server(pki, WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID)) as server:
        outcome = run(wecom_callback_args(server, pki, token=None, aes_key=None, corp_id=None))

    check = outcome.check("callback_verification")
    assert (check["status"], check["message"]) == ("skipped", "not set: token, aes_key, corp_id")
    assert outcome.check("callback_tls")["status"] == "ok"


def test_wecom_webhook_sends_a_text_message(wecom_api: FakeServer) -> None:
    outcome = run(wecom_webhook_args(wecom_api, test_message="企业微信 test"))

    check = outcome.check("webhook")
    assert not outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("ok", 0, "ok")
    assert check["details"] == {"endpoint": f"{wecom_api.base_url}/cgi-bin/webhook/send?...", "signed": False}
    assert wecom_api.app.robot_messages.items() == [{"msgtype": "text", "text": {"content": "企业微信 test"}}]


def test_wecom_webhook_bad_key_is_93000(wecom_api: FakeServer) -> None:
    bad_key = "00000000-0000-0000-0000-000000000000"
    outcome = run(wecom_webhook_args(wecom_api, webhook_url=f"{wecom_api.base_url}/cgi-bin/webhook/send?key={bad_key}"))

    check = outcome.check("webhook")
    assert outcome.failed
    assert (check["status"], check["code"], check["message"]) == ("failed", 93000, wecom.INVALID_KEY)
    assert "93000" in outcome.result["msg"]
    assert_no_secrets(outcome, (bad_key,))


def test_wecom_webhook_skipped_unless_asked(wecom_api: FakeServer) -> None:
    outcome = run(wecom_webhook_args(wecom_api, send_test_message=False))

    assert (outcome.check("webhook")["status"], outcome.check("webhook")["message"]) == \
        ("skipped", "send_test_message is false")
    assert wecom_api.requests == []


def test_wecom_check_mode_runs_the_read_only_checks(wecom_api: FakeServer, pki: Pki) -> None:
    callback = WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID)
    with callback_server(pki, callback) as server:
        args = wecom_webhook_args(wecom_api, corp_id=WC_CORP_ID, corp_secret=WC_CORP_SECRET,
                                  api_base=wecom_api.base_url, callback_url=f"{server.base_url}/wecom/callback",
                                  token=WC_CALLBACK_TOKEN, aes_key=WC_AES_KEY, ca_path=str(pki.ca_bundle),
                                  required_checks=list(im_app_check.CHECKS))
        outcome = run(args, check_mode=True)

    assert not outcome.failed
    assert {name: check["status"] for name, check in outcome.checks.items()} == {
        "credentials": "ok", "callback_tls": "ok", "callback_verification": "ok", "webhook": "skipped"}
    assert outcome.check("webhook")["message"] == "check mode: no message sent"
    assert wecom_api.app.robot_messages.items() == []
    assert len(callback.verifications) == 1


def test_everything_passes_for_a_good_wecom_app(wecom_api: FakeServer, pki: Pki) -> None:
    callback = WeComCallback(WC_CALLBACK_TOKEN, WC_AES_KEY, WC_CORP_ID)
    with callback_server(pki, callback) as server:
        args = wecom_webhook_args(wecom_api, corp_id=WC_CORP_ID, corp_secret=WC_CORP_SECRET, agent_id=WC_AGENT_ID,
                                  api_base=wecom_api.base_url, callback_url=f"{server.base_url}/wecom/callback",
                                  token=WC_CALLBACK_TOKEN, aes_key=WC_AES_KEY, ca_path=str(pki.ca_bundle),
                                  required_checks=list(im_app_check.CHECKS))
        outcome = run(args)

    assert not outcome.failed
    assert {name: check["status"] for name, check in outcome.checks.items()} == dict.fromkeys(im_app_check.CHECKS, "ok")
    assert outcome.warnings == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("args", "expected"), [
    ({"platform": "dingtalk", "token": DT_EVENT_TOKEN, "aes_key": DT_AES_KEY[:-1]},
     "aes_key must be exactly 43 characters"),
    ({"platform": "dingtalk", "token": DT_EVENT_TOKEN, "aes_key": "!" * 43}, "aes_key is not a base64"),
    ({}, "missing required arguments: platform"),
    ({"platform": "slack"}, "platform"),
    ({"platform": "wecom", "app_key": WC_CORP_ID, "app_secret": WC_CORP_SECRET},
     "app_key, app_secret: not an option for platform wecom"),
    ({"platform": "wecom", "owner_key": WC_CORP_ID}, "owner_key: not an option for platform wecom"),
    ({"platform": "wecom", "verification_token": FS_VERIFICATION_TOKEN, "encrypt_key": FS_ENCRYPT_KEY},
     "verification_token, encrypt_key: not an option for platform wecom"),
    ({"platform": "wecom", "oapi_base": "https://oapi.dingtalk.com"}, "oapi_base: not an option for platform wecom"),
    ({"platform": "wecom", "webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
      "webhook_secret": "SECx"}, "webhook_secret: not an option for platform wecom"),
    ({"platform": "feishu", "corp_id": WC_CORP_ID}, "corp_id: not an option for platform feishu"),
    ({"platform": "dingtalk", "corp_secret": WC_CORP_SECRET, "agent_id": 1},
     "corp_secret, agent_id: not an option for platform dingtalk"),
    ({"platform": "wecom", "token": WC_CALLBACK_TOKEN, "aes_key": WC_AES_KEY[:-1]},
     "aes_key must be exactly 43 characters (the WeCom EncodingAESKey)"),
    ({"platform": "wecom", "token": WC_CALLBACK_TOKEN, "aes_key": "!" * 43},
     "aes_key is not a base64 EncodingAESKey"),
    ({"platform": "wecom", "agent_id": 0}, "agent_id must be a positive integer"),
    ({"platform": "wecom", "agent_id": "app"}, "agent_id"),
    ({"platform": "wecom", "token": WC_CALLBACK_TOKEN}, "parameters are required together: token, aes_key"),
    ({"platform": "wecom", "api_base": "qyapi.weixin.qq.com"}, "api_base must be an http"),
    ({"platform": "feishu", "token": DT_EVENT_TOKEN, "aes_key": DT_AES_KEY},
     "token, aes_key: not an option for platform feishu"),
    ({"platform": "lark", "owner_key": DT_CORP_ID}, "owner_key: not an option for platform lark"),
    ({"platform": "dingtalk", "encrypt_key": FS_ENCRYPT_KEY}, "encrypt_key: not an option for platform dingtalk"),
    ({"platform": "dingtalk", "verification_token": FS_VERIFICATION_TOKEN},
     "verification_token: not an option for platform dingtalk"),
    ({"platform": "dingtalk", "token": DT_EVENT_TOKEN}, "parameters are required together: token, aes_key"),
    ({"platform": "feishu", "app_id": FS_APP_ID}, "parameters are required together: app_key, app_secret"),
    ({"platform": "feishu", "webhook_secret": FS_HOOK_SECRET}, "webhook_secret"),
    ({"platform": "feishu", "webhook_url": f"hook-without-scheme/{FS_HOOK_TOKEN}"},
     "webhook_url must be an http:// or https:// URL"),
    ({"platform": "feishu", "callback_url": "ftp://example.com/cb"},
     "callback_url must be an http:// or https:// URL (got 'ftp://example.com/cb')"),
    ({"platform": "feishu", "callback_url": "https://example.com:99999/cb"}, "callback_url must be an http"),
    ({"platform": "feishu", "api_base": "open.feishu.cn"}, "api_base must be an http"),
    ({"platform": "dingtalk", "oapi_base": "https://"}, "oapi_base must be an http"),
    ({"platform": "feishu", "timeout": 0}, "timeout must be greater than 0"),
    ({"platform": "feishu", "retries": -1}, "retries must be 0 or more"),
    ({"platform": "feishu", "cert_min_days": -1}, "cert_min_days must be 0 or more"),
    ({"platform": "feishu", "ca_path": "/nonexistent/ca.pem"}, "ca_path /nonexistent/ca.pem is not a file"),
    ({"platform": "feishu", "required_checks": ["credentials", "dns"]}, "required_checks"),
    ({"platform": "feishu", "send_test_message": "maybe"}, "send_test_message"),
])
def test_bad_input_fails_naming_the_option(args: dict[str, Any], expected: str) -> None:
    outcome = run(args)

    assert outcome.failed
    assert expected in outcome.result["msg"]
    assert "checks" not in outcome.result


def test_missing_cryptography_is_reported() -> None:
    with mock.patch.object(im_protocols, "HAS_CRYPTOGRAPHY", False):
        outcome = run({"platform": "feishu"})

    assert outcome.failed
    assert "Failed to import the required Python library (cryptography)" in outcome.result["msg"]


def test_secrets_in_platform_answers_are_masked(pki: Pki) -> None:
    """A broken callback that echoes the request (with the verification token) must not leak it."""
    def echo(request: Request) -> Response:
        return json_response({"challenge": "wrong", "request": request.json()})

    with callback_server(pki, echo) as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert check["status"] == "failed"
    assert '"token": "********"' in check["message"]


def test_secret_cut_by_the_excerpt_limit_does_not_leak_a_prefix(pki: Pki) -> None:
    def answer(request: Request) -> Response:
        return text_response("x" * 190 + FS_VERIFICATION_TOKEN, 500)

    with callback_server(pki, answer) as server:
        outcome = run(feishu_callback_args(server, pki))

    check = outcome.check("callback_verification")
    assert (check["status"], check["code"]) == ("failed", 500)
    assert check["message"].endswith("x" * 190 + "********")
    assert FS_VERIFICATION_TOKEN[:8] not in check["message"]


def test_webhook_tokens_are_masked_in_transport_errors() -> None:
    port = closed_port()
    outcome = run({"platform": "lark", "webhook_url": f"http://127.0.0.1:{port}/open-apis/bot/v2/hook/{FS_HOOK_TOKEN}",
                   "send_test_message": True, **only("webhook")})

    check = outcome.check("webhook")
    assert check["status"] == "failed" and check["code"] is None
    assert f"127.0.0.1:{port}/open-apis/bot/v2/hook/********" in check["message"]


# --------------------------------------------------------------------------- real module output


def test_real_exit_prints_json_with_warnings(dingtalk_api: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Without patched exit_json: the printed JSON is what Ansible receives (warnings included)."""
    args = {"platform": "dingtalk", "app_key": DT_APP_KEY, "app_secret": "dt-wrong-secret-0000",
            "api_base": dingtalk_api.base_url, "oapi_base": dingtalk_api.base_url, "required_checks": ["webhook"],
            "retries": 0}
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    # Another test in the same process may have imported controller code, which routes warnings to
    # the controller's display instead of the module result.
    with mock.patch.object(basic, "_ANSIBLE_ARGS", payload), mock.patch.object(basic, "_ANSIBLE_PROFILE", "legacy"), \
            mock.patch.object(module_utils_internal, "is_controller", False), pytest.raises(SystemExit) as exited:
        im_app_check.main()

    assert exited.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["changed"] is False
    assert printed["checks"]["credentials"]["status"] == "failed"
    warning = printed["warnings"][0]
    warning = warning["event"]["msg"] if isinstance(warning, dict) else warning  # ansible-core 2.19 sends events
    assert warning.startswith("check failed but not required: credentials (code invalidClientIdOrSecret")
    assert "dt-wrong-secret-0000" not in json.dumps(printed)


# --------------------------------------------------------------------------- documentation


def _documentation() -> dict[str, Any]:
    return yaml.safe_load(im_app_check.DOCUMENTATION)


def test_documented_options_equal_the_argument_spec() -> None:
    documented = _documentation()["options"]
    spec = im_app_check.argument_spec()

    assert set(documented) == set(spec)
    for name, option in spec.items():
        doc = documented[name]
        assert doc.get("type", "str") == option.get("type", "str"), name
        assert doc.get("default") == option.get("default"), name
        assert doc.get("choices") == option.get("choices"), name
        assert doc.get("aliases", []) == option.get("aliases", []), name
        assert doc.get("elements") == option.get("elements"), name
        assert doc.get("required", False) == option.get("required", False), name
        assert doc.get("description"), name
    assert {name for name, option in spec.items() if option.get("no_log")} == SECRET_OPTIONS
    assert set(im_app_check.SECRET_OPTIONS) == SECRET_OPTIONS


def test_documentation_attributes_and_return() -> None:
    doc = _documentation()
    assert doc["module"] == "im_app_check"
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "none"
    assert doc["attributes"]["idempotent"]["support"] == "full"
    returned = yaml.safe_load(im_app_check.RETURN)
    assert set(returned) == {"platform", "checks", "failed_checks"}
    assert set(returned["checks"]["contains"]) == set(im_app_check.CHECKS)
    assert set(_documentation()["options"]["required_checks"]["default"]) == set(im_app_check.CHECKS)


def test_examples_use_documented_options_only() -> None:
    options = _documentation()["options"]
    names = set(options) | {alias for option in options.values() for alias in option.get("aliases", [])}
    for task in yaml.safe_load(im_app_check.EXAMPLES):
        if "clawbot.stack.im_app_check" in task:
            assert set(task["clawbot.stack.im_app_check"]) <= names
