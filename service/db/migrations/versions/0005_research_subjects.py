"""research_subjects: what cohort-match knows of each ResearchSubject it writes
(service/worklist/subjects.py)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

One row per trial and patient: the status last written or read back, and how the write-back
of the patient's latest decision went. The decision states need no change: `decisions.state`
is a plain String(16) without a check constraint, so `consented` fits as it is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "research_subjects",
        sa.Column("trial_id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=True),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("trial_id", "patient", name="pk_research_subjects"),
    )


def downgrade() -> None:
    op.drop_table("research_subjects")
