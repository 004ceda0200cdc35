"""membership: program, tiers and bundles, members and tier history, prepaid, bundle grants,
points accounts, entries, postings and lots

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "membership_program",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("points_per_yuan", sa.Integer(), nullable=False),
        sa.Column("points_expiry_years", sa.Integer(), nullable=False),
        sa.Column("point_value_fen_per_100", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_membership_program")),
    )
    op.create_table(
        "member_tiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name_zh", sa.String(length=64), nullable=False),
        sa.Column("name_en", sa.String(length=64), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("points_multiplier_pct", sa.Integer(), nullable=False),
        sa.Column("qualify", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_tiers")),
        sa.UniqueConstraint("code", name=op.f("uq_member_tiers_code")),
    )
    op.create_table(
        "member_bundle_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tier_id", sa.Integer(), nullable=False),
        sa.Column("benefit_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("cadence", sa.String(length=8), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("value_fen", sa.Integer(), nullable=False),
        sa.Column("pick_group", sa.String(length=32), nullable=True),
        sa.Column("choose", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["benefit_id"], ["benefits.id"], name=op.f("fk_member_bundle_items_benefit_id_benefits")
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"],
            ["member_tiers.id"],
            name=op.f("fk_member_bundle_items_tier_id_member_tiers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_bundle_items")),
    )
    with op.batch_alter_table("member_bundle_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_member_bundle_items_tier_id"), ["tier_id"], unique=False
        )

    op.create_table(
        "members",
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tier_id", sa.Integer(), nullable=True),
        sa.Column("since", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("pending_tier_id", sa.Integer(), nullable=True),
        sa.Column("downgrade_due_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("evaluated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pending_tier_id"],
            ["member_tiers.id"],
            name=op.f("fk_members_pending_tier_id_member_tiers"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"], name=op.f("fk_members_subscriber_id_subscribers")
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"], ["member_tiers.id"], name=op.f("fk_members_tier_id_member_tiers")
        ),
        sa.PrimaryKeyConstraint("subscriber_id", name=op.f("pk_members")),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_members_downgrade_due_at"), ["downgrade_due_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_members_tier_id"), ["tier_id"], unique=False)

    op.create_table(
        "member_tier_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("from_tier_id", sa.Integer(), nullable=True),
        sa.Column("to_tier_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_tier_changes")),
    )
    with op.batch_alter_table("member_tier_changes", schema=None) as batch_op:
        batch_op.create_index("ix_member_tier_changes_at_kind", ["at", "kind"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_member_tier_changes_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "prepaid_accounts",
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("balance_fen", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_prepaid_accounts_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("subscriber_id", name=op.f("pk_prepaid_accounts")),
    )
    op.create_table(
        "prepaid_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prepaid_events")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_prepaid_events_idempotency_key")),
    )
    with op.batch_alter_table("prepaid_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prepaid_events_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "member_bundle_grants",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tier_id", sa.Integer(), nullable=False),
        sa.Column("bundle_item_id", sa.Integer(), nullable=False),
        sa.Column("cycle", sa.String(length=7), nullable=False),
        sa.Column("slot", sa.String(length=48), nullable=False),
        sa.Column("grant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("value_fen", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_item_id"],
            ["member_bundle_items.id"],
            name=op.f("fk_member_bundle_grants_bundle_item_id_member_bundle_items"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_bundle_grants")),
        sa.UniqueConstraint(
            "subscriber_id",
            "cycle",
            "slot",
            name=op.f("uq_member_bundle_grants_subscriber_id_cycle_slot"),
        ),
    )
    op.create_table(
        "points_accounts",
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_points_accounts_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("subscriber_id", name=op.f("pk_points_accounts")),
    )
    op.create_table(
        "points_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("ref", sa.String(length=128), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_entries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_points_entries_idempotency_key")),
    )
    with op.batch_alter_table("points_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_points_entries_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "points_postings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["points_entries.id"],
            name=op.f("fk_points_postings_entry_id_points_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_postings")),
    )
    with op.batch_alter_table("points_postings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_points_postings_account", ["account", "subscriber_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_points_postings_entry_id"), ["entry_id"], unique=False)

    op.create_table(
        "points_lots",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("earned_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["points_entries.id"], name=op.f("fk_points_lots_entry_id_points_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_lots")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_points_lots_entry_id")),
    )
    with op.batch_alter_table("points_lots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_points_lots_expires_remaining", ["expires_at", "remaining"], unique=False
        )
        batch_op.create_index(
            "ix_points_lots_subscriber_expires", ["subscriber_id", "expires_at"], unique=False
        )


def downgrade() -> None:
    # Dropping a table drops its indexes; children first.
    op.drop_table("points_lots")
    op.drop_table("points_postings")
    op.drop_table("points_entries")
    op.drop_table("points_accounts")
    op.drop_table("member_bundle_grants")
    op.drop_table("prepaid_events")
    op.drop_table("prepaid_accounts")
    op.drop_table("member_tier_changes")
    op.drop_table("members")
    op.drop_table("member_bundle_items")
    op.drop_table("member_tiers")
    op.drop_table("membership_program")
