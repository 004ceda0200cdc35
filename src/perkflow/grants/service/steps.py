"""Grants use cases: small shared steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from perkflow.catalog import service as catalog
from perkflow.errors import Conflict
from perkflow.grants import repository as repo
from perkflow.grants.models import Grant
from perkflow.grants.rules import (
    TOTAL_PERIOD,
    OutboxKind,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org.rules import subscriber_actor as subscriber_actor

# --- small shared steps ---------------------------------------------------------------------------


def _event(
    session: Session, *, grant_id: int, from_status: str | None, to_status: str, reason: str
) -> None:
    repo.add_event(
        session,
        grant_id=grant_id,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        at=clock.now(),
    )


def _took_stock(session: Session, grant: Grant) -> bool:
    """Whether the grant's outstanding reservation took stock (recorded with its latest message)."""
    for message in reversed(repo.messages_of(session, grant.id, OutboxKind.FULFIL)):
        if "took_stock" in message.payload:
            return bool(message.payload["took_stock"])
    return catalog.get_benefit(session, benefit_id=grant.benefit_id).stock_total is not None


def _release(session: Session, grants: Sequence[Grant]) -> None:
    """Give back what pending grants reserved, benefit rows in primary-key order."""
    for grant in sorted(grants, key=lambda g: (g.benefit_id, g.id)):
        catalog.release_reservation(
            session,
            reservation=catalog.Reservation(
                benefit_id=grant.benefit_id,
                took_stock=_took_stock(session, grant),
                card_code_id=grant.card_code_id,
            ),
        )


def _count(session: Session, *, grant: Grant, limits: tuple[int | None, int | None]) -> None:
    """Count a grant against the month and total limits, or raise 409 and count nothing."""
    # Periods in key order ("2026-11" < "total"): concurrent grants lock the rows alike.
    for period, limit, label in (
        (grant.period, limits[0], "per month"),
        (TOTAL_PERIOD, limits[1], "in total"),
    ):
        repo.ensure_counter(
            session, subscriber_id=grant.subscriber_id, benefit_id=grant.benefit_id, period=period
        )
        # One conditional UPDATE: the row count says whether this grant still fits the limit.
        if not repo.bump_counter(
            session,
            subscriber_id=grant.subscriber_id,
            benefit_id=grant.benefit_id,
            period=period,
            limit=limit,
        ):
            raise Conflict(
                f"limit reached: {limit} {label} for this benefit",
                field="benefit_id",
                limit=label,
            )


def _uncount(session: Session, grant: Grant) -> None:
    for period in (grant.period, TOTAL_PERIOD):
        repo.drop_counter(
            session, subscriber_id=grant.subscriber_id, benefit_id=grant.benefit_id, period=period
        )


def _partner_secret(vault: Vault, partner: Any) -> str | None:
    if not partner.connector_secret_enc:
        return None
    secret: str = vault.pii.decrypt(
        partner.connector_secret_enc, f"partner:{partner.code}".encode()
    )
    return secret


def _has_connector(partner: Any) -> bool:
    return bool(partner.connector_kind == "http" and partner.connector_url)
