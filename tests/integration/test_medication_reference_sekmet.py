"""A MedicationRequest naming its drug by reference to a Medication resource, as Epic and
Cerner send orders, fetched from the real FHIR server (sekmet-fhir 0.1.1): demo p71's G-CSF
order names `Medication/p71-med33`. Read after the searches, in a batch and one by one, it
gives the verdicts the same order with the Medication contained gives."""

from __future__ import annotations

import copy
import json
from datetime import date
from typing import Any

import pytest

from service.criteria.engine import evaluate
from service.criteria.model import load_trial
from service.fetching import fetch_patient, plan_for
from service.fhir import FhirClient
from service.patient_screen import ScreeningContext, screen_patient
from service.terminology import Terminology
from tests.conftest import TRIAL_PATH
from tests.integration.conftest import DEMO
from tests.integration.test_patient_batch_sekmet import Counting, OneByOne

pytestmark = pytest.mark.integration
AS_OF = date(2026, 11, 20)
P71 = DEMO / "p71-g-csf-order-naming-a-separate-medication.json"


def contained_version() -> list[dict[str, Any]]:
    """p71's records with the Medication contained in the order instead of sent apart."""
    resources = [e["resource"] for e in json.loads(P71.read_text(encoding="utf-8"))["entry"]]
    medication = next(r for r in resources if r["resourceType"] == "Medication")
    kept = [copy.deepcopy(r) for r in resources if r is not medication]
    order = next(r for r in kept if r.get("medicationReference"))
    assert order["medicationReference"] == {"reference": f"Medication/{medication['id']}"}
    order["contained"] = [medication]
    order["medicationReference"] = {"reference": f"#{medication['id']}"}
    return kept


def verdicts(result: Any) -> dict[str, tuple[str, str]]:
    return {c.id: (c.verdict, c.reason) for c in result.criteria}


async def test_a_referenced_medication_gives_the_contained_medication_s_verdicts(
    fhir_server: str, terms: Terminology
) -> None:
    trial = load_trial(TRIAL_PATH)
    plan = plan_for(trial, terms)
    contained = screen_patient(contained_version(), ScreeningContext(trial, terms, AS_OF))
    transport = Counting()
    async with (
        FhirClient(fhir_server, transport=transport) as batched,
        OneByOne(fhir_server) as single,
    ):
        for fhir in (batched, single):
            fetched = await fetch_patient(fhir, "p71", plan, terms)
            assert fetched.problems == []
            (order,) = fetched.facts.medications_for("gcsf")
            assert order.unresolved is None
            result = evaluate(trial, fetched.facts, AS_OF, terms)
            assert verdicts(result) == verdicts(contained)
            assert result.status == contained.status == "possibly_eligible"
            anc = next(c for c in result.criteria if c.id == "I6.anc")
            assert anc.verdict == "unknown"
            assert "Colony-stimulating factors (G-CSF and GM-CSF) (MedicationRequest/p71-m34)" in (
                anc.reason
            )
    # the batch path: the searches in one batch, the Medication in a second
    assert [r for r in transport.requests if r.startswith("POST")] == ["POST /fhir"] * 2
