"""Membership pages: the console's tier editor and reports; the subscriber's H5 member center."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.errors import PerkflowError
from perkflow.kit import clock
from perkflow.kit.bounds import IdParam
from perkflow.membership import service as membership
from perkflow.web.auth import CsrfProtected, DbSession, MartDep, Staff, SubscriberId, client_ip
from perkflow.web.forms import refuse
from perkflow.web.render import render, request_locale

router = APIRouter(include_in_schema=False)


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


@router.get("/console/membership")
def overview(
    request: Request, staff: Staff, session: DbSession, month: str = "", saved: int = 0
) -> Response:
    zone = _zone(request)
    views = membership.tier_views(session)
    dist = membership.tier_distribution(session, actor=staff.actor)
    moves = membership.tier_migration(session, actor=staff.actor, zone=zone, month=month or None)
    liability = membership.points_liability(session, actor=staff.actor, zone=zone)
    zh = request_locale(request) == "zh_CN"
    chart: dict[str, list[Any]] = {"categories": [], "up": [], "down": [], "scheduled": []}
    # The chart names tiers in the reader's language, not by their codes.
    names = {v.tier.code: v.tier.name_zh if zh else v.tier.name_en for v in views}
    for kind, src, dst, n in moves.rows:
        if kind == "downgrade_cancelled":
            continue
        chart["categories"].append(f"{_tier_name(names, src)} → {_tier_name(names, dst)}")
        chart["up"].append(n if kind in ("join", "upgrade") else 0)
        chart["down"].append(n if kind in ("downgrade", "leave") else 0)
        chart["scheduled"].append(n if kind == "downgrade_scheduled" else 0)
    return render(
        request,
        "membership/overview.html",
        {
            "views": views,
            "dist": dist,
            "moves": moves,
            "liability": liability,
            "moves_chart": chart,
            "dist_names": [r[1] if zh else r[2] for r in dist],
            "dist_counts": [r[3] for r in dist],
            "saved": saved,
        },
    )


def _tier_name(names: dict[str, str], code: str | None) -> str:
    return names.get(code, code) if code else "—"


def _editor(
    request: Request,
    *,
    text: str,
    error: str | None = None,
    field: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "membership/rules.html",
        {"text": text, "error": error, "field": field},
        status_code=status_code,
    )


@router.get("/console/membership/rules")
def rules_editor(request: Request, staff: Staff, session: DbSession) -> Response:
    membership.require_read(staff.actor)
    return _editor(request, text=membership.document_text(session))


@router.post("/console/membership/rules/preview", dependencies=[CsrfProtected])
def rules_preview(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    program: Annotated[str, Form(max_length=200_000)] = "",
) -> Response:
    """Subscribers per tier of the text in the editor (an htmx fragment), nothing saved."""
    context: dict[str, Any] = {"rows": None, "none": 0, "error": None, "field": None}
    try:
        raw = membership.read_document(program)
        _, rows, none = membership.preview_program(session, actor=staff.actor, mart=mart, raw=raw)
        context.update(rows=rows, none=none)
    except PerkflowError as exc:
        if exc.status_code == 403:
            raise
        context.update(error=exc.message, field=exc.field)
    return render(request, "membership/_preview.html", context)


@router.post("/console/membership/rules", dependencies=[CsrfProtected])
def rules_save(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    program: Annotated[str, Form(max_length=200_000)] = "",
) -> Response:
    try:
        raw = membership.read_document(program)
        membership.define_program(session, actor=staff.actor, raw=raw, mart=mart)
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(403,))
        return _editor(
            request, text=program, error=exc.message, field=exc.field, status_code=status
        )
    return RedirectResponse("/console/membership?saved=1", status_code=303)


def _center(
    request: Request,
    sid: int,
    session: DbSession,
    *,
    picked: int | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    zone = _zone(request)
    card = membership.member_card(session, subscriber_id=sid, zone=zone)
    return render(
        request,
        "h5/member.html",
        {
            "card": card,
            "picked": picked,
            "error": error,
            "month": clock.today(zone).strftime("%Y-%m"),
        },
        status_code=status_code,
    )


@router.get("/h5/member")
def member_center(request: Request, sid: SubscriberId, session: DbSession) -> Response:
    return _center(request, sid, session)


@router.post("/h5/member/picks/{item_id}", dependencies=[CsrfProtected])
def pick(request: Request, item_id: IdParam, sid: SubscriberId, session: DbSession) -> Response:
    actor = membership.subscriber_actor(subscriber_id=sid, ip=client_ip(request))
    try:
        membership.pick_benefit(
            session, actor=actor, subscriber_id=sid, item_id=item_id, zone=_zone(request)
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(404,))
        return _center(request, sid, session, error=exc.message, status_code=status)
    return _center(request, sid, session, picked=item_id)
