"""inbox links: an in-app message carries the path of what it invites the subscriber to claim

Revision ID: 0015_inbox_links
Revises: 0014_import_sources
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_inbox_links"
down_revision: str | None = "0014_import_sources"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.drop_column("link")
