"""The console home and the province drill-down: figures from the ledger and the mart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.campaigns import service as campaigns
from perkflow.catalog import service as catalog
from perkflow.coupons import service as coupons
from perkflow.errors import Forbidden
from perkflow.grants import service as grants
from perkflow.insights import service as insights
from perkflow.kit import clock
from perkflow.org import service as org
from perkflow.org.rules import Actor, Perm
from perkflow.subscribers import service as subscribers
from perkflow.subscribers.rules import Status
from perkflow.web.auth import DbSession, Staff
from perkflow.web.render import render, request_locale

router = APIRouter(include_in_schema=False)

STATUSES = [s.value for s in Status]


def _plan_fee_bands(request: Request, province: str | None) -> list[dict[str, Any]] | None:
    """Subscribers per plan fee from the mart, or None before the mart exists."""
    mart = request.app.state.mart
    if not mart.has("subscriber_profile"):
        return None
    t = mart.table("subscriber_profile")
    if province:
        t = t.filter(t.province_code == province)
    counts = (
        t.group_by("plan_fee_yuan")
        .aggregate(n=t.count())
        .order_by("plan_fee_yuan")
        .to_pyarrow()
        .to_pylist()
    )
    return [{"fee": int(r["plan_fee_yuan"]), "n": int(r["n"])} for r in counts]


RUNNING_SHOWN = 5
RECENT_DAYS = 30


def _campaigns(session: Any, actor: Actor, zone: str) -> dict[str, Any] | None:
    """Running campaigns in the viewer's region, then those finished lately, with their uplift."""
    if not actor.can(Perm.CAMPAIGNS_READ):
        return None
    running, total = campaigns.list_campaigns(
        session, actor=actor, status="running", limit=RUNNING_SHOWN
    )
    # A campaign that finished sending last week is still being answered: worth a morning look.
    since = clock.now() - timedelta(days=RECENT_DAYS)
    finished, _ = campaigns.list_campaigns(
        session, actor=actor, status="finished", limit=RUNNING_SHOWN
    )
    recent = [c for c in finished if c.finished_at and clock.as_utc(c.finished_at) >= since]
    shown = []
    for c in [*running, *recent][:RUNNING_SHOWN]:
        try:
            headline = insights.incremental_headline(
                session, actor=actor, campaign_id=c.id, zone=zone
            )
        except Forbidden:
            continue
        shown.append((c.status, headline))
    return {"total": total, "rows": shown}


def operations(session: Any, actor: Actor, zone: str) -> dict[str, Any]:
    """The morning figures: today's and this month's activity, campaigns, what needs a look."""
    activity = grants.grant_activity(session, actor=actor, zone=zone)
    offers = coupons.coupon_activity(session, actor=actor, zone=zone)
    stock = catalog.stock_alerts(session, actor=actor, zone=zone)
    batches = coupons.low_stock_batches(session, actor=actor)
    edit_coupons = actor.can(Perm.COUPONS_EDIT)
    return {
        "grants": activity,
        "coupons": offers,
        "campaigns": _campaigns(session, actor, zone),
        "stock": stock,
        "batches": batches,
        "links": {
            "grants": "/console/grants" if actor.can(Perm.GRANTS_READ) else None,
            "failures": (
                "/console/grants/dead-letters"
                if actor.can(Perm.GRANTS_REDRIVE)
                else ("/console/grants" if actor.can(Perm.GRANTS_READ) else None)
            ),
            "coupons": "/console/coupons" if edit_coupons else None,
            "campaigns": "/console/campaigns" if actor.can(Perm.CAMPAIGNS_READ) else None,
            "benefits": "/console/benefits" if actor.can(Perm.CATALOG_READ) else None,
        },
        "days": [d[5:] for d in activity.days],
    }


@router.get("/")
def root() -> Response:
    return RedirectResponse("/console", status_code=303)


@router.get("/console")
def dashboard(request: Request, staff: Staff, session: DbSession) -> Response:
    if not staff.actor.can(Perm.DASHBOARD):
        # A clerk's console is their store; the counter pages arrive with coupons.
        return render(request, "store.html", {"store": staff.region})
    rows = subscribers.counts(session, actor=staff.actor, by="province")
    provinces = {p.code: p for p in org.list_provinces(session)}
    by_province: dict[str, dict[str, int]] = {}
    by_status = dict.fromkeys(STATUSES, 0)
    for code, status, n in rows:
        by_province.setdefault(code, dict.fromkeys(STATUSES, 0))[status] = n
        by_status[status] += n
    order = sorted(by_province, key=lambda c: -sum(by_province[c].values()))
    total = sum(by_status.values())
    chart_province = {
        "categories": [request_name(request, provinces[c]) for c in order],
        "codes": order,
        "series": {s: [by_province[c][s] for c in order] for s in STATUSES},
    }
    bands = _plan_fee_bands(request, org.visible_province(staff.actor))
    zone = request.app.state.settings.timezone
    return render(
        request,
        "dashboard.html",
        {
            "ops": operations(session, staff.actor, zone),
            "total": total,
            "by_status": by_status,
            "order": order,
            "provinces": provinces,
            "by_province": by_province,
            "chart_province": chart_province,
            "bands": bands,
        },
    )


def request_name(request: Request, region: Any) -> str:
    """A region's name in the request's language."""
    return str(region.name_zh if request_locale(request) == "zh_CN" else region.name_en)


@router.get("/console/regions/{code}")
def region_detail(request: Request, code: str, staff: Staff, session: DbSession) -> Response:
    region = org.require_region(session, actor=staff.actor, region_code=code)
    if region.level != "province":
        parent = region.path.split("/")
        if len(parent) < 2:
            return RedirectResponse("/console", status_code=303)
        return RedirectResponse(f"/console/regions/{parent[1]}", status_code=303)
    cities = {c.code: c for c in org.list_cities(session, province_code=region.code)}
    table: dict[str, dict[str, int]] = {c: dict.fromkeys(STATUSES, 0) for c in cities}
    for city, status, n in subscribers.counts(
        session, actor=staff.actor, by="city", province=region.code
    ):
        if city in table:
            table[city][status] = n
    chart = {
        "categories": [request_name(request, cities[c]) for c in cities],
        "series": {s: [table[c][s] for c in cities] for s in STATUSES},
    }
    return render(
        request,
        "region.html",
        {
            "region": region,
            "cities": cities,
            "table": table,
            "chart": chart,
            "bands": _plan_fee_bands(request, region.code),
        },
    )
