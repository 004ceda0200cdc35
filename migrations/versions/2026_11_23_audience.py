"""audience: segments and versions, target lists, contact lists, extraction templates, settings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contact_list_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "subscriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_list_entries")),
        sa.UniqueConstraint(
            "subscriber_id",
            "kind",
            "channel",
            name=op.f("uq_contact_list_entries_subscriber_id_kind_channel"),
        ),
    )
    with op.batch_alter_table("contact_list_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_list_entries_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "contact_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_policy")),
    )
    op.create_table(
        "extraction_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extraction_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_extraction_templates_name")),
    )
    op.create_table(
        "universal_control",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share_bp", sa.Integer(), nullable=False),
        sa.Column("rotation_days", sa.Integer(), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_universal_control")),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("province_code", sa.String(length=32), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["province_code"], ["regions.code"], name=op.f("fk_segments_province_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_segments_province_code"), ["province_code"], unique=False
        )

    op.create_table(
        "segment_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.id"], name=op.f("fk_segment_versions_segment_id_segments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_versions")),
        sa.UniqueConstraint(
            "segment_id", "version", name=op.f("uq_segment_versions_segment_id_version")
        ),
    )
    with op.batch_alter_table("segment_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_segment_versions_segment_id"), ["segment_id"], unique=False
        )

    op.create_table(
        "target_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("segment_id", sa.Integer(), nullable=False),
        sa.Column("segment_version", sa.Integer(), nullable=False),
        sa.Column("province_code", sa.String(length=32), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("send_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("control_share_bp", sa.Integer(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("universal_period", sa.Integer(), nullable=False),
        sa.Column("universal_share_bp", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("control", sa.Integer(), nullable=False),
        sa.Column("universal_control", sa.Integer(), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("by_province", sa.JSON(), nullable=False),
        sa.Column("mart_table", sa.String(length=64), nullable=False),
        sa.Column("built_by", sa.String(length=64), nullable=False),
        sa.Column("built_at", perkflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["province_code"], ["regions.code"], name=op.f("fk_target_lists_province_code_regions")
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"], ["segments.id"], name=op.f("fk_target_lists_segment_id_segments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_target_lists")),
    )
    with op.batch_alter_table("target_lists", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_target_lists_province_code"), ["province_code"], unique=False
        )
        batch_op.create_index(
            "ix_target_lists_segment_id_built_at", ["segment_id", "built_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("target_lists", schema=None) as batch_op:
        batch_op.drop_index("ix_target_lists_segment_id_built_at")
        batch_op.drop_index(batch_op.f("ix_target_lists_province_code"))

    op.drop_table("target_lists")
    with op.batch_alter_table("segment_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segment_versions_segment_id"))

    op.drop_table("segment_versions")
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_segments_province_code"))

    op.drop_table("segments")
    op.drop_table("universal_control")
    op.drop_table("extraction_templates")
    op.drop_table("contact_policy")
    with op.batch_alter_table("contact_list_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_list_entries_created_at"))

    op.drop_table("contact_list_entries")
