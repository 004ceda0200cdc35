"""Grants use cases: reads for campaign responses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from perkflow.grants import repository as repo
from perkflow.org.rules import subscriber_actor as subscriber_actor

# ---- reads for campaign responses ----------------------------------------------------------------


@dataclass(frozen=True)
class GrantUse:
    """A grant the subscriber used: a response a campaign of that benefit may count."""

    id: int  # the grant event's id (the cursor)
    subscriber_id: int
    at: datetime
    value_fen: int
    ref: str  # "benefit:<id>"


def uses_since(session: Session, *, after_id: int, limit: int = 5_000) -> list[GrantUse]:
    """Grant uses after a grant-event id, oldest first."""
    return [
        GrantUse(i, s, at, 0, f"benefit:{b}")
        for i, s, b, at in repo.uses_after(session, after_id=after_id, limit=limit)
    ]
