"""The console home and the province drill-down: figures from the ledger and the mart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from perkflow.org import service as org
from perkflow.org.rules import Perm
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
    return render(
        request,
        "dashboard.html",
        {
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
