"""import sources: an imported history's outside ids live in their own namespace

Revision ID: 0014_import_sources
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_import_sources"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Histories imported before sources existed were never matched to the subscriber master, so
# their ids were an outside system's written over real subscribers: move them out of our id space
# (negated, under the source "import"), so history sync and response features stop reading them.
_UPGRADE = (
    "UPDATE campaigns SET import_source = 'import' WHERE kind = 'imported'",
    "UPDATE campaign_contacts SET import_source = 'import', subscriber_id = -subscriber_id "
    "WHERE subscriber_id > 0 AND campaign_id IN (SELECT id FROM campaigns WHERE kind = 'imported')",
    "UPDATE campaign_responses SET import_source = 'import', subscriber_id = -subscriber_id "
    "WHERE subscriber_id > 0 AND campaign_id IN (SELECT id FROM campaigns WHERE kind = 'imported')",
)
_DOWNGRADE = (
    "UPDATE campaign_contacts SET subscriber_id = -subscriber_id "
    "WHERE import_source IS NOT NULL AND subscriber_id < 0",
    "UPDATE campaign_responses SET subscriber_id = -subscriber_id "
    "WHERE import_source IS NOT NULL AND subscriber_id < 0",
)
_TABLES = ("campaigns", "campaign_contacts", "campaign_responses")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("import_source", sa.String(length=32), nullable=True))
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWNGRADE:
        op.execute(statement)
    for table in reversed(_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("import_source")
