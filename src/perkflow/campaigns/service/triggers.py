"""Campaign use cases: events and trigger campaigns."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import holdout
from perkflow.audience import rules as audience_rules
from perkflow.audience import service as audience
from perkflow.audience.marts import PROFILE
from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns.models import (
    Campaign,
    SubscriberEvent,
)
from perkflow.campaigns.rules import (
    Cell,
    ContactStatus,
    WaveKind,
)
from perkflow.channels import service as channels
from perkflow.channels.rules import Message, Throttle
from perkflow.errors import Forbidden, NotFound, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm
from perkflow.subscribers import service as subscribers

from .responses import _require_writer
from .runs import _spec

# ---- events and trigger campaigns ---------------------------------------------------------


@dataclass(frozen=True)
class Triggered:
    campaign_id: int
    contact_id: int | None
    cell: str | None
    # delivered (in-app, in the event's transaction) | queued | held | suppressed |
    # already_contacted | not_matched | universal_control | province
    status: str
    reason: str | None = None


@dataclass(frozen=True)
class EventOutcome:
    """The stored event and what each listening campaign did with it."""

    event_id: int
    replayed: bool
    triggered: list[Triggered]


def _profile_row(mart: Mart | None, subscriber_id: int) -> dict[str, Any]:
    if mart is None or not mart.has(PROFILE):
        return {}
    t = mart.table(PROFILE)
    rows = t.filter(t.subscriber_id == subscriber_id).limit(1).to_pyarrow().to_pylist()
    return dict(rows[0]) if rows else {}


def _in_control(vault: Vault, salt: str, subscriber_id: int, share_bp: int) -> bool:
    """The keyed-hash split: the same salt and key put the same subscriber in the same cell."""
    text = f"{audience_rules.hash_input_prefix(vault.assignment_key, salt)}{subscriber_id}"
    digest = hashlib.sha256(text.encode()).hexdigest()[: audience_rules.HASH_PREFIX_HEX]
    return digest < audience_rules.hash_threshold(share_bp)


def record_event(
    session: Session,
    *,
    actor: Actor,
    vault: Vault,
    type: str,
    subscriber_id: int,
    occurred_at: datetime,
    idempotency_key: str,
    attributes: dict[str, Any] | None = None,
    mart: Mart | None = None,
    zone: str = "Asia/Shanghai",
) -> EventOutcome:
    """Store an event once and queue the contacts of the trigger campaigns it starts.

    Each running trigger campaign listening to the type (and whose `where` holds) splits the
    subscriber by keyed hash with its salt, applies opt-outs and frequency caps, and queues the
    contact for the next time its schedule and the quiet hours allow. With the mart, the profile
    picks the variant and the activity group's cap; without it the default variant and the
    strictest cap apply.
    """
    _require_writer(actor, scope="events:write", perm=Perm.EVENTS_WRITE)
    if type not in rules.EVENT_TYPES:
        raise ValidationFailed(f"type is one of {', '.join(rules.EVENT_TYPES)}", field="type")
    key = idempotency_key.strip()
    if not key or len(key) > 128:
        raise ValidationFailed("an idempotency key of 1 to 128 characters", field="idempotency_key")
    if occurred_at.tzinfo is None:
        raise ValidationFailed("occurred_at needs a time zone", field="occurred_at")
    attrs = dict(attributes or {})
    existing = repo.event_by_key(session, key)
    if existing is not None:
        return EventOutcome(event_id=existing.id, replayed=True, triggered=[])
    province = subscribers.provinces_of(session, subscriber_ids=[subscriber_id]).get(subscriber_id)
    if province is None:
        raise NotFound(f"no subscriber {subscriber_id}", field="subscriber_id")
    limited = org.visible_province(actor)
    if limited is not None and limited != province:
        raise Forbidden("this subscriber is outside your region")
    now = clock.now()
    event = SubscriberEvent(
        subscriber_id=subscriber_id,
        type=type,
        occurred_at=occurred_at.astimezone(UTC),
        received_at=now,
        attributes=attrs,
        idempotency_key=key,
        triggered=0,
    )
    # On SQLite the driver opens no transaction before this point, so the savepoint below would
    # be the outermost one and its release would commit the event on its own: a rolled-back
    # call would leave the event stored and its retry would contact nobody. Open it first.
    repo.begin_write(session)
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        again = repo.event_by_key(session, key)
        assert again is not None
        return EventOutcome(event_id=again.id, replayed=True, triggered=[])
    outcomes: list[Triggered] = []
    listening = [c for c in repo.running_triggers(session) if c.province_code in (None, province)]
    # The universal control group is held out of every campaign: no row, no message, no inbox.
    universal = bool(listening) and bool(
        holdout.held_out(
            session, vault=vault, subscriber_ids=[subscriber_id], on=now.astimezone(UTC).date()
        )
    )
    profile: dict[str, Any] | None = None
    policy = audience.get_contact_policy(session) if listening else None
    for campaign in listening:
        spec = _spec(campaign)
        assert spec.trigger is not None and policy is not None
        if not spec.trigger.fires(type, attrs):
            continue
        if universal:
            outcomes.append(
                Triggered(campaign.id, None, None, holdout.REASON, "universal control group")
            )
            continue
        if profile is None:
            profile = _profile_row(mart, subscriber_id)
        outcomes.append(
            _trigger_one(
                session,
                vault=vault,
                campaign=campaign,
                spec=spec,
                policy=policy,
                subscriber_id=subscriber_id,
                province=province,
                profile=profile,
                now=now,
                zone=zone,
            )
        )
    event.triggered = sum(
        o.status in (ContactStatus.QUEUED, ContactStatus.DELIVERED) for o in outcomes
    )
    org.record_audit(
        session,
        actor=actor,
        action="event.record",
        target_type="subscriber",
        target_id=str(subscriber_id),
        details={"type": type, "key": key, "campaigns": [o.campaign_id for o in outcomes]},
    )
    session.flush()  # the caller answers with the event id
    return EventOutcome(event_id=event.id, replayed=False, triggered=outcomes)


def _trigger_one(
    session: Session,
    *,
    vault: Vault,
    campaign: Campaign,
    spec: rules.CampaignSpec,
    policy: audience_rules.ContactPolicy,
    subscriber_id: int,
    province: str,
    profile: dict[str, Any],
    now: datetime,
    zone: str,
) -> Triggered:
    wave = repo.wave_of_kind(session, campaign.id, WaveKind.TRIGGER.value)
    assert wave is not None
    variant = rules.variant_for(spec.variants, profile)
    if variant is None:
        return Triggered(campaign.id, None, None, "not_matched", "no variant matches")
    policy_channel = rules.POLICY_CHANNEL[variant.channel]
    control = _in_control(vault, campaign.salt, subscriber_id, spec.control_share_bp)
    status, reason = (ContactStatus.HELD if control else ContactStatus.QUEUED), None
    blocked = audience.opted_out(session, subscriber_ids=[subscriber_id], channel=policy_channel)
    if subscriber_id in blocked:
        status, reason = ContactStatus.SUPPRESSED, blocked[subscriber_id]
    else:
        caps = policy.caps.get(policy_channel, {})
        cap = caps.get(str(profile.get("activity_level"))) or (
            # Activity unknown (no profile): the cap that holds back soonest.
            min(caps.values(), key=lambda c: (c.max_contacts, -c.window_days)) if caps else None
        )
        if cap is not None:
            recent = repo.recent_on_channel(
                session,
                subscriber_id=subscriber_id,
                channel=variant.channel,
                since=now - timedelta(days=cap.window_days),
            )
            # Control subscribers face the same cap, so both cells are filtered alike.
            if recent >= cap.max_contacts:
                status, reason = ContactStatus.SUPPRESSED, audience_rules.Reason.FREQUENCY_CAP.value
    next_at: datetime | None = None
    if status == ContactStatus.QUEUED:
        quiet = policy.quiet_hours.get(policy_channel)
        next_at = rules.next_allowed(
            now,
            spec.schedule,
            zone=audience_rules.zone_of(province, zone),
            quiet=(quiet.start, quiet.end) if quiet else None,
        )
        if next_at is None:
            status, reason = ContactStatus.SUPPRESSED, "schedule_ended"
    inserted = repo.insert_contacts_ignore(
        session,
        [
            {
                "campaign_id": campaign.id,
                "wave_id": wave.id,
                "subscriber_id": subscriber_id,
                "cell": (Cell.CONTROL if control else Cell.TARGET).value,
                "variant": variant.key,
                "channel": variant.channel,
                "province_code": province,
                "status": status.value,
                "reason": reason,
                "attempts": 0,
                "next_attempt_at": next_at if next_at and next_at > now else None,
                # Held or dropped here: the moment it would have gone out (intent to treat).
                "contacted_at": None if status == ContactStatus.QUEUED else now,
                "fields": _fields_of(profile, province),
            }
        ],
    )
    contact_id = repo.contact_id_of(session, campaign_id=campaign.id, subscriber_id=subscriber_id)
    if not inserted:
        return Triggered(campaign.id, contact_id, None, "already_contacted")
    cell = (Cell.CONTROL if control else Cell.TARGET).value
    if (
        contact_id is not None
        and status == ContactStatus.QUEUED
        and variant.channel == IN_APP
        and (next_at is None or next_at <= now)
        # Budget and stock caps are counted by the worker under its claim lock.
        and rules.contact_cap(spec) is None
        and _deliver_in_app_now(
            session,
            vault=vault,
            campaign=campaign,
            spec=spec,
            variant=variant,
            contact_id=contact_id,
            subscriber_id=subscriber_id,
            fields=_fields_of(profile, province),
            now=now,
        )
    ):
        status = ContactStatus.DELIVERED
    return Triggered(campaign.id, contact_id, cell, status.value, reason)


IN_APP = "in_app"
# Long enough for the event's transaction to commit; the lease only matters if it never does.
INLINE_LEASE_S = 30.0
# Per-process token buckets of the campaigns that set an in-app rate: an event delivers inline
# within the rate, the rest wait for the worker (which keeps its own bucket, as each worker does).
_inline_buckets: dict[tuple[int, str], Throttle] = {}
_inline_lock = threading.Lock()


def _inline_allowed(campaign: Campaign, spec: rules.CampaignSpec) -> bool:
    rate = spec.throttle.get(IN_APP)
    if not rate:
        return True
    # Keyed by the salt too: campaign ids repeat across ledgers (tests, demo homes).
    key = (campaign.id, campaign.salt)
    with _inline_lock:
        bucket = _inline_buckets.get(key)
        if bucket is None:
            if len(_inline_buckets) > 10_000:  # bounded: a process lives long
                _inline_buckets.clear()
            bucket = _inline_buckets[key] = Throttle(float(rate), clock=time.monotonic)
        return bucket.try_take()


def _deliver_in_app_now(
    session: Session,
    *,
    vault: Vault,
    campaign: Campaign,
    spec: rules.CampaignSpec,
    variant: rules.Variant,
    contact_id: int,
    subscriber_id: int,
    fields: dict[str, Any],
    now: datetime,
) -> bool:
    """Deliver a due in-app trigger contact in the caller's transaction; False: the worker will."""
    # The lease, the inbox row (unique per contact) and the delivered mark commit or roll back
    # with the event itself, so a retried event (same key) finds the event and contacts nobody.
    values = {k: v for k, v in fields.items() if v is not None}
    values |= {"offer_name": spec.offer.name, "campaign_name": campaign.name, "masked_phone": ""}
    values = rules.message_fields(
        values,
        regions=message_regions(session, codes=region_codes([values])),
        locale=variant.locale,
    )
    try:
        used = rules.template_fields(variant.subject) | rules.template_fields(variant.body)
        if "masked_phone" in used:
            values["masked_phone"] = subscribers.phones_for(
                session, actor=SYSTEM, vault=vault, subscriber_ids=[subscriber_id]
            ).get(subscriber_id, "")
        subject = rules.render(variant.subject, values)
        body = rules.render(variant.body, values)
    except Exception:  # the worker fails the contact with the error, as any other
        return False
    if not _inline_allowed(campaign, spec):
        return False
    leased = repo.lease_contacts(
        session,
        contact_ids=[contact_id],
        now=now,
        until=now + timedelta(seconds=INLINE_LEASE_S),
    )
    if not leased:
        return False
    (sent,) = channels.send_in_app(
        session,
        messages=[
            Message(
                contact_id=contact_id,
                subscriber_id=subscriber_id,
                campaign_id=campaign.id,
                address=str(subscriber_id),
                subject=subject,
                body=body,
                link=channels.offer_link(kind=spec.offer.kind, offer_id=spec.offer.id),
            )
        ],
    )
    settled = repo.settle_contacts(
        session,
        target=ContactStatus.DELIVERED.value,
        rows=[
            {
                "contact_id": contact_id,
                "attempts": leased[0].attempts,
                "message_ref": sent.message_ref,
                "contacted_at": now,
                "delivered_at": now,
                "error": None,
            }
        ],
    )
    return bool(settled)


def message_regions(session: Session, *, codes: Iterable[str]) -> dict[str, dict[str, str]]:
    """Names of the regions a batch of messages mentions, per language (one query a batch)."""
    wanted = {c for c in codes if c}
    found = org.regions_by_code(session, codes=wanted)
    return rules.region_names([(r.code, r.name_zh, r.name_en) for r in found.values()])


def region_codes(fields: Iterable[Mapping[str, Any] | None]) -> set[str]:
    """The region codes (province, city) in contacts' fields."""
    return {
        str(f[name])
        for f in fields
        if f
        for name in rules.REGION_FIELDS
        if isinstance(f.get(name), str)
    }


def _fields_of(profile: dict[str, Any], province: str | None) -> dict[str, Any]:
    return {
        "plan_fee_yuan": profile.get("plan_fee_yuan"),
        "province": profile.get("province_code") or province,
        "city": profile.get("city_code"),
    }
