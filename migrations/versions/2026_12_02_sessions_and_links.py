"""sessions and links: staff session epoch, sign-in throttle, single-use H5 links; coupons bound

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("window_start", perkflow.db.UTCDateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttles")),
    )
    op.create_index(
        op.f("ix_login_throttles_window_start"), "login_throttles", ["window_start"], unique=False
    )
    op.create_table(
        "h5_link_nonces",
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("subscriber_id", _BIGINT, nullable=False),
        sa.Column("expires_at", perkflow.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_h5_link_nonces_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_h5_link_nonces")),
    )
    op.create_index(
        op.f("ix_h5_link_nonces_subscriber_id"), "h5_link_nonces", ["subscriber_id"], unique=False
    )
    op.create_index(
        op.f("ix_h5_link_nonces_expires_at"), "h5_link_nonces", ["expires_at"], unique=False
    )
    # Coupons follow network status from now on: bring the ones already out of line into it.
    op.execute(
        "UPDATE coupons SET status = 'void' WHERE status = 'claimed' AND subscriber_id IN"
        " (SELECT id FROM subscribers WHERE status = 'churned')"
    )
    op.execute(
        "UPDATE coupons SET status = 'paused' WHERE status = 'claimed' AND subscriber_id IN"
        " (SELECT id FROM subscribers WHERE status = 'suspended')"
    )


def downgrade() -> None:
    op.execute("UPDATE coupons SET status = 'claimed' WHERE status IN ('void', 'paused')")
    op.drop_index(op.f("ix_h5_link_nonces_expires_at"), table_name="h5_link_nonces")
    op.drop_index(op.f("ix_h5_link_nonces_subscriber_id"), table_name="h5_link_nonces")
    op.drop_table("h5_link_nonces")
    op.drop_index(op.f("ix_login_throttles_window_start"), table_name="login_throttles")
    op.drop_table("login_throttles")
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
