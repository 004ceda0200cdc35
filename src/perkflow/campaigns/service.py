"""Campaign use cases: define, approve, run in waves, record responses and events."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import holdout
from perkflow.audience import rules as audience_rules
from perkflow.audience import service as audience
from perkflow.audience.marts import PROFILE
from perkflow.campaigns import readiness, rules
from perkflow.campaigns import repository as repo
from perkflow.campaigns.models import (
    Campaign,
    CampaignContact,
    CampaignResponse,
    CampaignWave,
    SubscriberEvent,
)
from perkflow.campaigns.rules import (
    CampaignKind,
    CampaignStatus,
    Cell,
    CellCount,
    ContactStatus,
    HistoryRow,
    ResponseTime,
    WaveKind,
)
from perkflow.catalog import service as catalog
from perkflow.channels import service as channels
from perkflow.channels.rules import Message, Throttle
from perkflow.coupons import service as coupons
from perkflow.errors import Conflict, Forbidden, NotFound, ValidationFailed
from perkflow.grants import service as grants
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.kit.ids import token
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Perm
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers

MAX_NAME = 120


def _require_read(actor: Actor) -> None:
    org.require_perm_or_scope(actor, perm=Perm.CAMPAIGNS_READ, scope="campaigns:read")


def _require_staff(actor: Actor, perm: Perm) -> None:
    """Campaign writes are by people or the system; API keys read, post events and responses."""
    if actor.kind == "api_key":
        raise Forbidden("campaigns are changed by staff, not by API keys")
    org.require(actor, perm)


def _visible(campaign: Campaign, actor: Actor) -> bool:
    province = org.visible_province(actor)
    return province is None or campaign.province_code == province


def get_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """A campaign the actor may see."""
    _require_read(actor)
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}", field="campaign_id")
    if not _visible(campaign, actor):
        raise Forbidden("this campaign belongs to another province")
    return campaign


# ---- reads for evaluation ---------------------------------------------------------------------


def contact_counts(
    session: Session, *, actor: Actor, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[CellCount]:
    """Evaluated contacts, responders and revenue per (cell, variant, province) of a campaign."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.cell_counts(session, campaign_id=campaign_id, wave_ids=wave_ids)


def response_times(
    session: Session, *, actor: Actor, campaign_id: int, wave_ids: Sequence[int] | None = None
) -> list[ResponseTime]:
    """The first response time of every responding contact (for cumulative charts)."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.first_responses(session, campaign_id=campaign_id, wave_ids=wave_ids)


# ---- imported histories ---------------------------------------------------------------------


def import_history(
    session: Session,
    *,
    actor: Actor,
    name: str,
    source: str,
    rows: Sequence[HistoryRow],
    links: Mapping[int, int] | None = None,
) -> Campaign:
    """Load a past campaign (contacts with cells, responses, revenue) as a finished campaign.

    Its ids are the outside ``source``'s: only those in ``links`` (outside id → subscriber, matched
    on purpose) become our subscribers' history; the others stay in the source's namespace, so
    they count in this campaign's evaluation and nowhere else.
    """
    org.require(actor, Perm.CAMPAIGNS_EDIT)
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValidationFailed(f"name must be 1 to {MAX_NAME} characters", field="name")
    if not rules.IMPORT_SOURCE.match(source):
        raise ValidationFailed(
            "source is 1 to 32 lower-case letters, digits, - or _, a letter first", field="source"
        )
    if not rows:
        raise ValidationFailed("the history has no rows", field="file")
    seen: set[int] = set()
    for i, row in enumerate(rows):
        if row.subscriber_id in seen:
            raise ValidationFailed(
                f"row {i + 1}: subscriber {row.subscriber_id} appears twice", field="subscriber_id"
            )
        seen.add(row.subscriber_id)
    links = {k: v for k, v in (links or {}).items() if k in seen}
    if len(set(links.values())) != len(links):
        raise ValidationFailed("two outside ids are matched to one subscriber", field="match")
    provinces = subscribers.provinces_of(session, subscriber_ids=sorted(links.values()))
    unknown = sorted(set(links.values()) - set(provinces))
    if unknown:
        raise ValidationFailed(
            f"{len(unknown)} matched subscriber(s) are not in the subscriber master "
            f"(such as {unknown[0]})",
            field="match",
        )
    region = org.visible_province(actor)
    if region is not None and any(p != region for p in provinces.values()):
        raise Forbidden(f"matched subscribers must be in your region ({region})")

    def stored(row: HistoryRow) -> tuple[int, str | None, str | None]:
        """(subscriber_id, import_source, province) as the row is kept."""
        sid = links.get(row.subscriber_id)
        if sid is None:
            return rules.outside_id(row.subscriber_id), source, None
        return sid, None, provinces[sid]

    kept = {r.subscriber_id: stored(r) for r in rows}
    now = clock.now()
    campaign = Campaign(
        name=name,
        kind=CampaignKind.IMPORTED.value,
        import_source=source,
        status=CampaignStatus.FINISHED.value,
        province_code=region,
        goal={"kind": "import", "window_days": 0},
        offer={"kind": "none"},
        variants=[
            {"key": v, "channel": "import"}
            for v in sorted({r.variant for r in rows if r.variant is not None})
        ],
        schedule={},
        throttle={},
        control_share_bp=round(10_000 * sum(r.cell == Cell.CONTROL for r in rows) / len(rows)),
        salt=token(12),
        created_by=actor.name,
        created_at=now,
        updated_at=now,
        finished_at=now,
    )
    session.add(campaign)
    session.flush()  # the id goes into every contact row
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind=WaveKind.IMPORTED.value,
        share_bp=10_000,
        status="done",
        planned=len(rows),
        created_by=actor.name,
        created_at=now,
        started_at=min(r.contacted_at for r in rows),
        finished_at=now,
    )
    session.add(wave)
    session.flush()
    repo.insert_rows(
        session,
        CampaignContact,
        (
            {
                "campaign_id": campaign.id,
                "wave_id": wave.id,
                "subscriber_id": kept[r.subscriber_id][0],
                "import_source": kept[r.subscriber_id][1],
                "province_code": kept[r.subscriber_id][2],
                "cell": r.cell.value,
                "variant": r.variant,
                "channel": "import",
                "status": (
                    ContactStatus.HELD if r.cell == Cell.CONTROL else ContactStatus.DELIVERED
                ).value,
                "attempts": 0 if r.cell == Cell.CONTROL else 1,
                "contacted_at": r.contacted_at,
            }
            for r in rows
        ),
    )
    ids = repo.contact_ids(session, campaign_id=campaign.id)
    responded = [r for r in rows if r.responded]
    repo.insert_rows(
        session,
        CampaignResponse,
        (
            {
                "campaign_id": campaign.id,
                "contact_id": ids[kept[r.subscriber_id][0]],
                "subscriber_id": kept[r.subscriber_id][0],
                "import_source": kept[r.subscriber_id][1],
                "cell": r.cell.value,
                "variant": r.variant,
                "kind": "import",
                "value_fen": r.revenue_fen or 0,
                "responded_at": r.contacted_at,
                "source": "import",
                "idempotency_key": f"import:{campaign.id}:{kept[r.subscriber_id][0]}",
            }
            for r in responded
        ),
    )
    org.record_audit(
        session,
        actor=actor,
        action="campaign.import_history",
        target_type="campaign",
        target_id=str(campaign.id),
        details={
            "name": name,
            "source": source,
            "rows": len(rows),
            "matched": len(links),
            "responses": len(responded),
        },
    )
    return campaign


@dataclass(frozen=True)
class ImportSummary:
    """What an imported campaign holds: rows, how many matched our subscribers, responses."""

    contacts: int
    matched: int
    responses: int
    revenue_fen: int
    first_contact_at: datetime | None
    last_contact_at: datetime | None


def import_summary(session: Session, *, actor: Actor, campaign_id: int) -> ImportSummary:
    """Counts of an imported campaign's history, for its page."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    contacts, matched, first, last = repo.import_counts(session, campaign_id=campaign_id)
    responses, revenue = repo.response_totals(session, campaign_id=campaign_id)
    return ImportSummary(
        contacts=contacts,
        matched=matched,
        responses=responses,
        revenue_fen=revenue,
        first_contact_at=first,
        last_contact_at=last,
    )


# ---- reads for insights (evaluation waves, mart history sync) -------------------------------
# Kept apart from the campaign engine above; owned by the insights capability.


def wave_ids(session: Session, *, actor: Actor, campaign_id: int, kind: str) -> list[int]:
    """Ids of a campaign's waves of one kind (``test``, ``rollout``...)."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.wave_ids_of(session, campaign_id=campaign_id, kind=kind)


def history_contacts(
    session: Session, *, actor: Actor, after_id: int = 0, limit: int = 50_000
) -> list[repo.HistoryContact]:
    """Contacts made (or held back) by every campaign after a contact id, for the mart."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    return repo.contacts_after(session, after_id=after_id, limit=limit)


def history_responses(
    session: Session, *, actor: Actor, after_id: int = 0, limit: int = 50_000
) -> list[repo.HistoryResponse]:
    """Responses of every campaign after a response id, for the mart."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    return repo.responses_after(session, after_id=after_id, limit=limit)


def offers(session: Session, *, actor: Actor) -> dict[int, dict[str, object]]:
    """Every campaign's offer (kind, category, cost_fen) by campaign id."""
    org.require(actor, Perm.CAMPAIGNS_READ)
    return repo.offers_by_campaign(session)


# ---- definitions ---------------------------------------------------------------------------------


def _invalid(exc: rules.InvalidSpec) -> ValidationFailed:
    errors = [{"path": p.path, "message": p.message} for p in exc.problems]
    first = exc.problems[0]
    more = len(exc.problems) - 1
    message = first.message + (
        f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    )
    return ValidationFailed(message, field=first.path or "spec", errors=errors)


def _profile_kinds(mart: Mart | None) -> dict[str, str] | None:
    if mart is None or not mart.has(PROFILE):
        return None
    return {name: spec.kind.value for name, spec in audience.profile_columns(mart).items()}


def parse_spec(
    session: Session, *, actor: Actor, mart: Mart | None, raw: Any
) -> rules.CampaignSpec:
    """A validated spec whose segment and offer exist and are visible; 422 naming the field."""
    try:
        spec = rules.parse_spec(raw, columns=_profile_kinds(mart))
    except rules.InvalidSpec as exc:
        raise _invalid(exc) from exc
    if spec.segment_id is not None:
        try:
            audience.get_segment(session, actor=actor, segment_id=spec.segment_id)
        except NotFound as exc:
            raise ValidationFailed(exc.message, field="segment_id") from exc
    offer = spec.offer
    name = offer.name
    try:
        if offer.kind == "coupon_batch" and offer.id is not None:
            batch = coupons.get_batch(session, actor=actor, batch_id=offer.id)
            name = name or batch.name_zh
        elif offer.kind == "benefit" and offer.id is not None:
            benefit = catalog.get_benefit(session, benefit_id=offer.id)
            name = name or benefit.name_zh
    except NotFound as exc:
        raise ValidationFailed(exc.message, field="offer.id") from exc
    if name != offer.name:
        spec = replace(spec, offer=replace(offer, name=name))
    return spec


def _audit(session: Session, actor: Actor, action: str, campaign: Campaign, **details: Any) -> None:
    org.record_audit(
        session,
        actor=actor,
        action=f"campaign.{action}",
        target_type="campaign",
        target_id=str(campaign.id),
        details=details,
    )


def create_campaign(session: Session, *, actor: Actor, mart: Mart | None, raw: Any) -> Campaign:
    """A new draft from a spec (a province marketer's is confined to their province)."""
    _require_staff(actor, Perm.CAMPAIGNS_EDIT)
    spec = parse_spec(session, actor=actor, mart=mart, raw=raw)
    now = clock.now()
    campaign = Campaign(
        **rules.spec_columns(spec),
        status=CampaignStatus.DRAFT.value,
        province_code=org.visible_province(actor),
        salt=f"cmp-{token(9)}",
        created_by=actor.name,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(campaign)
    session.flush()  # the id goes into the audit entry
    _audit(session, actor, "create", campaign, name=spec.name, kind=spec.kind.value)
    return campaign


def update_campaign(
    session: Session, *, actor: Actor, mart: Mart | None, campaign_id: int, raw: Any, version: int
) -> Campaign:
    """Replace a draft's spec; 409 when someone saved it since `version` (or it left draft)."""
    _require_staff(actor, Perm.CAMPAIGNS_EDIT)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    spec = parse_spec(session, actor=actor, mart=mart, raw=raw)
    moved = repo.move_campaign(
        session,
        campaign_id=campaign.id,
        expected=CampaignStatus.DRAFT.value,
        target=CampaignStatus.DRAFT.value,
        version=version,
        at=clock.now(),
        **rules.spec_columns(spec),
    )
    if not moved:
        raise Conflict(
            "the campaign changed meanwhile or is no longer a draft; reload it", field="version"
        )
    fresh = repo.get_fresh(session, campaign.id)
    assert fresh is not None
    _audit(session, actor, "update", fresh, version=fresh.version)
    return fresh


def _transition(
    session: Session,
    *,
    actor: Actor,
    campaign: Campaign,
    action: rules.Action,
    details: dict[str, Any] | None = None,
    **values: Any,
) -> Campaign:
    """Move a campaign along the lifecycle table by compare-and-set, audited."""
    target = rules.next_status(campaign.status, action)
    if target is None:
        raise Conflict(f"a {campaign.status} campaign cannot {action.value}", field="status")
    if not repo.move_campaign(
        session,
        campaign_id=campaign.id,
        expected=campaign.status,
        target=target.value,
        at=clock.now(),
        **values,
    ):
        raise Conflict("the campaign changed meanwhile; reload it", field="status")
    fresh = repo.get_fresh(session, campaign.id)
    assert fresh is not None
    _audit(
        session,
        actor,
        action.value,
        fresh,
        **{"from": campaign.status, "to": target.value, **(details or {})},
    )
    return fresh


def submit_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """Send a draft for approval."""
    _require_staff(actor, Perm.CAMPAIGNS_EDIT)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.SUBMIT,
        submitted_by=actor.name,
    )


def approve_campaign(
    session: Session, *, actor: Actor, campaign_id: int, note: str = ""
) -> Campaign:
    """Approve a submitted campaign: a second person, never its author or submitter."""
    _require_staff(actor, Perm.CAMPAIGNS_APPROVE)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    if actor.kind != "system" and actor.name in (campaign.created_by, campaign.submitted_by):
        raise Forbidden("a campaign is approved by a second person, not its author or submitter")
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.APPROVE,
        details={"note": note.strip()[:500]},
        approved_by=actor.name,
        approved_at=clock.now(),
    )


def reject_campaign(session: Session, *, actor: Actor, campaign_id: int, note: str) -> Campaign:
    """Send a submitted campaign back to draft with the reason."""
    _require_staff(actor, Perm.CAMPAIGNS_APPROVE)
    note = note.strip()
    if not note:
        raise ValidationFailed("say why the campaign is sent back", field="note")
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.REJECT,
        details={"note": note[:500]},
        submitted_by=None,
    )


def _spec(campaign: Campaign) -> rules.CampaignSpec:
    return rules.spec_of(
        {
            "name": campaign.name,
            "segment_id": campaign.segment_id,
            "goal": campaign.goal,
            "offer": campaign.offer,
            "variants": campaign.variants,
            "schedule": campaign.schedule,
            "throttle": campaign.throttle,
            "trigger": campaign.trigger,
            "control_share_bp": campaign.control_share_bp,
            "test_share_bp": campaign.test_share_bp,
            "budget_fen": campaign.budget_fen,
            "stock_cap": campaign.stock_cap,
        }
    )


def spec_of(campaign: Campaign) -> rules.CampaignSpec:
    """The validated spec of a stored campaign."""
    return _spec(campaign)


def _new_wave(
    session: Session,
    *,
    actor: Actor,
    campaign: Campaign,
    kind: WaveKind,
    share_bp: int,
    status: str,
) -> CampaignWave:
    now = clock.now()
    wave = CampaignWave(
        campaign_id=campaign.id,
        kind=kind.value,
        share_bp=share_bp,
        status=status,
        planned=0,
        created_by=actor.name,
        created_at=now,
        started_at=now if status == rules.WaveStatus.RUNNING else None,
    )
    try:
        # A savepoint: the unique (campaign, kind) decides a second start or rollout.
        with session.begin_nested():
            session.add(wave)
    except IntegrityError:
        raise Conflict(f"the campaign already has a {kind.value} wave", field="wave") from None
    return wave


def start_campaign(
    session: Session,
    *,
    actor: Actor,
    mart: Mart,
    vault: Vault,
    campaign_id: int,
    zone: str = "Asia/Shanghai",
    settings: Settings | None = None,
) -> Campaign:
    """Run an approved campaign: snapshot its list and open the test wave (or the whole rollout).

    A trigger campaign opens its trigger wave and waits for events. The worker plans and sends.
    Entry points give `settings`: a channel it leaves unconfigured refuses the start (409).
    """
    _require_staff(actor, Perm.CAMPAIGNS_RUN)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    if campaign.status != CampaignStatus.APPROVED:
        raise Conflict(f"a {campaign.status} campaign cannot start", field="status")
    spec = _spec(campaign)
    if settings is not None:
        readiness.require_channels(spec, settings)
    details: dict[str, Any] = {}
    if spec.trigger is None:
        assert spec.segment_id is not None
        now = clock.now()
        primary = rules.POLICY_CHANNEL[spec.variants[0].channel]
        # The list is built for the first moment the schedule allows, so the policy judges the
        # list at the time it will be sent; the worker checks quiet hours again at each send.
        policy = audience.get_contact_policy(session)
        quiet = policy.quiet_hours.get(primary)
        send_at = rules.next_allowed(
            now, spec.schedule, zone=zone, quiet=(quiet.start, quiet.end) if quiet else None
        )
        if send_at is None:
            raise Conflict("the schedule allows no sending time any more", field="schedule.ends_at")
        target_list = audience.build_target_list(
            session,
            mart=mart,
            actor=actor,
            vault=vault,
            segment_id=spec.segment_id,
            channel=primary,
            control_share_bp=spec.control_share_bp,
            send_at=send_at,
            salt=campaign.salt,
            name=f"campaign {campaign.id}: {campaign.name}"[:120],
            default_zone=zone,
        )
        kind = WaveKind.TEST if spec.test_share_bp else WaveKind.ROLLOUT
        wave = _new_wave(
            session,
            actor=actor,
            campaign=campaign,
            kind=kind,
            share_bp=spec.test_share_bp or rules.BASIS_POINTS,
            status=rules.WaveStatus.PLANNING.value,
        )
        details = {
            "target_list_id": target_list.id,
            "wave": kind.value,
            "members": target_list.members,
            "target": target_list.target,
            "control": target_list.control,
            "send_at": send_at.isoformat(),
        }
        values: dict[str, Any] = {
            "target_list_id": target_list.id,
            "segment_version": target_list.segment_version,
        }
    else:
        wave = _new_wave(
            session,
            actor=actor,
            campaign=campaign,
            kind=WaveKind.TRIGGER,
            share_bp=rules.BASIS_POINTS,
            status=rules.WaveStatus.RUNNING.value,
        )
        details = {"wave": WaveKind.TRIGGER.value, "events": list(spec.trigger.events)}
        values = {}
    session.flush()  # the wave id goes into the audit entry
    details["wave_id"] = wave.id
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.START,
        details=details,
        **values,
    )


def roll_out(
    session: Session,
    *,
    actor: Actor,
    campaign_id: int,
    note: str = "",
    against_evidence: bool = False,
) -> CampaignWave:
    """The explicit decision to send to the rest of the list, after the test wave is done.

    The gate (``insights.stats.gate``): the response window has closed and the sequential test,
    valid however often the evaluation was read, shows an effect. Otherwise it refuses (409),
    unless the decision is taken ``against_evidence`` with a note, which the audit records.
    The audit entry keeps the test wave's figures and the gate's reading.
    """
    _require_staff(actor, Perm.CAMPAIGNS_RUN)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    if campaign.status != CampaignStatus.RUNNING:
        raise Conflict(f"a {campaign.status} campaign cannot roll out", field="status")
    test = repo.wave_of_kind(session, campaign.id, WaveKind.TEST.value)
    if test is None:
        raise Conflict("this campaign has no test wave to roll out from", field="wave")
    if test.status != rules.WaveStatus.DONE:
        raise Conflict("the test wave is still running; roll out after it is done", field="wave")
    counts = repo.cell_counts(session, campaign_id=campaign.id, wave_ids=[test.id])
    # The statistics are pure (insights.stats); imported here, where the decision is taken.
    from perkflow.insights.stats import gate

    def cell(kind: str, attr: str) -> int:
        return sum(int(getattr(c, attr)) for c in counts if c.cell == kind)

    decision = gate.decide(
        x_t=cell(Cell.TARGET.value, "responders"),
        n_t=cell(Cell.TARGET.value, "contacts"),
        x_c=cell(Cell.CONTROL.value, "responders"),
        n_c=cell(Cell.CONTROL.value, "contacts"),
        finished_at=test.finished_at,
        window_days=int((campaign.goal or {}).get("window_days", 0)),
        now=clock.now(),
    )
    if not decision.allowed and not against_evidence:
        raise Conflict(f"rollout refused: {decision.reason}", field="evidence")
    if not decision.allowed and not note.strip():
        raise ValidationFailed("rolling out against the evidence needs a note", field="note")
    figures = [
        {
            "cell": c.cell,
            "variant": c.variant,
            "province": c.province_code,
            "contacts": c.contacts,
            "responders": c.responders,
            "revenue_fen": c.revenue_fen,
        }
        for c in counts
    ]
    wave = _new_wave(
        session,
        actor=actor,
        campaign=campaign,
        kind=WaveKind.ROLLOUT,
        share_bp=rules.BASIS_POINTS - test.share_bp,
        status=rules.WaveStatus.PLANNING.value,
    )
    session.flush()  # the wave id goes into the audit entry
    _audit(
        session,
        actor,
        "rollout",
        campaign,
        wave_id=wave.id,
        test_wave_id=test.id,
        note=note.strip()[:500],
        test_wave=figures,
        gate={
            "allowed": decision.allowed,
            "reason": decision.reason,
            "sequential_p": decision.p_value,
            "cs": list(decision.cs) if decision.cs else None,
            "tau": decision.tau,
            "against_evidence": not decision.allowed,
        },
    )
    return wave


def pause_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """Stop sending (queued contacts wait)."""
    _require_staff(actor, Perm.CAMPAIGNS_RUN)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    return _transition(session, actor=actor, campaign=campaign, action=rules.Action.PAUSE)


def resume_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """Send again."""
    _require_staff(actor, Perm.CAMPAIGNS_RUN)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    return _transition(session, actor=actor, campaign=campaign, action=rules.Action.RESUME)


def finish_campaign(session: Session, *, actor: Actor, campaign_id: int) -> Campaign:
    """End a campaign; contacts still queued are suppressed (reason `finished`)."""
    _require_staff(actor, Perm.CAMPAIGNS_RUN)
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    dropped = repo.suppress_queued(
        session, campaign_id=campaign.id, reason="finished", at=clock.now()
    )
    for wave in repo.waves_of(session, campaign.id):
        if wave.status != rules.WaveStatus.DONE:
            repo.move_wave(
                session,
                wave_id=wave.id,
                expected=wave.status,
                target=rules.WaveStatus.DONE.value,
                finished_at=clock.now(),
            )
    return _transition(
        session,
        actor=actor,
        campaign=campaign,
        action=rules.Action.FINISH,
        details={"dropped_queued": dropped},
        finished_at=clock.now(),
    )


def complete_campaign(session: Session, *, campaign_id: int) -> bool:
    """The worker's finish once the rollout wave is done (no actor: the system's own step)."""
    campaign = repo.get_fresh(session, campaign_id)
    if campaign is None or campaign.status != CampaignStatus.RUNNING:
        return False
    moved = repo.move_campaign(
        session,
        campaign_id=campaign_id,
        expected=CampaignStatus.RUNNING.value,
        target=CampaignStatus.FINISHED.value,
        at=clock.now(),
        finished_at=clock.now(),
    )
    if moved:
        _audit(session, SYSTEM, "finish", campaign, **{"from": "running", "to": "finished"})
    return moved


def list_campaigns(
    session: Session,
    *,
    actor: Actor,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[Campaign], int]:
    """A page of the campaigns the actor may see, newest first."""
    _require_read(actor)
    if status is not None and status not in {s.value for s in CampaignStatus}:
        raise ValidationFailed(f"unknown status {status!r}", field="status")
    return repo.campaigns_page(
        session,
        province=org.visible_province(actor),
        status=status,
        offset=offset,
        limit=min(max(limit, 1), 500),
    )


def approval_queue(session: Session, *, actor: Actor) -> Sequence[Campaign]:
    """Submitted campaigns the actor may approve (not their own)."""
    _require_staff(actor, Perm.CAMPAIGNS_APPROVE)
    rows, _ = repo.campaigns_page(
        session,
        province=org.visible_province(actor),
        status=CampaignStatus.PENDING_APPROVAL.value,
        offset=0,
        limit=500,
    )
    return [c for c in rows if actor.name not in (c.created_by, c.submitted_by)]


def list_waves(session: Session, *, actor: Actor, campaign_id: int) -> Sequence[CampaignWave]:
    """A campaign's waves, oldest first."""
    get_campaign(session, actor=actor, campaign_id=campaign_id)
    return repo.waves_of(session, campaign_id)


@dataclass(frozen=True)
class Failure:
    contact_id: int
    subscriber_id: int
    channel: str
    attempts: int
    error: str | None


@dataclass(frozen=True)
class WaveProgress:
    """Where one wave stands."""

    wave_id: int
    kind: str
    status: str
    share_bp: int
    planned: int
    by_status: dict[str, int]
    sent_by_channel: dict[str, int]
    suppressed: dict[str, int]  # dispatch-time suppressions by reason
    failures: list[Failure]

    @property
    def open(self) -> int:
        return sum(self.by_status.get(s.value, 0) for s in rules.OPEN)

    @property
    def done(self) -> int:
        return sum(self.by_status.values()) - self.open


@dataclass(frozen=True)
class Progress:
    """A campaign's run: its waves and why members were left out."""

    campaign_id: int
    status: str
    target_list_id: int | None
    list_reasons: dict[str, int]  # from the target list (policy before the split)
    waves: list[WaveProgress]

    @property
    def suppressed(self) -> dict[str, int]:
        """Every reason, from the list and from dispatch, summed."""
        total = dict(self.list_reasons)
        for w in self.waves:
            for reason, n in w.suppressed.items():
                total[reason] = total.get(reason, 0) + n
        return total


def run_progress(session: Session, *, actor: Actor, campaign_id: int) -> Progress:
    """Planned, sent per channel, suppressed by reason and recent failures of every wave."""
    campaign = get_campaign(session, actor=actor, campaign_id=campaign_id)
    reasons: dict[str, int] = {}
    if campaign.target_list_id is not None:
        tl = audience.get_target_list(session, actor=SYSTEM, target_list_id=campaign.target_list_id)
        reasons = dict(tl.reasons or {})
        if tl.universal_control:
            reasons["universal_control"] = tl.universal_control
    waves = [
        WaveProgress(
            wave_id=w.id,
            kind=w.kind,
            status=w.status,
            share_bp=w.share_bp,
            planned=w.planned,
            by_status=repo.count_by_status(session, wave_id=w.id),
            sent_by_channel=repo.sent_by_channel(session, wave_id=w.id),
            suppressed=repo.reasons_of(session, wave_id=w.id),
            failures=[
                Failure(c.id, c.subscriber_id, c.channel, c.attempts, c.error)
                for c in repo.recent_failures(session, wave_id=w.id, limit=20)
            ],
        )
        for w in repo.waves_of(session, campaign.id)
    ]
    return Progress(
        campaign_id=campaign.id,
        status=campaign.status,
        target_list_id=campaign.target_list_id,
        list_reasons=reasons,
        waves=waves,
    )


# ---- responses -----------------------------------------------------------------------------------


def _require_writer(actor: Actor, *, scope: str, perm: Perm) -> None:
    org.require_perm_or_scope(actor, perm=perm, scope=scope)


def _goal_matches(campaign: Campaign, kind: str, ref: str | None) -> bool:
    goal = campaign.goal or {}
    if goal.get("kind") not in (kind, "any"):
        return False
    offer = campaign.offer or {}
    # A ledger response names what was claimed or used; it counts for the campaign of that offer.
    if ref is not None and offer.get("kind") not in (None, "none") and kind != "order":
        return ref == f"{offer.get('kind')}:{offer.get('id')}"
    return True


def record_response(
    session: Session,
    *,
    actor: Actor,
    subscriber_id: int,
    kind: str,
    occurred_at: datetime,
    value_fen: int = 0,
    idempotency_key: str,
    source: str,
    ref: str | None = None,
) -> CampaignResponse | None:
    """Attribute what a subscriber did to their last eligible contact whose window covers it.

    Control-cell (held) contacts count like sent ones. A key seen before returns the first
    record; None when no contact of a campaign with this goal covers the time.
    """
    _require_writer(actor, scope="responses:write", perm=Perm.RESPONSES_WRITE)
    response, _ = _attribute(
        session,
        subscriber_id=subscriber_id,
        kind=kind,
        occurred_at=occurred_at,
        value_fen=value_fen,
        idempotency_key=idempotency_key,
        source=source,
        ref=ref,
    )
    return response


def _attribute(
    session: Session,
    *,
    subscriber_id: int,
    kind: str,
    occurred_at: datetime,
    value_fen: int,
    idempotency_key: str,
    source: str,
    ref: str | None,
) -> tuple[CampaignResponse | None, bool]:
    """The response recorded for the key, and whether this call recorded it."""
    if kind not in rules.RESPONSE_KINDS:
        raise ValidationFailed(f"kind is one of {', '.join(rules.RESPONSE_KINDS)}", field="kind")
    key = idempotency_key.strip()
    if not key or len(key) > 160:
        raise ValidationFailed("an idempotency key of 1 to 160 characters", field="idempotency_key")
    if occurred_at.tzinfo is None:
        raise ValidationFailed("occurred_at needs a time zone", field="occurred_at")
    if isinstance(value_fen, bool) or not 0 <= value_fen <= 10**12:
        raise ValidationFailed("value_fen is whole fen ≥ 0", field="value_fen")
    existing = repo.response_by_key(session, key)
    if existing is not None:
        return existing, False
    at = occurred_at.astimezone(UTC)
    campaigns: dict[int, Campaign | None] = {}
    chosen: CampaignContact | None = None
    for contact in repo.contacts_of_subscriber(session, subscriber_id=subscriber_id):
        assert contact.contacted_at is not None
        if contact.contacted_at > at:
            continue
        if contact.campaign_id not in campaigns:
            campaigns[contact.campaign_id] = session.get(Campaign, contact.campaign_id)
        campaign = campaigns[contact.campaign_id]
        if campaign is None or not _goal_matches(campaign, kind, ref):
            continue
        window = timedelta(days=int((campaign.goal or {}).get("window_days", 0)))
        if at <= contact.contacted_at + window:
            chosen = contact  # rows come newest first: the last eligible contact
            break
    if chosen is None:
        return None, False
    response = CampaignResponse(
        campaign_id=chosen.campaign_id,
        contact_id=chosen.id,
        subscriber_id=subscriber_id,
        cell=chosen.cell,
        variant=chosen.variant,
        kind=kind,
        value_fen=value_fen,
        responded_at=at,
        source=source[:32],
        idempotency_key=key,
    )
    try:
        # A savepoint: the unique key decides a concurrent duplicate, not the read above.
        with session.begin_nested():
            session.add(response)
    except IntegrityError:
        return repo.response_by_key(session, key), False
    return response, True


@dataclass(frozen=True)
class LedgerResponses:
    """What one pass over the ledger recorded, and where the next pass starts."""

    seen: int
    recorded: int  # added by this pass: a fact an earlier pass recorded is only seen again
    cursor: dict[str, int]


LEDGER_REWIND_IDS = 1_000


def collect_ledger_responses(
    session: Session,
    *,
    actor: Actor,
    since: dict[str, int] | None = None,
    limit: int = 5_000,
) -> LedgerResponses:
    """Claims, redemptions and grant uses after the cursor, recorded as responses (idempotent)."""
    _require_writer(actor, scope="responses:write", perm=Perm.RESPONSES_WRITE)
    cursor = dict(since or {})
    seen = recorded = 0
    # Concurrent writers commit out of id order (a claim group may commit after a later id was
    # read), so each pass reads again a window behind the cursor; recording is idempotent by
    # row, so a row read twice counts once and a late row is not lost.
    rewind = min(LEDGER_REWIND_IDS, limit // 2)

    def after(kind: str) -> int:
        return max(0, cursor.get(kind, 0) - rewind)

    sources: list[tuple[str, Sequence[Any]]] = [
        ("claim", coupons.claims_since(session, after_id=after("claim"), limit=limit)),
        (
            "redemption",
            coupons.redemptions_since(session, after_id=after("redemption"), limit=limit),
        ),
        ("grant_use", grants.uses_since(session, after_id=after("grant_use"), limit=limit)),
    ]
    for kind, rows in sources:
        for row in rows:
            seen += 1
            _, added = _attribute(
                session,
                subscriber_id=row.subscriber_id,
                kind=kind,
                occurred_at=row.at,
                value_fen=row.value_fen,
                idempotency_key=f"ledger:{kind}:{row.id}",
                source="ledger",
                ref=row.ref,
            )
            recorded += added
            cursor[kind] = max(cursor.get(kind, 0), row.id)
    return LedgerResponses(seen=seen, recorded=recorded, cursor=cursor)


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
