"""Console pages of the subscriber master: search, detail with status history, status change."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.errors import PerkflowError
from perkflow.kit.bounds import IdParam
from perkflow.kit.pagination import Page
from perkflow.membership import service as membership
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from perkflow.web.auth import CsrfProtected, DbSession, Staff, VaultDep
from perkflow.web.forms import refuse
from perkflow.web.i18n import l_
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


def _list(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    *,
    phone: str,
    status: Status | None,
    page: int,
) -> Response:
    error = None
    try:
        rows, total = subscribers.list_subscribers(
            session,
            actor=staff.actor,
            vault=vault,
            status=status,
            phone=phone.strip() or None,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    except PerkflowError as exc:
        if exc.status_code == 403:
            raise
        rows, total, error = [], 0, exc.message
    codes = {r.province_code for r in rows} | {r.city_code for r in rows}
    return render(
        request,
        "subscribers.html",
        {
            "regions": org.regions_by_code(session, codes=codes),
            "rows": rows,
            "page": Page(number=page, size=PAGE_SIZE, total=total),
            "phone": phone,
            "status": status.value if status else "",
            "error": error,
            "statuses": [s.value for s in Status],
        },
        status_code=422 if error else 200,
    )


@router.get("/console/subscribers")
def subscriber_list(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    status: Status | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    # No phone here: a number in a URL lands in access logs, history and referrers (POST below).
    return _list(request, staff, session, vault, phone="", status=status, page=page)


@router.post("/console/subscribers/search", dependencies=[CsrfProtected])
def subscriber_search(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    phone: Annotated[str, Form(max_length=20)] = "",
    status: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    try:
        wanted = Status(status) if status else None
    except ValueError:
        wanted = None
    return _list(request, staff, session, vault, phone=phone, status=wanted, page=1)


def _detail(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    subscriber_id: int,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    sub = subscribers.get_subscriber(
        session, actor=staff.actor, vault=vault, subscriber_id=subscriber_id
    )
    history = subscribers.status_history(session, actor=staff.actor, subscriber_id=subscriber_id)
    return render(
        request,
        "subscriber.html",
        {
            "regions": org.regions_by_code(session, codes={sub.province_code, sub.city_code}),
            "sub": sub,
            "history": history,
            "error": error,
            "can_change": staff.actor.can(Perm.SUBSCRIBERS_STATUS),
            "targets": [s.value for s in Status if s.value != sub.status.value],
        },
        status_code=status_code,
    )


@router.get("/console/subscribers/{subscriber_id}")
def subscriber_detail(
    request: Request, subscriber_id: IdParam, staff: Staff, session: DbSession, vault: VaultDep
) -> Response:
    return _detail(request, staff, session, vault, subscriber_id)


@router.post("/console/subscribers/{subscriber_id}/status", dependencies=[CsrfProtected])
def subscriber_change_status(
    request: Request,
    subscriber_id: IdParam,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    status: Annotated[str, Form()],
    reason: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    try:
        target = Status(status)
    except ValueError:
        return _detail(
            request,
            staff,
            session,
            vault,
            subscriber_id,
            error=l_("status: {status} is not a status", status=repr(status)),
            status_code=422,
        )
    try:
        membership.change_status(  # grants, coupons and membership follow in this transaction
            session,
            actor=staff.actor,
            subscriber_id=subscriber_id,
            status=target,
            reason=reason,
            source="console",
            zone=str(request.app.state.settings.timezone),
            mart=request.app.state.mart,
        )
    except PerkflowError as exc:
        answer = refuse(request, session, exc)
        field = f"{exc.field}: " if exc.field else ""
        return _detail(
            request,
            staff,
            session,
            vault,
            subscriber_id,
            error=field + exc.message,
            status_code=answer,
        )
    return RedirectResponse(f"/console/subscribers/{subscriber_id}", status_code=303)
