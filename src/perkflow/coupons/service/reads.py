"""Reads of the ledger for campaign responses: claims and redemptions after an id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo


@dataclass(frozen=True)
class LedgerFact:
    """Something a subscriber did in the ledger that a campaign may count as a response."""

    id: int
    subscriber_id: int
    at: datetime
    value_fen: int
    ref: str  # what it was about: "coupon_batch:<id>"


def claims_since(session: Session, *, after_id: int, limit: int = 5_000) -> list[LedgerFact]:
    """Coupon claims after a coupon id, oldest first."""
    return [
        LedgerFact(i, s, at, 0, f"coupon_batch:{b}")
        for i, s, b, at in repo.claims_after(session, after_id=after_id, limit=limit)
    ]


def redemptions_since(session: Session, *, after_id: int, limit: int = 5_000) -> list[LedgerFact]:
    """Standing redemptions after a redemption id (value: the order amount), oldest first."""
    return [
        LedgerFact(i, s, at, v, f"coupon_batch:{b}")
        for i, s, b, at, v in repo.redemptions_after(session, after_id=after_id, limit=limit)
    ]
