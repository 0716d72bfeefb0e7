"""One patient of the bundled demo screened in process, as the API and the pages screen it:
for tests of what a result looks like to a reader (the page, the CDS card)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from service.criteria.engine import evaluate
from service.criteria.verdict import PatientResult
from tests.conftest import ROOT, facts_of, load_nct, load_terms

DEMO = ROOT / "demo" / "NCT06946485"
DEMO_AS_OF = dt.date(2026, 11, 20)  # the demo population is anchored here


def demo_result(patient: str, as_of: dt.date = DEMO_AS_OF) -> PatientResult:
    """The result of demo patient `patient` ("p70": demo/NCT06946485/p70-*.json)."""
    (path,) = Path(DEMO).glob(f"{patient}-*.json")
    bundle = json.loads(path.read_text(encoding="utf-8"))
    reference = f"Patient/{patient}"
    facts = facts_of((entry["resource"] for entry in bundle["entry"]), reference)
    return evaluate(load_nct(), facts, as_of, load_terms())
