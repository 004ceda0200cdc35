"""Typed factories for test data, going through the same services as production."""

from __future__ import annotations

import itertools
from datetime import date

from sqlalchemy.orm import Session

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
