"""Pages of red envelopes: the H5 lottery and share-to-unlock pages, the console programmes."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from perkflow.envelopes import service
from perkflow.envelopes.rules import ProgramKind, ProgramStatus
from perkflow.envelopes.schemas import ProgramSpec, TierSpec
from perkflow.errors import PerkflowError, ValidationFailed
from perkflow.kit.bounds import IdParam
from perkflow.kit.ids import token
from perkflow.org import service as org
from perkflow.org.rules import Perm, subscriber_actor
from perkflow.subscribers import service as subscribers
from perkflow.web.auth import (
    CsrfProtected,
    DbSession,
    Staff,
    StaffContext,
    SubscriberId,
    VaultDep,
    client_ip,
)
from perkflow.web.forms import refuse, yuan_to_fen
from perkflow.web.i18n import validation_problem
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)
# The device cookie the coupon pages set too (coupons/pages/_common.py): one id per browser.
DEVICE_COOKIE = "pf_device"


# ---- helpers ------------------------------------------------------------------------------


def _local_input(request: Request, text: str, *, field: str) -> datetime | None:
    """A `datetime-local` form value, read in the operator's zone."""
    if not text.strip():
        return None
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValidationFailed("not a date and time", field=field) from exc
    zone = str(request.app.state.settings.timezone)
    return naive.replace(tzinfo=ZoneInfo(zone)) if naive.tzinfo is None else naive


def _device_id(request: Request) -> str:
    value = request.cookies.get(DEVICE_COOKIE, "")
    return value if re.fullmatch(r"[A-Za-z0-9_\-]{8,64}", value) else ""


def _with_device(request: Request, response: Response) -> Response:
    """Give the browser a device id cookie if it has none (per-device signals)."""
    if not _device_id(request):
        response.set_cookie(
            DEVICE_COOKIE, token(16), max_age=365 * 86400, httponly=True, samesite="lax"
        )
    return response


def _error_text(exc: PerkflowError) -> str:
    return (f"{exc.field}: " if exc.field else "") + exc.message


def _require_editor(staff: StaffContext) -> None:
    org.require(staff.actor, Perm.COUPONS_EDIT)


async def _form_dict(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


# ---- H5: red envelopes -------------------------------------------------------------------


def _envelopes(
    request: Request,
    session: DbSession,
    vault: VaultDep,
    sid: int,
    *,
    results: list[Any] | None = None,
    prizes: dict[int, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    programs = service.running_programs(session, subscriber_id=sid)
    mine = {e.program_id: e for e in service.my_envelopes(session, subscriber_id=sid)}
    links = {
        pid: str(
            request.url_for(
                "h5_help", token=service.share_token(vault, envelope_id=e.id, via_id=sid)
            )
        )
        for pid, e in mine.items()
    }
    tiers = {
        p.id: {t.tier: t for t in service.program_tiers(session, program_id=p.id)}
        for p in programs
        if p.kind == ProgramKind.LOTTERY
    }
    response = render(
        request,
        "h5/envelopes.html",
        {
            "programs": programs,
            "mine": mine,
            "links": links,
            "tiers": tiers,
            "results": results,
            "prizes": prizes or {},
            "error": error,
        },
        status_code=status_code,
    )
    return _with_device(request, response)


@router.get("/h5/envelopes")
def envelopes(request: Request, sid: SubscriberId, session: DbSession, vault: VaultDep) -> Response:
    return _envelopes(request, session, vault, sid)


@router.post("/h5/envelopes/{program_id}/draw", dependencies=[CsrfProtected])
def draw(
    request: Request, program_id: IdParam, sid: SubscriberId, session: DbSession, vault: VaultDep
) -> Response:
    try:
        results = service.draw_lottery(
            session,
            actor=subscriber_actor(sid, ip=client_ip(request)),
            vault=vault,
            program_id=program_id,
            subscriber_id=sid,
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(404,))
        return _envelopes(request, session, vault, sid, error=exc.message, status_code=status)
    prizes = service.draw_prizes(
        session, program_id=program_id, draw_nos=[r.draw_no for r in results]
    )
    return _envelopes(request, session, vault, sid, results=results, prizes=prizes)


@router.post("/h5/envelopes/{program_id}/share", dependencies=[CsrfProtected])
def start_share(
    request: Request, program_id: IdParam, sid: SubscriberId, session: DbSession, vault: VaultDep
) -> Response:
    try:
        service.start_share(
            session,
            actor=subscriber_actor(sid, ip=client_ip(request)),
            program_id=program_id,
            subscriber_id=sid,
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(404,))
        return _envelopes(request, session, vault, sid, error=exc.message, status_code=status)
    return RedirectResponse("/h5/envelopes", status_code=303)


def _help_page(
    request: Request,
    session: DbSession,
    vault: VaultDep,
    sid: int,
    help_token: str,
    *,
    done: bool = False,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    envelope_id, via_id = service.read_share_token(vault, help_token)
    envelope = service.get_envelope(session, envelope_id=envelope_id)
    helps = service.helps_of(session, envelope_id=envelope.id)
    onward = str(
        request.url_for(
            "h5_help", token=service.share_token(vault, envelope_id=envelope.id, via_id=sid)
        )
    )
    response = render(
        request,
        "h5/help.html",
        {
            "envelope": envelope,
            "owner": service.masked_phone(session, vault=vault, subscriber_id=envelope.owner_id),
            "helpers": [
                service.masked_phone(session, vault=vault, subscriber_id=h.helper_id) for h in helps
            ],
            "is_owner": envelope.owner_id == sid,
            "helped": any(h.helper_id == sid for h in helps),
            "token": help_token,
            "onward": onward,
            "done": done,
            "error": error,
            "via_id": via_id,
        },
        status_code=status_code,
    )
    return _with_device(request, response)


@router.get("/h5/envelopes/help/{token}", name="h5_help")
def help_page(
    request: Request, token: str, sid: SubscriberId, session: DbSession, vault: VaultDep
) -> Response:
    return _help_page(request, session, vault, sid, token)


@router.post("/h5/envelopes/help/{token}", dependencies=[CsrfProtected])
def help_open(
    request: Request, token: str, sid: SubscriberId, session: DbSession, vault: VaultDep
) -> Response:
    envelope_id, via_id = service.read_share_token(vault, token)
    try:
        service.help_open(
            session,
            actor=subscriber_actor(sid, ip=client_ip(request)),
            envelope_id=envelope_id,
            helper_id=sid,
            via_id=via_id,
            device_id=_device_id(request) or None,
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(404,))
        return _help_page(
            request, session, vault, sid, token, error=exc.message, status_code=status
        )
    return _help_page(request, session, vault, sid, token, done=True)


# ---- console: red envelopes --------------------------------------------------------------


@router.get("/console/envelopes")
def program_list(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    return render(
        request,
        "envelopes/console_programs.html",
        {
            "programs": service.list_programs(session, actor=staff.actor),
            "error": None,
            "form": {},
        },
    )


# A typed percentage: decimal digits, read exactly (`inf`, `nan`, `-5` or `1e3` are no chance).
_PERCENT = re.compile(r"(?:[0-9]{1,7}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})")


def _ppm_of_percent(text: str, *, field: str) -> int:
    """Parts per million of a typed chance in percent (`0.5` is 5,000), rounded half to even."""
    if not _PERCENT.fullmatch(text):
        raise ValidationFailed("a probability in percent", field=field)
    return int((Decimal(text) * 10_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def _program_spec(request: Request, form: dict[str, str]) -> ProgramSpec:
    kind = form.get("kind", "lottery")
    tiers = []
    for i in (1, 2, 3):
        prize = form.get(f"tier{i}_yuan", "").strip()
        pct = form.get(f"tier{i}_percent", "").strip()
        if not prize and not pct:
            continue
        ppm = _ppm_of_percent(pct, field=f"tier{i}_percent")
        batch = form.get(f"tier{i}_batch", "").strip()
        if batch and not batch.isdigit():
            raise ValidationFailed("a coupon batch id", field=f"tier{i}_batch")
        tiers.append(
            TierSpec(
                tier=i,
                name_zh=form.get(f"tier{i}_name", "").strip() or f"{i}",
                name_en=form.get(f"tier{i}_name", "").strip() or f"Tier {i}",
                prize_fen=yuan_to_fen(prize, field=f"tier{i}_yuan"),
                weight_ppm=max(ppm, 1),
                prize_batch_id=int(batch) if batch else None,
            )
        )
    helpers = form.get("helpers_needed", "").strip()
    share = form.get("share_yuan", "").strip()
    limit = form.get("limit_per_subscriber", "").strip()
    try:
        return ProgramSpec(
            code=form.get("code", "").strip(),
            name_zh=form.get("name_zh", "").strip(),
            name_en=form.get("name_en", "").strip(),
            kind=ProgramKind(kind) if kind in ("lottery", "share") else ProgramKind.LOTTERY,
            owner_region=form.get("owner_region", "").strip() or None,
            budget_fen=yuan_to_fen(form.get("budget_yuan", ""), field="budget_yuan"),
            limit_per_subscriber=int(limit) if limit.isdigit() else 1,
            tiers=tiers,
            share_amount_fen=yuan_to_fen(share, field="share_yuan") if share else None,
            helpers_needed=int(helpers) if helpers.isdigit() else None,
            starts_at=_local_input(request, form.get("starts_at", ""), field="starts_at"),
            ends_at=_local_input(request, form.get("ends_at", ""), field="ends_at"),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(
            validation_problem(first), field=".".join(str(p) for p in first["loc"])
        ) from exc


@router.post("/console/envelopes/new", dependencies=[CsrfProtected])
async def program_create(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    form = await _form_dict(request)
    try:
        program = service.create_program(
            session, actor=staff.actor, spec=_program_spec(request, form)
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(403,))
        return render(
            request,
            "envelopes/console_programs.html",
            {
                "programs": service.list_programs(session, actor=staff.actor),
                "error": _error_text(exc),
                "form": form,
            },
            status_code=status,
        )
    return RedirectResponse(f"/console/envelopes/{program.id}", status_code=303)


@router.get("/console/envelopes/{program_id}")
def program_detail(
    request: Request, program_id: IdParam, staff: Staff, session: DbSession, vault: VaultDep
) -> Response:
    _require_editor(staff)
    program = service.program_for_edit(session, actor=staff.actor, program_id=program_id)
    reviews = (
        service.review_helps(session, actor=staff.actor, program_id=program.id)
        if program.kind == ProgramKind.SHARE
        else []
    )
    phones: dict[int, str] = {}
    for r in reviews:
        for sid in (r.help.helper_id, r.help.via_id, r.envelope.owner_id):
            if sid not in phones:
                phones[sid] = subscribers.subscriber_home(
                    session, vault=vault, subscriber_id=sid
                ).phone
    return render(
        request,
        "envelopes/console_program.html",
        {
            "program": program,
            "tiers": service.program_tiers(session, program_id=program.id),
            "summary": service.draw_summary(session, program_id=program.id),
            "reviews": reviews,
            "phones": phones,
            "targets": [
                s.value
                for s in ProgramStatus
                if s.value != program.status and s != ProgramStatus.DRAFT
            ],
        },
    )


@router.post("/console/envelopes/{program_id}/status", dependencies=[CsrfProtected])
def program_status(
    program_id: IdParam,
    staff: Staff,
    session: DbSession,
    status: Annotated[str, Form(max_length=16)],
) -> Response:
    _require_editor(staff)
    try:
        target = ProgramStatus(status)
    except ValueError as exc:
        raise ValidationFailed(f"{status!r} is not a status", field="status") from exc
    service.set_program_status(session, actor=staff.actor, program_id=program_id, status=target)
    return RedirectResponse(f"/console/envelopes/{program_id}", status_code=303)
