"""JSON API of campaigns: define and run (staff), responses and events (API keys or staff)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request, Response

from perkflow.campaigns import readiness
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.schemas import (
    CampaignOut,
    CampaignWarning,
    EventIn,
    EventOut,
    FailureOut,
    Note,
    ProgressOut,
    ResponseIn,
    ResponseOut,
    RolloutIn,
    TriggeredOut,
    WaveOut,
    WaveProgressOut,
)
from perkflow.errors import ValidationFailed
from perkflow.insights import service as insights
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import ApiActor, DbSession, MartDep, VaultDep

router = APIRouter(prefix="/v1", tags=["campaigns"])

IdempotencyHeader = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=160)
]


def _key(body_key: str | None, header_key: str | None) -> str:
    if body_key and header_key and body_key != header_key:
        raise ValidationFailed(
            "the Idempotency-Key header and the body's idempotency_key differ",
            field="idempotency_key",
        )
    key = body_key or header_key
    if not key:
        raise ValidationFailed(
            "send an idempotency key in the body or the Idempotency-Key header",
            field="idempotency_key",
        )
    return key


@router.post("/campaigns", response_model=CampaignOut, status_code=201)
def create_campaign(
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    spec: Annotated[dict[str, Any], Body(description="the campaign spec (docs/campaigns.md)")],
) -> CampaignOut:
    """Save a spec as a draft (campaigns.edit); `warnings` names channels not configured here."""
    c = campaigns.create_campaign(session, actor=actor, mart=mart, raw=spec)
    out = CampaignOut.model_validate(c)
    gaps = readiness.channel_gaps(campaigns.spec_of(c), request.app.state.settings)
    out.warnings = [
        CampaignWarning(field=g.field, channel=g.channel, setting=g.setting, message=g.message)
        for g in gaps
    ]
    return out


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(
    campaign_id: IdParam, actor: ApiActor, session: DbSession, mart: MartDep
) -> CampaignOut:
    """One campaign (staff, or a key with campaigns:read), with what its split can detect."""
    c = campaigns.get_campaign(session, actor=actor, campaign_id=campaign_id)
    out = CampaignOut.model_validate(c)
    out.power = insights.campaign_power(session, actor=actor, campaign=c, mart=mart)
    return out


@router.post("/campaigns/{campaign_id}/submit", response_model=CampaignOut)
def submit(campaign_id: IdParam, actor: ApiActor, session: DbSession) -> CampaignOut:
    """Send a draft for approval."""
    c = campaigns.submit_campaign(session, actor=actor, campaign_id=campaign_id)
    return CampaignOut.model_validate(c)


@router.post("/campaigns/{campaign_id}/approve", response_model=CampaignOut)
def approve(
    campaign_id: IdParam, actor: ApiActor, session: DbSession, body: Note | None = None
) -> CampaignOut:
    """Approve (a second person: not the author or submitter)."""
    c = campaigns.approve_campaign(
        session, actor=actor, campaign_id=campaign_id, note=body.note if body else ""
    )
    return CampaignOut.model_validate(c)


@router.post("/campaigns/{campaign_id}/reject", response_model=CampaignOut)
def reject(campaign_id: IdParam, body: Note, actor: ApiActor, session: DbSession) -> CampaignOut:
    """Send back to draft, saying why."""
    c = campaigns.reject_campaign(session, actor=actor, campaign_id=campaign_id, note=body.note)
    return CampaignOut.model_validate(c)


@router.post("/campaigns/{campaign_id}/start", response_model=CampaignOut)
def start(
    campaign_id: IdParam,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
) -> CampaignOut:
    """Build the list and open the test wave (or the rollout, or the trigger wave)."""
    c = campaigns.start_campaign(
        session,
        actor=actor,
        mart=mart,
        vault=vault,
        campaign_id=campaign_id,
        zone=request.app.state.settings.timezone,
        settings=request.app.state.settings,
    )
    return CampaignOut.model_validate(c)


@router.post("/campaigns/{campaign_id}/rollout", response_model=WaveOut)
def rollout(
    campaign_id: IdParam, actor: ApiActor, session: DbSession, body: RolloutIn | None = None
) -> WaveOut:
    """Send to the rest once the response window closed and the sequential test shows an effect.

    409 names why when it does not; ``against_evidence`` with a note overrides, on the record.
    """
    wave = campaigns.roll_out(
        session,
        actor=actor,
        campaign_id=campaign_id,
        note=body.note if body else "",
        against_evidence=body.against_evidence if body else False,
    )
    session.flush()
    return WaveOut.model_validate(wave)


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
def pause(campaign_id: IdParam, actor: ApiActor, session: DbSession) -> CampaignOut:
    """Stop sending."""
    return CampaignOut.model_validate(
        campaigns.pause_campaign(session, actor=actor, campaign_id=campaign_id)
    )


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
def resume(campaign_id: IdParam, actor: ApiActor, session: DbSession) -> CampaignOut:
    """Send again."""
    return CampaignOut.model_validate(
        campaigns.resume_campaign(session, actor=actor, campaign_id=campaign_id)
    )


@router.post("/campaigns/{campaign_id}/finish", response_model=CampaignOut)
def finish(campaign_id: IdParam, actor: ApiActor, session: DbSession) -> CampaignOut:
    """End the campaign; still-queued contacts are dropped."""
    return CampaignOut.model_validate(
        campaigns.finish_campaign(session, actor=actor, campaign_id=campaign_id)
    )


@router.get("/campaigns/{campaign_id}/progress", response_model=ProgressOut)
def progress(campaign_id: IdParam, actor: ApiActor, session: DbSession) -> ProgressOut:
    """Per wave: planned, counts by status, sent per channel, suppressions, recent failures."""
    p = campaigns.run_progress(session, actor=actor, campaign_id=campaign_id)
    return ProgressOut(
        campaign_id=p.campaign_id,
        status=p.status,
        target_list_id=p.target_list_id,
        suppressed=p.suppressed,
        waves=[
            WaveProgressOut(
                wave_id=w.wave_id,
                kind=w.kind,
                status=w.status,
                share_bp=w.share_bp,
                planned=w.planned,
                open=w.open,
                by_status=w.by_status,
                sent_by_channel=w.sent_by_channel,
                suppressed=w.suppressed,
                failures=[FailureOut(**asdict(f)) for f in w.failures],
            )
            for w in p.waves
        ],
    )


@router.post("/responses", response_model=ResponseOut)
def record_response(
    body: ResponseIn,
    actor: ApiActor,
    session: DbSession,
    idempotency_key: IdempotencyHeader = None,
) -> ResponseOut:
    """A response from outside (e.g. an order in the CRM), attributed to the last contact."""
    key = _key(body.idempotency_key, idempotency_key)
    r = campaigns.record_response(
        session,
        actor=actor,
        subscriber_id=body.subscriber_id,
        kind=body.kind,
        occurred_at=body.occurred_at,
        value_fen=body.value_fen,
        idempotency_key=key,
        source="api",
        ref=body.ref,
    )
    if r is None:
        return ResponseOut(recorded=False)
    session.flush()
    return ResponseOut(
        recorded=True,
        response_id=r.id,
        campaign_id=r.campaign_id,
        contact_id=r.contact_id,
        cell=r.cell,
        variant=r.variant,
    )


@router.post("/events", response_model=EventOut)
def record_event(
    body: EventIn,
    request: Request,
    response: Response,
    actor: ApiActor,
    session: DbSession,
    vault: VaultDep,
    mart: MartDep,
    idempotency_key: IdempotencyHeader = None,
) -> EventOut:
    """A subscriber event; running trigger campaigns listening to it queue their contacts."""
    key = _key(body.idempotency_key, idempotency_key)
    out = campaigns.record_event(
        session,
        actor=actor,
        vault=vault,
        type=body.type,
        subscriber_id=body.subscriber_id,
        occurred_at=body.occurred_at,
        idempotency_key=key,
        attributes=body.attributes,
        mart=mart,
        zone=request.app.state.settings.timezone,
    )
    if out.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return EventOut(
        event_id=out.event_id,
        replayed=out.replayed,
        triggered=[TriggeredOut(**asdict(t)) for t in out.triggered],
    )
