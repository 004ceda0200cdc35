"""Console pages of the audience: segment builder with live count, target lists, extraction."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import anyio
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.types import Receive, Scope, Send

from perkflow.audience import rules
from perkflow.audience import service as audience
from perkflow.db import unit_of_work
from perkflow.errors import PerkflowError, ValidationFailed
from perkflow.kit.bounds import IdParam
from perkflow.kit.pagination import Page
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.web.auth import CsrfProtected, DbSession, MartDep, Staff, VaultDep
from perkflow.web.forms import refuse
from perkflow.web.render import render, request_locale

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
# The builder offers these first; every other profile column follows in name order.
PREFERRED_COLUMNS = (
    "province_code",
    "city_code",
    "plan_fee_yuan",
    "arpu_yuan",
    "activity_level",
    "age_band",
    "gender",
    "primary_interest",
    "interest_video",
    "churn_risk",
    "status",
    "tenure_months",
    "data_mb",
    "voice_min",
    "device_tier",
)
EXCLUSIONS = tuple(rules.EXCLUSION_SHORTCUTS)


def _columns(mart: Any) -> list[rules.ColumnSpec]:
    specs = audience.profile_columns(mart)
    names = [c for c in PREFERRED_COLUMNS if c in specs]
    names += sorted(c for c in specs if c not in names and c != "subscriber_id")
    return [specs[n] for n in names]


def _feature_columns(mart: Any) -> list[rules.ColumnSpec]:
    # In the table's order (totals, rates by channel, by time slot, affinities, fatigue): a group
    # of its own after the profile's columns.
    return list(audience.feature_columns(mart).values())


def _region_names(request: Request, session: DbSession) -> dict[str, str]:
    zh = request_locale(request) == "zh_CN"
    return {p.code: (p.name_zh if zh else p.name_en) for p in org.list_provinces(session)}


def _error_list(exc: PerkflowError) -> list[dict[str, str]]:
    errors = exc.details.get("errors") if exc.details else None
    if errors:
        return [{"path": e["path"], "message": e["message"]} for e in errors]
    return [{"path": exc.field or "", "message": exc.message}]


def _rows_of(column: list[str], op: list[str], value: list[str]) -> list[tuple[str, str, str]]:
    # Browsers send one value per field of each row, in order.
    return [(c, o, v) for c, o, v in zip(column, op, value, strict=False)]


def _raw_from_form(
    *,
    mart: Any,
    session: DbSession,
    staff: Staff,
    mode: str,
    match: str,
    rows: list[tuple[str, str, str]],
    exclude: list[str],
    definition_json: str,
) -> Any:
    """The definition the builder's form describes (rows, or JSON/YAML text in advanced mode)."""
    if mode == "json":
        return audience.load_definition_text(definition_json or "{}")
    catalog = audience.catalog_for(session, mart=mart, actor=staff.actor)
    try:
        return rules.definition_from_form(match=match, rows=rows, exclude=exclude, catalog=catalog)
    except rules.InvalidDefinition as exc:
        raise audience.invalid(exc) from exc


def _builder(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: Any,
    *,
    segment: Any | None,
    raw: Any,
    name: str,
    description: str,
    error: PerkflowError | None = None,
    status_code: int = 200,
    mode: str | None = None,
) -> Response:
    form = rules.form_rows(raw) if isinstance(raw, dict) else None
    if form is None:
        mode = "json"
        form = ("all", [], [])
    match, rows, exclude = form
    versions = (
        audience.segment_versions(session, actor=staff.actor, segment_id=segment.id)
        if segment is not None
        else []
    )
    lists: Sequence[Any] = []
    if segment is not None:
        lists, _ = audience.list_target_lists(
            session, actor=staff.actor, segment_id=segment.id, limit=20
        )
    return render(
        request,
        "audience/segment_builder.html",
        {
            "segment": segment,
            "name": name,
            "description": description,
            "match": match,
            "rows": rows,
            "exclude": exclude,
            "exclusions": EXCLUSIONS,
            "mode": mode or "simple",
            "definition_json": json.dumps(raw, ensure_ascii=False, indent=2),
            "columns": _columns(mart),
            "feature_columns": _feature_columns(mart),
            "ops": rules.OPS,
            "channels": rules.CHANNELS,
            "errors": _error_list(error) if error else [],
            "versions": versions,
            "lists": lists,
            "can_edit": staff.actor.can(Perm.SEGMENTS_EDIT)
            and (
                segment is None
                or org.visible_province(staff.actor) in (None, segment.province_code)
            ),
            "can_build": staff.actor.can(Perm.TARGET_LISTS_BUILD),
        },
        status_code=status_code,
    )


@router.get("/console/segments")
def segment_list(request: Request, staff: Staff, session: DbSession) -> Response:
    segments = audience.list_segments(session, actor=staff.actor)
    return render(
        request,
        "audience/segments.html",
        {
            "segments": segments,
            "names": _region_names(request, session),
            "can_edit": staff.actor.can(Perm.SEGMENTS_EDIT),
        },
    )


@router.get("/console/segments/new")
def segment_new(request: Request, staff: Staff, session: DbSession, mart: MartDep) -> Response:
    org.require(staff.actor, Perm.SEGMENTS_EDIT)
    return _builder(
        request,
        staff,
        session,
        mart,
        segment=None,
        raw={"exclude": ["churned", "opted_out"]},
        name="",
        description="",
    )


@router.get("/console/segments/builder/row")
def segment_builder_row(request: Request, staff: Staff, mart: MartDep) -> Response:
    """One empty rule row for the builder (htmx appends it)."""
    # The row lists the mart's columns: only for those who may build segments.
    org.require(staff.actor, Perm.SEGMENTS_EDIT)
    return render(
        request,
        "audience/_segment_rule.html",
        {
            "row": ("", "=", ""),
            "columns": _columns(mart),
            "feature_columns": _feature_columns(mart),
            "ops": rules.OPS,
        },
    )


@router.post("/console/segments/preview", dependencies=[CsrfProtected])
def segment_preview(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    mode: Annotated[str, Form()] = "simple",
    match: Annotated[str, Form()] = "all",
    column: Annotated[list[str] | None, Form()] = None,
    op: Annotated[list[str] | None, Form()] = None,
    value: Annotated[list[str] | None, Form()] = None,
    exclude: Annotated[list[str] | None, Form()] = None,
    definition_json: Annotated[str, Form(max_length=100_000)] = "",
    segment_id: Annotated[str, Form()] = "",
) -> Response:
    """The live count and breakdown of the builder's current rules (an htmx fragment)."""
    context: dict[str, Any] = {"preview": None, "errors": [], "province_labels": []}
    try:
        raw = _raw_from_form(
            mart=mart,
            session=session,
            staff=staff,
            mode=mode,
            match=match,
            rows=_rows_of(column or [], op or [], value or []),
            exclude=exclude or [],
            definition_json=definition_json,
        )
        context["preview"] = audience.preview_definition(
            session,
            mart=mart,
            actor=staff.actor,
            raw=raw,
            segment_id=int(segment_id) if segment_id.isdigit() else None,
        )
        names = _region_names(request, session)
        context["province_labels"] = [names.get(c, c) for c in context["preview"].by_province]
    except PerkflowError as exc:
        if exc.status_code == 403:
            raise
        context["errors"] = _error_list(exc)
    return render(request, "audience/_segment_preview.html", context)


@router.post("/console/segments", dependencies=[CsrfProtected])
def segment_create(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    name: Annotated[str, Form(max_length=200)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    mode: Annotated[str, Form()] = "simple",
    match: Annotated[str, Form()] = "all",
    column: Annotated[list[str] | None, Form()] = None,
    op: Annotated[list[str] | None, Form()] = None,
    value: Annotated[list[str] | None, Form()] = None,
    exclude: Annotated[list[str] | None, Form()] = None,
    definition_json: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    raw: Any = {}
    try:
        raw = _raw_from_form(
            mart=mart,
            session=session,
            staff=staff,
            mode=mode,
            match=match,
            rows=_rows_of(column or [], op or [], value or []),
            exclude=exclude or [],
            definition_json=definition_json,
        )
        segment = audience.create_segment(
            session, mart=mart, actor=staff.actor, name=name, description=description, raw=raw
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(403,))
        return _builder(
            request,
            staff,
            session,
            mart,
            segment=None,
            raw=raw,
            name=name,
            description=description,
            error=exc,
            status_code=status,
            mode=mode,
        )
    return RedirectResponse(f"/console/segments/{segment.id}", status_code=303)


@router.get("/console/segments/{segment_id}")
def segment_detail(
    request: Request, segment_id: IdParam, staff: Staff, session: DbSession, mart: MartDep
) -> Response:
    segment = audience.get_segment(session, actor=staff.actor, segment_id=segment_id)
    version = audience.get_segment_version(session, actor=staff.actor, segment_id=segment_id)
    return _builder(
        request,
        staff,
        session,
        mart,
        segment=segment,
        raw=version.definition,
        name=segment.name,
        description=segment.description,
    )


@router.post("/console/segments/{segment_id}", dependencies=[CsrfProtected])
def segment_save(
    request: Request,
    segment_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    name: Annotated[str, Form(max_length=200)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    expected_version: Annotated[int | None, Form()] = None,
    mode: Annotated[str, Form()] = "simple",
    match: Annotated[str, Form()] = "all",
    column: Annotated[list[str] | None, Form()] = None,
    op: Annotated[list[str] | None, Form()] = None,
    value: Annotated[list[str] | None, Form()] = None,
    exclude: Annotated[list[str] | None, Form()] = None,
    definition_json: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    segment = audience.get_segment(session, actor=staff.actor, segment_id=segment_id)
    raw: Any = {}
    try:
        raw = _raw_from_form(
            mart=mart,
            session=session,
            staff=staff,
            mode=mode,
            match=match,
            rows=_rows_of(column or [], op or [], value or []),
            exclude=exclude or [],
            definition_json=definition_json,
        )
        audience.save_segment_version(
            session,
            mart=mart,
            actor=staff.actor,
            segment_id=segment_id,
            raw=raw,
            expected_version=expected_version,
            name=name,
            description=description,
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc)
        segment = audience.get_segment(session, actor=staff.actor, segment_id=segment_id)
        return _builder(
            request,
            staff,
            session,
            mart,
            segment=segment,
            raw=raw,
            name=name,
            description=description,
            error=exc,
            status_code=status,
            mode=mode,
        )
    return RedirectResponse(f"/console/segments/{segment.id}", status_code=303)


def _send_at(text: str, zone: str) -> datetime | None:
    """A send time typed in the operator's zone (datetime-local), as aware UTC."""
    if not text.strip():
        return None
    try:
        local = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValidationFailed("send time: use YYYY-MM-DD HH:MM", field="send_at") from exc
    if local.tzinfo is None:
        local = local.replace(tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC)


@router.post("/console/segments/{segment_id}/target-lists", dependencies=[CsrfProtected])
def target_list_build(
    request: Request,
    segment_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    channel: Annotated[str, Form()] = "sms",
    control_percent: Annotated[float, Form(ge=0, le=50)] = 10.0,
    send_at: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    zone = request.app.state.settings.timezone
    target_list = audience.build_target_list(
        session,
        mart=mart,
        actor=staff.actor,
        vault=vault,
        segment_id=segment_id,
        channel=channel,
        control_share_bp=round(control_percent * 100),
        send_at=_send_at(send_at, zone),
        default_zone=zone,
    )
    return RedirectResponse(f"/console/target-lists/{target_list.id}", status_code=303)


@router.get("/console/target-lists")
def target_lists(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    rows, total = audience.list_target_lists(
        session, actor=staff.actor, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    universal = None
    if mart.has("subscriber_profile"):
        universal = audience.universal_control_report(
            session, mart=mart, actor=staff.actor, vault=vault
        )
    return render(
        request,
        "audience/target_lists.html",
        {
            "rows": rows,
            "page": Page(number=page, size=PAGE_SIZE, total=total),
            "universal": universal,
            "policy": audience.contact_policy_view(session, actor=staff.actor),
            "names": _region_names(request, session),
        },
    )


@router.get("/console/target-lists/{target_list_id}")
def target_list_detail(
    request: Request, target_list_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    target_list = audience.get_target_list(
        session, actor=staff.actor, target_list_id=target_list_id
    )
    segment = audience.get_segment(session, actor=staff.actor, segment_id=target_list.segment_id)
    eligible = target_list.target + target_list.control
    split = [
        {
            "province": code,
            "target": cells.get("target", 0),
            "control": cells.get("control", 0),
            "universal_control": cells.get("universal_control", 0),
            "suppressed": cells.get("suppressed", 0),
            "share": (
                cells.get("control", 0) / (cells.get("target", 0) + cells.get("control", 0))
                if cells.get("target", 0) + cells.get("control", 0)
                else 0.0
            ),
        }
        for code, cells in target_list.by_province.items()
    ]
    return render(
        request,
        "audience/target_list.html",
        {
            "tl": target_list,
            "segment": segment,
            "split": sorted(split, key=lambda r: -(r["target"] + r["control"])),
            "control_share": target_list.control / eligible if eligible else 0.0,
            "reasons": [(r.value, target_list.reasons.get(r.value, 0)) for r in rules.Reason],
            "names": _region_names(request, session),
        },
    )


@router.get("/console/extractions")
def extraction_list(request: Request, staff: Staff, session: DbSession) -> Response:
    return _extractions(request, staff, session)


def _param_views(body: dict[str, Any]) -> list[dict[str, str]]:
    """A template's parameters with their defaults as the text a form field shows."""
    views = []
    for p in body.get("parameters") or []:
        default = p.get("default")
        text = ", ".join(map(str, default)) if isinstance(default, list) else default
        views.append(
            {
                "name": p["name"],
                "label": p.get("label") or p["name"],
                "type": p.get("type", "string"),
                "default": "" if text is None else str(text),
            }
        )
    return views


def _extractions(
    request: Request,
    staff: Staff,
    session: DbSession,
    *,
    error: str | None = None,
    source: str = "",
    status_code: int = 200,
) -> Response:
    templates = [
        {"row": t, "params": _param_views(t.body)}
        for t in audience.list_templates(session, actor=staff.actor)
    ]
    limit = rules.row_limit(staff.actor)
    return render(
        request,
        "audience/extractions.html",
        {
            "templates": templates,
            "error": error,
            "source": source,
            "formats": rules.EXPORT_FORMATS,
            "can_edit": staff.actor.can(Perm.EXTRACT_TEMPLATES),
            "can_reveal": staff.actor.can(Perm.PHONE_REVEAL),
            "row_limit": limit,
        },
        status_code=status_code,
    )


@router.post("/console/extractions", dependencies=[CsrfProtected])
def extraction_save(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    source: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    try:
        raw = audience.load_definition_text(source)
        audience.save_template(session, mart=mart, actor=staff.actor, raw=raw)
    except PerkflowError as exc:
        status = refuse(request, session, exc, let_through=(403,))
        field = f"{exc.field}: " if exc.field and not exc.message.startswith(exc.field) else ""
        return _extractions(
            request,
            staff,
            session,
            error=field + exc.message,
            source=source,
            status_code=status,
        )
    return RedirectResponse("/console/extractions", status_code=303)


async def _form_data(request: Request) -> FormData:
    # Parameters are named by the template (param_<name>): read the whole form.
    return await request.form()


@router.post("/console/extractions/{template_id}/run", dependencies=[CsrfProtected])
def extraction_run(
    request: Request,
    template_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    form: Annotated[FormData, Depends(_form_data)],
) -> Response:
    params = {
        str(k)[6:]: str(v) for k, v in form.multi_items() if str(k).startswith("param_") and v
    }
    fmt = str(form.get("format") or "csv")
    reveal = form.get("reveal") == "1"
    try:
        report = audience.run_extraction(
            session,
            mart=mart,
            actor=staff.actor,
            vault=vault,
            template_id=template_id,
            params=params,
            fmt=fmt,
            out_dir=request.app.state.settings.exports_dir,
            reveal=reveal,
            ttl_s=request.app.state.settings.export_ttl_s,
        )
    except PerkflowError as exc:
        status = refuse(request, session, exc)
        return _extractions(request, staff, session, error=exc.message, status_code=status)
    # The audit entry is stored before the file leaves: the request's transaction commits
    # before the response is sent (web/auth.DbSession).
    media = "text/csv" if report.format == "csv" else "application/vnd.apache.parquet"
    actor, sessions = staff.actor, request.app.state.sessions

    def discard(downloaded: bool) -> None:
        with unit_of_work(sessions) as after:
            audience.discard_export(after, actor=actor, path=report.path, downloaded=downloaded)
            after.commit()

    return _SentOnce(report.path, discard=discard, media_type=media, filename=report.path.name)


class _SentOnce(FileResponse):
    """A file sent once: deleted (and that audited) however the sending ends, even cut short."""

    def __init__(self, path: Path, *, discard: Callable[[bool], None], **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._discard = discard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = False
        try:
            await super().__call__(scope, receive, send)
            sent = True
        finally:
            # Shielded: a client that went away cancels the response, not the deletion.
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(self._discard, sent)
