"""``clawbot-app`` command line: serve, migrate, config check, token, keyring."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from clawbot_app import __version__
from clawbot_app.config import ConfigError, Settings, load_settings, resolve_config_path


def _load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        _print_errors(exc)
        raise SystemExit(2) from None


def _print_errors(exc: ConfigError) -> None:
    print(f"configuration invalid ({len(exc.errors)} error(s)):", file=sys.stderr)
    for path, reason in exc.errors:
        print(f"  {path}: {reason}", file=sys.stderr)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _print_errors(exc)
        return 1
    src = resolve_config_path(args.config) or "<defaults>"
    provs = ", ".join(settings.models.providers) or "none"
    print(f"configuration OK ({src}); providers: {provs}; "
          f"default: {settings.default_provider or 'none'}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from clawbot_app.db import migrate

    settings = _load(args)
    settings.storage.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = settings.storage.effective_database_url
    migrate.upgrade(url)
    print(f"database at revision {migrate.current_revision(url)}")
    return 0


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from clawbot_app.db import migrate
    from clawbot_app.db.engine import make_engine

    url = settings.storage.effective_database_url
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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="YAML config file (default: $CLAWBOT_CONFIG)")
    p = argparse.ArgumentParser(prog="clawbot-app", parents=[common],
                                description="Async chat-bot gateway")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="run the HTTP server")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    m.set_defaults(func=cmd_migrate)

    c = sub.add_parser("config", parents=[common], help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", parents=[common], help="validate the configuration")
    cc.set_defaults(func=cmd_config_check)

    t = sub.add_parser("token", parents=[common], help="API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", parents=[common], help="create a token (printed once)")
    tc.add_argument("--user", required=True)
    tc.add_argument("--tenant")
    tc.add_argument("--days", type=float, default=None,
                    help="validity in days (default: never expires)")
    tc.set_defaults(func=cmd_token_create)
    tl = tsub.add_parser("list", parents=[common], help="list tokens")
    tl.set_defaults(func=cmd_token_list)
    tr = tsub.add_parser("revoke", parents=[common], help="revoke a token by id")
    tr.add_argument("id", type=int)
    tr.set_defaults(func=cmd_token_revoke)

    k = sub.add_parser("keyring", parents=[common], help="encryption keyring")
    ksub = k.add_subparsers(dest="keyring_command", required=True)
    kr = ksub.add_parser("rotate", parents=[common],
                         help="add a new current key (old keys stay readable)")
    kr.set_defaults(func=cmd_keyring_rotate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
