"""Alembic environment: the ledger URL comes from perkflow settings unless given."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from perkflow import models_registry  # noqa: F401  (imports every capability's models)
from perkflow.db import Base, make_engine
from perkflow.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().ledger_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


run_migrations_online()
