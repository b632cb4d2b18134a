"""API token repository: only SHA-256 hashes are stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from clawbot_app.db.engine import utcnow
from clawbot_app.db.schema import api_tokens, audit_log

TOKEN_PREFIX = "cb_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenRecord:
    id: int | None
    user_id: str
    tenant_id: str
    expires_at: dt.datetime | None
    revoked: bool
    created_at: dt.datetime | None = None

    def is_valid(self, now: dt.datetime) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


async def audit(engine: AsyncEngine, actor: str, action: str, target: str,
                detail: dict[str, object] | None = None) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(audit_log).values(
            created_at=utcnow(), actor=actor, action=action, target=target,
            detail=json.dumps(detail) if detail else None))


async def create_token(engine: AsyncEngine, user_id: str, tenant_id: str,
                       days: float | None, actor: str = "cli") -> tuple[str, int]:
    token = generate_token()
    now = utcnow()
    expires = now + dt.timedelta(days=days) if days else None
    async with engine.begin() as conn:
        res = await conn.execute(sa.insert(api_tokens).values(
            token_hash=hash_token(token), user_id=user_id, tenant_id=tenant_id,
            created_at=now, expires_at=expires, revoked=False))
        token_id = int(res.inserted_primary_key[0])
    await audit(engine, actor, "token.create", str(token_id),
                {"user": user_id, "tenant": tenant_id, "days": days})
    return token, token_id


async def list_tokens(engine: AsyncEngine) -> list[TokenRecord]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(api_tokens).order_by(api_tokens.c.id))).all()
    return [TokenRecord(r.id, r.user_id, r.tenant_id, r.expires_at, bool(r.revoked),
                        r.created_at) for r in rows]


async def revoke_token(engine: AsyncEngine, token_id: int, actor: str = "cli") -> bool:
    async with engine.begin() as conn:
        res = await conn.execute(sa.update(api_tokens).where(api_tokens.c.id == token_id)
                                 .values(revoked=True, revoked_at=utcnow()))
    if res.rowcount:
        await audit(engine, actor, "token.revoke", str(token_id))
    return bool(res.rowcount)


async def lookup_hash(engine: AsyncEngine, token_hash: str) -> TokenRecord | None:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(api_tokens)
                                  .where(api_tokens.c.token_hash == token_hash))).first()
    if row is None:
        return None
    return TokenRecord(row.id, row.user_id, row.tenant_id, row.expires_at, bool(row.revoked))
