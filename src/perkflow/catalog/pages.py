"""Console pages of the catalog: benefit list and editor, card-code pools, partners."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.models import Benefit, CardCodeLot, Partner
from perkflow.catalog.rules import (
    BenefitStatus,
    Category,
    FulfilmentKind,
    ValidityKind,
    lifecycle_problem,
)
from perkflow.catalog.schemas import (
    BenefitCreate,
    BenefitUpdate,
    PartnerCreate,
    PartnerUpdate,
    parse_input,
)
from perkflow.db import unit_of_work
from perkflow.errors import Forbidden, NotFound, PerkflowError, ValidationFailed
from perkflow.kit.bounds import IdParam
from perkflow.kit.ids import token
from perkflow.kit.pagination import Page
from perkflow.org.rules import Actor, Perm
from perkflow.web.auth import CsrfProtected, DbSession, Staff, StaffContext, VaultDep
from perkflow.web.forms import refuse, yuan_to_fen
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


async def _form_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields (Starlette caches the parsed form for the CSRF check too)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


FormFields = Annotated[dict[str, str], Depends(_form_fields)]


def _can_edit(staff: StaffContext) -> bool:
    return staff.actor.can(Perm.CATALOG_EDIT)


def _require_edit(staff: StaffContext) -> None:
    if not _can_edit(staff):
        raise Forbidden(f"your role may not do this ({Perm.CATALOG_EDIT.value})")


def _error_text(exc: PerkflowError) -> str:
    # Service messages already start with the field; others get it prefixed.
    if exc.field and not exc.message.startswith(f"{exc.field}:"):
        return f"{exc.field}: {exc.message}"
    return exc.message


def _yuan(value: int | None) -> str:
    if value is None:
        return ""
    sign = "-" if value < 0 else ""
    whole, cents = divmod(abs(value), 100)
    return f"{sign}{whole}.{cents:02d}"


def _fen(form: dict[str, str], name: str, field: str) -> int:
    # Signed: the benefit's schema judges a negative price, with its own message.
    return yuan_to_fen(form.get(name, ""), field=field, signed=True)


def _int(form: dict[str, str], name: str) -> int | None:
    text = form.get(name, "").strip().replace(",", "")
    if not text:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {text!r} is not a whole number", field=name) from exc


def _date(form: dict[str, str], name: str) -> date | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: {text!r} is not a date (YYYY-MM-DD)", field=name) from exc


def _benefit_values(form: dict[str, str], *, with_stock: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name_zh": form.get("name_zh", ""),
        "name_en": form.get("name_en", ""),
        "category": form.get("category", ""),
        "face_value_fen": _fen(form, "face_value", "face_value_fen"),
        "cost_price_fen": _fen(form, "cost_price", "cost_price_fen"),
        "sale_price_fen": _fen(form, "sale_price", "sale_price_fen"),
        "validity_kind": form.get("validity_kind", ""),
        "valid_days": _int(form, "valid_days"),
        "valid_from": _date(form, "valid_from"),
        "valid_until": _date(form, "valid_until"),
        "low_stock_threshold": _int(form, "low_stock_threshold") or 0,
        "limit_per_month": _int(form, "limit_per_month"),
        "limit_total": _int(form, "limit_total"),
        "revocable": form.get("revocable") == "on",
    }
    # Only the fields of the chosen validity kind count; the others are hidden on the form.
    if values["validity_kind"] == ValidityKind.DAYS.value:
        values["valid_from"] = values["valid_until"] = None
    elif values["validity_kind"] == ValidityKind.FIXED.value:
        values["valid_days"] = None
    if with_stock:
        values["stock"] = _int(form, "stock")
    return values


def _benefit_form(benefit: Benefit) -> dict[str, str]:
    """The editor's field values of a stored benefit."""

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    return {
        "code": benefit.code,
        "name_zh": benefit.name_zh,
        "name_en": benefit.name_en,
        "category": benefit.category,
        "fulfilment_kind": benefit.fulfilment_kind,
        "face_value": _yuan(benefit.face_value_fen),
        "cost_price": _yuan(benefit.cost_price_fen),
        "sale_price": _yuan(benefit.sale_price_fen),
        "validity_kind": benefit.validity_kind,
        "valid_days": text(benefit.valid_days),
        "valid_from": text(benefit.valid_from),
        "valid_until": text(benefit.valid_until),
        "stock": text(benefit.stock_total),
        "low_stock_threshold": str(benefit.low_stock_threshold),
        "limit_per_month": text(benefit.limit_per_month),
        "limit_total": text(benefit.limit_total),
        "revocable": "on" if benefit.revocable else "",
    }


def _choices() -> dict[str, list[str]]:
    return {
        "categories": [c.value for c in Category],
        "kinds": [k.value for k in FulfilmentKind],
        "statuses": [s.value for s in BenefitStatus],
        "validity_kinds": [v.value for v in ValidityKind],
    }


def _alerts(session: Session) -> Sequence[Benefit]:
    return catalog.low_stock_alerts(session)


# Authorisation errors are not the form's: they pass through `refuse` to the error page.
_NOT_THE_FORMS = (401, 403, 404)


# ---------------------------------------------------------------- benefits


@router.get("/console/benefits")
def benefit_list(
    request: Request,
    staff: Staff,
    session: DbSession,
    category: str = "",
    status: str = "",
    partner: str = "",
    low: bool = False,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    choices = _choices()
    partners = catalog.list_partners(session, actor=staff.actor)
    by_code = {p.code: p for p in partners}
    rows, total = catalog.list_benefits(
        session,
        actor=staff.actor,
        category=category if category in choices["categories"] else None,
        status=status if status in choices["statuses"] else None,
        partner_id=by_code[partner].id if partner in by_code else None,
        low_stock_only=low,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "catalog/benefits.html",
        {
            **choices,
            "rows": rows,
            "partners": {p.id: p for p in partners},
            "partner_list": partners,
            "page": Page(number=page, size=PAGE_SIZE, total=total),
            "filters": {"category": category, "status": status, "partner": partner, "low": low},
            "alerts": _alerts(session),
            "is_low": catalog.is_low_on_stock,
            "can_edit": _can_edit(staff),
        },
    )


def _render_new(
    request: Request,
    session: Session,
    staff: StaffContext,
    form: dict[str, str],
    error: PerkflowError | None = None,
) -> Response:
    return render(
        request,
        "catalog/benefit_new.html",
        {
            **_choices(),
            "form": form,
            "partner_list": catalog.list_partners(session, actor=staff.actor),
            "error": _error_text(error) if error else None,
            "error_field": error.field if error else None,
            "alerts": _alerts(session),
        },
        status_code=error.status_code if error else 200,
    )


@router.get("/console/benefits/new")
def benefit_new(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_edit(staff)
    form = {
        "category": Category.VIDEO.value,
        "fulfilment_kind": FulfilmentKind.DIRECT_RECHARGE.value,
        "validity_kind": ValidityKind.DAYS.value,
        "valid_days": "30",
        "low_stock_threshold": "0",
        "revocable": "on",
    }
    return _render_new(request, session, staff, form)


@router.post("/console/benefits", dependencies=[CsrfProtected])
def benefit_create(
    request: Request, staff: Staff, session: DbSession, form: FormFields
) -> Response:
    _require_edit(staff)
    try:
        values = _benefit_values(form, with_stock=True)
        values |= {
            "code": form.get("code", "").strip(),
            "partner_code": form.get("partner_code", ""),
            "fulfilment_kind": form.get("fulfilment_kind", ""),
        }
        if values["fulfilment_kind"] == FulfilmentKind.CARD_CODE.value and values["stock"] == 0:
            values["stock"] = None
        spec = parse_input(BenefitCreate, values)
        benefit = catalog.create_benefit(session, actor=staff.actor, spec=spec)
    except PerkflowError as exc:
        refuse(request, session, exc, let_through=_NOT_THE_FORMS)
        return _render_new(request, session, staff, form, exc)
    return RedirectResponse(f"/console/benefits/{benefit.id}", status_code=303)


def _render_editor(
    request: Request,
    session: Session,
    staff: StaffContext,
    benefit_id: int,
    form: dict[str, str] | None = None,
    error: PerkflowError | None = None,
) -> Response:
    benefit = catalog.read_benefit(session, actor=staff.actor, benefit_id=benefit_id)
    partner = catalog.read_partner(session, actor=staff.actor, partner_id=benefit.partner_id)
    stored = _benefit_form(benefit)
    current = BenefitStatus(benefit.status)
    targets = [s.value for s in BenefitStatus if lifecycle_problem(current, s) is None]
    return render(
        request,
        "catalog/benefit.html",
        {
            **_choices(),
            "b": benefit,
            "partner": partner,
            "form": stored | (form or {}),
            "targets": targets,
            "is_low": catalog.is_low_on_stock(benefit),
            "error": _error_text(error) if error else None,
            "error_field": error.field if error else None,
            "alerts": _alerts(session),
            "can_edit": _can_edit(staff),
        },
        status_code=error.status_code if error else 200,
    )


@router.get("/console/benefits/{benefit_id}")
def benefit_editor(
    request: Request, benefit_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    return _render_editor(request, session, staff, benefit_id)


@router.post("/console/benefits/{benefit_id}", dependencies=[CsrfProtected])
def benefit_update(
    request: Request, benefit_id: IdParam, staff: Staff, session: DbSession, form: FormFields
) -> Response:
    _require_edit(staff)
    benefit = catalog.read_benefit(session, actor=staff.actor, benefit_id=benefit_id)
    card_code = benefit.fulfilment_kind == FulfilmentKind.CARD_CODE.value
    try:
        changes = parse_input(BenefitUpdate, _benefit_values(form, with_stock=not card_code))
        catalog.update_benefit(session, actor=staff.actor, benefit_id=benefit_id, changes=changes)
    except PerkflowError as exc:
        refuse(request, session, exc, let_through=_NOT_THE_FORMS)
        return _render_editor(request, session, staff, benefit_id, form, exc)
    return RedirectResponse(f"/console/benefits/{benefit_id}?saved=1", status_code=303)


@router.post("/console/benefits/{benefit_id}/status", dependencies=[CsrfProtected])
def benefit_status(
    request: Request,
    benefit_id: IdParam,
    staff: Staff,
    session: DbSession,
    status: Annotated[str, Form()],
) -> Response:
    _require_edit(staff)
    try:
        if status not in {s.value for s in BenefitStatus}:
            raise ValidationFailed(f"status: {status!r} is not a status", field="status")
        catalog.set_benefit_status(
            session,
            actor=staff.actor,
            benefit_id=benefit_id,
            status=BenefitStatus(status),
            zone=request.app.state.settings.timezone,
        )
    except PerkflowError as exc:
        refuse(request, session, exc, let_through=_NOT_THE_FORMS)
        return _render_editor(request, session, staff, benefit_id, None, exc)
    return RedirectResponse(f"/console/benefits/{benefit_id}", status_code=303)


# ---------------------------------------------------------------- card-code pools


def _render_pool(
    request: Request,
    session: Session,
    staff: StaffContext,
    benefit_id: int,
    *,
    result: dict[str, int] | None = None,
    error: PerkflowError | None = None,
    unit_cost: str = "",
    running: ImportJob | None = None,
) -> Response:
    benefit = catalog.read_benefit(session, actor=staff.actor, benefit_id=benefit_id)
    if benefit.fulfilment_kind != FulfilmentKind.CARD_CODE.value:
        return RedirectResponse(f"/console/benefits/{benefit_id}", status_code=303)
    zone = request.app.state.settings.timezone
    return render(
        request,
        "catalog/codes.html",
        {
            "b": benefit,
            "levels": catalog.pool_levels(
                session, actor=staff.actor, benefit_id=benefit_id, zone=zone
            ),
            "lots": catalog.list_lots(session, actor=staff.actor, benefit_id=benefit_id),
            "result": result,
            "error": _error_text(error) if error else None,
            "bad_lines": error.details.get("errors", []) if error else [],
            "bad_count": error.details.get("error_count", 0) if error else 0,
            "unit_cost": unit_cost,
            "running": running,
            "alerts": _alerts(session),
            "is_low": catalog.is_low_on_stock(benefit),
            "can_edit": _can_edit(staff),
        },
        status_code=error.status_code if error else 200,
    )


# Files up to this size import within the request; larger ones run in the background while the
# page shows their progress (a million codes take tens of seconds).
INLINE_IMPORT_MAX_BYTES = 1_000_000
KEEP_FINISHED_IMPORTS = 50
_jobs_lock = threading.Lock()


@dataclass
class ImportJob:
    """A code import running in the background, as the console sees it."""

    id: str
    benefit_id: int
    file_name: str
    total_lines: int
    done_lines: int = 0
    finished: bool = False
    result: dict[str, int] | None = None
    error: PerkflowError | None = None
    owner: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def percent(self) -> int:
        return 100 if self.finished else min(99, 100 * self.done_lines // max(self.total_lines, 1))


def _jobs(app: FastAPI) -> dict[str, ImportJob]:
    with _jobs_lock:
        jobs: dict[str, ImportJob] | None = getattr(app.state, "code_imports", None)
        if jobs is None:
            jobs = app.state.code_imports = {}
        return jobs


def _job(request: Request, staff: StaffContext, benefit_id: int, job_id: str) -> ImportJob:
    job = _jobs(request.app).get(job_id)
    # Only the person who started an import follows it.
    if job is None or job.benefit_id != benefit_id or job.owner != staff.actor.id:
        raise NotFound(f"no import {job_id}", field="job")
    return job


def _result(lot: CardCodeLot, imported: int, duplicates: int) -> dict[str, int]:
    return {"lot": lot.id, "imported": imported, "duplicates": duplicates}


def _import_in_background(
    app: FastAPI, job: ImportJob, *, actor: Actor, path: Path, unit_cost_fen: int
) -> None:
    """Run one import in its own unit of work, recording progress and outcome on the job."""

    def advance(lines: int) -> None:
        job.done_lines = lines

    try:
        with (
            unit_of_work(app.state.sessions) as session,
            path.open(encoding="utf-8-sig", newline="") as text,
        ):
            outcome = catalog.import_card_codes(
                session,
                actor=actor,
                vault=app.state.vault,
                benefit_id=job.benefit_id,
                file_name=job.file_name,
                unit_cost_fen=unit_cost_fen,
                rows=text,
                progress=advance,
                zone=app.state.settings.timezone,
            )
            # This thread is its own entry point, outside any request: its unit of work
            # commits the import (it rolls back if the import raised).
            session.commit()
            job.result = _result(outcome.lot, outcome.imported, outcome.duplicates)
    except PerkflowError as exc:
        job.error = exc
    except Exception as exc:  # the page must learn that the job ended, whatever stopped it
        job.error = PerkflowError(f"the import stopped: {type(exc).__name__}")
    finally:
        job.finished = True
        path.unlink(missing_ok=True)


@router.get("/console/benefits/{benefit_id}/codes")
def code_pool(
    request: Request,
    benefit_id: IdParam,
    staff: Staff,
    session: DbSession,
    lot: IdParam | None = None,
    imported: int | None = None,
    duplicates: int | None = None,
    job: str | None = None,
) -> Response:
    result = None
    if lot is not None and imported is not None:
        result = {"lot": lot, "imported": imported, "duplicates": duplicates or 0}
    running = None
    if job is not None:
        found = _job(request, staff, benefit_id, job)
        if not found.finished:
            running = found
        elif found.error is not None:
            return _render_pool(request, session, staff, benefit_id, error=found.error)
        else:
            result = found.result
    return _render_pool(request, session, staff, benefit_id, result=result, running=running)


@router.get("/console/benefits/{benefit_id}/codes/imports/{job_id}")
def code_import_progress(
    request: Request, benefit_id: IdParam, job_id: str, staff: Staff
) -> Response:
    job = _job(request, staff, benefit_id, job_id)
    if job.finished:
        # htmx follows this header with a full page load that shows the outcome.
        done = Response(status_code=204)
        done.headers["HX-Redirect"] = f"/console/benefits/{benefit_id}/codes?job={job.id}"
        return done
    return render(request, "catalog/_import_progress.html", {"job": job, "b_id": benefit_id})


@router.post("/console/benefits/{benefit_id}/codes", dependencies=[CsrfProtected])
def code_import(
    request: Request,
    benefit_id: IdParam,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    file: Annotated[UploadFile, File()],
    unit_cost: Annotated[str, Form()] = "",
) -> Response:
    _require_edit(staff)
    try:
        cost = _fen({"unit_cost": unit_cost}, "unit_cost", "unit_cost_fen")
        catalog.read_benefit(session, actor=staff.actor, benefit_id=benefit_id)
        if (file.size or 0) > INLINE_IMPORT_MAX_BYTES:
            return _start_background_import(request, staff, benefit_id, file, cost)
        # Decoded as it is read: the upload is never held in memory as one string.
        text = io.TextIOWrapper(file.file, encoding="utf-8-sig", newline="")
        try:
            outcome = catalog.import_card_codes(
                session,
                actor=staff.actor,
                vault=vault,
                benefit_id=benefit_id,
                file_name=file.filename or "codes.csv",
                unit_cost_fen=cost,
                rows=text,
                zone=request.app.state.settings.timezone,
            )
        finally:
            text.detach()  # the upload closes its own file
    except PerkflowError as exc:
        refuse(request, session, exc, let_through=_NOT_THE_FORMS)
        return _render_pool(request, session, staff, benefit_id, error=exc, unit_cost=unit_cost)
    target = (
        f"/console/benefits/{benefit_id}/codes?lot={outcome.lot.id}"
        f"&imported={outcome.imported}&duplicates={outcome.duplicates}"
    )
    return RedirectResponse(target, status_code=303)


def _start_background_import(
    request: Request, staff: StaffContext, benefit_id: int, file: UploadFile, unit_cost_fen: int
) -> Response:
    """Copy a large upload under the home and import it on a thread the page can follow."""
    folder = request.app.state.settings.home_dir / "imports"
    folder.mkdir(exist_ok=True)
    job_id = token(12)
    path = folder / f"{job_id}.csv"
    lines = 0
    with path.open("wb") as out:
        for chunk in iter(lambda: file.file.read(1 << 20), b""):
            lines += chunk.count(b"\n")
            out.write(chunk)
    job = ImportJob(
        id=job_id,
        benefit_id=benefit_id,
        file_name=file.filename or "codes.csv",
        total_lines=lines + 1,
        owner=staff.actor.id,
    )
    job.thread = threading.Thread(
        target=_import_in_background,
        args=(request.app, job),
        kwargs={"actor": staff.actor, "path": path, "unit_cost_fen": unit_cost_fen},
        name=f"code-import-{job_id}",
        daemon=True,
    )
    jobs = _jobs(request.app)
    with _jobs_lock:
        # Keep the outcome of recent imports only: the registry lives as long as the process.
        for old in [j.id for j in jobs.values() if j.finished][:-KEEP_FINISHED_IMPORTS]:
            del jobs[old]
        jobs[job_id] = job
    job.thread.start()
    return RedirectResponse(f"/console/benefits/{benefit_id}/codes?job={job_id}", status_code=303)


# ---------------------------------------------------------------- partners


@router.get("/console/partners")
def partner_list(request: Request, staff: Staff, session: DbSession) -> Response:
    partners = catalog.list_partners(session, actor=staff.actor)
    counts = catalog.benefit_counts(session, actor=staff.actor)
    return render(
        request,
        "catalog/partners.html",
        {
            "partners": partners,
            "counts": counts,
            "alerts": _alerts(session),
            "can_edit": _can_edit(staff),
        },
    )


def _partner_form(partner: Partner) -> dict[str, str]:
    terms = partner.settlement_terms
    return {
        "code": partner.code,
        "name": partner.name,
        "contact_name": partner.contact_name,
        "contact_email": partner.contact_email,
        "contact_phone": partner.contact_phone,
        "cycle": str(terms.get("cycle", "monthly")),
        "statement_day": str(terms.get("statement_day", 5)),
        "payment_days": str(terms.get("payment_days", 30)),
        "connector_kind": partner.connector_kind,
        "connector_url": partner.connector_url,
        "connector_timeout_ms": str(partner.connector_timeout_ms),
        "connector_max_attempts": str(partner.connector_max_attempts),
        "supports_revoke": "on" if partner.supports_revoke else "",
    }


def _partner_values(form: dict[str, str]) -> dict[str, Any]:
    def number(name: str, default: int) -> int:
        value = _int(form, name)
        return default if value is None else value

    values: dict[str, Any] = {
        "name": form.get("name", ""),
        "contact_name": form.get("contact_name", ""),
        "contact_email": form.get("contact_email", ""),
        "contact_phone": form.get("contact_phone", ""),
        "settlement_terms": {
            "cycle": form.get("cycle", "monthly"),
            "statement_day": number("statement_day", 5),
            "payment_days": number("payment_days", 30),
        },
        "connector_kind": form.get("connector_kind", "none"),
        "connector_url": form.get("connector_url", ""),
        "connector_timeout_ms": number("connector_timeout_ms", 3000),
        "connector_max_attempts": number("connector_max_attempts", 5),
        "supports_revoke": form.get("supports_revoke") == "on",
    }
    # An empty secret field means "keep the stored one"; it is never shown back.
    if form.get("connector_secret"):
        values["connector_secret"] = form["connector_secret"]
    return values


def _render_partner(
    request: Request,
    session: Session,
    staff: StaffContext,
    partner: Partner | None,
    form: dict[str, str],
    error: PerkflowError | None = None,
) -> Response:
    benefits: Sequence[Benefit] = []
    if partner is not None:
        benefits, _ = catalog.list_benefits(
            session, actor=staff.actor, partner_id=partner.id, limit=500
        )
    return render(
        request,
        "catalog/partner.html",
        {
            "partner": partner,
            "form": form,
            "benefits": benefits,
            "error": _error_text(error) if error else None,
            "error_field": error.field if error else None,
            "alerts": _alerts(session),
            "can_edit": _can_edit(staff),
        },
        status_code=error.status_code if error else 200,
    )


@router.get("/console/partners/new")
def partner_new(request: Request, staff: Staff, session: DbSession) -> Response:
    _require_edit(staff)
    form = {
        "cycle": "monthly",
        "statement_day": "5",
        "payment_days": "30",
        "connector_kind": "none",
        "connector_timeout_ms": "3000",
        "connector_max_attempts": "5",
    }
    return _render_partner(request, session, staff, None, form)


@router.post("/console/partners", dependencies=[CsrfProtected])
def partner_create(
    request: Request, staff: Staff, session: DbSession, vault: VaultDep, form: FormFields
) -> Response:
    _require_edit(staff)
    try:
        values = _partner_values(form) | {"code": form.get("code", "").strip()}
        spec = parse_input(PartnerCreate, values)
        partner = catalog.create_partner(session, actor=staff.actor, vault=vault, spec=spec)
    except PerkflowError as exc:
        refuse(request, session, exc, let_through=_NOT_THE_FORMS)
        return _render_partner(request, session, staff, None, form, exc)
    return RedirectResponse(f"/console/partners/{partner.id}", status_code=303)


@router.get("/console/partners/{partner_id}")
def partner_editor(
    request: Request, partner_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    partner = catalog.read_partner(session, actor=staff.actor, partner_id=partner_id)
    return _render_partner(request, session, staff, partner, _partner_form(partner))


@router.post("/console/partners/{partner_id}", dependencies=[CsrfProtected])
def partner_update(
    request: Request,
    partner_id: IdParam,
    staff: Staff,
    session: DbSession,
    vault: VaultDep,
    form: FormFields,
) -> Response:
    _require_edit(staff)
    try:
        changes = parse_input(PartnerUpdate, _partner_values(form))
        catalog.update_partner(
            session, actor=staff.actor, vault=vault, partner_id=partner_id, changes=changes
        )
    except PerkflowError as exc:
        refuse(request, session, exc, let_through=_NOT_THE_FORMS)
        partner = catalog.read_partner(session, actor=staff.actor, partner_id=partner_id)
        return _render_partner(request, session, staff, partner, _partner_form(partner) | form, exc)
    return RedirectResponse(f"/console/partners/{partner_id}?saved=1", status_code=303)
