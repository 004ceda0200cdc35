"""Grant pages: console search by phone, dead letters and re-drive, chart data; H5 my benefits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from perkflow.errors import PerkflowError
from perkflow.grants import service as grants
from perkflow.kit.bounds import IdParam
from perkflow.kit.crypto import Vault
from perkflow.kit.pagination import Page
from perkflow.subscribers.service import SubscriberView
from perkflow.web.auth import CsrfProtected, DbSession, Staff, SubscriberId, VaultDep, client_ip
from perkflow.web.forms import refuse
from perkflow.web.h5_usage import usage_facts
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


def _search(
    request: Request, staff: Staff, session: DbSession, vault: VaultDep, *, phone: str
) -> Response:
    sub: SubscriberView | None = None
    rows: list[grants.GrantRow] = []
    error, status_code = None, 200
    if phone.strip():
        try:
            sub, rows = grants.search_by_phone(
                session, actor=staff.actor, vault=vault, phone=phone.strip()
            )
        except PerkflowError as exc:
            if exc.status_code == 403:
                raise
            error, status_code = exc.message, exc.status_code
    else:
        grants.require_read(staff.actor)  # the empty form needs the same permission
    return render(
        request,
        "grants/search.html",
        {"phone": phone, "sub": sub, "rows": rows, "error": error},
        status_code=status_code,
    )


@router.get("/console/grants")
def grant_search_form(
    request: Request, staff: Staff, session: DbSession, vault: VaultDep
) -> Response:
    # No phone here: a number in a URL lands in access logs, history and referrers (POST below).
    return _search(request, staff, session, vault, phone="")


@router.post("/console/grants/search", dependencies=[CsrfProtected])
def grant_search(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    phone: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    return _search(request, staff, session, vault, phone=phone)


def _dead_letters(
    request: Request,
    staff: Staff,
    session: DbSession,
    page: int,
    *,
    error: str | None = None,
    done: int | None = None,
    status_code: int = 200,
) -> Response:
    rows, total = grants.dead_letters(
        session, actor=staff.actor, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    return render(
        request,
        "grants/dead_letters.html",
        {
            "rows": rows,
            "page": Page(number=page, size=PAGE_SIZE, total=total),
            "error": error,
            "done": done,
        },
        status_code=status_code,
    )


@router.get("/console/grants/dead-letters")
def dead_letter_list(
    request: Request,
    staff: Staff,
    session: DbSession,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    redriven: int | None = None,
) -> Response:
    return _dead_letters(request, staff, session, page, done=redriven)


@router.post("/console/grants/dead-letters/{message_id}/redrive", dependencies=[CsrfProtected])
def dead_letter_redrive(
    request: Request, message_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    try:
        grants.redrive(
            session,
            actor=staff.actor,
            message_id=message_id,
            zone=request.app.state.settings.timezone,
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc)
        return _dead_letters(request, staff, session, 1, error=exc.message, status_code=status)
    return RedirectResponse(f"/console/grants/dead-letters?redriven={message_id}", status_code=303)


@router.get("/console/benefits/{benefit_id}/grants-per-day.json")
def grants_per_day(
    request: Request,
    benefit_id: IdParam,
    staff: Staff,
    session: DbSession,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> Response:
    return JSONResponse(
        grants.grants_per_day(
            session,
            actor=staff.actor,
            benefit_id=benefit_id,
            days=days,
            zone=request.app.state.settings.timezone,
        )
    )


def _my_benefits(
    request: Request,
    sid: int,
    session: DbSession,
    *,
    vault: Vault,
    revealed: dict[int, tuple[str, str | None]] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    rows = grants.my_grants(session, subscriber_id=sid)
    response = render(
        request,
        "h5/benefits.html",
        {
            "rows": rows,
            "usage": usage_facts(session, vault=vault, subscriber_id=sid, rows=rows),
            "revealed": revealed or {},
            "error": error,
        },
        status_code=status_code,
    )
    # A revealed code must not linger in a shared browser's cache.
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/h5/benefits")
def my_benefits(
    request: Request, sid: SubscriberId, session: DbSession, vault: VaultDep
) -> Response:
    return _my_benefits(request, sid, session, vault=vault)


@router.post("/h5/benefits/{grant_id}/reveal", dependencies=[CsrfProtected])
def reveal_code(
    request: Request, grant_id: IdParam, sid: SubscriberId, session: DbSession, vault: VaultDep
) -> Response:
    actor = grants.subscriber_actor(subscriber_id=sid, ip=client_ip(request))
    try:
        code, pin = grants.reveal_card_code(session, actor=actor, vault=vault, grant_id=grant_id)
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(404,))
        return _my_benefits(
            request, sid, session, vault=vault, error=exc.message, status_code=status
        )
    return _my_benefits(request, sid, session, vault=vault, revealed={grant_id: (code, pin)})
