"""The membership migration creates exactly what the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Index, Integer, MetaData, Table
from sqlalchemy.engine import Engine

import perkflow.models_registry  # noqa: F401  (registers every table on Base.metadata)
from perkflow.db import Base
from perkflow.membership import models

TABLES = {
    m.__tablename__
    for m in vars(models).values()
    if isinstance(m, type) and issubclass(m, Base) and m is not Base
}


def _table_of(diff: Any) -> str | None:
    """The table an Alembic autogenerate diff is about."""
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        if isinstance(part, Table):
            return str(part.name)
        table = getattr(part, "table", None)
        if isinstance(table, Table):
            return str(table.name)
        if isinstance(part, str):
            return part
    return None


def test_diffs_are_attributed_to_their_table() -> None:
    table = Table("members", MetaData(), Column("x", Integer))
    index = Index("ix_x", table.c.x)
    assert _table_of(("add_table", table)) == "members"
    assert _table_of(("add_column", None, "members", table.c.x)) == "members"
    assert _table_of(("add_index", index)) == "members"
    assert _table_of([("modify_nullable", None, "members", "x", {}, True, False)]) == "members"


def test_migrated_membership_tables_match_the_models(engine: Engine) -> None:
    assert len(TABLES) == 12
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
    assert [d for d in diffs if _table_of(d) in TABLES] == []
