"""Histories imported before import sources existed leave our subscribers' id space on upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from perkflow.cli.migrate import alembic_config

AT = "2026-03-01 02:00:00.000000"
CAMPAIGN = (
    "INSERT INTO campaigns (id, name, kind, status, goal, offer, variants, schedule, throttle,"
    " control_share_bp, test_share_bp, salt, created_by, created_at, updated_at, version)"
    " VALUES (:id, :name, :kind, 'finished', '{}', '{}', '[]', '{}', '{}', 0, 0, 's', 'system',"
    " :at, :at, 1)"
)
WAVE = (
    "INSERT INTO campaign_waves (id, campaign_id, kind, share_bp, status, planned, created_by,"
    " created_at) VALUES (:id, :id, 'imported', 10000, 'done', 1, 'system', :at)"
)
CONTACT = (
    "INSERT INTO campaign_contacts (id, campaign_id, wave_id, subscriber_id, cell, channel,"
    " status, attempts, contacted_at) VALUES (:id, :id, :id, 17, 'target', 'x', 'delivered', 1,"
    " :at)"
)
RESPONSE = (
    "INSERT INTO campaign_responses (id, campaign_id, contact_id, subscriber_id, cell, kind,"
    " value_fen, responded_at, source, idempotency_key) VALUES (:id, :id, :id, 17, 'target', 'x',"
    " 0, :at, 'import', :key)"
)


def test_upgrade_moves_old_imports_under_a_source_and_leaves_ledger_campaigns(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    engine = create_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
    with engine.begin() as conn:
        for cid, kind in ((1, "imported"), (2, "batch")):
            conn.execute(text(CAMPAIGN), {"id": cid, "name": kind, "kind": kind, "at": AT})
            conn.execute(text(WAVE), {"id": cid, "at": AT})
            conn.execute(text(CONTACT), {"id": cid, "at": AT})
            conn.execute(text(RESPONSE), {"id": cid, "at": AT, "key": f"k{cid}"})
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0014_import_sources")
    with engine.connect() as conn:
        campaigns = conn.execute(text("SELECT id, import_source FROM campaigns ORDER BY id"))
        assert campaigns.all() == [(1, "import"), (2, None)]
        for table in ("campaign_contacts", "campaign_responses"):
            rows = conn.execute(
                text(f"SELECT campaign_id, subscriber_id, import_source FROM {table} ORDER BY id")
            )
            assert rows.all() == [(1, -17, "import"), (2, 17, None)]
    engine.dispose()
