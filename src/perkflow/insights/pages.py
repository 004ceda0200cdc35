"""Console page of a campaign's evaluation: cells, uplift with its interval, charts."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from perkflow.errors import ValidationFailed
from perkflow.insights import programme as programme_report
from perkflow.insights import service as insights
from perkflow.kit.bounds import INT64_MAX, IdParam
from perkflow.org import service as org
from perkflow.web.auth import DbSession, MartDep, Staff, VaultDep
from perkflow.web.i18n import l_
from perkflow.web.render import render

router = APIRouter(include_in_schema=False)

WaveQuery = Annotated[str | None, Query(pattern="^(test|rollout)$")]


def _pts(x: float | None) -> float | None:
    return None if x is None else round(x * 100, 4)


def _uplift_chart(report: dict[str, Any], all_label: str) -> dict[str, Any]:
    """Uplift in percentage points with its 95% interval: the whole campaign, then each variant."""
    rows: list[tuple[str, dict[str, Any]]] = [(all_label, report["uplift"])]
    rows += [(str(v["variant"] or "—"), v["uplift"]) for v in report["variants"]]
    return {
        "kind": "uplift",
        "unit": "pts",
        "categories": [name for name, _ in rows],
        "uplift": [_pts(u["absolute"]) for _, u in rows],
        "low": [_pts(u["ci95"][0]) if u["ci95"] else None for _, u in rows],
        "high": [_pts(u["ci95"][1]) if u["ci95"] else None for _, u in rows],
        "significant": [bool(u["significant"]) for _, u in rows],
    }


def _segment_ids(raw: list[str] | None) -> list[int]:
    """The picker's segment ids; its empty choice ("—") asks for none."""
    ids = []
    for value in raw or []:
        value = value.strip()
        if not value:
            continue
        if not value.isdigit() or not 1 <= int(value) <= INT64_MAX:
            raise ValidationFailed("a segment is chosen by its id, a whole number", field="segment")
        ids.append(int(value))
    return ids


def _segment_choices(session: DbSession, staff: Staff) -> list[tuple[int, str]]:
    """The saved segments the reader may split the campaign by (id, name); none without access."""
    from perkflow.audience import service as audience  # only the picker needs the audience
    from perkflow.errors import Forbidden

    try:
        return [(s.id, s.name) for s in audience.list_segments(session, actor=staff.actor)]
    except Forbidden:
        return []


@router.get("/console/campaigns/{campaign_id}/evaluation")
def evaluation_page(
    request: Request,
    campaign_id: IdParam,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    wave: WaveQuery = None,
    segment: Annotated[list[str] | None, Query(max_length=insights.MAX_SEGMENTS)] = None,
) -> Response:
    chosen = _segment_ids(segment)
    evaluation = insights.evaluate(
        session,
        actor=staff.actor,
        campaign_id=campaign_id,
        wave=wave,
        zone=str(request.app.state.settings.timezone),
        mart=mart,
        segment_ids=chosen,
    )
    report = insights.report_dict(evaluation)
    return render(
        request,
        "insights/evaluation.html",
        {
            "report": report,
            "wave": wave,
            "segment_choices": _segment_choices(session, staff),
            "segments_chosen": set(chosen),
            "uplift_chart": _uplift_chart(report, l_("All")),
            # Provinces by name in the reader's language: rname(regions[code]) in the template.
            "regions": org.regions_by_code(
                session, codes={str(p["province_code"]) for p in report.get("provinces") or []}
            ),
        },
    )


@router.get("/console/insights/programme")
def programme_page(
    request: Request,
    staff: Staff,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    since: date | None = None,
    until: date | None = None,
) -> Response:
    """All marketing against the universal control group, per subscriber."""
    result = programme_report.programme_uplift(
        session, actor=staff.actor, mart=mart, vault=vault, since=since, until=until
    )
    return render(
        request,
        "insights/programme.html",
        {"report": programme_report.programme_dict(result)},
    )
