"""Console pages of campaigns: list, wizard, campaign page, approvals, run monitor."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import FormData

from perkflow.audience import service as audience
from perkflow.campaigns import readiness, rules, tasks
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.models import Campaign
from perkflow.catalog import service as catalog
from perkflow.catalog.rules import BenefitStatus
from perkflow.channels import service as channels_service
from perkflow.coupons import service as coupons
from perkflow.errors import NotFound, PerkflowError, ValidationFailed
from perkflow.insights import service as insights
from perkflow.kit.bounds import IdParam
from perkflow.kit.crypto import Vault, mask_phone
from perkflow.kit.money import parse_yuan
from perkflow.mart import Mart
from perkflow.org import service as org
from perkflow.org.rules import Perm
from perkflow.settings import Settings
from perkflow.web.auth import CsrfProtected, DbSession, MartDep, Staff, StaffContext, VaultDep
from perkflow.web.i18n import l_
from perkflow.web.render import render, request_locale

log = logging.getLogger("perkflow.campaigns.pages")
router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
MIN_VARIANT_ROWS = 2
# "Dispatch now" on the monitor is for demos and tests; the background worker does the real work.
DISPATCH_MAX_CONTACTS = 5_000
DISPATCH_MAX_SECONDS = 10.0
STATUS_ORDER = ("queued", "sending", "sent", "delivered", "failed", "held", "suppressed")
LIVE_WAVES = frozenset({"planning", "running"})
PHONE = re.compile(r"(?<!\d)1\d{10}(?!\d)")
OFFER_CHOICES_LIMIT = 200


# ---- form <-> spec ------------------------------------------------------------------------


def _zone(request: Request) -> str:
    return str(request.app.state.settings.timezone)


def _column_kinds(mart: Mart) -> dict[str, str]:
    try:
        return {name: spec.kind.value for name, spec in audience.profile_columns(mart).items()}
    except NotFound:
        return {}


def _scalar(text: str, kind: str | None) -> Any:
    """A typed match value: numbers for numeric columns (or when unknown and it reads as one)."""
    text = text.strip()
    if kind in ("integer", "number", None):
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text
    return text


def _int_or_text(text: str) -> int | str | None:
    """A whole number, or the text as typed so the spec check names the field."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text


def _local_iso(text: str, zone: str) -> str | None:
    """A `datetime-local` value read in the operator's zone, as an ISO time with offset."""
    text = text.strip()
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        return text  # the spec check reports it against the field
    if naive.tzinfo is None:
        naive = naive.replace(tzinfo=ZoneInfo(zone))
    return naive.isoformat()


def _slots(text: str) -> list[list[str]]:
    """`09:00-12:00, 14:00-18:00` as pairs; a malformed piece stays whole for the spec check."""
    out = []
    for piece in text.replace("，", ",").split(","):
        piece = piece.strip()
        if not piece:
            continue
        start, sep, end = piece.partition("-")
        out.append([start.strip(), end.strip()] if sep else [piece])
    return out


def _variants_of(form: FormData) -> list[dict[str, str]]:
    """The variant rows as typed (browsers send one value per field of each row, in order)."""
    names = (
        "key",
        "channel",
        "locale",
        "subject",
        "body",
        "match_column",
        "match_op",
        "match_value",
    )
    columns = {n: [str(v) for v in form.getlist(f"v_{n}")] for n in names}
    rows = max((len(v) for v in columns.values()), default=0)
    out = []
    for i in range(rows):
        row = {n: (columns[n][i] if i < len(columns[n]) else "") for n in names}
        if not any(row[n].strip() for n in ("key", "subject", "body", "match_column")):
            continue  # an untouched extra row
        out.append(row)
    return out


def form_of_post(form: FormData) -> dict[str, Any]:
    """The wizard's fields as typed, to show again with its errors."""
    text = {k: str(v) for k, v in form.items() if k != "csrf_token"}
    return {
        **text,
        "variants": _variants_of(form),
        "weekdays": [int(str(d)) for d in form.getlist("weekdays") if str(d).isdigit()],
        "skip_holidays": form.get("skip_holidays") == "on",
        "trigger_events": [str(e) for e in form.getlist("trigger_events")],
        "throttle": {ch: str(form.get(f"throttle_{ch}") or "") for ch in rules.CAMPAIGN_CHANNELS},
    }


def raw_spec(
    session: Session, *, staff: StaffContext, mart: Mart, form: dict[str, Any], zone: str
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The campaign spec a wizard form describes, and the problems found before the spec check."""
    problems: list[dict[str, str]] = []
    kinds = _column_kinds(mart)
    variants = []
    for i, v in enumerate(form.get("variants") or []):
        match = None
        column = v.get("match_column", "").strip()
        if column:
            op = v.get("match_op") or "="
            raw_value = v.get("match_value", "")
            value: Any
            if op in ("in", "not_in"):
                value = [
                    _scalar(p, kinds.get(column))
                    for p in raw_value.replace("，", ",").split(",")
                    if p.strip()
                ]
            else:
                value = _scalar(raw_value, kinds.get(column)) if raw_value.strip() else None
            match = [{"column": column, "op": op, "value": value}]
        variants.append(
            {
                "key": v.get("key", "").strip() or chr(ord("A") + i),
                "channel": v.get("channel", ""),
                "locale": v.get("locale") or rules.DEFAULT_LOCALE,
                "subject": v.get("subject", ""),
                "body": v.get("body", ""),
                "match": match,
            }
        )
    offer: dict[str, Any] = {"kind": "none"}
    choice = str(form.get("offer") or "none")
    kind, _, ident = choice.partition(":")
    if kind in ("coupon_batch", "benefit") and ident.isdigit():
        offer = {"kind": kind, "id": int(ident)}
        default_cost, category = _offer_facts(session, staff=staff, kind=kind, ident=int(ident))
        if category:
            offer["category"] = category
        cost_text = str(form.get("offer_cost_yuan") or "").strip()
        if cost_text:
            try:
                offer["cost_fen"] = parse_yuan(cost_text)
            except ValueError:
                problems.append({"path": "offer.cost_fen", "message": l_("an amount in yuan")})
        elif default_cost is not None:
            offer["cost_fen"] = default_cost
    elif choice != "none":
        problems.append({"path": "offer.id", "message": l_("pick an offer from the list")})
    name = str(form.get("offer_name") or "").strip()
    if name:
        offer["name"] = name
    budget_fen: int | None = None
    budget_text = str(form.get("budget_yuan") or "").strip()
    if budget_text:
        try:
            budget_fen = parse_yuan(budget_text)
        except ValueError:
            problems.append({"path": "budget_fen", "message": l_("an amount in yuan, like 5000")})
    throttle: dict[str, Any] = {}
    for ch, rate in (form.get("throttle") or {}).items():
        value = _int_or_text(str(rate))
        if value is not None:
            throttle[ch] = value
    trigger = None
    if form.get("kind") == "trigger":
        trigger = {"events": list(form.get("trigger_events") or [])}
    segment = str(form.get("segment_id") or "").strip()
    raw: dict[str, Any] = {
        "name": str(form.get("name") or ""),
        "segment_id": int(segment) if segment.isdigit() else None,
        "goal": {
            "kind": form.get("goal_kind") or "",
            "window_days": _int_or_text(str(form.get("window_days") or "")),
        },
        "offer": offer,
        "variants": variants,
        "schedule": {
            "starts_at": _local_iso(str(form.get("starts_at") or ""), zone),
            "ends_at": _local_iso(str(form.get("ends_at") or ""), zone),
            "weekdays": list(form.get("weekdays") or []),
            "slots": _slots(str(form.get("slots") or "")),
            "skip_holidays": bool(form.get("skip_holidays")),
        },
        "control_share": str(form.get("control_percent") or "0"),
        "test_share": str(form.get("test_percent") or "0") if trigger is None else "0",
        "throttle": throttle,
        "budget_fen": budget_fen,
        "stock_cap": _int_or_text(str(form.get("stock_cap") or "")),
        "trigger": trigger,
    }
    if raw["goal"]["window_days"] is None:
        raw["goal"]["window_days"] = 0  # empty: the spec check says what is allowed
    return raw, problems


def _offer_facts(
    session: Session, *, staff: StaffContext, kind: str, ident: int
) -> tuple[int | None, str | None]:
    """The offer's cost per taker in fen and its category, when the actor may see it."""
    try:
        if kind == "benefit":
            benefit = catalog.get_benefit(session, benefit_id=ident)
            return benefit.cost_price_fen, benefit.category
        batch = coupons.get_batch(session, actor=staff.actor, batch_id=ident)
        return batch.amount_fen or None, None
    except PerkflowError:
        return None, None  # the spec check reports an unknown or hidden offer


def form_of_campaign(campaign: Campaign, zone: str) -> dict[str, Any]:
    """A stored campaign as the wizard's fields."""
    tz = ZoneInfo(zone)

    def local(iso: str | None) -> str:
        if not iso:
            return ""
        return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%dT%H:%M")

    def yuan(fen: int | None) -> str:
        return "" if fen is None else f"{fen / 100:.2f}"

    offer = campaign.offer or {}
    schedule = campaign.schedule or {}
    variants = []
    for v in campaign.variants or []:
        match = (v.get("match") or [{}])[0]
        value = match.get("value")
        variants.append(
            {
                "key": v.get("key", ""),
                "channel": v.get("channel", ""),
                "locale": v.get("locale", rules.DEFAULT_LOCALE),
                "subject": v.get("subject", ""),
                "body": v.get("body", ""),
                "match_column": match.get("column", ""),
                "match_op": match.get("op", "="),
                "match_value": (
                    ", ".join(map(str, value))
                    if isinstance(value, list)
                    else ("" if value is None else str(value))
                ),
            }
        )
    return {
        "name": campaign.name,
        "kind": "trigger" if campaign.trigger else "batch",
        "goal_kind": (campaign.goal or {}).get("kind", "claim"),
        "window_days": str((campaign.goal or {}).get("window_days", 14)),
        "segment_id": str(campaign.segment_id or ""),
        "control_percent": f"{campaign.control_share_bp / 100:g}",
        "test_percent": f"{campaign.test_share_bp / 100:g}",
        "offer": (
            f"{offer.get('kind')}:{offer.get('id')}"
            if offer.get("kind") in ("coupon_batch", "benefit")
            else "none"
        ),
        "offer_cost_yuan": yuan(offer.get("cost_fen")) if offer.get("kind") != "none" else "",
        "offer_name": offer.get("name", ""),
        "variants": variants,
        "starts_at": local(schedule.get("starts_at")),
        "ends_at": local(schedule.get("ends_at")),
        "weekdays": list(schedule.get("weekdays") or range(1, 8)),
        "slots": ", ".join(f"{a}-{b}" for a, b in schedule.get("slots") or []),
        "skip_holidays": bool(schedule.get("skip_holidays")),
        "throttle": {
            ch: str((campaign.throttle or {}).get(ch, "")) for ch in rules.CAMPAIGN_CHANNELS
        },
        "budget_yuan": yuan(campaign.budget_fen),
        "stock_cap": "" if campaign.stock_cap is None else str(campaign.stock_cap),
        "trigger_events": list((campaign.trigger or {}).get("events") or []),
    }


def _defaults() -> dict[str, Any]:
    return {
        "name": "",
        "kind": "batch",
        "goal_kind": "claim",
        "window_days": "14",
        "segment_id": "",
        "control_percent": "10",
        "test_percent": "5",
        "offer": "none",
        "offer_cost_yuan": "",
        "offer_name": "",
        "variants": [],
        "starts_at": "",
        "ends_at": "",
        "weekdays": list(range(1, 8)),
        "slots": "",
        "skip_holidays": False,
        "throttle": {ch: "" for ch in rules.CAMPAIGN_CHANNELS},
        "budget_yuan": "",
        "stock_cap": "",
        "trigger_events": [],
    }


def _errors_of(exc: PerkflowError) -> list[dict[str, str]]:
    errors = exc.details.get("errors") if exc.details else None
    if errors:
        return [{"path": str(e["path"]), "message": str(e["message"])} for e in errors]
    return [{"path": exc.field or "", "message": exc.message}]


def _row_errors(errors: Sequence[dict[str, str]], rows: int) -> list[dict[str, str]]:
    """Per variant row: field (key, channel, subject, body, match) → first message."""
    out: list[dict[str, str]] = [{} for _ in range(rows)]
    for e in errors:
        path = e["path"]
        if not path.startswith("variants["):
            continue
        index, _, rest = path[len("variants[") :].partition("]")
        if not index.isdigit() or int(index) >= rows:
            continue
        field = rest.lstrip(".").split(".")[0].split("[")[0] or "row"
        out[int(index)].setdefault(field, e["message"])
    return out


# ---- shared page pieces -----------------------------------------------------------------------


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
        if exc.status_code in (403, 404):
            raise
        session.rollback()  # nothing of the refused save may stay
        return _wizard(
            request,
            staff,
            session,
            form=form,
            campaign=campaign,
            errors=_errors_of(exc),
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/console/campaigns/{saved.id}", status_code=303)


# ---- list, wizard ------------------------------------------------------------------------------


@router.get("/console/campaigns")
def campaign_list(
    request: Request,
    staff: Staff,
    session: DbSession,
    status: Annotated[str, Query(max_length=20)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    rows, total = campaigns.list_campaigns(
        session,
        actor=staff.actor,
        status=status or None,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    counts = {
        s.value: campaigns.list_campaigns(session, actor=staff.actor, status=s.value, limit=1)[1]
        for s in rules.CampaignStatus
    }
    return render(
        request,
        "campaigns/list.html",
        {
            "rows": rows,
            "total": total,
            "status": status,
            "counts": counts,
            "page": page,
            "pages": max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
            "can_edit": staff.actor.can(Perm.CAMPAIGNS_EDIT),
            "can_approve": staff.actor.can(Perm.CAMPAIGNS_APPROVE),
        },
    )


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


# ---- approvals ---------------------------------------------------------------------------------


@router.get("/console/campaigns/approvals")
def approvals(request: Request, staff: Staff, session: DbSession) -> Response:
    queue = campaigns.approval_queue(session, actor=staff.actor)
    return render(
        request,
        "campaigns/approvals.html",
        {"queue": queue, "specs": {c.id: campaigns.spec_of(c) for c in queue}},
    )


# ---- one campaign ------------------------------------------------------------------------------


def _test_evaluation(
    request: Request, session: Session, staff: StaffContext, campaign: Campaign
) -> dict[str, Any] | None:
    if not campaigns.wave_ids(session, actor=staff.actor, campaign_id=campaign.id, kind="test"):
        return None
    try:
        evaluation = insights.evaluate(
            session, actor=staff.actor, campaign_id=campaign.id, wave="test", zone=_zone(request)
        )
    except PerkflowError:
        return None  # the page still offers its lifecycle; the report link explains the rest
    return insights.report_dict(evaluation)


def _campaign_page(
    request: Request,
    staff: StaffContext,
    session: Session,
    campaign_id: int,
    *,
    error: str | None = None,
    note: str = "",
    status_code: int = 200,
    mart: Mart | None = None,
) -> Response:
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    if campaign.kind == rules.CampaignKind.IMPORTED:
        # History run elsewhere: no spec to run, so it has a page of its own (and no controls).
        return _imported_page(
            request, staff, session, campaign, error=error, status_code=status_code
        )
    spec = campaigns.spec_of(campaign)
    waves = campaigns.list_waves(session, actor=staff.actor, campaign_id=campaign.id)
    by_kind = {w.kind: w for w in waves}
    segment = None
    if campaign.segment_id is not None:
        try:
            segment = audience.get_segment(
                session, actor=staff.actor, segment_id=campaign.segment_id
            )
        except PerkflowError:
            segment = None  # archived or hidden: the id is still shown
    actor = staff.actor
    author = actor.name in (campaign.created_by, campaign.submitted_by)
    test = by_kind.get("test")
    trail = org.audit_of_target(session, target_type="campaign", target_id=str(campaign.id))
    rejection = next(
        (e for e in trail if e.action == "campaign.reject"),
        None,
    )
    return render(
        request,
        "campaigns/campaign.html",
        {
            "c": campaign,
            "spec": spec,
            "segment": segment,
            "waves": waves,
            "test": test,
            "rollout": by_kind.get("rollout"),
            "evaluation": _test_evaluation(request, session, staff, campaign),
            "power": insights.campaign_power(
                session, actor=staff.actor, campaign=campaign, mart=mart
            ),
            "trail": trail,
            "rejection": rejection if campaign.status == "draft" else None,
            "error": error,
            "note": note,
            "can_edit": actor.can(Perm.CAMPAIGNS_EDIT),
            "can_approve": actor.can(Perm.CAMPAIGNS_APPROVE) and not author,
            "is_author": author,
            "can_run": actor.can(Perm.CAMPAIGNS_RUN),
            "fields": [f"{{{{ {name} }}}}" for name in rules.FIELDS],
            # Until it runs, a campaign says which of its channels this installation lacks.
            "channel_gaps": (
                readiness.channel_gaps(spec, request.app.state.settings)
                if campaign.status in ("draft", "submitted", "approved")
                else []
            ),
        },
        status_code=status_code,
    )


def _imported_page(
    request: Request,
    staff: StaffContext,
    session: Session,
    campaign: Campaign,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """What an imported campaign is: its source, when it came, its cells and variants."""
    summary = campaigns.import_summary(session, actor=staff.actor, campaign_id=campaign.id)
    report = insights.report_dict(
        insights.evaluate(session, actor=staff.actor, campaign_id=campaign.id, zone=_zone(request))
    )
    return render(
        request,
        "campaigns/imported.html",
        {
            "c": campaign,
            "summary": summary,
            "r": report,
            "error": error,
            "trail": org.audit_of_target(
                session, target_type="campaign", target_id=str(campaign.id)
            ),
        },
        status_code=status_code,
    )


@router.get("/console/campaigns/{campaign_id}")
def campaign_detail(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession, mart: MartDep
) -> Response:
    return _campaign_page(request, staff, session, campaign_id, mart=mart)


@router.get("/console/campaigns/{campaign_id}/edit")
def campaign_edit(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    if campaign.status != rules.CampaignStatus.DRAFT:
        return RedirectResponse(f"/console/campaigns/{campaign.id}", status_code=303)
    form = form_of_campaign(campaign, _zone(request))
    return _wizard(request, staff, session, form=form, campaign=campaign)


@router.post("/console/campaigns/{campaign_id}/edit", dependencies=[CsrfProtected])
def campaign_update(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    form: FormDep,
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_EDIT)
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    return _save(request, staff, session, mart, form, campaign=campaign)


def _next_url(text: str, campaign_id: int) -> str:
    # Only our own console pages: never an open redirect.
    if text.startswith("/console/") and "//" not in text and "\\" not in text:
        return text
    return f"/console/campaigns/{campaign_id}"


def _act(
    request: Request,
    staff: StaffContext,
    session: Session,
    campaign_id: int,
    action: Callable[[], object],
    *,
    next_url: str = "",
    note: str = "",
) -> Response:
    """Run one lifecycle step; a refusal shows the campaign page with the reason."""
    try:
        action()
    except PerkflowError as exc:
        if exc.status_code == 404:
            raise
        session.rollback()
        return _campaign_page(
            request,
            staff,
            session,
            campaign_id,
            error=exc.message,
            note=note,
            status_code=exc.status_code,
        )
    return RedirectResponse(_next_url(next_url, campaign_id), status_code=303)


NoteForm = Annotated[str, Form(max_length=500)]
NextForm = Annotated[str, Form(max_length=200)]


@router.post("/console/campaigns/{campaign_id}/submit", dependencies=[CsrfProtected])
def campaign_submit(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.submit_campaign(session, actor=staff.actor, campaign_id=campaign_id),
    )


@router.post("/console/campaigns/{campaign_id}/approve", dependencies=[CsrfProtected])
def campaign_approve(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    note: NoteForm = "",
    next_url: NextForm = "",
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.approve_campaign(
            session, actor=staff.actor, campaign_id=campaign_id, note=note
        ),
        next_url=next_url,
    )


@router.post("/console/campaigns/{campaign_id}/reject", dependencies=[CsrfProtected])
def campaign_reject(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    note: NoteForm = "",
    next_url: NextForm = "",
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.reject_campaign(
            session, actor=staff.actor, campaign_id=campaign_id, note=note
        ),
        next_url=next_url,
        note=note,
    )


@router.post("/console/campaigns/{campaign_id}/start", dependencies=[CsrfProtected])
def campaign_start(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
) -> Response:
    return _act(
        request,
        staff,
        session,
        campaign_id,
        lambda: campaigns.start_campaign(
            session,
            actor=staff.actor,
            mart=mart,
            vault=vault,
            campaign_id=campaign_id,
            zone=_zone(request),
            settings=request.app.state.settings,
        ),
        next_url=f"/console/campaigns/{campaign_id}/monitor",
    )


@router.post("/console/campaigns/{campaign_id}/rollout", dependencies=[CsrfProtected])
def campaign_rollout(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    note: NoteForm = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
    against_evidence: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    def roll() -> None:
        # The decision is explicit: a reason in words and a tick that the evaluation was read.
        if not note.strip():
            raise ValidationFailed("write why you roll out (it goes in the audit)", field="note")
        if confirm != "yes":
            raise ValidationFailed("tick that you read the test wave's evaluation", field="confirm")
        campaigns.roll_out(
            session,
            actor=staff.actor,
            campaign_id=campaign_id,
            note=note,
            against_evidence=against_evidence == "yes",
        )

    return _act(
        request,
        staff,
        session,
        campaign_id,
        roll,
        next_url=f"/console/campaigns/{campaign_id}/monitor",
        note=note,
    )


def _simple_step(step: Callable[..., object]) -> Callable[..., Response]:
    """A lifecycle step that needs only the campaign (pause, resume, finish) as a form handler."""

    def handler(request: Request, campaign_id: int, staff: Staff, session: DbSession) -> Response:
        return _act(
            request,
            staff,
            session,
            campaign_id,
            lambda: step(session, actor=staff.actor, campaign_id=campaign_id),
        )

    return handler


for _name, _step in (
    ("pause", campaigns.pause_campaign),
    ("resume", campaigns.resume_campaign),
    ("finish", campaigns.finish_campaign),
):
    router.add_api_route(
        f"/console/campaigns/{{campaign_id}}/{_name}",
        _simple_step(_step),
        methods=["POST"],
        dependencies=[CsrfProtected],
        name=f"campaign_{_name}",
    )


# ---- run monitor -------------------------------------------------------------------------------


def _monitor_context(session: Session, staff: StaffContext, campaign_id: int) -> dict[str, Any]:
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    progress = campaigns.run_progress(session, actor=staff.actor, campaign_id=campaign_id)
    waves = []
    for w in progress.waves:
        # An adapter's error may echo the address: phone numbers stay masked on screen.
        failures = [
            replace(f, error=PHONE.sub(lambda m: mask_phone(m.group(0)), f.error or ""))
            for f in w.failures
        ]
        total = sum(w.by_status.values())
        waves.append(
            {
                "w": w,
                "failures": failures,
                "total": total,
                "done": w.done,
                "percent": round(100 * w.done / total) if total else 0,
                "counts": [(s, w.by_status.get(s, 0)) for s in STATUS_ORDER],
                "others": sorted(s for s in w.by_status if s not in STATUS_ORDER),
                "reasons": sorted(w.suppressed.items(), key=lambda kv: -kv[1]),
            }
        )
    live = campaign.status == rules.CampaignStatus.RUNNING and any(
        w.status in LIVE_WAVES for w in progress.waves
    )
    return {
        "c": campaign,
        "progress": progress,
        "waves": waves,
        "list_reasons": sorted(progress.list_reasons.items(), key=lambda kv: -kv[1]),
        "live": live,
        "can_dispatch": staff.actor.can(Perm.CAMPAIGNS_RUN)
        and campaign.status == rules.CampaignStatus.RUNNING,
        "max_contacts": DISPATCH_MAX_CONTACTS,
        "max_seconds": DISPATCH_MAX_SECONDS,
    }


@router.get("/console/campaigns/{campaign_id}/monitor")
def monitor(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    dispatched: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    context = _monitor_context(session, staff, campaign_id)
    return render(request, "campaigns/monitor.html", {**context, "dispatched": dispatched})


@router.get("/console/campaigns/{campaign_id}/monitor/live")
def monitor_live(
    request: Request, campaign_id: IdParam, staff: Staff, session: DbSession
) -> Response:
    """The monitor's figures (htmx polls this every 2 s while a wave is planning or sending)."""
    context = _monitor_context(session, staff, campaign_id)
    return render(request, "campaigns/_monitor_live.html", context)


def dispatch_bounded(
    sessions: sessionmaker[Session],
    *,
    settings: Settings,
    vault: Vault,
    mart: Mart,
    campaign_id: int,
) -> tasks.WorkerReport | None:
    """One bounded worker run on one campaign: plan and send until done, 5,000 contacts or 10 s."""
    channels = channels_service.open_channels(settings, vault=vault)
    stop = threading.Event()
    timer = threading.Timer(DISPATCH_MAX_SECONDS, stop.set)

    def on_round(report: tasks.WorkerReport) -> None:
        if report.dispatch.claimed >= DISPATCH_MAX_CONTACTS:
            stop.set()

    timer.start()
    try:
        return tasks.run_worker(
            sessions,
            tasks.Dispatcher(channels=channels, vault=vault, settings=settings),
            mart=mart,
            batch_size=500,
            max_wait_s=0.0,  # do not linger for retries: the background worker takes those
            stop=stop,
            on_round=on_round,
            # Only the campaign whose page it was pressed on: its visibility was checked there.
            campaign_id=campaign_id,
        )
    except Exception:  # a background run has no one to answer to but the log
        log.exception("dispatch from the console failed")
        return None
    finally:
        timer.cancel()
        channels_service.close_channels(channels)


@router.post("/console/campaigns/{campaign_id}/dispatch", dependencies=[CsrfProtected])
def dispatch_now(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    background: BackgroundTasks,
) -> Response:
    org.require(staff.actor, Perm.CAMPAIGNS_RUN)
    campaign = campaigns.get_campaign(session, actor=staff.actor, campaign_id=campaign_id)
    if campaign.status != rules.CampaignStatus.RUNNING:
        return _campaign_page(
            request,
            staff,
            session,
            campaign_id,
            error=l_("a {status} campaign has nothing to dispatch", status=campaign.status),
            status_code=409,
        )
    org.record_audit(
        session,
        actor=staff.actor,
        action="campaign.dispatch_now",
        target_type="campaign",
        target_id=str(campaign.id),
        details={"max_contacts": DISPATCH_MAX_CONTACTS, "max_seconds": DISPATCH_MAX_SECONDS},
    )
    # Runs after the response (and after this request's commit): the monitor shows it progress.
    background.add_task(
        dispatch_bounded,
        request.app.state.sessions,
        settings=request.app.state.settings,
        vault=vault,
        mart=mart,
        campaign_id=campaign.id,
    )
    return RedirectResponse(
        f"/console/campaigns/{campaign_id}/monitor?dispatched=1", status_code=303
    )
