"""im_dedupe: IM replay/dedupe keys that survive a restart

Revision ID: 0002_im_dedupe
Revises: 0001_initial
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002_im_dedupe"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "im_dedupe",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", Timestamp, nullable=False),
    )
    op.create_index("ix_im_dedupe_expires_at", "im_dedupe", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_im_dedupe_expires_at", table_name="im_dedupe")
    op.drop_table("im_dedupe")
