"""Pages of coupons: H5 claim center and wallet; clerk counter; console editor."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import ValidationError

from perkflow.coupons import reach, tasks
from perkflow.coupons import service as coupons
from perkflow.coupons.rules import (
    CHARSETS,
    BatchStatus,
    CodeSource,
    ValidityKind,
    ValueKind,
)
from perkflow.coupons.schemas import BatchSpec, OfflineEntry
from perkflow.envelopes import service as envelope_service
from perkflow.errors import Forbidden, PerkflowError, ValidationFailed
from perkflow.kit import clock
from perkflow.kit.bounds import IdParam
from perkflow.kit.ids import token
from perkflow.kit.money import parse_yuan
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.web.auth import (
    CsrfProtected,
    DbSession,
    Staff,
    StaffContext,
    SubscriberId,
    VaultDep,
    client_ip,
)
from perkflow.web.i18n import l_, validation_problem
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)
DEVICE_COOKIE = "pf_device"


# ---- helpers ------------------------------------------------------------------------------


def qr_svg(text: str, *, scale: int = 6) -> Markup:
    """A QR code as inline SVG, drawn on the server (no script, works offline)."""
    svg = segno.make(text, error="m", micro=False).svg_inline(scale=scale, border=2, dark="#111")
    return Markup(svg)  # noqa: S704  (segno's own markup; the code is [0-9A-Z] only)


def yuan_to_fen(text: str, *, field: str) -> int:
    """Exact fen of a typed yuan amount (`88`, `12.5`), up to ¥999,999,999.99; 422 otherwise."""
    try:
        fen = parse_yuan(text)  # the one money parser: decimal digits, never a float
    except ValueError:
        fen = -1
    if not 0 <= fen < 100_000_000_000:
        raise ValidationFailed("give an amount in yuan such as 88 or 12.50", field=field)
    return fen


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


def _local_input(request: Request, text: str, *, field: str) -> datetime | None:
    """A `datetime-local` form value, read in the operator's zone."""
    if not text.strip():
        return None
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValidationFailed("not a date and time", field=field) from exc
    return naive.replace(tzinfo=ZoneInfo(_zone(request))) if naive.tzinfo is None else naive


def _device_id(request: Request) -> str:
    value = request.cookies.get(DEVICE_COOKIE, "")
    return value if re.fullmatch(r"[A-Za-z0-9_\-]{8,64}", value) else ""


def _with_device(request: Request, response: Response) -> Response:
    """Give the browser a device id cookie if it has none (per-device rate limits)."""
    if not _device_id(request):
        response.set_cookie(
            DEVICE_COOKIE, token(16), max_age=365 * 86400, httponly=True, samesite="lax"
        )
    return response


def _csv(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\s，、]+", text) if p.strip()]


def _error_text(exc: PerkflowError) -> str:
    return (f"{exc.field}: " if exc.field else "") + exc.message


# ---- H5: claim center, wallet ------------------------------------------------------------


def _claim_center(
    request: Request,
    session: DbSession,
    sid: int,
    *,
    error: str | None = None,
    error_code: str | None = None,
    status_code: int = 200,
) -> Response:
    offers = coupons.claim_center(session, subscriber_id=sid)
    response = render(
        request,
        "h5/coupons.html",
        {
            "offers": offers,
            "keys": {o.batch.id: token(12) for o in offers},
            "error": error,
            "error_code": error_code,
        },
        status_code=status_code,
    )
    return _with_device(request, response)


@router.get("/h5/coupons")
def claim_center(request: Request, sid: SubscriberId, session: DbSession) -> Response:
    return _claim_center(request, session, sid)


@router.post("/h5/coupons/{batch_id}/claim", dependencies=[CsrfProtected])
def claim(
    request: Request,
    batch_id: IdParam,
    sid: SubscriberId,
    session: DbSession,
    vault: VaultDep,
    idempotency_key: Annotated[str, Form(min_length=8, max_length=64)],
) -> Response:
    device = _device_id(request) or None
    try:
        if not coupons.seen_sold_out(session, batch_id=batch_id):
            coupons.admit_claim_attempt(
                session, subscriber_id=sid, device_id=device, batch_id=batch_id
            )
            session.commit()  # the attempt counts even if the claim is refused
        outcome = coupons.claim_coupon(
            session,
            actor=coupons.subscriber_actor(sid, ip=client_ip(request)),
            vault=vault,
            batch_id=batch_id,
            subscriber_id=sid,
            idempotency_key=idempotency_key,
            channel="h5",
            device_id=device,
            zone=_zone(request),
        )
    except PerkflowError as exc:
        if exc.status_code == 404:
            raise
        session.rollback()
        return _claim_center(
            request,
            session,
            sid,
            error=exc.message,
            error_code=exc.code,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/h5/wallet/{outcome.coupon.id}?claimed=1", status_code=303)


@router.get("/h5/wallet")
def wallet(request: Request, sid: SubscriberId, session: DbSession, vault: VaultDep) -> Response:
    items = coupons.wallet(
        session, actor=coupons.subscriber_actor(sid), vault=vault, subscriber_id=sid
    )
    envelopes = envelope_service.my_envelopes(session, subscriber_id=sid)
    return render(
        request,
        "h5/wallet.html",
        {
            "items": items,
            "envelopes": envelopes,
            "prizes": envelope_service.prizes_of(session, subscriber_id=sid),
            "balance": envelope_service.cash_balance(session, subscriber_id=sid),
        },
    )


@router.get("/h5/wallet/{coupon_id}")
def wallet_item(
    request: Request,
    coupon_id: IdParam,
    sid: SubscriberId,
    session: DbSession,
    vault: VaultDep,
    claimed: int = 0,
) -> Response:
    item = coupons.wallet_item(
        session, actor=coupons.subscriber_actor(sid), vault=vault, coupon_id=coupon_id
    )
    return render(
        request,
        "h5/coupon.html",
        {"item": item, "qr": qr_svg(item.code), "claimed": bool(claimed)},
    )


# ---- clerk counter -----------------------------------------------------------------------


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
            order_fen=yuan_to_fen(order_yuan, field="order_yuan"),
        )
        session.commit()
    except coupons.Refused as exc:
        session.rollback()
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": exc.reason.value, "text": exc.message},
            status_code=409,
        )
    except ValidationFailed as exc:
        session.rollback()
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": "invalid", "text": _error_text(exc)},
            status_code=422,
        )
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
        session.commit()
    except PerkflowError as exc:
        if exc.status_code in (403, 404):
            raise
        session.rollback()
        return _counter(
            request,
            staff,
            session,
            message={"ok": False, "reason": "reverse", "text": exc.message},
            status_code=exc.status_code,
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
                    order_fen=yuan_to_fen(parts[2], field=f"line {n}"),
                    recorded_at=at or clock.now(),
                )
            )
        if not entries:
            raise ValidationFailed("no entries", field="lines")
        results = coupons.redeem_offline(session, actor=staff.actor, vault=vault, entries=entries)
    except (ValidationFailed, ValidationError) as exc:
        session.rollback()
        text = (
            _error_text(exc)
            if isinstance(exc, ValidationFailed)
            else validation_problem(exc.errors()[0])
        )
        return render(
            request,
            "coupons/clerk_offline.html",
            {"results": None, "error": text, "text": lines},
            status_code=422,
        )
    return render(
        request, "coupons/clerk_offline.html", {"results": results, "error": None, "text": ""}
    )


# ---- console: batches --------------------------------------------------------------------


def _require_editor(staff: StaffContext) -> None:
    org.require(staff.actor, Perm.COUPONS_EDIT)


@router.get("/console/coupons")
def batch_list(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    batches = coupons.list_batches(session, actor=staff.actor)
    levels = coupons.stock_levels(session, batch_ids=[b.id for b in batches])
    return render(request, "coupons/console_list.html", {"batches": batches, "levels": levels})


def _form_defaults(request: Request) -> dict[str, Any]:
    return {
        "code": "",
        "name_zh": "",
        "name_en": "",
        "owner_region": "",
        "value_kind": "amount",
        "amount_yuan": "10",
        "percent_off": "",
        "cap_yuan": "",
        "min_spend_yuan": "0",
        "scope_stores": "",
        "scope_regions": "",
        "scope_partners": "",
        "scope_categories": "",
        "validity_kind": "days",
        "valid_from": "",
        "valid_until": "",
        "valid_days": "30",
        "claim_starts_at": "",
        "claim_ends_at": "",
        "flash_sale": "",
        "stock_total": "1000",
        "shard_count": "",
        "limit_total": "1",
        "limit_per_day": "",
        "code_source": "auto",
        "code_charset": "alnum",
        "code_prefix": "",
        "code_length": "10",
        "reversal_minutes": "30",
    }


def _form_of(batch: Any, request: Request) -> dict[str, Any]:
    zone = ZoneInfo(_zone(request))

    def local(value: datetime | None) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if value else ""

    def yuan(fen: int | None) -> str:
        return "" if fen is None else f"{fen / 100:.2f}"

    return {
        "code": batch.code,
        "name_zh": batch.name_zh,
        "name_en": batch.name_en,
        "owner_region": batch.owner_region,
        "value_kind": batch.value_kind,
        "amount_yuan": yuan(batch.amount_fen),
        "percent_off": batch.percent_off or "",
        "cap_yuan": yuan(batch.cap_fen),
        "min_spend_yuan": yuan(batch.min_spend_fen),
        "scope_stores": ", ".join(batch.scope_stores),
        "scope_regions": ", ".join(p.split("/")[-1] for p in batch.scope_regions),
        "scope_partners": ", ".join(batch.scope_partners),
        "scope_categories": ", ".join(batch.scope_categories),
        "validity_kind": batch.validity_kind,
        "valid_from": local(batch.valid_from),
        "valid_until": local(batch.valid_until),
        "valid_days": batch.valid_days or "",
        "claim_starts_at": local(batch.claim_starts_at),
        "claim_ends_at": local(batch.claim_ends_at),
        "flash_sale": "on" if batch.flash_sale else "",
        "stock_total": batch.stock_total,
        "shard_count": batch.shard_count,
        "limit_total": batch.limit_total,
        "limit_per_day": batch.limit_per_day or "",
        "code_source": batch.code_source,
        "code_charset": next(
            (k for k, v in CHARSETS.items() if v == batch.code_charset), batch.code_charset
        ),
        "code_prefix": batch.code_prefix,
        "code_length": batch.code_length,
        "reversal_minutes": batch.reversal_window_s // 60,
    }


def _spec_from(request: Request, form: dict[str, str]) -> BatchSpec:
    """A batch spec from the editor's fields; 422 naming the field on bad input."""

    def opt_int(name: str) -> int | None:
        text = form.get(name, "").strip()
        if not text:
            return None
        if not text.isdigit():
            raise ValidationFailed("a whole number", field=name)
        return int(text)

    def opt_yuan(name: str) -> int | None:
        text = form.get(name, "").strip()
        return yuan_to_fen(text, field=name) if text else None

    reversal = opt_int("reversal_minutes")
    values: dict[str, Any] = {
        "code": form.get("code", "").strip(),
        "name_zh": form.get("name_zh", "").strip(),
        "name_en": form.get("name_en", "").strip(),
        "owner_region": form.get("owner_region", "").strip() or None,
        "value_kind": form.get("value_kind", "amount"),
        "amount_fen": opt_yuan("amount_yuan") or 0,
        "percent_off": opt_int("percent_off"),
        "cap_fen": opt_yuan("cap_yuan"),
        "min_spend_fen": opt_yuan("min_spend_yuan") or 0,
        "scope_stores": _csv(form.get("scope_stores", "")),
        "scope_regions": _csv(form.get("scope_regions", "")),
        "scope_partners": _csv(form.get("scope_partners", "")),
        "scope_categories": _csv(form.get("scope_categories", "")),
        "validity_kind": form.get("validity_kind", "days"),
        "valid_from": _local_input(request, form.get("valid_from", ""), field="valid_from"),
        "valid_until": _local_input(request, form.get("valid_until", ""), field="valid_until"),
        "valid_days": opt_int("valid_days"),
        "claim_starts_at": _local_input(
            request, form.get("claim_starts_at", ""), field="claim_starts_at"
        ),
        "claim_ends_at": _local_input(
            request, form.get("claim_ends_at", ""), field="claim_ends_at"
        ),
        "flash_sale": form.get("flash_sale") == "on",
        "stock_total": opt_int("stock_total") or 0,
        "shard_count": opt_int("shard_count"),
        "limit_total": opt_int("limit_total") or 1,
        "limit_per_day": opt_int("limit_per_day"),
        "code_source": form.get("code_source", "auto"),
        "code_charset": form.get("code_charset", "alnum").strip() or "alnum",
        "code_prefix": form.get("code_prefix", "").strip().upper(),
        "code_length": opt_int("code_length") or 10,
        "reversal_window_s": reversal * 60 if reversal is not None else None,
    }
    try:
        return BatchSpec(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ValidationFailed(validation_problem(first), field=field) from exc


def _editor(
    request: Request,
    *,
    form: dict[str, Any],
    batch_id: int | None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "coupons/console_edit.html",
        {
            "form": form,
            "batch_id": batch_id,
            "error": error,
            "value_kinds": [k.value for k in ValueKind],
            "validity_kinds": [k.value for k in ValidityKind],
            "code_sources": [k.value for k in CodeSource],
            "charsets": list(CHARSETS),
        },
        status_code=status_code,
    )


@router.get("/console/coupons/new")
def batch_new(request: Request, staff: Staff) -> Response:
    _require_editor(staff)
    return _editor(request, form=_form_defaults(request), batch_id=None)


async def _form_dict(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/console/coupons/new", dependencies=[CsrfProtected])
async def batch_create(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    form = await _form_dict(request)
    try:
        batch = coupons.create_batch(session, actor=staff.actor, spec=_spec_from(request, form))
    except PerkflowError as exc:
        if exc.status_code == 403:
            raise
        session.rollback()
        return _editor(
            request,
            form={**_form_defaults(request), **form},
            batch_id=None,
            error=_error_text(exc),
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/console/coupons/{batch.id}", status_code=303)


@router.get("/console/coupons/{batch_id}/edit")
def batch_edit(request: Request, batch_id: IdParam, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    batch = coupons.get_batch(session, actor=staff.actor, batch_id=batch_id)
    return _editor(request, form=_form_of(batch, request), batch_id=batch.id)


@router.post("/console/coupons/{batch_id}/edit", dependencies=[CsrfProtected])
async def batch_update(
    request: Request, batch_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    _require_editor(staff)
    form = await _form_dict(request)
    try:
        coupons.update_batch(
            session, actor=staff.actor, batch_id=batch_id, spec=_spec_from(request, form)
        )
    except PerkflowError as exc:
        if exc.status_code in (403, 404):
            raise
        session.rollback()
        return _editor(
            request,
            form={**_form_defaults(request), **form},
            batch_id=batch_id,
            error=_error_text(exc),
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/console/coupons/{batch_id}", status_code=303)


def _batch_refused(
    request: Request, staff: StaffContext, session: DbSession, batch_id: int, exc: PerkflowError
) -> Response:
    """The batch page again with the refusal shown; 403 and 404 stay errors."""
    if exc.status_code in (403, 404):
        raise exc
    session.rollback()  # nothing of the refused action is kept
    return _batch_page(
        request, staff, session, batch_id, error=_error_text(exc), status_code=exc.status_code
    )


def _batch_page(
    request: Request,
    staff: StaffContext,
    session: DbSession,
    batch_id: int,
    *,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    batch = coupons.get_batch(session, actor=staff.actor, batch_id=batch_id)
    stock = coupons.stock_of(session, actor=staff.actor, batch_id=batch.id)
    jobs = coupons.jobs_of(session, batch_id=batch.id)
    return render(
        request,
        "coupons/console_batch.html",
        {
            "batch": batch,
            "stock": stock,
            "jobs": jobs,
            "stale": {j.id for j in jobs if coupons.job_is_stale(j)},
            "activity": coupons.activity(session, actor=staff.actor, batch_id=batch.id),
            "error": error,
            "notice": notice,
            # Who could redeem it at all: a scope with no store or no real merchant is named.
            "reach": reach.batch_warnings(session, batch=batch),
            "can_edit": staff.actor.can(Perm.COUPONS_EDIT),
            "targets": [
                s.value for s in BatchStatus if s.value != batch.status and s != BatchStatus.DRAFT
            ],
        },
        status_code=status_code,
    )


@router.get("/console/coupons/{batch_id}")
def batch_detail(request: Request, batch_id: IdParam, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    return _batch_page(request, staff, session, batch_id)


@router.get("/console/coupons/{batch_id}/activity.json")
def batch_activity(
    request: Request, batch_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    _require_editor(staff)
    data = coupons.activity(session, actor=staff.actor, batch_id=batch_id)
    stock = coupons.stock_of(session, actor=staff.actor, batch_id=batch_id)
    zone = ZoneInfo(_zone(request))
    labels = [datetime.fromtimestamp(m * 60, tz=zone).strftime("%H:%M") for m in data["minutes"]]
    return JSONResponse(
        {
            "labels": labels,
            "claims": data["claims"],
            "redemptions": data["redemptions"],
            "remaining": stock.remaining,
            "claimed": stock.claimed,
            "redeemed": stock.redeemed,
            "shards": stock.shards,
        }
    )


@router.post("/console/coupons/{batch_id}/status", dependencies=[CsrfProtected])
def batch_status(
    request: Request,
    batch_id: IdParam,
    staff: Staff,
    session: DbSession,
    status: Annotated[str, Form(max_length=16)],
) -> Response:
    _require_editor(staff)
    try:
        coupons.set_batch_status(
            session, actor=staff.actor, batch_id=batch_id, status=BatchStatus(status)
        )
    except ValueError:
        return _batch_page(
            request,
            staff,
            session,
            batch_id,
            error=l_("status: {status} is not a status", status=repr(status)),
            status_code=422,
        )
    except PerkflowError as exc:
        return _batch_refused(request, staff, session, batch_id, exc)
    return RedirectResponse(f"/console/coupons/{batch_id}", status_code=303)


@router.post("/console/coupons/{batch_id}/stock-additions", dependencies=[CsrfProtected])
def add_stock(
    request: Request,
    batch_id: IdParam,
    staff: Staff,
    session: DbSession,
    quantity: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    _require_editor(staff)
    try:
        text = quantity.strip().replace(",", "")
        if not text.isdigit():
            raise ValidationFailed("a whole number of units", field="quantity")
        coupons.add_stock(session, actor=staff.actor, batch_id=batch_id, quantity=int(text))
    except PerkflowError as exc:
        return _batch_refused(request, staff, session, batch_id, exc)
    return RedirectResponse(f"/console/coupons/{batch_id}", status_code=303)


@router.post("/console/coupons/{batch_id}/codes/generate", dependencies=[CsrfProtected])
def generate_codes(
    request: Request,
    batch_id: IdParam,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    count: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    _require_editor(staff)
    stale = [j for j in coupons.jobs_of(session, batch_id=batch_id) if coupons.job_is_stale(j)]
    try:
        more = count.strip().replace(",", "")
        if more and not more.isdigit():
            raise ValidationFailed("a whole number of codes", field="count")
        if stale:
            job_id = stale[0].id  # a crashed worker's job: resume it where it stopped
        else:
            job_id = coupons.start_code_job(
                session, actor=staff.actor, batch_id=batch_id, count=int(more) if more else None
            ).id
        session.commit()  # the job must exist before its worker looks for it
    except PerkflowError as exc:
        return _batch_refused(request, staff, session, batch_id, exc)
    tasks.start_in_background(request.app.state.sessions, vault=vault, job_id=job_id)
    return RedirectResponse(f"/console/coupons/{batch_id}", status_code=303)


@router.get("/console/coupons/{batch_id}/jobs")
def job_progress(request: Request, batch_id: IdParam, staff: Staff, session: DbSession) -> Response:
    _require_editor(staff)
    batch = coupons.get_batch(session, actor=staff.actor, batch_id=batch_id)
    jobs = coupons.jobs_of(session, batch_id=batch.id)
    return render(
        request,
        "coupons/console_jobs.html",
        {"batch": batch, "jobs": jobs, "stale": {j.id for j in jobs if coupons.job_is_stale(j)}},
    )


@router.post("/console/coupons/{batch_id}/codes/import", dependencies=[CsrfProtected])
async def import_codes(
    request: Request,
    batch_id: IdParam,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    file: Annotated[UploadFile, File()],
) -> Response:
    _require_editor(staff)
    raw = await file.read(20_000_001)
    if len(raw) > 20_000_000:
        return _batch_page(
            request, staff, session, batch_id, error=l_("file: at most 20 MB"), status_code=413
        )
    try:
        report = coupons.import_codes(
            session,
            actor=staff.actor,
            vault=vault,
            batch_id=batch_id,
            codes=raw.decode("utf-8-sig", errors="replace").splitlines(),
        )
    except PerkflowError as exc:
        return _batch_refused(request, staff, session, batch_id, exc)
    notice = f"+{report.added} / {report.duplicates} / {len(report.invalid)}"
    return _batch_page(request, staff, session, batch_id, notice=notice)
