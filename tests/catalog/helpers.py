"""Shared set-up of the catalog tests: actors, a partner, benefit specs."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.models import Benefit, Partner
from perkflow.catalog.schemas import BenefitCreate, PartnerCreate
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import SYSTEM, Actor, Role
from tests.factories import make_staff


def staff_actor(session: Session, username: str, role: Role, region: str) -> Actor:
    user = make_staff(session, username=username, role=role, region=region)
    return org.actor_for_staff(session, user=user, ip="127.0.0.1")


def partner_key_actor(session: Session, *, partner_code: str | None, scopes: list[str]) -> Actor:
    _, plaintext = org.create_api_key(
        session,
        actor=SYSTEM,
        name=f"{partner_code}-key",
        owner_kind="partner",
        scopes=scopes,
        owner_ref=partner_code,
    )
    session.commit()
    actor = org.actor_for_api_key(session, presented=plaintext, ip="-")
    assert actor is not None
    return actor


def add_partner(session: Session, vault: Vault, code: str = "tv", **extra: Any) -> Partner:
    spec = PartnerCreate.model_validate({"code": code, "name": code.upper(), **extra})
    partner = catalog.create_partner(session, actor=SYSTEM, vault=vault, spec=spec)
    session.commit()
    return partner


def benefit_spec(**overrides: Any) -> BenefitCreate:
    values: dict[str, Any] = {
        "code": "tv-month",
        "partner_code": "tv",
        "name_zh": "视频月卡",
        "name_en": "Video, 1 month",
        "category": "video",
        "fulfilment_kind": "direct_recharge",
        "face_value_fen": 2500,
        "cost_price_fen": 1200,
        "sale_price_fen": 1500,
        "validity_kind": "days",
        "valid_days": 30,
    }
    return BenefitCreate.model_validate(values | overrides)


def add_benefit(session: Session, actor: Actor = SYSTEM, **overrides: Any) -> Benefit:
    benefit = catalog.create_benefit(session, actor=actor, spec=benefit_spec(**overrides))
    session.commit()
    return benefit
