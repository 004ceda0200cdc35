"""Helpers shared by the campaign queries: the contacts table for Core, dialect INSERT, rowcount."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from perkflow.campaigns.models import CampaignContact


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# The contacts table for Core statements on the dispatch hot path (no ORM bookkeeping per row).
_CONTACTS = cast(Table, CampaignContact.__table__)


def _insert(session: Session, model: Any) -> Any:
    """The dialect's INSERT … ON CONFLICT construct (PostgreSQL and SQLite spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)
