"""The campaign worker: plans waves into contact rows and dispatches them through the channels.

An entry point like the grants outbox worker: every step is its own short unit of work, so a
worker killed at any instant leaves rows that the next one resumes. Planning inserts with
insert-ignore on (campaign, subscriber); dispatch leases contacts by compare-and-set and records
each outcome only if the lease is still its own. For the in-app channel the inbox row and the
"sent" mark commit together: exactly once. External channels are at least once, each message
carrying the contact's key for the peer to drop a resent copy.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from perkflow.audience import holdout
from perkflow.audience import rules as audience_rules
from perkflow.audience import service as audience
from perkflow.audience.marts import PROFILE
from perkflow.campaigns import repository as repo
from perkflow.campaigns import rules
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign, CampaignWave
from perkflow.campaigns.rules import Cell, ContactStatus, WaveKind, WaveStatus
from perkflow.channels import service as channels_service
from perkflow.channels.rules import (
    AsksForReceipts,
    Channel,
    Message,
    Receipt,
    SendResult,
    Throttle,
)
from perkflow.db import unit_of_work
from perkflow.kit import clock, metrics
from perkflow.kit.crypto import Vault, mask_phone
from perkflow.kit.lazy import lazy_module
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers

if TYPE_CHECKING:
    import ibis
    import pyarrow as pa
else:
    ibis = lazy_module("ibis")
    pa = lazy_module("pyarrow")

log = logging.getLogger("perkflow.campaigns.worker")

NOT_CONFIGURED = "channel not configured"
PLAN_CHUNK = 5_000


# ---- planning ------------------------------------------------------------------------------------


def _condition(t: Any, c: rules.Condition) -> Any:
    col = t[c.column]
    if c.op == "in":
        return col.isin(list(c.value))
    if c.op == "not_in":
        return col.notin(list(c.value))
    return {
        "=": col == c.value,
        "!=": col != c.value,
        "<": col < c.value,
        "<=": col <= c.value,
        ">": col > c.value,
        ">=": col >= c.value,
    }[c.op]


def _variant_expr(t: Any, variants: Sequence[rules.Variant]) -> Any:
    """First matching variant's key, set-based; a missing value matches nothing (as in rules)."""
    branches = []
    for v in variants:
        if not v.match:
            branches.append((ibis.literal(True), v.key))
            break
        cond = _condition(t, v.match[0])
        for c in v.match[1:]:
            cond = cond & _condition(t, c)
        branches.append((cond.fill_null(False), v.key))
    return ibis.cases(*branches, else_=ibis.null("string"))


def wave_sample_salt(salt: str) -> str:
    """The hashed text of the test-wave draw: its own salt, so it is independent of the split."""
    return f"wave:{salt}"


def _wave_rows(mart: Mart, vault: Vault, campaign: Campaign, wave: CampaignWave, table: str) -> Any:
    spec = campaigns.spec_of(campaign)
    t = mart.table(table)
    t = t.filter(t.cell.isin([Cell.TARGET.value, Cell.CONTROL.value]))
    if wave.kind == WaveKind.TEST:
        prefix = audience_rules.hash_input_prefix(
            vault.assignment_key, wave_sample_salt(campaign.salt)
        )
        h = (ibis.literal(prefix) + t.subscriber_id.cast("string")).hexdigest("sha256")
        t = t.filter(
            h.substr(0, audience_rules.HASH_PREFIX_HEX)
            < audience_rules.hash_threshold(wave.share_bp)
        )
    p = mart.table(PROFILE)
    wanted = {"plan_fee_yuan", "city_code"} | {c.column for v in spec.variants for c in v.match}
    keep = [c for c in sorted(wanted) if c in p.columns and c != "province_code"]
    p = p.select("subscriber_id", *keep).rename(pid="subscriber_id")
    j = t.left_join(p, t.subscriber_id == p.pid)
    cols = {
        "subscriber_id": j.subscriber_id,
        "cell": j.cell,
        "province_code": j.province_code,
        "variant": _variant_expr(j, spec.variants),
    }
    for c in ("plan_fee_yuan", "city_code"):
        cols[c] = j[c] if c in keep else ibis.null("string")
    return j.select(**cols).order_by("subscriber_id")


def dispatch_order(rows: pa.Table, campaign: Campaign, wave: CampaignWave) -> pa.Table:
    """The wave's rows in a random order seeded from the campaign and the wave.

    Dispatch sends in contact id order, and ids follow the insert order: shuffled here, a budget
    or stock cap that ends a campaign early keeps a random sample of its targets, not the lowest
    subscriber ids. The same campaign and wave always give the same order, so a planner that
    stopped and runs again inserts the rows it had not reached yet.
    """
    seed = hashlib.sha256(f"dispatch:{campaign.salt}:{wave.id}".encode()).digest()
    order = list(range(rows.num_rows))
    random.Random(seed).shuffle(order)
    return rows.take(pa.array(order, type=pa.int64()))


def plan_wave(
    sessions: sessionmaker[Session],
    *,
    mart: Mart,
    vault: Vault,
    wave_id: int,
    chunk: int = PLAN_CHUNK,
) -> int:
    """Insert a wave's contact rows from the target list, in committed chunks; returns planned.

    Idempotent and resumable: a subscriber already in the campaign (an earlier chunk, the test
    wave) keeps their row. Control rows are `held`; target rows wait `queued` for dispatch.
    """
    with unit_of_work(sessions) as session:
        wave = session.get(CampaignWave, wave_id)
        if wave is None or wave.status != WaveStatus.PLANNING:
            return 0
        campaign = session.get(Campaign, wave.campaign_id)
        assert campaign is not None and campaign.target_list_id is not None
        table = audience.get_target_list(
            session, actor=SYSTEM, target_list_id=campaign.target_list_id
        ).mart_table
        session.expunge(campaign)
        session.expunge(wave)
    spec = campaigns.spec_of(campaign)
    channel_of = {v.key: v.channel for v in spec.variants}
    planned_at = clock.now()
    # One Arrow table of five narrow columns (ibis' batch reader does not work with this DuckDB);
    # the ledger inserts go in committed chunks, so a killed planner resumes where it stopped.
    arrow = dispatch_order(
        _wave_rows(mart, vault, campaign, wave, table).to_pyarrow(), campaign, wave
    )
    for batch in arrow.to_batches(max_chunksize=chunk):
        rows = []
        for r in batch.to_pylist():
            control = r["cell"] == Cell.CONTROL
            variant = r["variant"]
            if variant is None:
                status, reason = ContactStatus.SUPPRESSED, "no_variant"
            else:
                status = ContactStatus.HELD if control else ContactStatus.QUEUED
                reason = None
            rows.append(
                {
                    "campaign_id": campaign.id,
                    "wave_id": wave.id,
                    "subscriber_id": int(r["subscriber_id"]),
                    "cell": r["cell"],
                    "variant": variant,
                    "channel": channel_of.get(variant, spec.variants[0].channel),
                    "province_code": r["province_code"],
                    "status": status.value,
                    "reason": reason,
                    "attempts": 0,
                    # A control row's "contact" is the moment it would have been sent.
                    "contacted_at": planned_at if status == ContactStatus.HELD else None,
                    "fields": {
                        "plan_fee_yuan": r["plan_fee_yuan"],
                        "province": r["province_code"],
                        "city": r["city_code"],
                    },
                }
            )
        for start in range(0, len(rows), 500):
            with unit_of_work(sessions) as session:
                repo.insert_contacts_ignore(session, rows[start : start + 500])
                session.commit()
    with unit_of_work(sessions) as session:
        planned = sum(repo.count_by_status(session, wave_id=wave.id).values())
        repo.move_wave(
            session,
            wave_id=wave.id,
            expected=WaveStatus.PLANNING.value,
            target=WaveStatus.RUNNING.value,
            planned=planned,
            started_at=clock.now(),
        )
        session.commit()
    log.info("wave %s planned: %s contacts", wave.id, planned)
    return planned


# ---- dispatch ------------------------------------------------------------------------------------


@dataclass
class DispatchReport:
    """What one dispatch batch did."""

    claimed: int = 0
    sent: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    receipts: int = 0

    def add(self, other: DispatchReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Dispatcher:
    """Worker state kept between batches: channels, token buckets, settings."""

    channels: Mapping[str, Channel]
    vault: Vault
    settings: Settings
    lease_s: float = 30.0
    max_attempts: int = 5
    backoff_base_s: float = 2.0
    throttles: dict[Any, Throttle] = field(default_factory=dict)
    monotonic: Callable[[], float] = time.monotonic
    specs: dict[tuple[int, int], rules.CampaignSpec] = field(default_factory=dict)
    # A receipt can be lost (read by a worker that died before recording it): messages still
    # `sent` this long after sending are asked about, once per `receipt_query_every_s`.
    receipt_query_after_s: float = 600.0
    receipt_query_every_s: float = 60.0
    receipts_queried_at: float | None = None

    def spec_of(self, campaign: Campaign) -> rules.CampaignSpec:
        """The campaign's parsed spec, kept per version (every change bumps it)."""
        # Parsing validates every template again (~2 ms): once per version, not per batch.
        key = (campaign.id, campaign.version)
        if key not in self.specs:
            if len(self.specs) > 1_000:
                self.specs.clear()
            self.specs[key] = campaigns.spec_of(campaign)
        return self.specs[key]

    def throttle(self, campaign: Campaign, channel: str) -> Throttle | None:
        """The campaign's bucket for the channel, or the worker's bucket for the channel."""
        rate = (campaign.throttle or {}).get(channel)
        key: Any = (campaign.id, channel) if rate else channel
        if key not in self.throttles:
            if not rate:
                rate = self.settings.channel_rate_per_s.get(channel)
            if not rate:
                return None
            self.throttles[key] = Throttle(float(rate), clock=self.monotonic)
        return self.throttles[key]


@dataclass(frozen=True)
class _Claimed:
    contact_id: int
    subscriber_id: int
    campaign_id: int
    channel: str
    attempts: int
    subject: str
    body: str
    address: str | None
    error: str | None = None
    # The H5 page of the campaign's offer, carried by in-app messages.
    link: str | None = None


def _running_waves(session: Session, *, campaign_id: int | None = None) -> dict[int, Campaign]:
    """wave id → campaign of the waves that may send now (wave running, campaign running)."""
    out: dict[int, Campaign] = {}
    for wave in repo.waves_in(session, WaveStatus.RUNNING.value, campaign_id=campaign_id):
        campaign = session.get(Campaign, wave.campaign_id)
        if campaign is not None and campaign.status == rules.CampaignStatus.RUNNING:
            out[wave.id] = campaign
    return out


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


def _settle(
    session: Session,
    d: Dispatcher,
    items: Sequence[_Claimed],
    results: Mapping[int, SendResult],
    *,
    now: datetime,
    report: DispatchReport,
) -> None:
    """Record each held attempt's outcome; one statement per kind of outcome, not per contact."""
    delivered: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    retry: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item in items:
        result = results.get(item.contact_id) or SendResult(
            item.contact_id, ok=False, error="no result from the channel"
        )
        held = {"contact_id": item.contact_id, "attempts": item.attempts}
        if result.ok:
            row = {**held, "message_ref": result.message_ref, "contacted_at": now, "error": None}
            if result.delivered:
                delivered.append({**row, "delivered_at": now})
            else:
                sent.append(row)
            continue
        error = (result.error or "send failed")[:255]
        if result.retryable and item.attempts < d.max_attempts:
            wait = rules.backoff_s(item.attempts, base_s=d.backoff_base_s)
            retry.append({**held, "next_attempt_at": now + timedelta(seconds=wait), "error": error})
        else:
            # Never dropped silently: the contact ends failed with the last error, and counts as
            # treated.
            failed.append({**held, "error": error, "contacted_at": now})
    n_delivered = repo.settle_contacts(
        session, target=ContactStatus.DELIVERED.value, rows=delivered
    )
    report.sent += n_delivered + repo.settle_contacts(
        session, target=ContactStatus.SENT.value, rows=sent
    )
    report.delivered += n_delivered
    report.retried += repo.settle_contacts(session, target=ContactStatus.QUEUED.value, rows=retry)
    report.failed += repo.settle_contacts(session, target=ContactStatus.FAILED.value, rows=failed)


def dispatch_batch(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    *,
    batch_size: int = 200,
    now: datetime | None = None,
    campaign_id: int | None = None,
) -> DispatchReport:
    """Claim due contacts, send them per channel and record each outcome; then apply receipts."""
    report = DispatchReport()
    at = now or clock.now()
    with unit_of_work(sessions) as session:
        claimed = _claim(
            session,
            dispatcher,
            now=at,
            batch_size=batch_size,
            report=report,
            campaign_id=campaign_id,
        )
        session.commit()
    report.claimed = len(claimed)
    by_channel: dict[str, list[_Claimed]] = {}
    for item in claimed:
        by_channel.setdefault(item.channel, []).append(item)
    for name, items in sorted(by_channel.items()):
        channel = dispatcher.channels.get(name)
        ready = [i for i in items if i.error is None and channel is not None]
        ready_ids = {i.contact_id for i in ready}
        results: dict[int, SendResult] = {
            i.contact_id: SendResult(
                i.contact_id,
                ok=False,
                error=NOT_CONFIGURED if channel is None else i.error,
                retryable=False,
            )
            for i in items
            if i.contact_id not in ready_ids
        }
        with unit_of_work(sessions) as session:
            if ready and channel is not None:
                messages = [
                    Message(
                        contact_id=i.contact_id,
                        subscriber_id=i.subscriber_id,
                        campaign_id=i.campaign_id,
                        address=i.address or "",
                        subject=i.subject,
                        body=i.body,
                        link=i.link,
                    )
                    for i in ready
                ]
                try:
                    # In-app writes its inbox rows into this session: they commit with the marks.
                    for r in channel.send(session, messages):
                        results[r.contact_id] = r
                except Exception as exc:
                    log.exception("channel %s: send crashed", name)
                    session.rollback()
                    for i in ready:
                        results[i.contact_id] = SendResult(
                            i.contact_id, ok=False, error=f"{name}: {exc!r}"[:255]
                        )
                sent = sum(1 for i in ready if i.contact_id in results and results[i.contact_id].ok)
                metrics.DISPATCHED.labels(channel=name, outcome="sent").inc(sent)
                metrics.DISPATCHED.labels(channel=name, outcome="failed").inc(len(ready) - sent)
            _settle(session, dispatcher, items, results, now=at, report=report)
            session.commit()
    report.receipts = apply_receipts(sessions, dispatcher)
    report.receipts += recover_receipts(sessions, dispatcher, now=at)
    return report


def _settle_receipts(sessions: sessionmaker[Session], receipts: Sequence[Receipt]) -> int:
    """Apply delivery reports in one transaction; how many contacts they settled."""
    with unit_of_work(sessions) as session:
        n = sum(
            repo.apply_receipt(
                session,
                message_ref=r.message_ref,
                delivered=r.delivered,
                error=r.error,
                at=clock.now(),
            )
            for r in receipts
        )
        session.commit()
    return n


def apply_receipts(sessions: sessionmaker[Session], dispatcher: Dispatcher) -> int:
    """Delivery reports from every channel: sent contacts become delivered or failed."""
    n = 0
    for channel in dispatcher.channels.values():
        receipts = channel.receipts()
        if not receipts:
            continue
        n += _settle_receipts(sessions, receipts)
    return n


# Messages older than this are not asked about any more (an SMSC keeps them 2-3 days at most).
RECEIPT_QUERY_HORIZON = timedelta(days=3)
RECEIPT_QUERY_BATCH = 500


def recover_receipts(
    sessions: sessionmaker[Session], dispatcher: Dispatcher, *, now: datetime | None = None
) -> int:
    """Ask the channels that can about contacts whose receipt never came; settle the final ones."""
    tick = dispatcher.monotonic()
    last = dispatcher.receipts_queried_at
    if last is not None and tick - last < dispatcher.receipt_query_every_s:
        return 0
    dispatcher.receipts_queried_at = tick
    at = now or clock.now()
    n = 0
    for name, channel in sorted(dispatcher.channels.items()):
        if not isinstance(channel, AsksForReceipts):
            continue
        with unit_of_work(sessions) as session:
            refs = repo.unreceipted(
                session,
                channel=name,
                since=at - RECEIPT_QUERY_HORIZON,
                before=at - timedelta(seconds=dispatcher.receipt_query_after_s),
                limit=RECEIPT_QUERY_BATCH,
            )
        receipts = channel.query(refs) if refs else []
        if not receipts:
            continue
        n += _settle_receipts(sessions, receipts)
        log.info("channel %s: %d receipts recovered by asking the peer", name, n)
    return n


# ---- waves ending, and the loop ------------------------------------------------------------------


def finish_waves(sessions: sessionmaker[Session], *, campaign_id: int | None = None) -> list[int]:
    """Close test/rollout waves with nothing left to send; a done rollout finishes its campaign."""
    done: list[int] = []
    with unit_of_work(sessions) as session:
        for wave in repo.waves_in(session, WaveStatus.RUNNING.value, campaign_id=campaign_id):
            if wave.kind == WaveKind.TRIGGER or repo.has_open(session, wave_id=wave.id):
                continue
            if repo.move_wave(
                session,
                wave_id=wave.id,
                expected=WaveStatus.RUNNING.value,
                target=WaveStatus.DONE.value,
                finished_at=clock.now(),
            ):
                done.append(wave.id)
                if wave.kind == WaveKind.ROLLOUT:
                    campaigns.complete_campaign(session, campaign_id=wave.campaign_id)
        session.commit()
    return done


def next_due_in_s(
    sessions: sessionmaker[Session], *, now: datetime, campaign_id: int | None = None
) -> float | None:
    """Seconds until the next open contact of a sending wave is due (None: nothing open)."""
    with unit_of_work(sessions) as session:
        waves = _running_waves(session, campaign_id=campaign_id)
        if not waves:
            return None
        at = repo.next_due_at(session, wave_ids=sorted(waves))
    if at is None:
        return None
    return max(0.0, (at - now).total_seconds())


def open_totals(session: Session) -> tuple[int, int]:
    """(settled, total) contacts of the waves now sending: what a progress bar shows."""
    waves = _running_waves(session)
    if not waves:
        return 0, 0
    total, open_ = repo.totals(session, wave_ids=sorted(waves))
    return total - open_, total


@dataclass
class WorkerReport:
    rounds: int = 0
    planned: int = 0
    waves_done: int = 0
    dispatch: DispatchReport = field(default_factory=DispatchReport)


def run_worker(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    *,
    mart: Mart,
    batch_size: int = 200,
    once: bool = False,
    follow: bool = False,
    idle_s: float = 0.5,
    max_wait_s: float = 60.0,
    stop: threading.Event | None = None,
    on_round: Callable[[WorkerReport], None] | None = None,
    campaign_id: int | None = None,
) -> WorkerReport:
    """Plan waves, dispatch, finish waves; until nothing is open (or forever with `follow`).

    Without `follow` it still waits for retries and expired leases due within `max_wait_s`.
    With `campaign_id` it works on that campaign's waves only (the console's dispatch-now).
    """
    stop = stop or threading.Event()
    report = WorkerReport()
    while not stop.is_set():
        report.rounds += 1
        with unit_of_work(sessions) as session:
            planning = [
                w.id
                for w in repo.waves_in(session, WaveStatus.PLANNING.value, campaign_id=campaign_id)
            ]
        for wave_id in planning:
            report.planned += plan_wave(
                sessions, mart=mart, vault=dispatcher.vault, wave_id=wave_id
            )
        batch = dispatch_batch(sessions, dispatcher, batch_size=batch_size, campaign_id=campaign_id)
        report.dispatch.add(batch)
        report.waves_done += len(finish_waves(sessions, campaign_id=campaign_id))
        if on_round is not None:
            on_round(report)
        if once:
            break
        if batch.claimed or planning:
            continue
        wait = next_due_in_s(sessions, now=clock.now(), campaign_id=campaign_id)
        if wait is None or wait > max_wait_s:
            if not follow:
                break
            stop.wait(idle_s)
        else:
            stop.wait(min(max(wait, 0.05), idle_s))
    return report
