"""coupons: batches, stock shards, code pools and jobs, coupons, counters, rate buckets,
redemptions, red-envelope programmes, tiers, draws, share envelopes and helps

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0006"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coupon_claim_counters",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "batch_id", "subscriber_id", "period", name=op.f("pk_coupon_claim_counters")
        ),
    )
    op.create_table(
        "coupon_rate_buckets",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_coupon_rate_buckets")),
    )
    op.create_table(
        "envelope_counters",
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("program_id", "subscriber_id", name=op.f("pk_envelope_counters")),
    )
    op.create_table(
        "coupon_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=48), nullable=False),
        sa.Column("name_zh", sa.String(length=128), nullable=False),
        sa.Column("name_en", sa.String(length=128), nullable=False),
        sa.Column("owner_region", sa.String(length=32), nullable=False),
        sa.Column("value_kind", sa.String(length=8), nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("percent_off", sa.Integer(), nullable=True),
        sa.Column("cap_fen", sa.Integer(), nullable=True),
        sa.Column("min_spend_fen", sa.Integer(), nullable=False),
        sa.Column("scope_stores", sa.JSON(), nullable=False),
        sa.Column("scope_regions", sa.JSON(), nullable=False),
        sa.Column("scope_partners", sa.JSON(), nullable=False),
        sa.Column("scope_categories", sa.JSON(), nullable=False),
        sa.Column("validity_kind", sa.String(length=8), nullable=False),
        sa.Column("valid_from", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_until", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("claim_starts_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claim_ends_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("flash_sale", sa.Boolean(), nullable=False),
        sa.Column("stock_total", sa.Integer(), nullable=False),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("limit_total", sa.Integer(), nullable=False),
        sa.Column("limit_per_day", sa.Integer(), nullable=True),
        sa.Column("code_source", sa.String(length=8), nullable=False),
        sa.Column("code_charset", sa.String(length=40), nullable=False),
        sa.Column("code_prefix", sa.String(length=8), nullable=False),
        sa.Column("code_length", sa.Integer(), nullable=False),
        sa.Column("pool_size", sa.Integer(), nullable=False),
        sa.Column("reversal_window_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_region"], ["regions.code"], name=op.f("fk_coupon_batches_owner_region_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_batches")),
        sa.UniqueConstraint("code", name=op.f("uq_coupon_batches_code")),
    )
    with op.batch_alter_table("coupon_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coupon_batches_owner_region"), ["owner_region"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_coupon_batches_status"), ["status"], unique=False)

    op.create_table(
        "envelope_programs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=48), nullable=False),
        sa.Column("name_zh", sa.String(length=128), nullable=False),
        sa.Column("name_en", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("owner_region", sa.String(length=32), nullable=False),
        sa.Column("budget_fen", sa.BigInteger(), nullable=False),
        sa.Column("spent_fen", sa.BigInteger(), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=False),
        sa.Column("draws", sa.BigInteger(), nullable=False),
        sa.Column("limit_per_subscriber", sa.Integer(), nullable=False),
        sa.Column("share_amount_fen", sa.Integer(), nullable=True),
        sa.Column("helpers_needed", sa.Integer(), nullable=True),
        sa.Column("starts_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "spent_fen >= 0 AND spent_fen <= budget_fen", name=op.f("ck_envelope_programs_budget")
        ),
        sa.ForeignKeyConstraint(
            ["owner_region"],
            ["regions.code"],
            name=op.f("fk_envelope_programs_owner_region_regions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_envelope_programs")),
        sa.UniqueConstraint("code", name=op.f("uq_envelope_programs_code")),
    )
    with op.batch_alter_table("envelope_programs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_envelope_programs_owner_region"), ["owner_region"], unique=False
        )

    op.create_table(
        "coupon_code_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("collisions", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["coupon_batches.id"],
            name=op.f("fk_coupon_code_jobs_batch_id_coupon_batches"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_code_jobs")),
    )
    with op.batch_alter_table("coupon_code_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coupon_code_jobs_batch_id"), ["batch_id"], unique=False
        )
        batch_op.create_index(
            "ux_coupon_code_jobs_live",
            ["batch_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        )

    op.create_table(
        "coupon_codes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("code_enc", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["coupon_batches.id"],
            name=op.f("fk_coupon_codes_batch_id_coupon_batches"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_codes")),
        sa.UniqueConstraint("batch_id", "ordinal", name=op.f("uq_coupon_codes_batch_id_ordinal")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_coupon_codes_code_hash")),
    )
    op.create_table(
        "coupon_stock_shards",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("slot_base", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= size", name=op.f("ck_coupon_stock_shards_remaining")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["coupon_batches.id"],
            name=op.f("fk_coupon_stock_shards_batch_id_coupon_batches"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "shard", name=op.f("pk_coupon_stock_shards")),
    )
    op.create_table(
        "coupons",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("code_enc", sa.LargeBinary(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_from", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["coupon_batches.id"], name=op.f("fk_coupons_batch_id_coupon_batches")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"], name=op.f("fk_coupons_subscriber_id_subscribers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("batch_id", "slot", name=op.f("uq_coupons_batch_id_slot")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_coupons_code_hash")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_coupons_idempotency_key")),
    )
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.create_index("ix_coupons_batch_claimed", ["batch_id", "claimed_at"], unique=False)
        batch_op.create_index(
            "ix_coupons_subscriber_status", ["subscriber_id", "status"], unique=False
        )

    op.create_table(
        "envelope_draws",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("draw_no", sa.BigInteger(), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("u", sa.Integer(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("prize_fen", sa.Integer(), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["envelope_programs.id"],
            name=op.f("fk_envelope_draws_program_id_envelope_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_envelope_draws_subscriber_id_subscribers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_envelope_draws")),
        sa.UniqueConstraint(
            "program_id", "draw_no", name=op.f("uq_envelope_draws_program_id_draw_no")
        ),
    )
    with op.batch_alter_table("envelope_draws", schema=None) as batch_op:
        batch_op.create_index("ix_envelope_draws_subscriber", ["subscriber_id", "at"], unique=False)

    op.create_table(
        "envelope_tiers",
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("name_zh", sa.String(length=64), nullable=False),
        sa.Column("name_en", sa.String(length=64), nullable=False),
        sa.Column("prize_fen", sa.Integer(), nullable=False),
        sa.Column("weight_ppm", sa.Integer(), nullable=False),
        sa.Column("max_count", sa.Integer(), nullable=True),
        sa.Column("won_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["envelope_programs.id"],
            name=op.f("fk_envelope_tiers_program_id_envelope_programs"),
        ),
        sa.PrimaryKeyConstraint("program_id", "tier", name=op.f("pk_envelope_tiers")),
    )
    op.create_table(
        "share_envelopes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("helpers_needed", sa.Integer(), nullable=False),
        sa.Column("helpers_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("opened_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "helpers_count <= helpers_needed", name=op.f("ck_share_envelopes_helpers")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["subscribers.id"], name=op.f("fk_share_envelopes_owner_id_subscribers")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["envelope_programs.id"],
            name=op.f("fk_share_envelopes_program_id_envelope_programs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_envelopes")),
        sa.UniqueConstraint(
            "program_id", "owner_id", name=op.f("uq_share_envelopes_program_id_owner_id")
        ),
    )
    with op.batch_alter_table("share_envelopes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_share_envelopes_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "coupon_redemptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "coupon_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("store_code", sa.String(length=32), nullable=True),
        sa.Column("partner_code", sa.String(length=32), nullable=True),
        sa.Column("category", sa.String(length=24), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=False),
        sa.Column("actor_name", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("client_ref", sa.String(length=64), nullable=True),
        sa.Column("order_fen", sa.Integer(), nullable=False),
        sa.Column("discount_fen", sa.Integer(), nullable=False),
        sa.Column("recorded_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reversed_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reversed_by", sa.String(length=128), nullable=True),
        sa.Column("reverse_reason", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["coupon_batches.id"],
            name=op.f("fk_coupon_redemptions_batch_id_coupon_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_coupon_redemptions_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["store_code"], ["regions.code"], name=op.f("fk_coupon_redemptions_store_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon_redemptions")),
        sa.UniqueConstraint(
            "store_code", "client_ref", name=op.f("uq_coupon_redemptions_store_code_client_ref")
        ),
    )
    with op.batch_alter_table("coupon_redemptions", schema=None) as batch_op:
        batch_op.create_index("ix_coupon_redemptions_batch_at", ["batch_id", "at"], unique=False)
        batch_op.create_index("ix_coupon_redemptions_store_at", ["store_code", "at"], unique=False)
        batch_op.create_index(
            "ux_coupon_redemptions_done",
            ["coupon_id"],
            unique=True,
            sqlite_where=sa.text("status = 'done'"),
            postgresql_where=sa.text("status = 'done'"),
        )

    op.create_table(
        "share_helps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "envelope_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "helper_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("via_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("helper_id <> owner_id", name=op.f("ck_share_helps_not_self")),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["share_envelopes.id"],
            name=op.f("fk_share_helps_envelope_id_share_envelopes"),
        ),
        sa.ForeignKeyConstraint(
            ["helper_id"], ["subscribers.id"], name=op.f("fk_share_helps_helper_id_subscribers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_helps")),
        sa.UniqueConstraint(
            "envelope_id", "helper_id", name=op.f("uq_share_helps_envelope_id_helper_id")
        ),
    )
    with op.batch_alter_table("share_helps", schema=None) as batch_op:
        batch_op.create_index("ix_share_helps_device", ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_share_helps_helper_id"), ["helper_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Rate windows are short-lived counters: losing them in a crash is harmless, and an
        # UNLOGGED table spares the WAL on every claim attempt.
        op.execute("ALTER TABLE coupon_rate_buckets SET UNLOGGED")


def downgrade() -> None:
    with op.batch_alter_table("share_helps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_share_helps_helper_id"))
        batch_op.drop_index("ix_share_helps_device")

    op.drop_table("share_helps")
    with op.batch_alter_table("coupon_redemptions", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_coupon_redemptions_done",
            sqlite_where=sa.text("status = 'done'"),
            postgresql_where=sa.text("status = 'done'"),
        )
        batch_op.drop_index("ix_coupon_redemptions_store_at")
        batch_op.drop_index("ix_coupon_redemptions_batch_at")

    op.drop_table("coupon_redemptions")
    with op.batch_alter_table("share_envelopes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_share_envelopes_owner_id"))

    op.drop_table("share_envelopes")
    op.drop_table("envelope_tiers")
    with op.batch_alter_table("envelope_draws", schema=None) as batch_op:
        batch_op.drop_index("ix_envelope_draws_subscriber")

    op.drop_table("envelope_draws")
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.drop_index("ix_coupons_subscriber_status")
        batch_op.drop_index("ix_coupons_batch_claimed")

    op.drop_table("coupons")
    op.drop_table("coupon_stock_shards")
    op.drop_table("coupon_codes")
    with op.batch_alter_table("coupon_code_jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_coupon_code_jobs_live",
            sqlite_where=sa.text("status IN ('queued', 'running')"),
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        )
        batch_op.drop_index(batch_op.f("ix_coupon_code_jobs_batch_id"))

    op.drop_table("coupon_code_jobs")
    with op.batch_alter_table("envelope_programs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_envelope_programs_owner_region"))

    op.drop_table("envelope_programs")
    with op.batch_alter_table("coupon_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coupon_batches_status"))
        batch_op.drop_index(batch_op.f("ix_coupon_batches_owner_region"))

    op.drop_table("coupon_batches")
    op.drop_table("envelope_counters")
    op.drop_table("coupon_rate_buckets")
    op.drop_table("coupon_claim_counters")
