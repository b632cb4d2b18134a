"""Configuration model: YAML file + ``CLAWBOT__SECTION__KEY`` environment overrides."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from redis.asyncio.connection import parse_url as parse_redis_url
from sqlalchemy.engine import URL, make_url

from clawbot_app.configfile import (  # ConfigError: public here, as clawbot_app.config.ConfigError
    SECRETS_KEY,
    ConfigError,
    deep_merge,
    read_config_file,
    read_password_file,
    read_secrets_file,
)
from clawbot_app.crypto import KeyringContent, KeyringError, load_keyring_content
from clawbot_app.keyfile import KeyfileError, SecretKeyring, load_secret_keyring
from clawbot_app.tokensfile import FileTokens, TokensFileError, load_tokens_file

ENV_PREFIX = "CLAWBOT__"
CONFIG_ENV = "CLAWBOT_CONFIG"
DEFAULT_DATA_DIR = "~/.local/share/clawbot-app"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ip_or_network(value: str) -> str:
    """An IP address or a CIDR network (no host bits set), in its canonical spelling. The
    ValueError names the entry: an address is no secret."""
    if "/" in value:
        return str(ipaddress.ip_network(value))
    return str(ipaddress.ip_address(value))


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(18789, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    graceful_timeout_seconds: int = Field(15, ge=0)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto uvicorn believes (the reverse proxy).
    forwarded_allow_ips: list[Annotated[str, AfterValidator(_ip_or_network)]] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"])

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        if isinstance(v, str):  # CLAWBOT__SERVER__FORWARDED_ALLOW_IPS=10.0.0.1,10.0.0.2
            return [item.strip() for item in v.split(",") if item.strip()]
        return [] if v is None else v


def _database_url(value: str) -> str:
    """A database URL SQLAlchemy can parse; the message never repeats it (it may hold a
    password)."""
    if not value:
        return value
    if not re.match(r"^(sqlite|mysql|mariadb)(\+\w+)?://", value):
        raise ValueError("must be a sqlite:// or mysql:// (mariadb://) URL")
    try:
        make_url(value)
    except Exception:  # noqa: BLE001 - its message would quote the URL
        raise ValueError("is not a valid URL") from None
    return value


def _with_password(url: str, password: str | None) -> URL:
    parsed = make_url(url)
    return parsed.set(password=password) if password else parsed


def _secret(value: SecretStr | None) -> str | None:
    """The secret's text; an empty secret counts as not set."""
    return (value.get_secret_value() or None) if value is not None else None


class StorageSettings(_Section):
    data_dir: str = DEFAULT_DATA_DIR
    database_url: Annotated[str, AfterValidator(_database_url)] = ""
    # Replaces the password in database_url (kept out of the URL, e.g. in the secrets_file).
    database_password: SecretStr | None = None
    # `clawbot-app migrate` only: another account ("" = database_url's), and the file holding
    # its password. Nothing else reads that file, so the service user need not be able to.
    migration_database_url: Annotated[str, AfterValidator(_database_url)] = ""
    migration_password_file: str | None = None
    redis_url: str = ""
    redis_password: SecretStr | None = None
    writer_queue_size: int = Field(10000, ge=10)
    writer_batch_size: int = Field(200, ge=1)
    # After the first row of a batch the writer waits this long for more rows, so that under
    # load it commits a few large transactions instead of many small ones (the rows are in the
    # crash journal already; this only delays when they appear in the database).
    writer_linger_ms: int = Field(25, ge=0, le=1000)
    replay_interval_seconds: float = Field(5.0, gt=0)
    # Crash journal of the conversation-log writer: "never" survives a process kill (the
    # default), "batch" also a power loss of rows older than one batch, "always" every row.
    journal_fsync: Literal["never", "batch", "always"] = "never"

    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir))

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_path / 'clawbot.sqlite3'}"

    @property
    def is_embedded_sqlite(self) -> bool:
        return not self.database_url

    def service_url(self) -> URL:
        """The service's database: ``effective_database_url`` with ``database_password``.
        ``str()`` of the URL masks the password."""
        return _with_password(self.effective_database_url, _secret(self.database_password))

    def migration_url(self) -> URL:
        """What ``clawbot-app migrate`` connects as: ``migration_database_url`` (default: the
        service's URL), with the password read from ``migration_password_file`` when set.

        Reads that file (raises :class:`ConfigError`): only the ``migrate`` command calls this.
        """
        base = make_url(self.migration_database_url) if self.migration_database_url \
            else self.service_url()
        if self.migration_password_file:
            path = os.path.expanduser(self.migration_password_file)
            base = base.set(password=read_password_file(path, "storage.migration_password_file"))
        return base

    @property
    def redis_secret(self) -> str | None:
        """``redis_password`` (None: not set), which replaces a password in ``redis_url``."""
        return _secret(self.redis_password)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if v and not re.match(r"^(redis|rediss|unix)://", v):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if v:
            try:
                parse_redis_url(v)
            except ValueError:  # its message may quote a part of the URL
                raise ValueError("is not a valid Redis URL") from None
        return v


class SessionSettings(_Section):
    ttl_seconds: int = Field(1800, ge=1)
    max_turns: int = Field(10, ge=0, le=1000)


def _is_header_safe(secret: str) -> bool:
    return all("!" <= ch <= "~" for ch in secret)


def _load_api_key_file(value: Any) -> SecretKeyring:
    """Read the provider's keyring file while the config is validated (start and SIGHUP)."""
    if isinstance(value, SecretKeyring):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be the path of a keyring file")
    try:
        ring = load_secret_keyring(os.path.expanduser(value))
    except KeyfileError as exc:
        raise ValueError(str(exc)) from None
    if not _is_header_safe(ring.current_secret):
        raise ValueError(f"{ring.path}: current key '{ring.current}' is not usable as an API key "
                         "(only printable ASCII without spaces)")
    return ring


# The parsed keyring (its current key is the API key); serialised back as its path.
ApiKeyFile = Annotated[SecretKeyring, PlainValidator(_load_api_key_file),
                       PlainSerializer(lambda ring: ring.path, return_type=str)]


class ProviderSettings(_Section):
    base_url: str
    api_key: SecretStr | None = None
    api_key_file: ApiKeyFile | None = None
    model: str
    max_tokens: int = Field(2048, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(1, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s):// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderSettings:
        if self.api_key_file is not None and self.api_key is not None \
                and self.api_key.get_secret_value():
            raise ValueError("api_key and api_key_file are mutually exclusive: set only one")
        return self

    def secret(self) -> str | None:
        """The API key: the keyring file's current key, else ``api_key`` (None: no auth)."""
        if self.api_key_file is not None:
            return self.api_key_file.current_secret
        return self.api_key.get_secret_value() if self.api_key is not None else None


class RouteRule(_Section):
    provider: str
    path_prefix: str | None = None
    regex: str | None = None
    keywords: list[str] | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> RouteRule:
        given = [x for x in (self.path_prefix, self.regex, self.keywords) if x]
        if len(given) != 1:
            raise ValueError("exactly one of path_prefix, regex, keywords is required")
        if self.regex:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return self


class ModelsSettings(_Section):
    default: str | None = None
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    routes: list[RouteRule] = Field(default_factory=list)
    fallback: list[str] = Field(default_factory=list)

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback_list(cls, v: Any) -> Any:
        if v is None or v == "":
            return []
        return [v] if isinstance(v, str) else v


class AuthSettings(_Section):
    tokens_file: str | None = None
    cache_ttl_seconds: float = Field(10.0, ge=0)


class RateLimitSettings(_Section):
    per_tenant_per_minute: int = Field(600, ge=0)


class EncryptionSettings(_Section):
    keyring_file: str | None = None


def _encoding_aes_key(name: str) -> Callable[[SecretStr | None], SecretStr | None]:
    """A validator: an EncodingAESKey (DingTalk's and WeCom's share the format) is 43 characters."""

    def check(v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value() and len(v.get_secret_value()) != 43:
            raise ValueError(f"must be 43 characters ({name})")
        return v

    return check


class DingTalkSettings(_Section):
    app_key: str | None = None
    app_secret: SecretStr | None = None
    token: SecretStr | None = None
    aes_key: SecretStr | None = None
    api_base: str = "https://api.dingtalk.com"
    robot_code: str | None = None
    owner_key: str | None = None

    _aes_len = field_validator("aes_key")(_encoding_aes_key("DingTalk encodingAesKey"))


class FeishuSettings(_Section):
    app_id: str | None = None
    app_secret: SecretStr | None = None
    verification_token: SecretStr | None = None
    encrypt_key: SecretStr | None = None
    api_base: str = "https://open.feishu.cn"


class WeComSettings(_Section):
    """A WeCom (企业微信) self-built app: callbacks in, replies through the app message API."""

    corp_id: str | None = None
    corp_secret: SecretStr | None = None
    agent_id: int | None = Field(None, ge=0)
    token: SecretStr | None = None
    encoding_aes_key: SecretStr | None = None
    api_base: str = "https://qyapi.weixin.qq.com"

    _aes_len = field_validator("encoding_aes_key")(_encoding_aes_key("WeCom EncodingAESKey"))


class ReplyFormatSettings(_Section):
    """How answers are sent per platform: rendered markdown (a card on Feishu) or plain text."""

    dingtalk: Literal["markdown", "text"] = "markdown"
    feishu: Literal["card", "text"] = "card"
    wecom: Literal["markdown", "text"] = "markdown"


class ImSettings(_Section):
    reply_format: ReplyFormatSettings = Field(default_factory=ReplyFormatSettings)
    # Language of the bot's own notices (a failed model call): "auto" follows the message.
    language: Literal["auto", "zh", "en"] = "auto"
    # A long answer is sent in at most this many numbered parts (the rest is cut, and says so).
    max_parts: int = Field(10, ge=1, le=50)


class LimitsSettings(_Section):
    max_message_chars: int = Field(2048, ge=1)
    max_body_bytes: int = Field(65536, ge=256)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    file: str | None = None
    include_content: bool = False
    access_log: bool = True

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class Settings(_Section):
    # A YAML file with the same structure, merged over this one (load_settings reads it).
    secrets_file: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)
    dingtalk: DingTalkSettings = Field(default_factory=DingTalkSettings)
    feishu: FeishuSettings = Field(default_factory=FeishuSettings)
    wecom: WeComSettings = Field(default_factory=WeComSettings)
    im: ImSettings = Field(default_factory=ImSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    # What load_settings parsed while validating ``auth.tokens_file`` and
    # ``encryption.keyring_file``: the running service applies exactly that content (read once;
    # a file changed after validation cannot slip in unvalidated).
    _file_tokens: FileTokens | None = PrivateAttr(default=None)
    _keyring: KeyringContent | None = PrivateAttr(default=None)

    @property
    def file_tokens(self) -> FileTokens | None:
        """The parsed tokens file, when load_settings validated one."""
        return self._file_tokens

    @property
    def keyring(self) -> KeyringContent | None:
        """``(current key id, keys, created)`` of the configured keyring file, when load_settings
        read it."""
        return self._keyring

    @property
    def default_provider(self) -> str | None:
        if self.models.default:
            return self.models.default
        if len(self.models.providers) == 1:
            return next(iter(self.models.providers))
        return None


def _parse_env_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _env_overrides(data: dict[str, Any], environ: dict[str, str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        value = raw if _is_secret_key(parts[-1]) else _parse_env_value(raw)
        node[parts[-1]] = value


def _is_secret_key(key: str) -> bool:
    return key.endswith(("secret", "_key", "token", "password"))


def _apply_model_api_key(data: dict[str, Any], environ: dict[str, str]) -> None:
    key = environ.get("MODEL_API_KEY")
    if not key:
        return
    models = data.get("models")
    if not isinstance(models, dict):
        return
    providers = models.get("providers")
    if not isinstance(providers, dict) or not providers:
        return
    default = models.get("default") or (next(iter(providers)) if len(providers) == 1 else None)
    target = providers.get(default) if default else None
    if isinstance(target, dict) and not target.get("api_key") \
            and not target.get("api_key_file"):
        target["api_key"] = key


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _semantic_errors(s: Settings) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    names = set(s.models.providers)
    if s.models.default and s.models.default not in names:
        errors.append(("models.default", f"unknown provider '{s.models.default}'"))
    for i, rule in enumerate(s.models.routes):
        if rule.provider not in names:
            errors.append((f"models.routes.{i}.provider", f"unknown provider '{rule.provider}'"))
    for i, name in enumerate(s.models.fallback):
        if name not in names:
            errors.append((f"models.fallback.{i}", f"unknown provider '{name}'"))
    if names and not s.default_provider:
        errors.append(("models.default", "required when more than one provider is configured"))
    errors.extend(_storage_errors(s.storage))
    errors.extend(_file_errors(s))
    return errors


def _storage_errors(st: StorageSettings) -> list[tuple[str, str]]:
    """Credentials and migration settings that only an external (MySQL) database can use."""
    errors: list[tuple[str, str]] = []
    db = make_url(st.database_url) if st.database_url else None
    external = db is not None and db.get_backend_name() != "sqlite"
    needs_external = {"database_password": _secret(st.database_password),
                      "migration_database_url": st.migration_database_url,
                      "migration_password_file": st.migration_password_file}
    for key, value in needs_external.items():
        if value and not external:
            errors.append((f"storage.{key}", "needs a mysql:// storage.database_url"))
    if external and st.migration_database_url \
            and make_url(st.migration_database_url).get_backend_name() == "sqlite":
        errors.append(("storage.migration_database_url", "must be a mysql:// URL, like "
                                                         "storage.database_url"))
    if external and db is not None and db.username is None and _secret(st.database_password):
        errors.append(("storage.database_url", "needs a user name to go with "
                                               "storage.database_password"))
    if st.redis_secret and not st.redis_url:
        errors.append(("storage.redis_password", "needs storage.redis_url"))
    return errors


def _file_errors(s: Settings) -> list[tuple[str, str]]:
    """Parse the tokens file and the encryption keyring now, so that bad files are config errors;
    keep what was parsed in ``s`` for the service to apply."""
    errors: list[tuple[str, str]] = []
    if s.auth.tokens_file:
        try:
            s._file_tokens = load_tokens_file(s.auth.tokens_file)
        except TokensFileError as exc:
            errors.append(("auth.tokens_file", str(exc)))
    if s.encryption.keyring_file:
        try:
            s._keyring = load_keyring_content(Path(os.path.expanduser(s.encryption.keyring_file)))
        except KeyringError as exc:
            errors.append(("encryption.keyring_file", str(exc)))
    return errors


def _secrets_path(data: dict[str, Any], env: dict[str, str]) -> str | None:
    """``secrets_file`` as the environment (``CLAWBOT__SECRETS_FILE``) or the main file sets it."""
    overrides: dict[str, Any] = {}
    _env_overrides(overrides, env)
    value = overrides.get(SECRETS_KEY, data.get(SECRETS_KEY))
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError([(SECRETS_KEY, "must be the path of a YAML file")])
    return os.path.expanduser(value)


def resolve_config_path(path: str | None, environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return path or env.get(CONFIG_ENV) or None


def load_settings(path: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load YAML (``path`` or ``$CLAWBOT_CONFIG``), merge its ``secrets_file`` over it, apply
    env overrides, validate.

    Raises :class:`ConfigError` listing every problem (key path + reason, never values).
    """
    env = dict(os.environ if environ is None else environ)
    cfg_path = resolve_config_path(path, env)
    data = read_config_file(cfg_path) if cfg_path else {}
    secrets_path = _secrets_path(data, env)
    if secrets_path:
        data = deep_merge(data, read_secrets_file(secrets_path))
    _env_overrides(data, env)
    _apply_model_api_key(data, env)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors = [(_loc(e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(errors) from None
    errors = _semantic_errors(settings)
    if errors:
        raise ConfigError(errors)
    return settings
