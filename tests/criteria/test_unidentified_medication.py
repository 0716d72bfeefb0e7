"""A medication record whose drug is unknown: it names a Medication (`Medication/123`) that
was not sent and could not be read (service/criteria/common.py: `unidentified`).

Every criterion that reads medication records treats it, on the days it covers, as one that
could be the drug it looks for: I6.anc (G-CSF before the count), E4 (an anti-infective taken
on as_of), I4 (each component: cited, never counted) and SLEDAI-2K in I2 (a myelotoxic drug
before a low count). It never makes a verdict `pass` or `fail` on its own: each case is tested
with the record inside the criterion's window (`unknown`), outside it (the verdict without it)
and against a record that decides anyway.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from service.criteria.verdict import CriterionResult
from tests.conftest import AS_OF, run
from tests.criteria.test_scoring import CLASSIFIED, c3, i1, i2, item, score_of, urine, wbc
from tests.criteria.test_therapy_history import full
from tests.factories import (
    AMOXICILLIN,
    ANC,
    FILGRASTIM,
    PNEUMONIA,
    ago,
    by_reference,
    condition,
    medication,
    obs,
)

Resource = dict[str, Any]
GONE = "Medication/epic-99"  # on the EHR, never sent


def unknown_drug(
    start: date, end: date | None = None, status: str = "completed", display: str | None = None
) -> Resource:
    """An order naming its drug only by a reference to a Medication that is not available."""
    if end is None and status == "completed":
        end = start
    order = medication(
        FILGRASTIM,  # replaced by the reference: the drug is not known
        start=start,
        end=end,
        kind="MedicationRequest",
        status=status,
    )
    return by_reference(order, GONE, display)


def names_the_record(result: CriterionResult) -> None:
    assert f"names {GONE} (not sent with the records)" in result.reason
    cited = [e for e in result.evidence if e.note and GONE in e.note]
    assert cited, result.evidence
    assert cited[0].reference is not None
    assert cited[0].reference.startswith("MedicationRequest/")


# ------------------------------------------------------------------ I6.anc (G-CSF)
def test_i6_anc_after_an_unknown_drug_is_unknown_not_pass() -> None:
    result = run([obs(ANC, 2.0, "10*9/L", days=2), unknown_drug(ago(7))], "I6.anc")
    assert result.verdict == "unknown"
    assert "an unknown drug, possibly Colony-stimulating factors" in result.reason
    assert result.reason.endswith("repeat the test")
    names_the_record(result)


def test_i6_anc_low_after_an_unknown_drug_is_unknown_not_fail() -> None:
    result = run([obs(ANC, 0.4, "10*9/L", days=2), unknown_drug(ago(7))], "I6.anc")
    assert result.verdict == "unknown"


@pytest.mark.parametrize(
    ("days_before_test", "expected"),
    [(14, "unknown"), (15, "pass"), (-1, "pass")],
    ids=["14-days-before-unknown", "15-days-before-pass", "after-the-test-pass"],
)
def test_i6_anc_window(days_before_test: int, expected: str) -> None:
    resources = [obs(ANC, 2.0, "10*9/L", days=2), unknown_drug(ago(2 + days_before_test))]
    assert run(resources, "I6.anc").verdict == expected


def test_i6_anc_names_a_coded_gcsf_before_an_unknown_drug() -> None:
    gcsf = medication(FILGRASTIM, start=ago(9), end=ago(9))
    result = run([obs(ANC, 2.0, "10*9/L", days=2), unknown_drug(ago(7)), gcsf], "I6.anc")
    assert result.verdict == "unknown"
    assert f"MedicationStatement/{gcsf['id']}" in result.reason
    assert GONE not in result.reason


def test_a_display_that_names_a_drug_is_read_for_review_instead() -> None:
    """Not available, but its display says filgrastim: "possible" G-CSF, as for any record
    with text only; E4 does not read it as a possible anti-infective."""
    order = unknown_drug(ago(7), display="Neupogen (filgrastim) 300 mcg")
    anc = run([obs(ANC, 2.0, "10*9/L", days=2), order], "I6.anc")
    assert anc.verdict == "unknown"
    assert "possible Colony-stimulating factors" in anc.reason
    assert "'Neupogen (filgrastim) 300 mcg'" in anc.reason
    running = unknown_drug(ago(3), status="active", display="Neupogen (filgrastim) 300 mcg")
    assert run([running], "E4").verdict == "pass"


# ------------------------------------------------------------------ E4 (suspected infection)
def test_e4_an_unknown_drug_taken_on_as_of_is_unknown_not_pass() -> None:
    result = run([unknown_drug(ago(3), status="active")], "E4")
    assert result.verdict == "unknown"
    assert result.reason.startswith("possible Systemic anti-infectives")
    names_the_record(result)


def test_e4_an_unknown_drug_finished_before_as_of_passes() -> None:
    assert run([unknown_drug(ago(40), ago(33))], "E4").verdict == "pass"


def test_e4_a_deciding_diagnosis_still_fails() -> None:
    infection = condition(PNEUMONIA, onset=ago(5))
    result = run([infection, unknown_drug(ago(3), status="active")], "E4")
    assert result.verdict == "fail"


def test_e4_a_coded_anti_infective_is_read_as_before() -> None:
    amoxicillin = medication(AMOXICILLIN, start=ago(3), status="active")
    result = run([amoxicillin, unknown_drug(ago(3), status="active")], "E4")
    assert result.verdict == "unknown"
    assert f"MedicationStatement/{amoxicillin['id']}" in result.evidence[0].reference


# ------------------------------------------------------------------ I4 (therapy history)
def test_i4_an_unknown_drug_never_documents_a_component() -> None:
    record = unknown_drug(date(2025, 1, 10), date(2026, 1, 10), status="completed")
    result = run(full(cyclophosphamide=[], extra=[record]), "I4")
    assert result.verdict == "unknown"
    assert "no record of cyclophosphamide; possible Cyclophosphamide" in result.reason
    names_the_record(result)


def test_i4_documented_in_full_passes_whatever_else_is_on_record() -> None:
    record = unknown_drug(date(2025, 1, 10), date(2026, 1, 10), status="completed")
    assert run(full(extra=[record]), "I4").verdict == "pass"


def test_i4_an_unknown_drug_started_after_as_of_is_not_cited() -> None:
    later = unknown_drug(AS_OF + timedelta(days=3), status="active")
    result = run(full(cyclophosphamide=[], extra=[later]), "I4")
    assert result.verdict == "unknown"
    assert GONE not in result.reason


# ------------------------------------------------------------------ I2 (SLEDAI-2K from labs)
SLEDAI_7 = [urine("13945-1", 12), c3(0.5, days_ago=5), wbc(2.5, days_ago=10)]  # 4 + 2 + 1


def test_i2_passes_on_the_labs_alone() -> None:
    result = i2(*SLEDAI_7)
    assert result.verdict == "pass"
    assert score_of(result).total == 7


def test_i2_passing_only_by_an_item_an_unknown_drug_may_explain_is_unknown() -> None:
    result = i2(*SLEDAI_7, unknown_drug(AS_OF - timedelta(days=20)))
    assert result.verdict == "unknown"
    assert "SLEDAI-2K 7 from the record (last 30 days) would be met, but Leukopenia" in (
        result.reason
    )
    assert "without it at least 6" in result.reason
    assert GONE in result.reason
    leukopenia = item(result, "leukopenia")
    assert (leukopenia.status, score_of(result).total) == ("withheld", 6)


def test_i2_an_unknown_drug_after_the_low_count_changes_nothing() -> None:
    after = unknown_drug(AS_OF - timedelta(days=5))  # the count was 10 days ago
    assert i2(*SLEDAI_7, after).verdict == "pass"


def test_i2_above_the_limit_without_the_doubtful_item_passes() -> None:
    more = [*SLEDAI_7, urine("5821-4", 8)]  # + pyuria 4
    result = i2(*more, unknown_drug(AS_OF - timedelta(days=20)))
    assert result.verdict == "pass"
    assert item(result, "leukopenia").status == "counted"


# ------------------------------------------------------------------ I1 (EULAR/ACR 2019)
def test_i1_classification_met_stays_unknown_never_fail() -> None:
    """The classification path shows the score counting what an unknown drug may explain, so
    it never turns the rescue (`unknown`) into `fail`."""
    result = i1(*CLASSIFIED, unknown_drug(AS_OF - timedelta(days=25)))
    assert result.verdict == "unknown"
    assert score_of(result).met
