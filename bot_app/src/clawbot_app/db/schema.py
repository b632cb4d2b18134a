"""Table definitions (SQLAlchemy Core). Alembic migrations mirror this file."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

tenant_config = sa.Table(
    "tenant_config",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("model_provider", sa.String(64), nullable=True),
    sa.Column("model_endpoint", sa.String(255), nullable=True),
    sa.Column("rate_limit", sa.Integer, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

dialog_sessions = sa.Table(
    "dialog_sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("tenant_id", "session_id", name="uq_dialog_sessions_tenant_session"),
)

conversation_log = sa.Table(
    "conversation_log",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", LongText, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("latency_ms", sa.Integer, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("ix_conversation_log_session", "tenant_id", "session_id", "created_at"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("revoked_at", Timestamp, nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(255), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)

im_dedupe = sa.Table(
    "im_dedupe",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Index("ix_im_dedupe_expires_at", "expires_at"),
)
