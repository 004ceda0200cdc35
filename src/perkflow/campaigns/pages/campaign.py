"""One campaign's page (or an imported one's), its edit form and its lifecycle steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from perkflow.audience import service as audience
from perkflow.campaigns import readiness, rules
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.errors import PerkflowError, ValidationFailed
from perkflow.insights import service as insights
from perkflow.kit.bounds import IdParam
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.web.auth import CsrfProtected, DbSession, MartDep, Staff, StaffContext, VaultDep
from perkflow.web.forms import refuse
from perkflow.web.render import render

from ._common import _zone, router
from .spec_form import form_of_campaign
from .wizard import FormDep, _save, _wizard


def _test_evaluation(
    request: Request, session: Session, staff: StaffContext, campaign: Campaign
) -> dict[str, Any] | None:
    if not campaigns.wave_ids(session, actor=staff.actor, campaign_id=campaign.id, kind="test"):
        return None
    try:
        evaluation = insights.evaluate(
            session, actor=staff.actor, campaign_id=campaign.id, wave="test", zone=_zone(request)
        )
    except PerkflowError:
        return None  # the page still offers its lifecycle; the report link explains the rest
    return insights.report_dict(evaluation)


def _campaign_page(
    request: Request,
    staff: StaffContext,
    session: Session,
    campaign_id: int,
    *,
    error: str | None = None,
    note: str = "",
    status_code: int = 200,
    mart: Mart | None = None,
) -> Response:
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    if campaign.kind == rules.CampaignKind.IMPORTED:
        # History run elsewhere: no spec to run, so it has a page of its own (and no controls).
        return _imported_page(
            request, staff, session, campaign, error=error, status_code=status_code
        )
    spec = campaigns.spec_of(campaign)
    waves = campaigns.list_waves(session, actor=staff.actor, campaign_id=campaign.id)
    by_kind = {w.kind: w for w in waves}
    segment = None
    if campaign.segment_id is not None:
        try:
            segment = audience.get_segment(
                session, actor=staff.actor, segment_id=campaign.segment_id
            )
        except PerkflowError:
            segment = None  # archived or hidden: the id is still shown
    actor = staff.actor
    author = actor.name in (campaign.created_by, campaign.submitted_by)
    test = by_kind.get("test")
    trail = org.audit_of_target(session, target_type="campaign", target_id=str(campaign.id))
    rejection = next(
        (e for e in trail if e.action == "campaign.reject"),
        None,
    )
    return render(
        request,
        "campaigns/campaign.html",
        {
            "c": campaign,
            "spec": spec,
            "segment": segment,
            "waves": waves,
            "test": test,
            "rollout": by_kind.get("rollout"),
            "evaluation": _test_evaluation(request, session, staff, campaign),
            "power": insights.campaign_power(
                session, actor=staff.actor, campaign=campaign, mart=mart
            ),
            "trail": trail,
            "rejection": rejection if campaign.status == "draft" else None,
            "error": error,
            "note": note,
            "can_edit": actor.can(Perm.CAMPAIGNS_EDIT),
            "can_approve": actor.can(Perm.CAMPAIGNS_APPROVE) and not author,
            "is_author": author,
            "can_run": actor.can(Perm.CAMPAIGNS_RUN),
            "fields": [f"{{{{ {name} }}}}" for name in rules.FIELDS],
            # Until it runs, a campaign says which of its channels this installation lacks.
            "channel_gaps": (
                readiness.channel_gaps(spec, request.app.state.settings)
                if campaign.status in ("draft", "submitted", "approved")
                else []
            ),
        },
        status_code=status_code,
    )


def _imported_page(
    request: Request,
    staff: StaffContext,
    session: Session,
    campaign: Campaign,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """What an imported campaign is: its source, when it came, its cells and variants."""
    summary = campaigns.import_summary(session, actor=staff.actor, campaign_id=campaign.id)
    report = insights.report_dict(
        insights.evaluate(session, actor=staff.actor, campaign_id=campaign.id, zone=_zone(request))
    )
    return render(
        request,
        "campaigns/imported.html",
        {
            "c": campaign,
            "summary": summary,
            "r": report,
            "error": error,
            "trail": org.audit_of_target(
                session, target_type="campaign", target_id=str(campaign.id)
            ),
        },
        status_code=status_code,
    )


@router.get("/console/campaigns/{campaign_id}")
def campaign_detail(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession, mart: MartDep
) -> Response:
    return _campaign_page(request, staff, session, campaign_id, mart=mart)


@router.get("/console/campaigns/{campaign_id}/edit")
def campaign_edit(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    if campaign.status != rules.CampaignStatus.DRAFT:
        return RedirectResponse(f"/console/campaigns/{campaign.id}", status_code=303)
    form = form_of_campaign(campaign, _zone(request))
    return _wizard(request, staff, session, form=form, campaign=campaign)


@router.post("/console/campaigns/{campaign_id}/edit", dependencies=[CsrfProtected])
def campaign_update(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    form: FormDep,
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    return _save(request, staff, session, mart, form, campaign=campaign)


def _next_url(text: str, campaign_id: int) -> str:
    # Only our own console pages: never an open redirect.
    if text.startswith("/console/") and "//" not in text and "\\" not in text:
        return text
    return f"/console/campaigns/{campaign_id}"


def _act(
    request: Request,
    staff: StaffContext,
    session: Session,
    campaign_id: int,
    action: Callable[[], object],
    *,
    next_url: str = "",
    note: str = "",
) -> Response:
    """Run one lifecycle step; a refusal shows the campaign page with the reason."""
    try:
        action()
    except PerkflowError as exc:
        # A refused step (403 included) is told on the campaign page, read again as stored.
        status = refuse(request, session, exc, let_through=(404,))
        return _campaign_page(
            request,
            staff,
            session,
            campaign_id,
            error=exc.message,
            note=note,
            status_code=status,
        )
    return RedirectResponse(_next_url(next_url, campaign_id), status_code=303)


NoteForm = Annotated[str, Form(max_length=500)]
NextForm = Annotated[str, Form(max_length=200)]


@router.post("/console/campaigns/{campaign_id}/submit", dependencies=[CsrfProtected])
def campaign_submit(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.submit_campaign(session, actor=staff.actor, campaign_id=campaign_id),
    )


@router.post("/console/campaigns/{campaign_id}/approve", dependencies=[CsrfProtected])
def campaign_approve(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    note: NoteForm = "",
    next_url: NextForm = "",
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.approve_campaign(
            session, actor=staff.actor, campaign_id=campaign_id, note=note
        ),
        next_url=next_url,
    )


@router.post("/console/campaigns/{campaign_id}/reject", dependencies=[CsrfProtected])
def campaign_reject(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    note: NoteForm = "",
    next_url: NextForm = "",
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.reject_campaign(
            session, actor=staff.actor, campaign_id=campaign_id, note=note
        ),
        next_url=next_url,
        note=note,
    )


@router.post("/console/campaigns/{campaign_id}/start", dependencies=[CsrfProtected])
def campaign_start(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.start_campaign(
            session,
            actor=staff.actor,
            mart=mart,
            vault=vault,
            campaign_id=campaign_id,
            zone=_zone(request),
            settings=request.app.state.settings,
        ),
        next_url=f"/console/campaigns/{campaign_id}/monitor",
    )


@router.post("/console/campaigns/{campaign_id}/rollout", dependencies=[CsrfProtected])
def campaign_rollout(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    note: NoteForm = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
    against_evidence: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    def roll() -> None:
        # The decision is explicit: a reason in words and a tick that the evaluation was read.
        if not note.strip():
            raise ValidationFailed("write why you roll out (it goes in the audit)", field="note")
        if confirm != "yes":
            raise ValidationFailed("tick that you read the test wave's evaluation", field="confirm")
        campaigns.roll_out(
            session,
            actor=staff.actor,
            campaign_id=campaign_id,
            note=note,
            against_evidence=against_evidence == "yes",
        )

    return _act(
        request,
        staff,
        session,
        campaign_id,
        roll,
        next_url=f"/console/campaigns/{campaign_id}/monitor",
        note=note,
    )


def _simple_step(step: Callable[..., object]) -> Callable[..., Response]:
    """A lifecycle step that needs only the campaign (pause, resume, finish) as a form handler."""

    def handler(request: Request, campaign_id: int, staff: Staff, session: DbSession) -> Response:
        return _act(
            request,
            staff,
            session,
            campaign_id,
            lambda: step(session, actor=staff.actor, campaign_id=campaign_id),
        )

    return handler


for _name, _step in (
    ("pause", campaigns.pause_campaign),
    ("resume", campaigns.resume_campaign),
    ("finish", campaigns.finish_campaign),
):
    router.add_api_route(
        f"/console/campaigns/{{campaign_id}}/{_name}",
        _simple_step(_step),
        methods=["POST"],
        dependencies=[CsrfProtected],
        name=f"campaign_{_name}",
    )
