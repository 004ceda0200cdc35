"""channels: the in-app inbox

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0010"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("read_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_messages")),
        sa.UniqueConstraint("contact_id", name=op.f("uq_inbox_messages_contact_id")),
    )
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_messages_subscriber_id"), ["subscriber_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_messages_subscriber_id"))
    op.drop_table("inbox_messages")
