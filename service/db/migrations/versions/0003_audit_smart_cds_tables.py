"""audit, SMART and CDS tables join the history

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Until now these tables were made by `create_all` when their store opened, so a database in
use already has them (with exactly these columns and indexes): each is created only where it
is missing, and its rows stay.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _audit_events() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("client_id", sa.String(length=256), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("trial_id", sa.String(length=64), nullable=True),
        sa.Column("patients", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_trial_id", "audit_events", ["trial_id"])


def _smart_launches() -> None:
    op.create_table(
        "smart_launches",
        sa.Column("state", sa.String(length=128), nullable=False),
        sa.Column("iss", sa.String(length=1024), nullable=False),
        sa.Column("launch", sa.String(length=1024), nullable=True),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("redirect_uri", sa.String(length=1024), nullable=False),
        sa.Column("token_endpoint", sa.String(length=1024), nullable=False),
        sa.Column("issuer", sa.String(length=1024), nullable=True),
        sa.Column("jwks_uri", sa.String(length=1024), nullable=True),
        sa.Column("verifier", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("state", name="pk_smart_launches"),
    )
    op.create_index("ix_smart_launches_expires_at", "smart_launches", ["expires_at"])


def _smart_sessions() -> None:
    op.create_table(
        "smart_sessions",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("iss", sa.String(length=1024), nullable=False),
        sa.Column("token_endpoint", sa.String(length=1024), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("patient", sa.String(length=256), nullable=True),
        sa.Column("user", sa.String(length=1024), nullable=False),
        sa.Column("need_patient_banner", sa.Boolean(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("access_expires_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_smart_sessions"),
    )
    op.create_index("ix_smart_sessions_expires_at", "smart_sessions", ["expires_at"])


def _smart_tickets() -> None:
    op.create_table(
        "smart_tickets",
        sa.Column("ticket", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("ticket", name="pk_smart_tickets"),
    )
    op.create_index("ix_smart_tickets_expires_at", "smart_tickets", ["expires_at"])


def _cds_cards() -> None:
    op.create_table(
        "cds_cards",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(length=128), nullable=False),
        sa.Column("hook_instance", sa.String(length=256), nullable=False),
        sa.Column("trial_id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cds_cards"),
    )
    op.create_index("ix_cds_cards_uuid", "cds_cards", ["uuid"], unique=True)
    op.create_index("ix_cds_cards_trial_id", "cds_cards", ["trial_id"])


def _cds_feedback() -> None:
    op.create_table(
        "cds_feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(length=128), nullable=False),
        sa.Column("client", sa.String(length=256), nullable=True),
        sa.Column("card_uuid", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_suggestions", sa.Text(), nullable=False),
        sa.Column("reason_system", sa.String(length=256), nullable=True),
        sa.Column("reason_code", sa.String(length=128), nullable=True),
        sa.Column("reason_display", sa.String(length=256), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_cds_feedback"),
    )
    op.create_index("ix_cds_feedback_card_uuid", "cds_feedback", ["card_uuid"])


TABLES: dict[str, Callable[[], None]] = {
    "audit_events": _audit_events,
    "smart_launches": _smart_launches,
    "smart_sessions": _smart_sessions,
    "smart_tickets": _smart_tickets,
    "cds_cards": _cds_cards,
    "cds_feedback": _cds_feedback,
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    # Drops the tables even where create_all had made them before 0003: downgrading below
    # 0003 means giving up the audit trail, SMART sessions and CDS feedback.
    for name in reversed(TABLES):
        op.drop_table(name)
