"""Console pages of coupon batches: list, editor, stock, status, codes and their jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.background import BackgroundTask

from perkflow.coupons import reach, tasks
from perkflow.coupons import service as coupons
from perkflow.coupons.rules import (
    CHARSETS,
    BatchStatus,
    CodeSource,
    CouponValidity,
    ValueKind,
)
from perkflow.coupons.schemas import BatchSpec
from perkflow.errors import PerkflowError, ValidationFailed
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
from perkflow.web.i18n import l_, validation_problem
from perkflow.web.render import render

from ._common import _csv, _error_text, _local_input, _zone, router


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
            "validity_kinds": [k.value for k in CouponValidity],
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
        status = refuse(request, session, exc, let_through=(403,))
        return _editor(
            request,
            form={**_form_defaults(request), **form},
            batch_id=None,
            error=_error_text(exc),
            status_code=status,
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
        status = refuse(request, session, exc)
        return _editor(
            request,
            form={**_form_defaults(request), **form},
            batch_id=batch_id,
            error=_error_text(exc),
            status_code=status,
        )
    return RedirectResponse(f"/console/coupons/{batch_id}", status_code=303)


def _batch_refused(
    request: Request, staff: StaffContext, session: DbSession, batch_id: int, exc: PerkflowError
) -> Response:
    """The batch page again with the refusal shown, nothing of it kept; 403 and 404 stay errors."""
    status = refuse(request, session, exc)
    return _batch_page(
        request, staff, session, batch_id, error=_error_text(exc), status_code=status
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
    except PerkflowError as exc:
        return _batch_refused(request, staff, session, batch_id, exc)
    # The job must exist before its worker looks for it: the worker starts once the response
    # is sent, after the request's transaction has committed (web/auth.DbSession).
    start = BackgroundTask(
        tasks.start_in_background, request.app.state.sessions, vault=vault, job_id=job_id
    )
    return RedirectResponse(f"/console/coupons/{batch_id}", status_code=303, background=start)


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
