"""JSON API of evaluations."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from perkflow.insights import programme as programme_report
from perkflow.insights import service as insights
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import ApiActor, DbSession, MartDep, VaultDep

router = APIRouter(prefix="/v1", tags=["insights"])


@router.get("/campaigns/{campaign_id}/evaluation")
def evaluation(
    campaign_id: IdParam,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    wave: Annotated[str | None, Query(pattern="^(test|rollout)$")] = None,
    segment: Annotated[list[IdParam] | None, Query(max_length=insights.MAX_SEGMENTS)] = None,
) -> dict[str, Any]:
    """Target against control: cells, uplift with its 95% CI and p-value, variants, provinces.

    Beside them, from the mart's history: the CUPED-adjusted uplift (``cuped``) and the uplift
    by plan band and activity group (``breakdowns``), or why there is none; each ``segment``
    (a saved segment's id, up to five) adds a breakdown of its members against the rest.

    API keys need the ``campaigns:read`` scope; staff see their own region's campaigns.
    """
    result = insights.evaluate(
        session,
        actor=actor,
        campaign_id=campaign_id,
        wave=wave,
        zone=str(request.app.state.settings.timezone),
        mart=mart,
        segment_ids=segment or (),
    )
    return insights.report_dict(result)


@router.get("/insights/programme")
def programme(
    actor: ApiActor,
    session: DbSession,
    mart: MartDep,
    vault: VaultDep,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """All marketing against the universal control group over one rotation period.

    Responders (claims, redemptions, benefit uses) and revenue per subscriber of everyone
    campaigns could reach against the group held out of every campaign. API keys need the
    ``campaigns:read`` scope; a province's staff see their province.
    """
    result = programme_report.programme_uplift(
        session, actor=actor, mart=mart, vault=vault, since=since, until=until
    )
    return programme_report.programme_dict(result)
