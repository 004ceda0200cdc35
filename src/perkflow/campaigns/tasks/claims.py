"""Claiming due contacts: opt-outs, holdout, schedule and caps decide; leased ones rendered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from perkflow.audience import holdout
from perkflow.audience import rules as audience_rules
from perkflow.audience import service as audience
from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.campaigns.rules import ContactStatus
from perkflow.channels import service as channels_service
from perkflow.kit.crypto import mask_phone
from perkflow.org.rules import SYSTEM
from perkflow.subscribers import service as subscribers

from .dispatcher import Dispatcher, DispatchReport, _Claimed, _running_waves


def _claim(
    session: Session,
    d: Dispatcher,
    *,
    now: datetime,
    batch_size: int,
    report: DispatchReport,
    campaign_id: int | None = None,
) -> list[_Claimed]:
    repo.begin_write(session)
    waves = _running_waves(session, campaign_id=campaign_id)
    if not waves:
        return []
    due = repo.due_contacts(
        session,
        wave_ids=sorted(waves),
        now=now,
        # Some lookahead: suppressed, deferred and throttled contacts do not fill the batch.
        limit=batch_size * 2,
        skip_locked=session.get_bind().dialect.name == "postgresql",
    )
    if not due:
        return []
    policy = audience.get_contact_policy(session)
    zone = d.settings.timezone
    specs = {c.id: d.spec_of(c) for c in waves.values()}
    blocked: dict[str, dict[int, str]] = {}
    for ch in {c.channel for c in due}:
        ids = [c.subscriber_id for c in due if c.channel == ch]
        blocked[ch] = audience.opted_out(
            session, subscriber_ids=ids, channel=rules.POLICY_CHANNEL.get(ch, ch)
        )
    # The universal control group is held out here, where every batch send passes: a list built
    # in an earlier rotation period, a queued trigger contact, a rollout.
    universal = holdout.held_out(
        session,
        vault=d.vault,
        subscriber_ids=[c.subscriber_id for c in due],
        on=now.astimezone(UTC).date(),
    )
    room: dict[int, int | None] = {}
    # The next allowed moment depends only on the campaign, the channel's quiet hours and the
    # subscriber's zone: computed once per batch for each, not per contact.
    allowed: dict[tuple[int, str, str], datetime | None] = {}
    suppress: list[tuple[int, str, str]] = []
    defer: list[tuple[int, str, datetime]] = []
    take: list[int] = []
    for c in due:
        if len(take) >= batch_size:
            break
        campaign = waves[c.wave_id]
        spec = specs[campaign.id]
        reason = blocked[c.channel].get(c.subscriber_id)
        if reason is None and c.subscriber_id in universal:
            reason = holdout.REASON
        local_zone = audience_rules.zone_of(c.province_code or "", zone)
        key = (campaign.id, c.channel, local_zone)
        if key not in allowed:
            quiet = policy.quiet_hours.get(rules.POLICY_CHANNEL.get(c.channel, c.channel))
            allowed[key] = rules.next_allowed(
                now,
                spec.schedule,
                zone=local_zone,
                quiet=(quiet.start, quiet.end) if quiet else None,
            )
        when = allowed[key]
        if reason is None and when is None:
            reason = "schedule_ended"
        if campaign.id not in room:
            # Stock left, and what the budget still pays for with coupons charged at redemption.
            room[campaign.id] = (
                rules.send_room(
                    spec,
                    sent=repo.count_contacted(session, campaign_id=campaign.id),
                    taken=repo.count_taken_up(session, campaign_id=campaign.id),
                )
                if rules.has_cap(spec)
                else None
            )
        left = room[campaign.id]
        if reason is None and left is not None and left <= 0 and c.status == ContactStatus.QUEUED:
            reason = "cap_reached"
        if reason is not None:
            suppress.append((c.id, c.status, reason))
            continue
        assert when is not None
        if when > now:
            # Outside the schedule or in quiet hours: wait without using an attempt.
            defer.append((c.id, c.status, when))
            continue
        bucket = d.throttle(campaign, c.channel)
        if bucket is not None and not bucket.try_take():
            continue  # over the rate: stays due for a later batch
        if left is not None and c.status == ContactStatus.QUEUED:
            room[campaign.id] = left - 1
        take.append(c.id)
    # Each outcome is one statement over the batch; under the claim's lock (SQLite's write
    # transaction, PostgreSQL's row locks) nobody else changes these rows meanwhile, and every
    # statement still checks the state it expects.
    report.suppressed += repo.suppress_contacts(session, rows=suppress, at=now)
    report.deferred += repo.defer_contacts(session, rows=defer)
    leased = repo.lease_contacts(
        session, contact_ids=take, now=now, until=now + timedelta(seconds=d.lease_s)
    )
    return _render(session, d, leased, waves, specs)


_UNSET = object()


def _render(
    session: Session,
    d: Dispatcher,
    taken: Sequence[repo.LeasedContact],
    waves: Mapping[int, Campaign],
    specs: Mapping[int, rules.CampaignSpec],
) -> list[_Claimed]:
    """Messages of the leased contacts; phone numbers read (and the reveal audited) here."""
    variants = {
        (campaign_id, v.key): v for campaign_id, spec in specs.items() for v in spec.variants
    }
    # The fields each variant's templates read: a message depends on these values alone.
    used: dict[tuple[int, str], tuple[str, ...]] = {}
    for k, v in variants.items():
        try:
            used[k] = tuple(
                sorted(rules.template_fields(v.subject) | rules.template_fields(v.body))
            )
        except Exception:  # a template that does not parse: render fails it per contact below
            used[k] = rules.FIELDS
    needs_phone = [c.subscriber_id for c in taken if c.channel in ("sms", "email")]
    phones: dict[int, str] = {}
    if needs_phone:
        phones = subscribers.phones_for(
            session,
            actor=SYSTEM,
            vault=d.vault,
            subscriber_ids=needs_phone,
            reveal=True,
            purpose="campaign dispatch",
        )
    # Masked numbers only for messages whose template shows one (each costs a decryption).
    others = [
        c.subscriber_id
        for c in taken
        if c.channel not in ("sms", "email")
        and "masked_phone" in used.get((c.campaign_id, c.variant or ""), ())
    ]
    masked = subscribers.phones_for(session, actor=SYSTEM, vault=d.vault, subscriber_ids=others)
    # Region names in each message's language: one lookup for the whole batch.
    regions = campaigns.message_regions(
        session, codes=campaigns.region_codes(c.fields for c in taken)
    )
    # Subscribers with the same values of the used fields get the same text: render it once.
    rendered: dict[tuple[Any, ...], tuple[str, str, str | None]] = {}
    out = []
    for c in taken:
        campaign = waves[c.wave_id]
        spec = specs[campaign.id]
        variant = variants.get((campaign.id, c.variant or ""))
        phone = phones.get(c.subscriber_id)
        fields = rules.message_fields(
            {
                **{k: v for k, v in (c.fields or {}).items() if v is not None},
                "offer_name": spec.offer.name,
                "campaign_name": campaign.name,
                "masked_phone": mask_phone(phone) if phone else masked.get(c.subscriber_id, ""),
            },
            regions=regions,
            locale=variant.locale if variant is not None else rules.DEFAULT_LOCALE,
        )
        names = used.get((campaign.id, c.variant or ""), ())
        key = (campaign.id, c.variant, *(fields.get(n, _UNSET) for n in names))
        if key not in rendered:
            try:
                if variant is None:
                    raise ValueError(f"variant {c.variant!r} is not in the campaign")
                rendered[key] = (
                    rules.render(variant.subject, fields),
                    rules.render(variant.body, fields),
                    None,
                )
            except Exception as exc:  # a template that fails for this subscriber fails the contact
                rendered[key] = ("", "", f"render: {exc}"[:255])
        subject, body, error = rendered[key]
        address: str | None = None
        if c.channel in ("sms", "email") and phone is None:
            error = error or "no phone number on file"
        elif c.channel in ("sms", "email", "webhook", "in_app"):
            address = channels_service.address_for(
                c.channel, phone=phone or "", subscriber_id=c.subscriber_id, settings=d.settings
            )
        out.append(
            _Claimed(
                contact_id=c.id,
                subscriber_id=c.subscriber_id,
                campaign_id=c.campaign_id,
                channel=c.channel,
                attempts=c.attempts,
                subject=subject,
                body=body,
                address=address,
                error=error,
                link=channels_service.offer_link(kind=spec.offer.kind, offer_id=spec.offer.id)
                if c.channel == "in_app"
                else None,
            )
        )
    return out
