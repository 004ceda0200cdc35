"""The campaign list, by status, and the approval queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from perkflow.campaigns import rules
from perkflow.campaigns import service as campaigns
from perkflow.org.rules import Perm
from perkflow.web.auth import DbSession, Staff
from perkflow.web.render import render

from ._common import router

PAGE_SIZE = 50


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


@router.get("/console/campaigns/approvals")
def approvals(request: Request, staff: Staff, session: DbSession) -> Response:
    queue = campaigns.approval_queue(session, actor=staff.actor)
    return render(
        request,
        "campaigns/approvals.html",
        {"queue": queue, "specs": {c.id: campaigns.spec_of(c) for c in queue}},
    )
