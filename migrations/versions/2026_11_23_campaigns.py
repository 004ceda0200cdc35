"""campaigns: definitions, waves, contacts, responses and subscriber events

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscriber_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("triggered", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber_events")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_subscriber_events_idempotency_key")),
    )
    with op.batch_alter_table("subscriber_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriber_events_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("province_code", sa.String(length=32), nullable=True),
        sa.Column("segment_id", sa.Integer(), nullable=True),
        sa.Column("segment_version", sa.Integer(), nullable=True),
        sa.Column("goal", sa.JSON(), nullable=False),
        sa.Column("offer", sa.JSON(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("throttle", sa.JSON(), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=True),
        sa.Column("control_share_bp", sa.Integer(), nullable=False),
        sa.Column("test_share_bp", sa.Integer(), nullable=False),
        sa.Column("budget_fen", sa.BigInteger(), nullable=True),
        sa.Column("stock_cap", sa.Integer(), nullable=True),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("target_list_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("submitted_by", sa.String(length=64), nullable=True),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["province_code"], ["regions.code"], name=op.f("fk_campaigns_province_code_regions")
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.id"], name=op.f("fk_campaigns_segment_id_segments")
        ),
        sa.ForeignKeyConstraint(
            ["target_list_id"],
            ["target_lists.id"],
            name=op.f("fk_campaigns_target_list_id_target_lists"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaigns_province_code"), ["province_code"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_campaigns_status"), ["status"], unique=False)

    op.create_table(
        "campaign_waves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("share_bp", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_waves_campaign_id_campaigns")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_waves")),
        sa.UniqueConstraint("campaign_id", "kind", name=op.f("uq_campaign_waves_campaign_id_kind")),
    )
    with op.batch_alter_table("campaign_waves", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_waves_status"), ["status"], unique=False)

    op.create_table(
        "campaign_contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("cell", sa.String(length=8), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("province_code", sa.String(length=8), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("message_ref", sa.String(length=64), nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.Column("contacted_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", perkflow.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_contacts_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["wave_id"],
            ["campaign_waves.id"],
            name=op.f("fk_campaign_contacts_wave_id_campaign_waves"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_contacts")),
        sa.UniqueConstraint(
            "campaign_id",
            "subscriber_id",
            name=op.f("uq_campaign_contacts_campaign_id_subscriber_id"),
        ),
    )
    with op.batch_alter_table("campaign_contacts", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_contacts_message_ref", ["message_ref"], unique=False)
        batch_op.create_index(
            "ix_campaign_contacts_subscriber_id_contacted_at",
            ["subscriber_id", "contacted_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_campaign_contacts_wave_id_status_id", ["wave_id", "status", "id"], unique=False
        )

    op.create_table(
        "campaign_responses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("cell", sa.String(length=8), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("value_fen", sa.BigInteger(), nullable=False),
        sa.Column("responded_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=160), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_responses_campaign_id_campaigns"),
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["campaign_contacts.id"],
            name=op.f("fk_campaign_responses_contact_id_campaign_contacts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_responses")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_campaign_responses_idempotency_key")),
    )
    with op.batch_alter_table("campaign_responses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_campaign_responses_campaign_id_cell", ["campaign_id", "cell"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_campaign_responses_responded_at"), ["responded_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("campaign_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_responses_responded_at"))
        batch_op.drop_index("ix_campaign_responses_campaign_id_cell")

    op.drop_table("campaign_responses")
    with op.batch_alter_table("campaign_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_contacts_wave_id_status_id")
        batch_op.drop_index("ix_campaign_contacts_subscriber_id_contacted_at")
        batch_op.drop_index("ix_campaign_contacts_message_ref")

    op.drop_table("campaign_contacts")
    with op.batch_alter_table("campaign_waves", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_waves_status"))

    op.drop_table("campaign_waves")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_status"))
        batch_op.drop_index(batch_op.f("ix_campaigns_province_code"))

    op.drop_table("campaigns")
    with op.batch_alter_table("subscriber_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriber_events_subscriber_id"))

    op.drop_table("subscriber_events")
