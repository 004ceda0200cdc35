"""Typed factories for test data, going through the same services as production."""

from __future__ import annotations

import itertools
from datetime import date

from sqlalchemy.orm import Session

from perkflow.catalog.models import Benefit, Partner
from perkflow.catalog.rules import BenefitStatus, Category, FulfilmentKind, ValidityKind
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.models import StaffUser
from perkflow.org.rules import SYSTEM, Role
from perkflow.subscribers import service as subscribers

PASSWORD = "correct-horse-42"
_ids = itertools.count(1)


def make_staff(
    session: Session, *, username: str, role: Role, region: str, password: str = PASSWORD
) -> StaffUser:
    """A console user, committed."""
    user = org.create_staff(
        session,
        actor=SYSTEM,
        username=username,
        display_name=username.title(),
        password=password,
        role=role,
        region_code=region,
    )
    session.commit()
    return user


def make_subscribers(
    session: Session,
    vault: Vault,
    rows: list[tuple[str, str, str]],
    *,
    status: str = "active",
    plan_fee_fen: int = 9900,
) -> list[int]:
    """Subscribers from (phone, province, city) triples, committed; returns their ids."""
    ids = []
    records = []
    for phone, province, city in rows:
        sid = next(_ids) + 1_000_000
        ids.append(sid)
        records.append(
            {
                "id": sid,
                "phone": phone,
                "province_code": province,
                "city_code": city,
                "plan_fee_fen": plan_fee_fen,
                "status": status,
                "joined_on": date(2024, 5, 1),
            }
        )
    subscribers.register_subscribers(session, vault=vault, rows=records)
    session.commit()
    return ids


def make_api_key(session: Session, *, scopes: list[str], owner: str = "channel") -> str:
    """An API key's plaintext, committed."""
    _, plaintext = org.create_api_key(
        session, actor=SYSTEM, name=f"key-{next(_ids)}", owner_kind=owner, scopes=scopes
    )
    session.commit()
    return plaintext


def make_partner(
    session: Session,
    *,
    code: str = "tencent-video",
    connector_url: str = "",
    secret: str | None = None,
    vault: Vault | None = None,
    supports_revoke: bool = False,
    max_attempts: int = 5,
    timeout_ms: int = 2000,
) -> Partner:
    """A partner, committed; with `connector_url` it is reached over HTTP."""
    partner = Partner(
        code=code,
        name=code.replace("-", " ").title(),
        contact_name="Ops",
        contact_email=f"ops@{code}.example",
        contact_phone="",
        settlement_terms={"cycle": "monthly"},
        connector_kind="http" if connector_url else "none",
        connector_url=connector_url,
        connector_secret_enc=(
            vault.pii.encrypt(secret, f"partner:{code}".encode()) if secret and vault else None
        ),
        connector_timeout_ms=timeout_ms,
        connector_max_attempts=max_attempts,
        supports_revoke=supports_revoke,
        created_at=clock.now(),
    )
    session.add(partner)
    session.commit()
    return partner


def make_benefit(
    session: Session,
    *,
    partner: Partner,
    code: str = "video-vip-month",
    kind: FulfilmentKind = FulfilmentKind.DIRECT_RECHARGE,
    category: Category = Category.VIDEO,
    stock: int | None = None,
    limit_per_month: int | None = None,
    limit_total: int | None = None,
    valid_days: int = 30,
    status: BenefitStatus = BenefitStatus.LISTED,
    revocable: bool = True,
) -> Benefit:
    """A benefit SKU (listed by default), committed."""
    now = clock.now()
    benefit = Benefit(
        code=code,
        partner_id=partner.id,
        name_zh="视频会员月卡",
        name_en="Video VIP, 1 month",
        category=category.value,
        fulfilment_kind=kind.value,
        face_value_fen=2500,
        cost_price_fen=1200,
        sale_price_fen=1500,
        validity_kind=ValidityKind.DAYS.value,
        valid_days=valid_days,
        stock_total=stock,
        stock_remaining=stock,
        low_stock_threshold=0,
        limit_per_month=limit_per_month,
        limit_total=limit_total,
        revocable=revocable,
        status=status.value,
        created_at=now,
        updated_at=now,
    )
    session.add(benefit)
    session.commit()
    return benefit
