"""sweep_runs and sweep_results

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trial_id", sa.String(length=64), nullable=False),
        sa.Column("trial_version", sa.String(length=64), nullable=False),
        sa.Column("terminology_version", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("likely_eligible", sa.Integer(), nullable=False),
        sa.Column("possibly_eligible", sa.Integer(), nullable=False),
        sa.Column("ineligible", sa.Integer(), nullable=False),
        sa.Column("resources", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("attrition", sa.JSON(), nullable=True),
        sa.Column("problems", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("write_back", sa.Text(), nullable=True),
        sa.Column("results_purged", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sweep_runs"),
    )
    # At most one running sweep per trial, enforced by the database itself.
    op.create_index(
        "ix_sweep_runs_one_running",
        "sweep_runs",
        ["trial_id"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_sweep_runs_trial_id_id", "sweep_runs", ["trial_id", "id"])
    op.create_table(
        "sweep_results",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("patient", sa.String(length=255), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("fails", sa.Integer(), nullable=False),
        sa.Column("unknowns", sa.Integer(), nullable=False),
        sa.Column("verdicts", sa.JSON(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sweep_runs.id"],
            name="fk_sweep_results_run_id_sweep_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "patient", name="pk_sweep_results"),
    )
    op.create_index("ix_sweep_results_run_id_rank", "sweep_results", ["run_id", "rank"])


def downgrade() -> None:
    op.drop_index("ix_sweep_results_run_id_rank", table_name="sweep_results")
    op.drop_table("sweep_results")
    op.drop_index("ix_sweep_runs_trial_id_id", table_name="sweep_runs")
    op.drop_index("ix_sweep_runs_one_running", table_name="sweep_runs")
    op.drop_table("sweep_runs")
