"""``clawbot-app`` command line: serve, migrate, config check, token, keyring, alert-relay."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from clawbot_app import __version__
from clawbot_app.config import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    load_settings,
    resolve_config_path,
)

# Exit codes. A configuration that cannot be used (named file missing, unreadable, a directory,
# not YAML, not a mapping, or invalid values; for `migrate` also its password file) ends every
# subcommand with EXIT_CONFIG, except `config check`, whose "invalid" answer is EXIT_INVALID.
# Usage errors (argparse) are 2 as well.
EXIT_INVALID = 1
EXIT_CONFIG = 2
EXIT_MIGRATE = 1  # `migrate` could not connect or a migration failed (the message says which)


def _load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        _print_errors(args, exc)
        raise SystemExit(EXIT_CONFIG) from None


def _source(args: argparse.Namespace) -> str:
    """Where the configuration comes from, for messages."""
    path = resolve_config_path(args.config)
    if path is None:
        return "<defaults>"
    return path if args.config else f"${CONFIG_ENV}={path}"


def _print_errors(args: argparse.Namespace, exc: ConfigError) -> None:
    print(f"configuration invalid ({_source(args)}; {len(exc.errors)} error(s)):",
          file=sys.stderr)
    for path, reason in exc.errors:
        print(f"  {path}: {reason}", file=sys.stderr)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _print_errors(args, exc)
        return EXIT_INVALID
    src = _source(args)
    provs = ", ".join(settings.models.providers) or "none"
    print(f"configuration OK ({src}); providers: {provs}; "
          f"default: {settings.default_provider or 'none'}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from clawbot_app.db import migrate
    from clawbot_app.db.engine import display_url

    settings = _load(args)
    try:  # the only command that reads storage.migration_password_file
        url = settings.storage.migration_url()
    except ConfigError as exc:
        _print_errors(args, exc)
        return EXIT_CONFIG
    if settings.storage.is_embedded_sqlite:  # else leave data_dir alone (migrate may be root)
        settings.storage.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(f"migrating {display_url(url)}", file=sys.stderr)
    try:
        migrate.upgrade(url)
        revision = migrate.current_revision(url)
    except SQLAlchemyError as exc:
        print(f"migration failed: {_db_error(exc)}", file=sys.stderr)
        return EXIT_MIGRATE
    print(f"database at revision {revision}")
    return 0


def _db_error(exc: Exception) -> str:
    """The driver's error (e.g. ``OperationalError: (1142, "CREATE command denied to user
    ...")``) in one line, without SQLAlchemy's statement and link; no driver puts a password
    in it."""
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {cause}".splitlines()[0]


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from clawbot_app.db import migrate
    from clawbot_app.db.engine import make_engine

    url = settings.storage.service_url()
    if settings.storage.is_embedded_sqlite:
        settings.storage.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        migrate.upgrade(url)
    return make_engine(url)


def cmd_token_create(args: argparse.Namespace) -> int:
    from clawbot_app.db.tokens import create_token

    settings = _load(args)

    async def run() -> tuple[str, int]:
        engine = _engine(settings)
        try:
            return await create_token(engine, args.user, args.tenant or args.user, args.days)
        finally:
            await engine.dispose()

    token, token_id = asyncio.run(run())
    print(f"id: {token_id}", file=sys.stderr)
    print("store this token now, it cannot be shown again:", file=sys.stderr)
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from clawbot_app.db.engine import utcnow
    from clawbot_app.db.tokens import list_tokens

    settings = _load(args)

    async def run():  # type: ignore[no-untyped-def]
        engine = _engine(settings)
        try:
            return await list_tokens(engine)
        finally:
            await engine.dispose()

    now = utcnow()
    print(f"{'ID':>5}  {'USER':<20} {'TENANT':<20} {'EXPIRES (UTC)':<20} STATE")
    for t in asyncio.run(run()):
        state = "revoked" if t.revoked else ("expired" if not t.is_valid(now) else "active")
        exp = t.expires_at.strftime("%Y-%m-%d %H:%M") if t.expires_at else "never"
        print(f"{t.id:>5}  {t.user_id:<20} {t.tenant_id:<20} {exp:<20} {state}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from clawbot_app.db.tokens import revoke_token

    settings = _load(args)

    async def run() -> bool:
        engine = _engine(settings)
        try:
            return await revoke_token(engine, args.id)
        finally:
            await engine.dispose()

    if not asyncio.run(run()):
        print(f"token {args.id} not found", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def cmd_keyring_rotate(args: argparse.Namespace) -> int:
    from clawbot_app.crypto import keyring_path, rotate_keyring_file

    settings = _load(args)
    path = keyring_path(settings)
    kid = rotate_keyring_file(path)
    print(f"new current key '{kid}' in {path}; send SIGHUP to running servers")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from clawbot_app.server import serve

    settings = _load(args)
    return serve(settings, resolve_config_path(args.config), host=args.host, port=args.port,
                 workers=args.workers)


def cmd_alert_relay(args: argparse.Namespace) -> int:
    """The alert relay reads its own file (not the bot's configuration, not $CLAWBOT_CONFIG)."""
    from clawbot_app.alertrelay.config import load_relay_config

    if not args.config:
        print("alert-relay: --config PATH is required (the relay's own YAML file)",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        loaded = load_relay_config(args.config)
    except ConfigError as exc:
        print(f"relay configuration invalid ({args.config}; {len(exc.errors)} error(s)):",
              file=sys.stderr)
        for path, reason in exc.errors:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_INVALID if args.check else EXIT_CONFIG
    if args.check:
        receivers = ", ".join(f"{r.name} ({r.platform})" for r in loaded.config.receivers)
        print(f"relay configuration OK ({args.config}); receivers: {receivers}")
        return 0
    from clawbot_app.alertrelay.server import serve

    return serve(loaded)


# `--config` is accepted by the main parser and by every subcommand parser. argparse gives a
# subcommand parser a fresh namespace and copies all of it over the main one, so with one shared
# dest a subcommand would reset a `--config` given before it to the default. Instead each parser
# level has its own dest, set only when the option is given (SUPPRESS; a list, to see repeats),
# and main() merges them.
_CONFIG_DEST = "config_at_level_"


def _add_config_option(parser: argparse.ArgumentParser, level: int) -> None:
    parser.add_argument("--config", metavar="PATH", dest=f"{_CONFIG_DEST}{level}",
                        action="append", default=argparse.SUPPRESS,
                        help=f"YAML config file, before or after the subcommand "
                             f"(default: ${CONFIG_ENV}, else built-in defaults)")


def _add_command(subparsers: argparse._SubParsersAction, name: str, level: int,
                 **kwargs: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(name, **kwargs)
    _add_config_option(parser, level)
    return parser


def _pop_config_arg(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The ``--config`` value from whichever position(s) it was given in (None: not given)."""
    keys = sorted(k for k in vars(args) if k.startswith(_CONFIG_DEST))
    given = [path for k in keys for path in getattr(args, k)]
    for key in keys:
        delattr(args, key)
    if any(not v for v in given):
        parser.error("argument --config: empty path")
    if len(set(given)) > 1:
        parser.error("argument --config: given more than once with different paths: "
                     + ", ".join(dict.fromkeys(given)))
    return given[0] if given else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clawbot-app", description="Async chat-bot gateway")
    _add_config_option(p, 0)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    s = _add_command(sub, "serve", 1, help="run the HTTP server")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)

    m = _add_command(sub, "migrate", 1, help="apply database migrations")
    m.set_defaults(func=cmd_migrate)

    c = _add_command(sub, "config", 1, help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = _add_command(csub, "check", 2, help="validate the configuration")
    cc.set_defaults(func=cmd_config_check)

    t = _add_command(sub, "token", 1, help="API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = _add_command(tsub, "create", 2, help="create a token (printed once)")
    tc.add_argument("--user", required=True)
    tc.add_argument("--tenant")
    tc.add_argument("--days", type=float, default=None,
                    help="validity in days (default: never expires)")
    tc.set_defaults(func=cmd_token_create)
    tl = _add_command(tsub, "list", 2, help="list tokens")
    tl.set_defaults(func=cmd_token_list)
    tr = _add_command(tsub, "revoke", 2, help="revoke a token by id")
    tr.add_argument("id", type=int)
    tr.set_defaults(func=cmd_token_revoke)

    k = _add_command(sub, "keyring", 1, help="encryption keyring")
    ksub = k.add_subparsers(dest="keyring_command", required=True)
    kr = _add_command(ksub, "rotate", 2, help="add a new current key (old keys stay readable)")
    kr.set_defaults(func=cmd_keyring_rotate)

    a = _add_command(sub, "alert-relay", 1,
                     help="relay Alertmanager notifications to DingTalk/Feishu/WeCom robots")
    a.add_argument("--check", action="store_true",
                   help="only validate the relay configuration (and its token file): exit 0 "
                        "when valid, 1 naming each bad key")
    a.set_defaults(func=cmd_alert_relay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = _pop_config_arg(parser, args)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
