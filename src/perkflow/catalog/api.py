"""JSON API of the catalog: benefits and partners for the console, channels and partners."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.models import Benefit, Partner
from perkflow.catalog.rules import BenefitStatus, Category
from perkflow.catalog.schemas import (
    BenefitCreate,
    BenefitOut,
    BenefitPage,
    BenefitStatusChange,
    BenefitUpdate,
    LotOut,
    PartnerCreate,
    PartnerOut,
    PartnerUpdate,
)
from perkflow.kit.bounds import IdParam
from perkflow.web.auth import ApiActor, DbSession, VaultDep

router = APIRouter(prefix="/v1", tags=["catalog"])


def _benefits_out(session: Session, rows: Sequence[Benefit]) -> list[BenefitOut]:
    partners = catalog.partners_by_id(session, ids={b.partner_id for b in rows})
    return [
        BenefitOut.model_validate(
            {
                **{c: getattr(b, c) for c in BenefitOut.model_fields if hasattr(b, c)},
                "partner_code": partners[b.partner_id].code,
                "low_stock": catalog.is_low_on_stock(b),
            }
        )
        for b in rows
    ]


def _partner_out(partner: Partner) -> PartnerOut:
    return PartnerOut.model_validate(
        {
            **{c: getattr(partner, c) for c in PartnerOut.model_fields if hasattr(partner, c)},
            "has_connector_secret": partner.connector_secret_enc is not None,
        }
    )


@router.get("/benefits", response_model=BenefitPage)
def list_benefits(
    actor: ApiActor,
    session: DbSession,
    category: Category | None = None,
    status: BenefitStatus | None = None,
    partner_id: IdParam | None = None,
    low_stock: Annotated[bool, Query(description="only benefits at or below threshold")] = False,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> BenefitPage:
    """The catalog (scope `catalog:read`); a partner's key sees only its own benefits."""
    rows, total = catalog.list_benefits(
        session,
        actor=actor,
        category=category.value if category else None,
        status=status.value if status else None,
        partner_id=partner_id,
        low_stock_only=low_stock,
        offset=(page - 1) * size,
        limit=size,
    )
    return BenefitPage(items=_benefits_out(session, rows), total=total, page=page, size=size)


@router.get("/benefits/{benefit_id}", response_model=BenefitOut)
def get_benefit(benefit_id: IdParam, actor: ApiActor, session: DbSession) -> BenefitOut:
    """One benefit with its price, validity, stock and limits."""
    return _benefits_out(
        session, [catalog.read_benefit(session, actor=actor, benefit_id=benefit_id)]
    )[0]


@router.post("/benefits", response_model=BenefitOut, status_code=201)
def create_benefit(body: BenefitCreate, actor: ApiActor, session: DbSession) -> BenefitOut:
    """Add a benefit SKU as a draft (hq_admin)."""
    return _benefits_out(session, [catalog.create_benefit(session, actor=actor, spec=body)])[0]


@router.patch("/benefits/{benefit_id}", response_model=BenefitOut)
def update_benefit(
    benefit_id: IdParam, body: BenefitUpdate, actor: ApiActor, session: DbSession
) -> BenefitOut:
    """Change the fields given (hq_admin); stock moves by the delta, never below units taken."""
    benefit = catalog.update_benefit(session, actor=actor, benefit_id=benefit_id, changes=body)
    return _benefits_out(session, [benefit])[0]


@router.post("/benefits/{benefit_id}/status", response_model=BenefitOut)
def change_benefit_status(
    benefit_id: IdParam,
    body: BenefitStatusChange,
    request: Request,
    actor: ApiActor,
    session: DbSession,
) -> BenefitOut:
    """List, delist or relist a benefit (hq_admin)."""
    benefit = catalog.set_benefit_status(
        session,
        actor=actor,
        benefit_id=benefit_id,
        status=body.status,
        zone=request.app.state.settings.timezone,
    )
    return _benefits_out(session, [benefit])[0]


@router.get("/benefits/{benefit_id}/card-code-lots", response_model=list[LotOut])
def card_code_lots(benefit_id: IdParam, actor: ApiActor, session: DbSession) -> list[LotOut]:
    """The imported card-code lots of a benefit, newest first (never the codes)."""
    return [
        LotOut.model_validate(lot)
        for lot in catalog.list_lots(session, actor=actor, benefit_id=benefit_id)
    ]


@router.get("/partners", response_model=list[PartnerOut])
def list_partners(actor: ApiActor, session: DbSession) -> list[PartnerOut]:
    """Partners (a partner's key sees only itself); connector secrets are never returned."""
    return [_partner_out(p) for p in catalog.list_partners(session, actor=actor)]


@router.get("/partners/{partner_id}", response_model=PartnerOut)
def get_partner(partner_id: IdParam, actor: ApiActor, session: DbSession) -> PartnerOut:
    """One partner."""
    return _partner_out(catalog.read_partner(session, actor=actor, partner_id=partner_id))


@router.post("/partners", response_model=PartnerOut, status_code=201)
def create_partner(
    body: PartnerCreate, actor: ApiActor, session: DbSession, vault: VaultDep
) -> PartnerOut:
    """Add a partner (hq_admin); the connector secret is stored encrypted."""
    return _partner_out(catalog.create_partner(session, actor=actor, vault=vault, spec=body))


@router.patch("/partners/{partner_id}", response_model=PartnerOut)
def update_partner(
    partner_id: IdParam, body: PartnerUpdate, actor: ApiActor, session: DbSession, vault: VaultDep
) -> PartnerOut:
    """Change the fields given (hq_admin); a left-out secret keeps the stored one."""
    partner = catalog.update_partner(
        session, actor=actor, vault=vault, partner_id=partner_id, changes=body
    )
    return _partner_out(partner)
