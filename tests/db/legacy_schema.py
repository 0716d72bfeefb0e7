"""The database as the code before one Alembic history left it (commit e2b52ec), rebuilt
exactly as that code built it, with one row in every table.

    audit_events                      create_all of service/audit.py's own base
    smart_launches/sessions/tickets   create_all of service/smart/store.py's own base
    cds_cards, cds_feedback           create_all of service/cds/store.py's own base
    sweep_runs, sweep_results         Alembic 0001 + 0002 (these files are unchanged),
                                      version table `sweeps_alembic_version`

The three bases are frozen here as plain tables (no naming convention, like the old bases):
the test is that the new code upgrades such a database in place.
"""

from __future__ import annotations

import datetime as dt
import zlib

import orjson
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import Connection, Engine

from service.audit import AuditRecord, AuditStore
from service.cds.store import CdsStore
from service.db.migrate import LEGACY_VERSION_TABLE, MIGRATIONS, VERSION_TABLE, metadata
from service.smart.store import SessionStore
from service.sweeps.store import RESULTS, RUNS, SweepStore

HEAD = "0005"

AUDIT = MetaData()
Table(
    "audit_events",
    AUDIT,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("request_id", String(64), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("client_id", String(256), nullable=True),
    Column("action", String(64), nullable=False),
    Column("trial_id", String(64), nullable=True, index=True),
    Column("patients", Text, nullable=False),
    Column("outcome", String(64), nullable=False),
)

SMART = MetaData()
Table(
    "smart_launches",
    SMART,
    Column("state", String(128), primary_key=True),
    Column("iss", String(1024), nullable=False),
    Column("launch", String(1024), nullable=True),
    Column("target", String(1024), nullable=False),
    Column("redirect_uri", String(1024), nullable=False),
    Column("token_endpoint", String(1024), nullable=False),
    Column("issuer", String(1024), nullable=True),
    Column("jwks_uri", String(1024), nullable=True),
    Column("verifier", String(128), nullable=False),
    Column("scope", Text, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)
Table(
    "smart_sessions",
    SMART,
    Column("id", String(128), primary_key=True),
    Column("iss", String(1024), nullable=False),
    Column("token_endpoint", String(1024), nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient", String(256), nullable=True),
    Column("user", String(1024), nullable=False),
    Column("need_patient_banner", Boolean, nullable=False),
    Column("access_token", Text, nullable=False),
    Column("refresh_token", Text, nullable=True),
    Column("access_expires_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)
Table(
    "smart_tickets",
    SMART,
    Column("ticket", String(128), primary_key=True),
    Column("session_id", String(128), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

CDS = MetaData()
Table(
    "cds_cards",
    CDS,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(64), nullable=False, unique=True, index=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("service_id", String(128), nullable=False),
    Column("hook_instance", String(256), nullable=False),
    Column("trial_id", String(64), nullable=False, index=True),
    Column("patient", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("as_of", Date, nullable=False),
)
Table(
    "cds_feedback",
    CDS,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("service_id", String(128), nullable=False),
    Column("client", String(256), nullable=True),
    Column("card_uuid", String(128), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("outcome_at", DateTime(timezone=True), nullable=False),
    Column("accepted_suggestions", Text, nullable=False),
    Column("reason_system", String(256), nullable=True),
    Column("reason_code", String(128), nullable=True),
    Column("reason_display", String(256), nullable=True),
    Column("user_comment", Text, nullable=True),
)

AT = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
SESSION_EXPIRES = 4_102_444_800.0  # 2100-01-01: alive whenever the test runs
# One row per table: (table, row). Synthetic references only.
ROWS: list[tuple[str, dict[str, object]]] = [
    (
        "audit_events",
        {
            "at": AT,
            "request_id": "req-legacy",
            "subject": "clinician-1",
            "client_id": None,
            "action": "match",
            "trial_id": "NCT06946485",
            "patients": '["Patient/p01"]',
            "outcome": "ok",
        },
    ),
    (
        "smart_launches",
        {
            "state": "state-legacy",
            "iss": "https://ehr.example/fhir",
            "launch": "l1",
            "target": "/app/",
            "redirect_uri": "https://cm.example/callback",
            "token_endpoint": "https://ehr.example/token",
            "issuer": None,
            "jwks_uri": None,
            "verifier": "v" * 43,
            "scope": "launch openid",
            "expires_at": SESSION_EXPIRES,
        },
    ),
    (
        "smart_sessions",
        {
            "id": "session-legacy",
            "iss": "https://ehr.example/fhir",
            "token_endpoint": "https://ehr.example/token",
            "scope": "patient/*.rs",
            "patient": "p01",
            "user": "Practitioner/1",
            "need_patient_banner": True,
            "access_token": "at",
            "refresh_token": None,
            "access_expires_at": SESSION_EXPIRES,
            "expires_at": SESSION_EXPIRES,
        },
    ),
    (
        "smart_tickets",
        {"ticket": "ticket-legacy", "session_id": "session-legacy", "expires_at": SESSION_EXPIRES},
    ),
    (
        "cds_cards",
        {
            "uuid": "card-legacy",
            "issued_at": AT,
            "service_id": "trial-match",
            "hook_instance": "hook-1",
            "trial_id": "NCT06946485",
            "patient": "Patient/p01",
            "status": "likely_eligible",
            "as_of": AT.date(),
        },
    ),
    (
        "cds_feedback",
        {
            "received_at": AT,
            "service_id": "trial-match",
            "client": "ehr",
            "card_uuid": "card-legacy",
            "outcome": "overridden",
            "outcome_at": AT,
            "accepted_suggestions": "[]",
            "reason_system": None,
            "reason_code": "not-interested",
            "reason_display": None,
            "user_comment": "declined",
        },
    ),
    (
        "sweep_runs",
        {
            "trial_id": "NCT06946485",
            "trial_version": "1",
            "terminology_version": "t",
            "as_of": AT.date(),
            "source_kind": "files",
            "source": "/data",
            "status": "completed",
            "requested_by": "legacy",
            "started_at": AT,
            "ended_at": AT,
            "heartbeat_at": AT,
            "pid": 1,
            "host": "h",
            "cancel_requested": False,
            "stage": "done",
            "done": 1,
            "total": 1,
            "stored": 1,
            "patients": 1,
            "likely_eligible": 1,
            "possibly_eligible": 0,
            "ineligible": 0,
            "resources": 3,
            "errors": 0,
            "criteria": [{"id": "I1", "kind": "inclusion", "assessment": "automatic", "text": "x"}],
            "results_purged": False,
            "requested_mode": "auto",
            "mode": "files",
        },
    ),
    (
        "sweep_results",
        {
            "patient": "Patient/p01",
            "rank": 1,
            "status": "likely_eligible",
            "score": 1.0,
            "fails": 0,
            "unknowns": 0,
            "verdicts": {"I1": "pass"},
            "result": zlib.compress(orjson.dumps({"patient": "Patient/p01", "rank": 1})),
        },
    ),
]
TABLES = [table for table, _ in ROWS]


def _sweep_migrations_of_today(conn: Connection) -> None:
    """`upgrade 0002` the way the sweep store did: its own version table."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    with EnvironmentContext(
        config,
        script,
        fn=lambda revision, _context: script._upgrade_revs("0002", revision),
        destination_rev="0002",
    ) as env:
        env.configure(
            connection=conn,
            version_table=LEGACY_VERSION_TABLE,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with env.begin_transaction():
            env.run_migrations()


def create_todays_database(engine: Engine) -> None:
    """Today's schema, in the order today's API made it (audit, SMART, CDS, then sweeps),
    with ROWS in it."""
    for base in (AUDIT, SMART, CDS):
        base.create_all(engine)
    with engine.begin() as conn:
        _sweep_migrations_of_today(conn)
    # The sweep tables as the migrations made them; SweepStore's table objects only name the
    # columns of the inserts.
    everything = {**AUDIT.tables, **SMART.tables, **CDS.tables, "sweep_runs": RUNS}
    run_id: object = None
    with engine.begin() as conn:
        for table, row in ROWS:
            if table == "sweep_results":
                conn.execute(insert(RESULTS), [{**row, "run_id": run_id}])
            else:
                done = conn.execute(insert(everything[table]), [row])
                if table == "sweep_runs":
                    run_id = done.inserted_primary_key[0]


def schema_differences(engine: Engine) -> list[object]:
    """What Alembic's autogenerate would still change: [] when the database is what the
    models describe."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, metadata()))


def assert_upgraded_in_place(engine: Engine) -> None:
    """Open every store the API opens on `engine` (a database `create_todays_database` made)
    and check that the schema is at head and that every row is still there and readable."""
    now = SESSION_EXPIRES - 3600
    audit = AuditStore(engine)
    sessions = SessionStore(engine, clock=lambda: now)
    cds = CdsStore(engine)
    sweeps = SweepStore(engine)

    tables = set(inspect(engine).get_table_names())
    assert LEGACY_VERSION_TABLE not in tables
    assert {VERSION_TABLE, *TABLES} <= tables
    with engine.connect() as conn:
        assert conn.scalar(text("select version_num from cohort_match_alembic_version")) == HEAD
        counts = {t: conn.scalar(select(func.count()).select_from(table(t))) for t in TABLES}
    assert counts == dict.fromkeys(TABLES, 1)
    assert schema_differences(engine) == []

    (event,) = audit.recent()
    assert (event.request_id, event.patients) == ("req-legacy", '["Patient/p01"]')
    session = sessions.get("session-legacy")
    assert session is not None
    assert (session.user, session.patient) == ("Practitioner/1", "p01")
    assert sessions.redeem_ticket("ticket-legacy") == "session-legacy"
    launch = sessions.take_launch("state-legacy")
    assert launch is not None
    assert launch.verifier == "v" * 43
    assert cds.patients_of(["card-legacy"]) == ["Patient/p01"]
    (feedback,) = cds.feedback("card-legacy")
    assert (feedback.outcome, feedback.user_comment) == ("overridden", "declined")
    (run,) = sweeps.runs()
    assert (run.requested_by, run.status, run.mode, run.counts["patients"]) == (
        "legacy",
        "completed",
        "files",
        1,
    )
    assert [orjson.loads(r) for r in sweeps.results(run.id)] == [
        {"patient": "Patient/p01", "rank": 1}
    ]
    # and the upgraded database takes new rows
    audit.record(AuditRecord("req-new", "clinician-2", None, "match", None, [], "ok"))
    assert [e.request_id for e in audit.recent()] == ["req-new", "req-legacy"]
