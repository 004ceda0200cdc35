"""The campaign wizard: the form page, saving it (create or update), its htmx fragments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from perkflow.audience import service as audience
from perkflow.campaigns import rules
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus
from perkflow.coupons import service as coupons
from perkflow.errors import PerkflowError, ValidationFailed
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.web.auth import CsrfProtected, DbSession, MartDep, Staff, StaffContext
from perkflow.web.forms import refuse
from perkflow.web.render import render, request_locale

from ._common import _zone, router
from .spec_form import _column_kinds, _defaults, _errors_of, _row_errors, form_of_post, raw_spec

MIN_VARIANT_ROWS = 2
OFFER_CHOICES_LIMIT = 200


def _offer_choices(session: Session, staff: StaffContext, *, zh: bool) -> list[tuple[str, str]]:
    """(value, label) of the offers the actor may attach: coupon batches, then benefits."""
    out: list[tuple[str, str]] = []
    if staff.actor.can(Perm.COUPONS_EDIT):
        for b in list(coupons.list_batches(session, actor=staff.actor))[:OFFER_CHOICES_LIMIT]:
            out.append((f"coupon_batch:{b.id}", f"🎫 {b.name_zh if zh else b.name_en} (#{b.id})"))
    if staff.actor.can(Perm.CATALOG_READ):
        benefits, _ = catalog.list_benefits(
            session,
            actor=staff.actor,
            status=BenefitStatus.LISTED.value,
            limit=OFFER_CHOICES_LIMIT,
        )
        for x in benefits:
            out.append((f"benefit:{x.id}", f"🎁 {x.name_zh if zh else x.name_en} (#{x.id})"))
    return out


def _wizard(
    request: Request,
    staff: StaffContext,
    session: Session,
    *,
    form: dict[str, Any],
    campaign: Campaign | None,
    errors: Sequence[dict[str, str]] = (),
    status_code: int = 200,
) -> Response:
    rows = list(form.get("variants") or [])
    while len(rows) < MIN_VARIANT_ROWS:
        rows.append(
            {
                "key": chr(ord("A") + len(rows)),
                "channel": "in_app",
                "subject": "",
                "body": "",
                "match_column": "",
                "match_op": "=",
                "match_value": "",
            }
        )
    form = {**form, "variants": rows}
    mart: Mart = request.app.state.mart
    return render(
        request,
        "campaigns/wizard.html",
        {
            "form": form,
            "campaign": campaign,
            "errors": list(errors),
            "err": {e["path"]: e["message"] for e in reversed(list(errors))},
            "row_errors": _row_errors(errors, len(rows)),
            "segments": audience.list_segments(session, actor=staff.actor),
            "offers": _offer_choices(session, staff, zh=request_locale(request) == "zh_CN"),
            "columns": sorted(_column_kinds(mart)),
            "goal_kinds": rules.GOAL_KINDS,
            "channels": rules.CAMPAIGN_CHANNELS,
            "events": rules.EVENT_TYPES,
            "ops": rules.MATCH_OPS,
            "fields": [f"{{{{ {name} }}}}" for name in rules.FIELDS],
            "zone": _zone(request),
        },
        status_code=status_code,
    )


async def _form_data(request: Request) -> FormData:
    # Variant rows, weekdays and events come as repeated fields: read the whole form.
    return await request.form()


FormDep = Annotated[FormData, Depends(_form_data)]


def _save(
    request: Request,
    staff: StaffContext,
    session: Session,
    mart: Mart,
    form_data: FormData,
    *,
    campaign: Campaign | None,
) -> Response:
    """Create or update from the wizard; on any problem show the form again and save nothing."""
    form = form_of_post(form_data)
    zone = _zone(request)
    raw, early = raw_spec(session, staff=staff, mart=mart, form=form, zone=zone)
    try:
        if early:
            # Show the spec check's own findings too, not only the typing problems.
            try:
                campaigns.parse_spec(session, actor=staff.actor, mart=mart, raw=raw)
            except ValidationFailed as exc:
                early += [e for e in _errors_of(exc) if e["path"] not in {p["path"] for p in early}]
            first = early[0]
            raise ValidationFailed(first["message"], field=first["path"], errors=early)
        if campaign is None:
            saved = campaigns.create_campaign(session, actor=staff.actor, mart=mart, raw=raw)
        else:
            version = str(form_data.get("version") or "")
            saved = campaigns.update_campaign(
                session,
                actor=staff.actor,
                mart=mart,
                campaign_id=campaign.id,
                raw=raw,
                version=int(version) if version.isdigit() else 0,
            )
    except PerkflowError as exc:
        status = refuse(request, session, exc)  # nothing of the refused save may stay
        return _wizard(
            request,
            staff,
            session,
            form=form,
            campaign=campaign,
            errors=_errors_of(exc),
            status_code=status,
        )
    return RedirectResponse(f"/console/campaigns/{saved.id}", status_code=303)


@router.get("/console/campaigns/new")
def campaign_new(request: Request, staff: Staff, session: DbSession) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)
    return _wizard(request, staff, session, form=_defaults(), campaign=None)


@router.post("/console/campaigns/new", dependencies=[CsrfProtected])
def campaign_create(
    request: Request, staff: Staff, session: DbSession, mart: MartDep, form: FormDep
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)
    return _save(request, staff, session, mart, form, campaign=None)


@router.get("/console/campaigns/wizard/variant")
def wizard_variant_row(request: Request, staff: Staff) -> Response:
    """One empty content-variant row (htmx appends it)."""
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)  # it lists the mart's columns: wizard users only
    mart: Mart = request.app.state.mart
    return render(
        request,
        "campaigns/_variant.html",
        {
            "v": {"channel": "in_app", "match_op": "="},
            "e": {},
            "channels": rules.CAMPAIGN_CHANNELS,
            "ops": rules.MATCH_OPS,
            "columns": sorted(_column_kinds(mart)),
        },
    )


@router.get("/console/campaigns/segment-size")
def segment_size(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    segment_id: Annotated[str, Query(max_length=12)] = "",
) -> Response:
    """The live member count of a segment within the actor's region (an htmx fragment)."""
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)  # a part of the wizard, refused as it is
    count: int | None = None
    error: str | None = None
    if segment_id.isdigit():
        try:
            version = audience.get_segment_version(
                session, actor=staff.actor, segment_id=int(segment_id)
            )
        except PerkflowError as exc:
            if exc.status_code not in (403, 404):
                raise
            # Another province's segment answers as one that does not exist: no id oracle.
            return render(request, "campaigns/_segment_size.html", {"count": None, "error": None})
        try:
            counted = audience.count_definition(
                session, mart=mart, actor=staff.actor, raw=version.definition
            )
            count = int(counted["count"])
        except PerkflowError as exc:
            error = exc.message
    return render(request, "campaigns/_segment_size.html", {"count": count, "error": error})
