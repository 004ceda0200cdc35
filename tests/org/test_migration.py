"""The migrations create exactly what the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

import perkflow.models_registry  # noqa: F401  (registers every table on Base.metadata)
from perkflow.db import Base


def test_migrated_ledger_matches_every_model(engine: Engine) -> None:
    # The whole ledger, not one capability's tables: a column added to a model without its
    # migration (the staff session epoch, the sign-in throttle, link nonces) fails here.
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
