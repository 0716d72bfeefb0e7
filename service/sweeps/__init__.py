"""Sweeps: persisted population screens of a trial, their diffs, funnels and exports.

    store.py      runs and results (SQLAlchemy; Alembic migrations in migrations/)
    runner.py     claim -> population (files or Bulk export) -> screen -> store -> complete
    source.py     where the population is: files or a FHIR server
    heartbeat.py  a running sweep's progress, cancel and liveness thread
    population.py full or incremental (a pure choice), the default exporter
    write_back.py ResearchSubjects to the FHIR server (decisions applied, the EHR read back first)
    background.py BackgroundSweeps: claimed in the caller, executed on a thread
    report.py     funnel, diff between runs, exports (ranked JSON, CSV, FHIR Bundle)
    scheduler.py  sweeps on a schedule (APScheduler) inside the API process

Sweeps call the engine (service.screening) and the FHIR client, never the API.
"""

from service.sweeps.background import BackgroundSweeps
from service.sweeps.runner import SweepRunner
from service.sweeps.source import Source, configured_source
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
