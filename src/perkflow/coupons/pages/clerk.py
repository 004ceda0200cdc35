"""The clerk counter: look up, redeem and reverse coupons, offline uploads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from perkflow.coupons import service as coupons
from perkflow.coupons.schemas import OfflineEntry
from perkflow.errors import Forbidden, PerkflowError, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.bounds import IdParam
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.web.auth import (
    CsrfProtected,
    DbSession,
    Staff,
    StaffContext,
    VaultDep,
)
from perkflow.web.forms import refuse, yuan_to_fen
from perkflow.web.i18n import validation_problem
from perkflow.web.render import render

from ._common import _error_text, _local_input, _zone, router

# The counter takes what the API takes (coupons.schemas.RedeemIn, OfflineEntry): at most
# ¥1,000,000 an order, which the redemption's order column holds.
ORDER_FEN_MAX = 100_000_000


def _require_clerk(staff: StaffContext) -> None:
    org.require(staff.actor, Perm.REDEEM)
    if staff.region.level != "store":
        raise Forbidden("the counter page is for store accounts")


def _counter(
    request: Request,
    staff: StaffContext,
    session: DbSession,
    *,
    message: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    today = coupons.store_today(session, actor=staff.actor, zone=_zone(request))
    return render(
        request,
        "coupons/clerk.html",
        {
            "today": today,
            "total_off": sum(
                t.redemption.discount_fen for t in today if t.redemption.status == "done"
            ),
            "message": message,
        },
        status_code=status_code,
    )


@router.get("/clerk")
def counter(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_clerk(staff)
    return _counter(request, staff, session)


@router.get("/clerk/lookup")
def lookup(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    code: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    _require_clerk(staff)
    if not code.strip():
        return RedirectResponse("/clerk", status_code=303)
    try:
        card = coupons.look_up_coupon(session, actor=staff.actor, vault=vault, code=code)
    except coupons.Refused as exc:
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": exc.reason.value, "text": exc.message},
            status_code=404,
        )
    return render(request, "coupons/clerk_card.html", {"card": card, "code": code.strip()})


@router.post("/clerk/redeem", dependencies=[CsrfProtected])
def redeem(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    code: Annotated[str, Form(max_length=64)],
    order_yuan: Annotated[str, Form(max_length=16)],
) -> Response:
    _require_clerk(staff)
    try:
        redemption = coupons.redeem_coupon(
            session,
            actor=staff.actor,
            vault=vault,
            code=code,
            order_fen=yuan_to_fen(order_yuan, field="order_yuan", most=ORDER_FEN_MAX),
        )
    except coupons.Refused as exc:
        status = refuse(request, session, exc)
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": exc.reason.value, "text": exc.message},
            status_code=status,
        )
    except ValidationFailed as exc:
        status = refuse(request, session, exc)
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": "invalid", "text": _error_text(exc)},
            status_code=status,
        )
    # The counter below reads this redemption in the same transaction, which commits before
    # the page is sent (web/auth.DbSession).
    return _counter(
        request,
        staff,
        session,
        message={"ok": True, "off": redemption.discount_fen, "order": redemption.order_fen},
    )


@router.post("/clerk/redemptions/{redemption_id}/reverse", dependencies=[CsrfProtected])
def reverse(
    request: Request,
    redemption_id: IdParam,
    staff: Staff,
    session: DbSession,
    reason: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    _require_clerk(staff)
    try:
        coupons.reverse_redemption(
            session, actor=staff.actor, redemption_id=redemption_id, reason=reason or "counter"
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc)
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": "reverse", "text": exc.message},
            status_code=status,
        )
    return _counter(request, staff, session, message={"ok": True, "reversed": redemption_id})


@router.get("/clerk/offline")
def offline_form(request: Request, staff: Staff) -> Response:
    _require_clerk(staff)
    return render(
        request, "coupons/clerk_offline.html", {"results": None, "error": None, "text": ""}
    )


@router.post("/clerk/offline", dependencies=[CsrfProtected])
def offline_upload(
    request: Request,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    lines: Annotated[str, Form(max_length=200_000)],
) -> Response:
    """Lines of `reference, code, amount in yuan, local time (YYYY-MM-DD HH:MM)`."""
    _require_clerk(staff)
    entries = []
    try:
        for n, line in enumerate(lines.splitlines(), start=1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 4:
                raise ValidationFailed(f"line {n}: reference, code, amount, time", field="lines")
            at = _local_input(request, parts[3].replace(" ", "T"), field=f"line {n}")
            entries.append(
                OfflineEntry(
                    client_ref=parts[0],
                    code=parts[1],
                    order_fen=yuan_to_fen(parts[2], field=f"line {n}", most=ORDER_FEN_MAX),
                    recorded_at=at or clock.now(),
                )
            )
        if not entries:
            raise ValidationFailed("no entries", field="lines")
        results = coupons.redeem_offline(session, actor=staff.actor, vault=vault, entries=entries)
    except (ValidationFailed, ValidationError) as exc:
        text = (
            _error_text(exc)
            if isinstance(exc, ValidationFailed)
            else validation_problem(exc.errors()[0])
        )
        # A 422 page: nothing of the upload is kept (render dooms the request's transaction).
        return render(
            request,
            "coupons/clerk_offline.html",
            {"results": None, "error": text, "text": lines},
            status_code=422,
        )
    return render(
        request, "coupons/clerk_offline.html", {"results": results, "error": None, "text": ""}
    )
