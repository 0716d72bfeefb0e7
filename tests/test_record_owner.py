"""Records that name their patient without a literal reference, and unreadable results that
may be newer than the one a lab rule would decide on.

Some interfaces send `subject: {"identifier": {system, value}}` or a `display` only. Among one
patient's records, one whose identifier is the Patient's own is theirs; any other is an
unreadable record of that patient, and a lab or test rule does not decide on an older result
in its place (unmapped is not absent). Everything here is synthetic.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from typing import Any

import pytest

from service.criteria.verdict import PatientResult
from service.patient_screen import (
    ScreeningContext,
    load_screening_context,
    screen_patient,
    screen_patient_records,
)
from tests.conftest import ROOT, TRIAL_PATH

AS_OF = date(2026, 11, 20)
DEMO = ROOT / "demo" / "NCT06946485" / "p01-likely-eligible-si-units.json"
MRN = {"system": "http://hospital.example.org/fhir/NamingSystem/mrn", "value": "NJ0000001"}


@pytest.fixture(scope="module")
def context() -> ScreeningContext:
    return load_screening_context(TRIAL_PATH, ROOT / "terminology", AS_OF)


def _records() -> list[dict[str, Any]]:
    """Demo p01 (likely eligible: hemoglobin 118 g/L on 2026-11-10)."""
    return [entry["resource"] for entry in json.loads(DEMO.read_text("utf-8"))["entry"]]


def _hemoglobin(records: list[dict[str, Any]], subject: Any, **changes: Any) -> dict[str, Any]:
    """A second hemoglobin, 50 g/L five days after the demo's 118 g/L."""
    model = next(r for r in records if r.get("id") == "p01-o18")
    newer = copy.deepcopy(model) | {"id": "hb-new", "effectiveDateTime": "2026-11-15"}
    newer["valueQuantity"] = {"value": 50, "unit": "g/L"}
    if subject is None:
        newer.pop("subject")
    else:
        newer["subject"] = subject
    return newer | changes


def _verdict(result: PatientResult, criterion: str) -> tuple[str, str]:
    found = next(c for c in result.criteria if c.id == criterion)
    return found.verdict, found.reason


def test_a_record_naming_the_patient_by_their_mrn_is_theirs(context: ScreeningContext) -> None:
    records = _records()
    records.append(_hemoglobin(records, {"identifier": MRN}))
    verdict, reason = _verdict(screen_patient(records, context), "I6.hgb")
    assert verdict == "fail"
    assert "50 g/L" in reason


def test_an_mrn_without_system_matches_by_value(context: ScreeningContext) -> None:
    records = _records()
    records.append(_hemoglobin(records, {"identifier": {"value": MRN["value"]}}))
    assert _verdict(screen_patient(records, context), "I6.hgb")[0] == "fail"


@pytest.mark.parametrize(
    ("subject", "how"),
    [
        ({"identifier": {"system": MRN["system"], "value": "NJ9999999"}}, "by identifier"),
        ({"display": "张三"}, "by display only"),
        (None, "not at all"),
    ],
)
def test_a_record_not_naming_the_patient_is_their_unreadable_record(
    context: ScreeningContext, subject: Any, how: str
) -> None:
    records = _records()
    records.append(_hemoglobin(records, subject))
    screened = screen_patient_records(records, context)
    assert [u.reference for u in screened.unreadable] == ["Observation/hb-new"]
    verdict, reason = _verdict(screened.result, "I6.hgb")
    assert verdict == "unknown"  # not `pass` on the older 118 g/L
    assert f"names its patient {how}" in reason
    assert "an earlier result does not decide" in reason


def test_among_several_patients_such_a_record_stays_nobody_s(context: ScreeningContext) -> None:
    records = _records()
    records.append(_hemoglobin(records, {"display": "张三"}))
    records.append({"resourceType": "Patient", "id": "other", "birthDate": "1980-01-01"})
    result = screen_patient(records, context, patient="Patient/p01")
    assert _verdict(result, "I6.hgb")[0] == "pass"


def test_a_newer_unreadable_result_keeps_an_older_one_from_deciding(
    context: ScreeningContext,
) -> None:
    records = _records()
    broken = _hemoglobin(records, {"reference": "Patient/p01"})
    broken["valueQuantity"] = {"value": "fifty", "unit": "g/L"}
    records.append(broken)
    verdict, reason = _verdict(screen_patient(records, context), "I6.hgb")
    assert verdict == "unknown"
    assert "Observation/hb-new, on 2026-11-15" in reason


def test_an_older_unreadable_result_does_not(context: ScreeningContext) -> None:
    records = _records()
    broken = _hemoglobin(records, {"reference": "Patient/p01"}, effectiveDateTime="2026-09-01")
    broken["valueQuantity"] = {"value": "fifty", "unit": "g/L"}
    records.append(broken)
    assert _verdict(screen_patient(records, context), "I6.hgb")[0] == "pass"


def test_a_test_result_rule_does_not_decide_past_a_newer_unreadable_result(
    context: ScreeningContext,
) -> None:
    """E10.hbv: HBsAg negative on 2026-11-08; an unreadable HBsAg on 2026-11-12."""
    records = _records()
    model = next(r for r in records if r.get("id") == "p01-o27")
    broken = copy.deepcopy(model) | {"id": "hbsag-new", "effectiveDateTime": "2026-11-12"}
    broken["valueCodeableConcept"] = "positive"  # not a CodeableConcept
    records.append(broken)
    verdict, reason = _verdict(screen_patient(records, context), "E10.hbv")
    assert verdict == "unknown"
    assert "Observation/hbsag-new" in reason
