"""Ledger tables of campaigns: definitions, waves, one row per contact, responses, events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from perkflow.db import Base, BigIntPK, UTCDateTime

_FK_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class Campaign(Base):
    """A campaign: goal, audience, offer, content variants, channels, schedule and its lifecycle."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(16))  # batch | trigger | imported
    # An imported campaign's outside source (``hillstrom``, ``crm_2025``): whose ids it holds.
    import_source: Mapped[str | None] = mapped_column(String(32), default=None)
    # draft | pending_approval | approved | running | paused | finished
    status: Mapped[str] = mapped_column(String(20), index=True)
    province_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"), index=True)
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"))
    segment_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # {"kind": "claim" | "redemption" | "grant_use" | "order" | "any", "window_days": 14, ...}
    goal: Mapped[dict[str, Any]] = mapped_column(JSON)
    # {"kind": "coupon_batch" | "benefit" | "none", "id": 12, "category": "video", "cost_fen": 500}
    offer: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"key": "A", "channel": "in_app", "subject": "...", "body": "...", "match": {...} | null}]
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # {"starts_at": iso, "ends_at": iso, "weekdays": [1..7], "slots": [["09:00", "12:00"]],
    #  "skip_holidays": true}
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)
    # messages per second per channel, e.g. {"sms": 200, "email": 50}
    throttle: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"events": ["data_threshold"], "where": {...}} for trigger campaigns
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    control_share_bp: Mapped[int] = mapped_column(Integer)
    test_share_bp: Mapped[int] = mapped_column(Integer, default=0)
    budget_fen: Mapped[int | None] = mapped_column(BigInteger, default=None)
    stock_cap: Mapped[int | None] = mapped_column(Integer, default=None)
    # With the assignment key, the salt recomputes every subscriber's cell and wave: auditable.
    salt: Mapped[str] = mapped_column(String(64))
    target_list_id: Mapped[int | None] = mapped_column(ForeignKey("target_lists.id"))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    submitted_by: Mapped[str | None] = mapped_column(String(64), default=None)
    approved_by: Mapped[str | None] = mapped_column(String(64), default=None)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Bumped on every change; a conditional UPDATE on it keeps two editors from racing.
    version: Mapped[int] = mapped_column(Integer, default=1)


class CampaignWave(Base):
    """One run of a campaign over part of its list: the test wave, the rollout, or triggers."""

    __tablename__ = "campaign_waves"
    __table_args__ = (UniqueConstraint("campaign_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    kind: Mapped[str] = mapped_column(String(16))  # test | rollout | trigger | imported
    share_bp: Mapped[int] = mapped_column(Integer)  # of the campaign's list this wave takes
    # planning | ready | running | paused | done | failed
    status: Mapped[str] = mapped_column(String(16), index=True)
    planned: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class CampaignContact(Base):
    """One subscriber in one campaign: their cell, variant, channel and what became of the message.

    Control-cell rows are kept too (status ``held``), so responses of the control group are
    attributed the same way as the target's. Unique per (campaign, subscriber): a subscriber is in
    one wave of a campaign and is contacted at most once by it.
    """

    __tablename__ = "campaign_contacts"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index("ix_campaign_contacts_wave_id_status_id", "wave_id", "status", "id"),
        Index("ix_campaign_contacts_subscriber_id_contacted_at", "subscriber_id", "contacted_at"),
        Index("ix_campaign_contacts_message_ref", "message_ref"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    wave_id: Mapped[int] = mapped_column(ForeignKey("campaign_waves.id"))
    # Imported histories carry their own subscriber ids, so there is no foreign key.
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT)
    # Set when subscriber_id is an outside source's id, stored negated (never one of ours, even to
    # a query that forgets to ask); NULL when it is a subscriber of the master.
    import_source: Mapped[str | None] = mapped_column(String(32), default=None)
    cell: Mapped[str] = mapped_column(String(8))  # target | control
    variant: Mapped[str | None] = mapped_column(String(32), default=None)
    channel: Mapped[str] = mapped_column(String(16))
    province_code: Mapped[str | None] = mapped_column(String(8), default=None)
    # queued | sending | sent | delivered | failed | held (control) | suppressed
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    message_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(String(255), default=None)
    contacted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Personalisation fields from the profile when the wave was planned (plan fee, province...).
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class CampaignResponse(Base):
    """What a contacted (or held-back) subscriber did within the goal's window, once per key."""

    __tablename__ = "campaign_responses"
    __table_args__ = (Index("ix_campaign_responses_campaign_id_cell", "campaign_id", "cell"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    contact_id: Mapped[int] = mapped_column(_FK_BIGINT, ForeignKey("campaign_contacts.id"))
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT)
    import_source: Mapped[str | None] = mapped_column(String(32), default=None)  # as its contact's
    cell: Mapped[str] = mapped_column(String(8))
    variant: Mapped[str | None] = mapped_column(String(32), default=None)
    kind: Mapped[str] = mapped_column(String(24))  # claim | redemption | grant_use | order | ...
    value_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    responded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    source: Mapped[str] = mapped_column(String(32))  # ledger | api | import | simulation
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)


class SubscriberEvent(Base):
    """An event about a subscriber from outside (usage threshold, contract expiry, recharge...)."""

    __tablename__ = "subscriber_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(_FK_BIGINT, index=True)
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    # How many trigger campaigns queued a contact for it (0 when none matched or all held back).
    triggered: Mapped[int] = mapped_column(Integer, default=0)
