"""red-envelope prizes credited: envelope_credits, coupon prize tiers; earlier wins backfilled

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("envelope_tiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prize_batch_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_envelope_tiers_prize_batch_id_coupon_batches"),
            "coupon_batches",
            ["prize_batch_id"],
            ["id"],
        )
    op.create_table(
        "envelope_credits",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("subscriber_id", _BIGINT, nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("draw_no", sa.BigInteger(), nullable=True),
        sa.Column("envelope_id", _BIGINT, nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("coupon_id", _BIGINT, nullable=True),
        sa.Column("at", perkflow.db.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "(draw_no IS NULL) <> (envelope_id IS NULL)",
            name=op.f("ck_envelope_credits_one_source"),
        ),
        sa.CheckConstraint(
            "(kind = 'coupon') = (coupon_id IS NOT NULL)", name=op.f("ck_envelope_credits_coupon")
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_envelope_credits_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["share_envelopes.id"],
            name=op.f("fk_envelope_credits_envelope_id_share_envelopes"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["envelope_programs.id"],
            name=op.f("fk_envelope_credits_program_id_envelope_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_envelope_credits_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_envelope_credits")),
        sa.UniqueConstraint("envelope_id", name=op.f("uq_envelope_credits_envelope_id")),
        sa.UniqueConstraint(
            "program_id", "draw_no", name=op.f("uq_envelope_credits_program_id_draw_no")
        ),
    )
    with op.batch_alter_table("envelope_credits", schema=None) as batch_op:
        batch_op.create_index("ix_envelope_credits_subscriber", ["subscriber_id", "id"])
    # Prizes won before crediting existed were promised on screen: credit them as cash now.
    op.execute(
        "INSERT INTO envelope_credits (subscriber_id, program_id, draw_no, kind, amount_fen, at) "
        "SELECT subscriber_id, program_id, draw_no, 'cash', prize_fen, at FROM envelope_draws "
        "WHERE outcome = 'won' AND prize_fen > 0"
    )
    op.execute(
        "INSERT INTO envelope_credits (subscriber_id, program_id, envelope_id, kind, amount_fen, at) "
        "SELECT owner_id, program_id, id, 'cash', amount_fen, opened_at FROM share_envelopes "
        "WHERE status = 'opened' AND opened_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("envelope_credits", schema=None) as batch_op:
        batch_op.drop_index("ix_envelope_credits_subscriber")
    op.drop_table("envelope_credits")
    with op.batch_alter_table("envelope_tiers", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_envelope_tiers_prize_batch_id_coupon_batches"), type_="foreignkey"
        )
        batch_op.drop_column("prize_batch_id")
