"""Campaign use cases: runs (start, test wave and rollout, pause, resume, finish, complete)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.audience import service as audience
from perkflow.campaigns import readiness, rules
from perkflow.campaigns import repository as repo
from perkflow.campaigns.models import (
    Campaign,
    CampaignWave,
)
from perkflow.campaigns.rules import (
    CampaignStatus,
    Cell,
    WaveKind,
)
from perkflow.errors import Conflict, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.mart import Mart
from perkflow.org.rules import SYSTEM, Actor, Perm
from perkflow.settings import Settings

from .access import _require_staff, get_campaign
from .definitions import _audit, _transition


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
