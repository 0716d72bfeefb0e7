"""decisions: the coordinator's pre-screening log (service/worklist/store.py)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

Append-only: one row per decision recorded, the current decision is the latest.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trial_id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("criterion", sa.String(length=64), nullable=True),
        sa.Column("until", sa.Date(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("client_id", sa.String(length=256), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("basis_status", sa.String(length=32), nullable=True),
        sa.Column("basis_verdicts", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_trial_id_patient", "decisions", ["trial_id", "patient"])


def downgrade() -> None:
    op.drop_table("decisions")
