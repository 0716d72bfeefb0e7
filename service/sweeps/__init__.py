"""Sweeps: persisted population screens of a trial, their diffs, funnels and exports.

    store.py      runs and results (SQLAlchemy; Alembic migrations in migrations/)
    runner.py     claim -> population (files or Bulk export) -> screen -> store -> complete
    report.py     funnel, diff between runs, exports (ranked JSON, CSV, FHIR Bundle)
    scheduler.py  sweeps on a schedule (APScheduler) inside the API process

Sweeps call the engine (service.screening) and the FHIR client, never the API.
"""

from service.sweeps.runner import BackgroundSweeps, Source, SweepRunner, configured_source
from service.sweeps.store import RunInfo, RunNotReady, SweepConflict, SweepStore

__all__ = [
    "BackgroundSweeps",
    "RunInfo",
    "RunNotReady",
    "Source",
    "SweepConflict",
    "SweepRunner",
    "SweepStore",
    "configured_source",
]
