"""The engine's output matches the published contract models (service/schemas.py)."""

from __future__ import annotations

from datetime import date

from service.schemas import PatientResultPublic, RankedListPublic
from service.screening import screen
from tests.conftest import ROOT, TRIAL_PATH


def test_engine_output_validates_against_the_published_models() -> None:
    run = screen(ROOT / "demo", TRIAL_PATH, ROOT / "terminology", date(2026, 11, 20))
    try:
        candidates = list(run.results())
        for result in candidates:
            PatientResultPublic.model_validate(result)
        ranked = {
            "trial": {
                "id": run.trial.id,
                "version": run.trial.version,
                "terminology": run.terms.version,
            },
            "as_of": run.as_of,
            "candidates": candidates,
            "counts": run.counts(),
        }
        RankedListPublic.model_validate(ranked)
    finally:
        run.close()
