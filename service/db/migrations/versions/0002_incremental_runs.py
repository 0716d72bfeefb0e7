"""incremental runs: how each run got its data

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add columns inside ALTER with constraints otherwise.
    with op.batch_alter_table("sweep_runs") as batch:
        # requested: "auto" (incremental when a snapshot allows) or "full"; set at claim.
        batch.add_column(sa.Column("requested_mode", sa.String(length=16), nullable=True))
        # how it ran: "files", "full" or "incremental"; set with `completed`.
        batch.add_column(sa.Column("mode", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("based_on", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("changes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweep_runs") as batch:
        batch.drop_column("changes")
        batch.drop_column("based_on")
        batch.drop_column("mode")
        batch.drop_column("requested_mode")
