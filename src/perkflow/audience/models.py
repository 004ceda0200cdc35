"""Ledger tables of the audience: segments, target lists, contact lists, templates, settings."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from perkflow.db import Base, BigIntPK, UTCDateTime


class Segment(Base):
    """A named audience; its definition lives in numbered, immutable versions."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # A province marketer's segment is confined to their province; None means national.
    province_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"), index=True)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    archived: Mapped[bool] = mapped_column(Boolean, default=False)

    versions: Mapped[list[SegmentVersion]] = relationship(
        back_populates="segment", lazy="raise", order_by="SegmentVersion.version"
    )


class SegmentVersion(Base):
    """One saved definition of a segment; never changed once written."""

    __tablename__ = "segment_versions"
    __table_args__ = (UniqueConstraint("segment_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    segment: Mapped[Segment] = relationship(back_populates="versions", lazy="raise")


class TargetList(Base):
    """A snapshot of a segment version's members with their cells; the rows are in the mart."""

    __tablename__ = "target_lists"
    __table_args__ = (Index("ix_target_lists_segment_id_built_at", "segment_id", "built_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    segment_version: Mapped[int] = mapped_column(Integer)
    province_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    send_at: Mapped[datetime] = mapped_column(UTCDateTime())
    control_share_bp: Mapped[int] = mapped_column(Integer)
    # With the assignment key, the salt recomputes every subscriber's cell: auditable.
    salt: Mapped[str] = mapped_column(String(64))
    universal_period: Mapped[int] = mapped_column(Integer)
    universal_share_bp: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # building | ready
    members: Mapped[int] = mapped_column(Integer, default=0)
    target: Mapped[int] = mapped_column(Integer, default=0)
    control: Mapped[int] = mapped_column(Integer, default=0)
    universal_control: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    # {"opted_out": 12, "frequency_cap": 340, ...}
    reasons: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    # {"GD": {"target": 900, "control": 100, ...}, ...}
    by_province: Mapped[dict[str, dict[str, int]]] = mapped_column(JSON, default=dict)
    mart_table: Mapped[str] = mapped_column(String(64))
    built_by: Mapped[str] = mapped_column(String(64))
    built_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[float | None] = mapped_column(default=None)


class ContactListEntry(Base):
    """A subscriber on the opt-out list (免打扰, per channel or all) or on the complaint list."""

    __tablename__ = "contact_list_entries"
    __table_args__ = (UniqueConstraint("subscriber_id", "kind", "channel"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ExtractionTemplate(Base):
    """A saved, parameterized extraction (自助取数) an analyst runs again and again."""

    __tablename__ = "extraction_templates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UniversalControlSetting(Base):
    """The one universal control group setting (row id 1); absent means the defaults."""

    __tablename__ = "universal_control"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share_bp: Mapped[int] = mapped_column(Integer)
    rotation_days: Mapped[int] = mapped_column(Integer)
    started_on: Mapped[date] = mapped_column(Date)
    salt: Mapped[str] = mapped_column(String(64))
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContactPolicySetting(Base):
    """The one contact policy (row id 1): caps and quiet hours; absent means the defaults."""

    __tablename__ = "contact_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
