"""Alembic from code: migrate a ledger to head and load its reference data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from perkflow.db import make_session_factory, unit_of_work
from perkflow.org import service as org

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(url: str) -> Config:
    """Alembic settings pointing at the project's migrations."""
    from alembic.config import Config  # imported where used: alembic is slow to import

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> int:
    """Migrate to head on this engine, then seed the region tree; returns regions added."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
    with unit_of_work(make_session_factory(engine)) as session:
        added = org.seed_regions(session)
        session.commit()
    return added
