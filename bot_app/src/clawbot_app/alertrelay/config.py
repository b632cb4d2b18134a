"""The relay's configuration file (YAML, validated with pydantic) and its bearer token file.

The file holds the robots' webhook tokens and signing secrets: it must not be readable by
"other" (0600 or 0640), like the token file. Errors name the key (``receivers.1.webhook_url``)
and never repeat a value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from clawbot_app.configfile import ConfigError, read_config_file, read_password_file

Language = Literal["en", "zh"]
Platform = Literal["dingtalk", "feishu", "wecom"]

MIN_TOKEN_CHARS = 16
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_FEISHU_HOOK = re.compile(r"/bot/v2/hook/[A-Za-z0-9_.~-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(18790, ge=1, le=65535)


class Retry(_Strict):
    """Bounded exponential backoff: delays ``initial * 2**n`` capped at ``max_delay``; each
    attempt within ``timeout_seconds``; all attempts of one notification within
    ``deadline_seconds`` (below Alertmanager's own notification timeout)."""

    attempts: int = Field(3, ge=1, le=10)
    initial_delay_seconds: float = Field(1.0, ge=0, le=60)
    max_delay_seconds: float = Field(10.0, ge=0, le=300)
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    deadline_seconds: float = Field(30.0, gt=0, le=600)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay_seconds, self.initial_delay_seconds * 2 ** (attempt - 1)))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a robot webhook (None: fine). Never quotes the URL (it holds a
    token)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an https:// URL"
    if parts.scheme == "http" and not _is_loopback(host):
        return "must be https:// (plain http only to a loopback address)"
    if parts.username or parts.password:
        return "must not carry a user name or password"
    if parts.fragment:
        return "must not have a #fragment"
    return None


class Receiver(_Strict):
    name: str = Field(pattern=_NAME)
    platform: Platform
    webhook_url: SecretStr
    secret: SecretStr | None = None
    language: Language | None = None

    @model_validator(mode="after")
    def _platform_rules(self) -> Receiver:
        url = self.webhook_url.get_secret_value()
        problem = _url_problem(url)
        if problem is None:
            problem = _PLATFORM_URL_RULES[self.platform](urllib.parse.urlsplit(url))
        if problem:
            raise _FieldError("webhook_url", problem)
        secret = self.secret.get_secret_value() if self.secret is not None else None
        if secret is not None:
            if not secret:
                raise _FieldError("secret", "is empty (leave it out when the robot does not sign)")
            if self.platform == "dingtalk" and not secret.startswith("SEC"):
                raise _FieldError("secret", "a DingTalk robot's signing secret starts with SEC")
            if self.platform == "wecom":
                raise _FieldError("secret", "WeCom group robots do not sign: the key in "
                                            "webhook_url is the credential; remove secret")
        return self


class _FieldError(ValueError):
    """A problem with one field of a receiver; :func:`_errors` puts the field in the path."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _dingtalk_url(parts: urllib.parse.SplitResult) -> str | None:
    if not parts.path.endswith("/robot/send"):
        return "a DingTalk robot webhook ends in /robot/send"
    if not urllib.parse.parse_qs(parts.query).get("access_token"):
        return "a DingTalk robot webhook needs its ?access_token="
    return None


def _feishu_url(parts: urllib.parse.SplitResult) -> str | None:
    if not _FEISHU_HOOK.search(parts.path):
        return "a Feishu/Lark custom bot webhook ends in /open-apis/bot/v2/hook/<token>"
    if parts.query:
        return "a Feishu/Lark custom bot webhook has no query string"
    return None


def _wecom_url(parts: urllib.parse.SplitResult) -> str | None:
    if not parts.path.endswith("/cgi-bin/webhook/send"):
        return "a WeCom robot webhook ends in /cgi-bin/webhook/send"
    if not urllib.parse.parse_qs(parts.query).get("key"):
        return "a WeCom robot webhook needs its ?key="
    return None


_PLATFORM_URL_RULES = {"dingtalk": _dingtalk_url, "feishu": _feishu_url, "wecom": _wecom_url}


class RelayConfig(_Strict):
    listen: Listen = Field(default_factory=Listen)
    auth_token_file: str = Field(min_length=1)
    language: Language = "en"
    external_url: str | None = None
    retry: Retry = Field(default_factory=Retry)
    receivers: list[Receiver] = Field(min_length=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_alerts_per_message: int = Field(10, ge=1, le=100)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    graceful_timeout_seconds: int = Field(35, ge=0, le=600)

    @model_validator(mode="after")
    def _checks(self) -> RelayConfig:
        if self.external_url is not None:
            parts = urllib.parse.urlsplit(self.external_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _FieldError("external_url", "must be an http:// or https:// URL")
        return self

    def receiver(self, name: str) -> Receiver | None:
        return next((r for r in self.receivers if r.name == name), None)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and the bearer token Alertmanager must present."""

    config: RelayConfig
    token: str
    path: str


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):
            errors.append((_loc((*loc, cause.field)), cause.reason))
        else:
            errors.append((_loc(loc), err["msg"]))
    return errors


def _duplicate_names(config: RelayConfig) -> list[tuple[str, str]]:
    seen: set[str] = set()
    errors = []
    for i, receiver in enumerate(config.receivers):
        if receiver.name in seen:
            errors.append((f"receivers.{i}.name", f"duplicate receiver name '{receiver.name}'"))
        seen.add(receiver.name)
    return errors


def _check_private(path: str) -> None:
    """The config file holds webhook tokens: refuse one that "other" may read or write."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # read_config_file reports it
    if mode & 0o007:
        raise ConfigError([("<file>", f"{path}: mode {stat.S_IMODE(mode):04o} lets others read "
                                      "or write it; it holds webhook tokens (e.g. chmod 0600)")])


def load_relay_config(path: str) -> LoadedConfig:
    """Read and validate ``path`` and its ``auth_token_file``; :class:`ConfigError` lists every
    problem found (key path + reason)."""
    _check_private(path)
    data = read_config_file(path)
    try:
        config = RelayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_errors(exc)) from None
    errors = _duplicate_names(config)
    if errors:
        raise ConfigError(errors)
    token = read_password_file(os.path.expanduser(config.auth_token_file), "auth_token_file")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError([("auth_token_file", f"the token must have at least {MIN_TOKEN_CHARS} "
                                               "characters")])
    return LoadedConfig(config, token, path)
