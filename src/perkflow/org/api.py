"""JSON API of the organisation: audit log and regions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from perkflow.kit.bounds import LineParam
from perkflow.org import service as org
from perkflow.org.schemas import AuditOut, RegionOut
from perkflow.web.auth import ApiActor, DbSession

router = APIRouter(prefix="/v1", tags=["org"])


class AuditPage(BaseModel):
    items: list[AuditOut]
    total: int


@router.get("/audit", response_model=AuditPage)
def audit(
    actor: ApiActor,
    session: DbSession,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 100,
    action: LineParam | None = None,
) -> AuditPage:
    """The audit log, newest first (hq_admin)."""
    rows, total = org.list_audit(
        session, actor=actor, offset=(page - 1) * size, limit=size, action=action
    )
    return AuditPage(items=[AuditOut.model_validate(r) for r in rows], total=total)


@router.get("/regions", response_model=list[RegionOut])
def provinces(actor: ApiActor, session: DbSession) -> list[RegionOut]:
    """The 31 provinces."""
    return [RegionOut.model_validate(r) for r in org.list_provinces(session)]
