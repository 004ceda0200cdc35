"""Rows written by the bulk path read back exactly as the ORM writes them, awkward values too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from perkflow import bulk
from perkflow.grants.models import Grant, GrantEvent, OutboxMessage
from perkflow.grants.repository import EVENT_COLUMNS, MESSAGE_COLUMNS
from perkflow.kit.crypto import Vault
from perkflow.membership import service as membership
from perkflow.org.rules import SYSTEM
from tests.membership.helpers import ZONE, frozen
from tests.membership.test_bundle_speed import _silver

# Characters that array literals, JSON text or SQL would each quote or escape differently.
AWKWARD = ['a "quoted" word', "back\\slash", "{brace, comma}", "NULL", "", "权益 ✓", "tab\tline\n"]


def _a_grant(sessions: sessionmaker[Session], vault: Vault) -> int:
    _silver(sessions, vault, 1)
    with frozen(), sessions() as s:
        page = membership.members_page(s, after=0, limit=1)
        membership.issue_bundles_for(s, actor=SYSTEM, members=page, month="2026-11", zone=ZONE)
        s.commit()
        gid = s.scalars(select(Grant.id).order_by(Grant.id)).first()
    assert gid is not None
    return gid


def test_bulk_rows_read_back_as_the_orm_writes_them(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    gid = _a_grant(sessions, vault)
    at = datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=8)))
    payload = {"note": AWKWARD, "n": 3, "ok": True, "none": None, "nested": {"x": [1.5, "y"]}}
    with sessions() as s:
        bulk.insert(
            s,
            GrantEvent.__table__,
            EVENT_COLUMNS,
            [
                (gid, None if i % 2 else "pending", "fulfilled", r, at)
                for i, r in enumerate(AWKWARD)
            ],
        )
        bulk.insert(
            s,
            OutboxMessage.__table__,
            MESSAGE_COLUMNS,
            [(gid, "fulfil", "pending", 0, at, payload, at, at)],
        )
        bulk.update_by_key(
            s, Grant.__table__, key="id", column="partner_order_id", pairs=[(gid, AWKWARD[0])]
        )
        s.commit()
    with sessions() as s:
        events = s.execute(
            select(GrantEvent.from_status, GrantEvent.reason, GrantEvent.at)
            .where(GrantEvent.reason.in_(AWKWARD))
            .order_by(GrantEvent.id)
        ).all()
        message = s.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "fulfil").order_by(OutboxMessage.id)
        ).all()[-1]
        order = s.scalar(select(Grant.partner_order_id).where(Grant.id == gid))
    assert [tuple(e) for e in events] == [
        (None if i % 2 else "pending", r, at.astimezone(UTC)) for i, r in enumerate(AWKWARD)
    ]
    assert message.payload == payload
    assert (message.next_attempt_at, message.created_at) == (at, at)
    assert order == AWKWARD[0]
