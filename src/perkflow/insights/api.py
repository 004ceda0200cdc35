"""JSON API of evaluations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from perkflow.insights import service as insights
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import ApiActor, DbSession

router = APIRouter(prefix="/v1", tags=["insights"])


@router.get("/campaigns/{campaign_id}/evaluation")
def evaluation(
    campaign_id: IdParam,
    request: Request,
    actor: ApiActor,
    session: DbSession,
    wave: Annotated[str | None, Query(pattern="^(test|rollout)$")] = None,
) -> dict[str, Any]:
    """Target against control: cells, uplift with its 95% CI and p-value, variants, provinces.

    API keys need the ``campaigns:read`` scope; staff see their own region's campaigns.
    """
    result = insights.evaluate(
        session,
        actor=actor,
        campaign_id=campaign_id,
        wave=wave,
        zone=str(request.app.state.settings.timezone),
    )
    return insights.report_dict(result)
