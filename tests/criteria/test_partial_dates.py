"""Partial dates ("2021", "2026-11") are any day of their year or month: a rule decides only
when every possible day gives the same answer, else `unknown`, and shows the date as written.

AS_OF is 2026-11-27: five years before is 2021-11-27, two years 2024-11-27, three months
2026-08-27, 90 days 2026-08-29.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.criteria.engine import evaluate
from service.criteria.exposure import exposure
from service.criteria.verdict import Evidence
from service.facts import Diagnosis, MedicationExposure, written
from tests.conftest import AS_OF, facts_of, load_nct, load_terms, run
from tests.factories import (
    AMOXICILLIN,
    BCC,
    HBCAB,
    HBSAG,
    HEMODIALYSIS,
    HGB,
    ICD10,
    LACTATION,
    NEGATIVE,
    PENICILLIN,
    PNEUMONIA,
    allergy,
    condition,
    grade,
    medication,
    obs,
    patient,
    procedure,
    study,
)


def test_written_shows_the_date_as_sent() -> None:
    assert written(date(2021, 1, 1), date(2021, 12, 31)) == "2021"
    assert written(date(2026, 2, 1), date(2026, 2, 28)) == "2026-02"
    assert written(date(2026, 2, 3), None) == "2026-02-03"


# ------------------------------------------------------------------ E8 / E5 disease-free
@pytest.mark.parametrize(
    ("abatement", "expected"),
    [
        pytest.param("2020", "pass", id="year-wholly-over-5-years-pass"),
        pytest.param("2021", "unknown", id="year-straddles-5-years-unknown"),
        pytest.param("2021-11", "unknown", id="month-straddles-5-years-unknown"),
        pytest.param("2021-10", "pass", id="month-wholly-over-5-years-pass"),
        pytest.param("2022", "fail", id="year-within-5-years-fail"),
    ],
)
def test_e8_exception_with_a_partial_abatement(abatement: str, expected: str) -> None:
    dx = condition(BCC, onset="2015", abatement=abatement, clinical="resolved")
    result = run([dx], "E8")
    assert result.verdict == expected, result.reason
    if expected == "unknown":
        assert f"abated in {abatement}" in result.reason
        assert "cannot be confirmed" in result.reason


def test_e8_evidence_shows_a_partial_onset_as_written() -> None:
    result = run([condition(BCC, onset="2015", abatement="2021", clinical="resolved")], "E8")
    shown = result.evidence[0]
    assert shown.date is None  # no invented 1 January
    assert shown.note is not None
    assert shown.note.startswith("onset 2015")


@pytest.mark.parametrize(
    ("abatement", "expected"),
    [
        pytest.param("2024", "unknown", id="year-straddles-2-years-unknown"),
        pytest.param("2023", "pass", id="year-wholly-over-2-years-pass"),
        pytest.param("2025", "fail", id="year-within-2-years-fail"),
        pytest.param("2026", "fail", id="year-of-as-of-fail-when-unresolved-fails"),
    ],
)
def test_e5_cns_transient_with_a_partial_abatement(abatement: str, expected: str) -> None:
    meningitis = condition(
        "A87.9", ICD10, onset="2020-01-05", abatement=abatement, clinical="resolved"
    )
    result = run([meningitis], "E5")
    assert result.verdict == expected, result.reason


# ------------------------------------------------------------------ E4 and active-only rules
@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        pytest.param("2026-08", "unknown", id="onset-month-straddles-90-days-unknown"),
        pytest.param("2026-09", "fail", id="onset-month-within-90-days-fail"),
        pytest.param("2026-11", "unknown", id="onset-month-of-as-of-may-be-later-unknown"),
    ],
)
def test_e4_onset_month(onset: str, expected: str) -> None:
    result = run([condition(PNEUMONIA, onset=onset)], "E4")
    assert result.verdict == expected, result.reason
    assert "-01 " not in result.reason


def test_e4_infection_abated_in_the_month_of_as_of_is_unknown() -> None:
    """Abated "2026-11": it may have been active on 27 November."""
    dx = condition(PNEUMONIA, onset="2026-11-10", abatement="2026-11", clinical="resolved")
    result = run([dx], "E4")
    assert result.verdict == "unknown", result.reason
    assert "abated in 2026-11" in result.reason
    earlier = condition(PNEUMONIA, onset="2026-10-10", abatement="2026-10", clinical="resolved")
    assert run([earlier], "E4").verdict == "pass"


def test_lactation_abated_in_the_month_of_as_of_is_unknown() -> None:
    dx = condition(LACTATION, onset="2025-06-01", abatement="2026-11", clinical="resolved")
    result = run([dx], "I7.lactation")
    assert result.verdict == "unknown"
    assert "abated in 2026-11: may still be active" in result.reason


@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        pytest.param("2024-11", "unknown", id="730-days-fall-inside-the-month-unknown"),
        pytest.param("2024-12", "fail", id="every-day-within-730-days-fail"),
    ],
)
def test_lactation_without_status_counted_730_days_from_a_partial_onset(
    onset: str, expected: str
) -> None:
    dx = condition(LACTATION, onset=onset, clinical=None)
    result = run([dx], "I7.lactation")
    assert result.verdict == expected, result.reason
    if expected == "unknown":  # a manual criterion is unknown anyway: the reason says why
        assert f"since {onset}, which may be more or fewer than 730 days" in result.reason


def test_active_on_and_unsure_on_read_the_whole_month() -> None:
    dx = Diagnosis(
        "Condition/c",
        (),
        frozenset(),
        "resolved",
        "confirmed",
        date(2026, 1, 1),
        date(2026, 11, 1),
        None,
        abatement_latest=date(2026, 11, 30),
    )
    assert dx.active_on(AS_OF)  # possibly
    assert dx.unsure_on(AS_OF, True) == "abated in 2026-11: may still be active on 2026-11-27"
    assert dx.unsure_on(AS_OF, False) is None
    assert not dx.active_on(date(2026, 12, 1))


# ------------------------------------------------------------------ E12 other studies
@pytest.mark.parametrize(
    ("end", "expected"),
    [
        pytest.param("2026-08", "unknown", id="ended-in-the-month-the-window-opens-unknown"),
        pytest.param("2026-07", "pass", id="ended-the-month-before-pass"),
        pytest.param("2026-09", "fail", id="ended-inside-the-window-fail"),
        pytest.param("2026", "unknown", id="ended-this-year-straddles-the-window-unknown"),
    ],
)
def test_e12_partial_end(end: str, expected: str) -> None:
    result = run([study("OTHER-1", status="off-study", start="2025-01-01", end=end)], "E12")
    assert result.verdict == expected, result.reason
    if expected != "pass":
        assert end in result.evidence[0].note  # type: ignore[operator]


def test_e12_study_started_in_the_month_of_as_of_is_unknown() -> None:
    result = run([study("OTHER-1", status="on-study", start="2026-11")], "E12")
    assert result.verdict == "unknown", result.reason


# ------------------------------------------------------------------ labs
def hgb(value: float, when: str) -> dict[str, Any]:
    found = obs(HGB, value, "g/L")
    found["effectiveDateTime"] = when
    return found


def test_lab_dated_the_month_of_as_of_does_not_decide_nor_let_an_older_one() -> None:
    """ "2026-11" on 27 November may be after as_of, or the latest result before it."""
    result = run([patient(), hgb(120, "2026-10-20"), hgb(50, "2026-11")], "I6.hgb")
    assert result.verdict == "unknown", result.reason
    assert "dated 2026-11" in result.reason
    assert all(e.date != date(2026, 11, 1) for e in result.evidence)


def test_lab_dated_an_earlier_month_decides() -> None:
    result = run([patient(), hgb(120, "2026-10")], "I6.hgb")
    assert result.verdict == "pass", result.reason
    assert result.evidence[0].date is None
    assert (result.evidence[0].note or "").startswith("dated 2026-10")


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        pytest.param(125, "pass", id="agree-pass"),
        pytest.param(50, "unknown", id="disagree-unknown"),
    ],
)
def test_lab_month_and_a_day_in_it_cannot_be_ordered(partial: float, expected: str) -> None:
    result = run([patient(), hgb(120, "2026-10-20"), hgb(partial, "2026-10")], "I6.hgb")
    assert result.verdict == expected, result.reason


def test_hbsag_negative_dated_the_month_of_as_of_is_unknown() -> None:
    hbsag = obs(HBSAG, coded=NEGATIVE)
    hbsag["effectiveDateTime"] = "2026-11"
    result = run([patient(), hbsag, obs(HBCAB, coded=NEGATIVE, days=3)], "E10.hbv")
    assert result.verdict == "unknown", result.reason
    assert "dated 2026-11" in result.reason


# ------------------------------------------------------------------ medications
def test_antibiotic_ended_in_the_month_of_as_of_may_still_be_taken() -> None:
    result = run([medication(AMOXICILLIN, start="2026-11-01", end="2026-11")], "E4")
    assert result.verdict == "unknown", result.reason
    assert "recorded end 2026-11" in result.reason
    ended = run([medication(AMOXICILLIN, start="2026-10-01", end="2026-10")], "E4")
    assert ended.verdict == "pass", ended.reason


def test_exposure_every_possible_day_or_only_the_documented_ones() -> None:
    med = MedicationExposure(
        "MedicationStatement/m",
        (),
        frozenset(),
        "completed",
        date(2025, 3, 1),
        date(2025, 11, 1),
        start_latest=date(2025, 3, 31),
        end_latest=date(2025, 11, 30),
    )
    possible = exposure(med, AS_OF, load_terms())
    documented = exposure(med, AS_OF, load_terms(), documented=True)
    assert possible is not None
    assert documented is not None
    assert (possible.start, possible.end) == (date(2025, 3, 1), date(2025, 11, 30))
    assert (documented.start, documented.end) == (date(2025, 3, 31), date(2025, 11, 1))


def test_medication_evidence_shows_a_partial_start_as_written() -> None:
    result = run([medication(AMOXICILLIN, start="2026-11", status="active")], "E4")
    assert result.verdict == "unknown"
    shown: Evidence = result.evidence[0]
    assert shown.date is None
    assert (shown.note or "").startswith("started 2026-11")


# ------------------------------------------------------------------ mappers keep full dates
def test_full_dates_carry_no_range() -> None:
    facts = facts_of([condition(BCC, onset="2015-02-03", abatement="2020-01-01T10:00:00+08:00")])
    dx = facts.diagnoses[0]
    assert (dx.onset_latest, dx.abatement_latest, dx.recorded_latest) == (None, None, None)


# ------------------------------------------------------------------ death
def test_death_in_a_year_is_shown_as_the_year() -> None:
    facts = facts_of([{**patient(), "deceasedDateTime": "2026"}])
    result = evaluate(load_nct(), facts, AS_OF, load_terms())
    assert result.status == "ineligible"
    assert result.status_reason is not None
    assert result.status_reason.startswith("deceased in 2026 ")
    assert "2026-01-01" not in result.status_reason
    assert result.patient.deceased_date is None  # not an invented 1 January
    later = evaluate(load_nct(), facts, date(2025, 12, 31), load_terms())
    assert later.status_reason is None  # alive then


def test_age_evidence_shows_a_partial_birth_date_as_written() -> None:
    result = run([patient("1990")], "I5")
    assert result.evidence[0].value == "1990"


def test_bilag_grade_dated_the_month_of_as_of_leaves_its_domain_ungraded() -> None:
    """An earlier grade A of the same domain does not decide in place of a "2026-11" one."""
    newer = grade("renal", "D")
    newer["effectiveDateTime"] = "2026-11"
    earlier = grade("renal", "A", days=40)
    assert run([patient(), earlier], "I3").verdict == "pass"
    result = run([patient(), earlier, newer], "I3")
    assert result.verdict == "unknown", result.reason


# ------------------------------------------------------------------ E3 allergies
def test_severe_allergy_recorded_the_month_of_as_of_is_unknown() -> None:
    """Recorded "2026-11", screened on 27 November: it may not be on record yet."""
    record = allergy(PENICILLIN, severity="severe")
    record["recordedDate"] = "2026-11"
    result = run([record], "E3")
    assert result.verdict == "unknown", result.reason
    assert "recorded 2026-11: may be after 2026-11-27" in result.reason
    record["recordedDate"] = "2026-10"
    assert run([record], "E3").verdict == "fail"


# ------------------------------------------------------------------ E9 procedures
@pytest.mark.parametrize(
    ("performed", "expected"),
    [
        pytest.param("2026-08", "unknown", id="month-across-the-90-day-window-unknown"),
        pytest.param("2026-09", "fail", id="month-inside-the-window-fail"),
        pytest.param("2026-07", "pass", id="month-before-the-window-pass"),
    ],
)
def test_e9_dialysis_dated_a_month(performed: str, expected: str) -> None:
    record = procedure(HEMODIALYSIS, days=1)
    record["performedDateTime"] = performed
    result = run([record], "E9")
    assert result.verdict == expected, result.reason
    if expected != "pass":
        assert all(e.date is None for e in result.evidence)
