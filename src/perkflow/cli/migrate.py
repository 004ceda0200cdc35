"""Alembic from code: migrate a ledger to head and load its reference data."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from perkflow.db import make_session_factory, unit_of_work
from perkflow.org import service as org

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(url: str) -> Config:
    """Alembic settings pointing at the project's migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> int:
    """Migrate to head on this engine, then seed the region tree; returns regions added."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
    with unit_of_work(make_session_factory(engine)) as session:
        added = org.seed_regions(session)
        session.commit()
    return added
