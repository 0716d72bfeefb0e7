"""The engine's output matches the published contract models (service/schemas.py), and the
CLI's JSON has every key once (tests/strict_json.py); the API's: tests/api/test_output_contract.py.
"""

from __future__ import annotations

from datetime import date

from typer.testing import CliRunner

from service.cli import app
from service.schemas import PatientResultPublic, RankedListPublic
from service.screening import screen
from tests.conftest import ROOT, TRIAL_PATH
from tests.strict_json import strict_loads


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


def test_screen_json_has_every_key_once() -> None:
    """`screen --format json` with duplicate keys rejected: each candidate's `rank` once
    (it was written twice, `"rank":null,...,"rank":1`; issue 13 section 4)."""
    result = CliRunner().invoke(app, ["screen", "--as-of", "2026-11-20", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    document = strict_loads(result.stdout)
    RankedListPublic.model_validate(document)
    ranks = [c["rank"] for c in document["candidates"]]
    assert ranks == list(range(1, document["counts"]["patients"] + 1))
