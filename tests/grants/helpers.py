"""Test helpers for grants: card-code pools, partners wired to a simulator, counting rows."""

from __future__ import annotations

import itertools
from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.catalog.models import Benefit, CardCode, CardCodeLot
from perkflow.grants.models import Grant, GrantEvent, OutboxMessage
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.models import ApiKey
from tests.factories import make_api_key

ZONE = "Asia/Shanghai"
SECRET = "partner-shared-secret-0123456789"
_phones = itertools.count(13800000000 + 1)


def phones(n: int, province: str = "GD", city: str = "GD01") -> list[tuple[str, str, str]]:
    """n fresh (phone, province, city) triples."""
    return [(str(next(_phones)), province, city) for _ in range(n)]


def add_card_codes(
    session: Session, vault: Vault, *, benefit: Benefit, n: int, expires_on: date | None = None
) -> list[str]:
    """Load n encrypted codes into a benefit's pool and raise its stock by n; committed."""
    now = clock.now()
    lot = CardCodeLot(
        benefit_id=benefit.id,
        file_name="test.csv",
        unit_cost_fen=1000,
        count=n,
        imported_by="test",
        imported_at=now,
    )
    session.add(lot)
    session.flush()
    codes = [f"CODE-{benefit.id}-{lot.id}-{i:05d}" for i in range(n)]
    rows = []
    for code in codes:
        code_hash = vault.lookup.digest(code)
        context = catalog.code_context(benefit_id=benefit.id, code_hash=code_hash)
        rows.append(
            CardCode(
                lot_id=lot.id,
                benefit_id=benefit.id,
                code_enc=vault.pii.encrypt(code, context),
                pin_enc=vault.pii.encrypt("0000", context),
                code_hash=code_hash,
                expires_on=expires_on,
                status="available",
            )
        )
    session.add_all(rows)
    session.execute(
        update(Benefit)
        .where(Benefit.id == benefit.id)
        .values(
            stock_total=func.coalesce(Benefit.stock_total, 0) + n,
            stock_remaining=func.coalesce(Benefit.stock_remaining, 0) + n,
        )
    )
    session.commit()
    session.refresh(benefit)
    return codes


def partner_key(session: Session, *, partner_code: str, scopes: list[str]) -> str:
    """A partner's API key acting for one partner code; committed."""
    plaintext = make_api_key(session, scopes=scopes, owner="partner")
    key = session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).first()
    assert key is not None
    key.owner_ref = partner_code
    session.commit()
    return plaintext


def stock_of(session: Session, benefit_id: int) -> int | None:
    session.expire_all()
    return session.scalar(select(Benefit.stock_remaining).where(Benefit.id == benefit_id))


def statuses(session: Session) -> dict[str, int]:
    rows = session.execute(select(Grant.status, func.count()).group_by(Grant.status))
    return {str(s): int(n) for s, n in rows}


def fulfilled_events(session: Session, grant_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(GrantEvent)
            .where(GrantEvent.grant_id == grant_id, GrantEvent.to_status == "fulfilled")
        )
        or 0
    )


def outbox(session: Session) -> list[OutboxMessage]:
    session.expire_all()
    return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
