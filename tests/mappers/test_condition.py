"""Condition -> Diagnosis."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.facts import Diagnosis
from service.mappers import MappingError, map_resource
from service.terminology import Terminology
from tests.factories import ICD10, ICD10CM, PNEUMONIA, SLE, TTP, condition
from tests.realworld import CLINICAL, LOCAL, coding, ehr_condition, review_terms


def diagnosis(resource: dict[str, Any], terms: Terminology) -> Diagnosis:
    mapped = map_resource(resource, terms)
    assert mapped is not None
    assert isinstance(mapped.fact, Diagnosis)
    return mapped.fact


def test_maps_codes_statuses_and_dates(terms: Terminology) -> None:
    resource = condition(SLE, onset="2019-04-02T10:00:00+08:00", abatement="2020-01-05")
    resource["recordedDate"] = "2019-04-03"
    dx = diagnosis(resource, terms)
    assert dx.reference == f"Condition/{resource['id']}"
    assert "sle" in dx.concepts
    assert (dx.clinical_status, dx.verification_status) == ("active", "confirmed")
    assert (dx.onset, dx.abatement, dx.recorded) == (
        date(2019, 4, 2),
        date(2020, 1, 5),
        date(2019, 4, 3),
    )


@pytest.mark.parametrize(
    ("code", "system"),
    [
        pytest.param("M32.14", ICD10CM, id="icd10cm-with-dot"),
        pytest.param("M3214", ICD10CM, id="icd10cm-without-dot"),
        pytest.param("m32.14", ICD10CM, id="icd10cm-lower-case"),
        pytest.param("M32.1", ICD10, id="icd10-who"),
    ],
)
def test_icd_codes_are_normalized_and_hierarchical(
    terms: Terminology, code: str, system: str
) -> None:
    assert "sle" in diagnosis(condition(code, system), terms).concepts


def test_snomed_codes_are_not_hierarchical(terms: Terminology) -> None:
    # A SNOMED code that merely starts with the SLE code is another concept.
    assert map_resource(condition(SLE + "1"), terms) is None


def test_code_no_trial_uses_is_dropped(terms: Terminology) -> None:
    assert map_resource(condition("38341003"), terms) is None  # hypertension


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_records_that_assert_nothing_are_dropped(terms: Terminology, status: str) -> None:
    assert map_resource(condition(TTP, verification=status), terms) is None


@pytest.mark.parametrize("status", ["provisional", "differential", "unconfirmed"])
def test_unconfirmed_diagnoses_are_kept_with_their_status(terms: Terminology, status: str) -> None:
    assert diagnosis(condition(TTP, verification=status), terms).verification_status == status


@pytest.mark.parametrize(
    ("kwargs", "active"),
    [
        pytest.param({"clinical": "active"}, True, id="active"),
        pytest.param({"clinical": "recurrence"}, True, id="recurrence"),
        pytest.param({"clinical": None}, True, id="no-status-no-end"),
        pytest.param({"clinical": "resolved"}, False, id="resolved"),
        pytest.param({"clinical": "inactive"}, False, id="inactive"),
        pytest.param({"clinical": "remission"}, False, id="remission"),
        pytest.param({"clinical": None, "abatement": "2025-01-01"}, False, id="abatement-date"),
    ],
)
def test_active(terms: Terminology, kwargs: dict[str, Any], active: bool) -> None:
    assert diagnosis(condition(PNEUMONIA, **kwargs), terms).active is active


def test_onset_and_abatement_periods(terms: Terminology) -> None:
    resource = condition(PNEUMONIA)
    resource["onsetPeriod"] = {"start": "2026-10-01"}
    resource["abatementPeriod"] = {"start": "2026-10-20", "end": "2026-10-25"}
    dx = diagnosis(resource, terms)
    assert (dx.onset, dx.abatement) == (date(2026, 10, 1), date(2026, 10, 25))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("onsetDateTime", "spring 2020", id="onset-text"),
        pytest.param("abatementDateTime", "2020-13-01", id="abatement-month-13"),
        pytest.param("recordedDate", 2020, id="recorded-number"),
        pytest.param("code", ["M32.14"], id="code-is-a-list"),
        pytest.param("clinicalStatus", "active", id="status-is-a-string"),
    ],
)
def test_malformed_condition_raises_mapping_error_naming_it(
    terms: Terminology, field: str, value: Any
) -> None:
    resource = condition(SLE)
    resource[field] = value
    with pytest.raises(MappingError, match=f"^Condition/{resource['id']}: "):
        map_resource(resource, terms)


# Text no value set's review terms match (a matching text is kept for review: see below).
@pytest.mark.parametrize(
    "code", [None, {"text": "see scanned discharge letter"}], ids=["no-code", "text-only"]
)
def test_condition_without_a_code_is_reported_not_dropped(
    terms: Terminology, code: dict | None
) -> None:  # type: ignore[type-arg]
    """Condition.code is optional in R4, but an uncoded diagnosis may be an exclusion."""
    resource = condition(SLE)
    del resource["code"]
    if code is not None:
        resource["code"] = code
    with pytest.raises(MappingError, match="has no code"):
        map_resource(resource, terms)


# ------------------------------------------------------------------ unmapped is not absent
SCT_URI = "http://snomed.info/sct"


def test_unlisted_code_with_review_text_is_kept_for_review() -> None:
    resource = ehr_condition(
        coding(SCT_URI, "1287654001", "Lupus nephritis, ISN/RPS class IV-G"),
        onset="2021-05-10T08:00:00+08:00",
        recorded="2021-05-11T10:00:00+08:00",
    )
    dx = diagnosis(resource, review_terms())
    assert dx.concepts == frozenset()
    assert dx.review == frozenset({"sle"})
    assert dx.text == "Lupus nephritis, ISN/RPS class IV-G"
    assert (dx.onset, dx.recorded) == (date(2021, 5, 10), date(2021, 5, 11))


def test_local_code_with_chinese_text_is_kept_for_review() -> None:
    resource = ehr_condition(coding(LOCAL, "ZD-0233", "SLE"), text="系统性红斑狼疮 活动期")
    dx = diagnosis(resource, review_terms())
    assert "sle" in dx.review
    assert dx.text == "系统性红斑狼疮 活动期"


def test_bare_icd_category_above_value_set_rows_is_kept_for_review(terms: Terminology) -> None:
    # L51 (erythema multiforme) is above the rows L51.1-L51.3 of drug_hypersensitivity
    dx = diagnosis(ehr_condition(coding(ICD10CM, "L51")), terms)
    assert dx.review == frozenset({"drug_hypersensitivity"})


def test_an_icd_code_the_tables_leave_out_is_not_reviewed_by_its_text(terms: Terminology) -> None:
    """ICD tables list whole categories: a code outside them was left out on purpose."""
    resource = ehr_condition(
        coding(ICD10CM, "I25.2", "Old myocardial infarction"), text="陈旧性心肌梗死"
    )
    assert map_resource(resource, terms) is None


def test_text_only_condition_matching_review_terms_is_kept() -> None:
    dx = diagnosis(ehr_condition(text="社区获得性肺炎"), review_terms())
    assert (dx.codes, dx.review) == ((), frozenset({"infection"}))


def test_unlisted_code_with_unrelated_text_is_dropped() -> None:
    resource = ehr_condition(coding(LOCAL, "ZD-0101"), text="原发性高血压")
    assert map_resource(resource, review_terms()) is None


def test_listed_code_gets_no_review(terms: Terminology) -> None:
    dx = diagnosis(ehr_condition(coding(SCT_URI, SLE), text="系统性红斑狼疮"), terms)
    assert ("sle" in dx.concepts, dx.review) == (True, frozenset())


@pytest.mark.parametrize(
    ("kwargs", "day", "active"),
    [
        pytest.param({"abatement": "2026-12-01"}, date(2026, 11, 27), True, id="abates-later"),
        pytest.param({"abatement": "2026-11-27"}, date(2026, 11, 27), False, id="abates-that-day"),
        pytest.param({"onset": "2026-11-28"}, date(2026, 11, 27), False, id="onset-later"),
        pytest.param({"recorded": "2026-11-28"}, date(2026, 11, 27), False, id="recorded-later"),
        pytest.param(
            {"onset": "2026-11-01", "recorded": "2026-11-28"},
            date(2026, 11, 27),
            True,
            id="entered-later-onset-before",
        ),
        pytest.param({"clinical": "resolved"}, date(2026, 11, 27), False, id="resolved-undated"),
        pytest.param({"clinical": None}, date(2026, 11, 27), True, id="no-status"),
    ],
)
def test_active_on(terms: Terminology, kwargs: dict[str, Any], day: date, active: bool) -> None:
    dx = diagnosis(ehr_condition(coding(SCT_URI, SLE), **kwargs), terms)
    assert dx.active_on(day) is active


# ------------------------------------------------------------------ statuses as EHRs send them
LOCAL_STATUS = "http://hospital.example.cn/fhir/CodeSystem/dx-status"
ICD10_URI = "http://hl7.org/fhir/sid/icd-10"


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"coding": [{"code": "refuted"}]}, id="no-system"),
        pytest.param({"coding": [{"system": "", "code": "Refuted"}]}, id="empty-system-capital"),
        pytest.param({"text": "Entered in Error"}, id="text-only"),
        pytest.param(
            {"coding": [{"system": LOCAL_STATUS, "code": "R", "display": "Refuted"}]},
            id="local-code-standard-display",
        ),
    ],
)
def test_refuted_status_without_the_standard_system_is_read(
    terms: Terminology, status: dict[str, Any]
) -> None:
    assert (
        map_resource(ehr_condition(coding(ICD10_URI, "C50.9"), verification=status), terms) is None
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({"coding": [{"code": "resolved"}]}, "resolved", id="no-system"),
        pytest.param({"text": "Remission"}, "remission", id="text-only"),
        pytest.param(
            {"coding": [{"system": CLINICAL, "code": "INACTIVE"}]}, "inactive", id="upper-case"
        ),
        pytest.param(
            {"coding": [{"system": LOCAL_STATUS, "code": "03"}, {"code": "resolved"}]},
            "resolved",
            id="local-coding-beside-a-readable-one",
        ),
    ],
)
def test_clinical_status_without_the_standard_system_is_read(
    terms: Terminology, status: dict[str, Any], expected: str
) -> None:
    dx = diagnosis(ehr_condition(coding(ICD10_URI, "C50.9"), clinical=status), terms)
    assert dx.clinical_status == expected
    assert not dx.status_unread


@pytest.mark.parametrize(
    "status",
    [
        pytest.param({"coding": [{"system": LOCAL_STATUS, "code": "R"}]}, id="local-code"),
        # A local system's code is not taken as the standard one, even when it looks like it.
        pytest.param(
            {"coding": [{"system": LOCAL_STATUS, "code": "refuted"}]}, id="local-lookalike"
        ),
        pytest.param({"text": "已排除"}, id="chinese-text"),
        pytest.param({"coding": [{"code": "ruled-out"}]}, id="no-system-not-a-fhir-code"),
    ],
)
def test_unread_verification_status_keeps_the_record_as_uncertain(
    terms: Terminology, status: dict[str, Any]
) -> None:
    """It may say refuted or confirmed: neither dropped nor counted as confirmed."""
    dx = diagnosis(ehr_condition(coding(ICD10_URI, "C50.9"), verification=status), terms)
    assert dx.uncertain
    assert dx.verification_status is not None
    assert dx.verification_status.startswith("unread: ")


def test_unread_clinical_status_is_kept_and_flagged(terms: Terminology) -> None:
    status = {"coding": [{"system": LOCAL_STATUS, "code": "2", "display": "好转"}]}
    dx = diagnosis(ehr_condition(coding(ICD10_URI, "C50.9"), clinical=status), terms)
    assert dx.status_unread
    assert dx.clinical_status == "unread: '2'"
    assert not dx.uncertain


def test_no_status_is_not_an_unread_one(terms: Terminology) -> None:
    dx = diagnosis(
        ehr_condition(coding(ICD10_URI, "C50.9"), clinical=None, verification=None), terms
    )
    assert (dx.clinical_status, dx.verification_status) == (None, None)
    assert not dx.status_unread
    assert not dx.uncertain


# ------------------------------------------------------------------ abatement[x] without a date
@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("abatementBoolean", True, id="boolean"),
        pytest.param("abatementString", "上周已愈", id="string"),
        pytest.param("abatementAge", {"value": 34, "unit": "a", "code": "a"}, id="age"),
        pytest.param("abatementRange", {"low": {"value": 30, "unit": "a"}}, id="range"),
    ],
)
def test_abatement_without_a_date_means_over(terms: Terminology, field: str, value: Any) -> None:
    resource = ehr_condition(coding(ICD10_URI, "J18.9"), clinical=None, onset="2026-11-01")
    resource[field] = value
    dx = diagnosis(resource, terms)
    assert (dx.abatement, dx.abated) == (None, True)
    assert not dx.active
    assert not dx.active_on(date(2026, 11, 20))


def test_abatement_string_written_as_a_date_is_that_date(terms: Terminology) -> None:
    resource = ehr_condition(coding(ICD10_URI, "J18.9"), clinical=None, onset="2026-11-01")
    resource["abatementString"] = "2026-11-10"
    dx = diagnosis(resource, terms)
    assert (dx.abatement, dx.abated) == (date(2026, 11, 10), False)
    assert dx.active_on(date(2026, 11, 9))


def test_abatement_boolean_false_is_not_over(terms: Terminology) -> None:
    resource = ehr_condition(coding(ICD10_URI, "J18.9"), clinical=None, onset="2026-11-01")
    resource["abatementBoolean"] = False
    assert diagnosis(resource, terms).active


@pytest.mark.parametrize(
    ("sent", "first", "last"),
    [
        pytest.param("2021", date(2021, 1, 1), date(2021, 12, 31), id="year"),
        pytest.param("2021-12", date(2021, 12, 1), date(2021, 12, 31), id="december"),
        pytest.param("2024-02", date(2024, 2, 1), date(2024, 2, 29), id="leap-february"),
        pytest.param("2021-11-05", date(2021, 11, 5), None, id="whole-date"),
    ],
)
def test_partial_abatement_keeps_its_last_day(
    terms: Terminology, sent: str, first: date, last: date | None
) -> None:
    dx = diagnosis(condition(SLE, abatement=sent), terms)
    assert (dx.abatement, dx.abatement_latest) == (first, last)


def test_abatement_string_with_a_partial_date(terms: Terminology) -> None:
    resource = condition(SLE)
    resource["abatementString"] = "2021-11"
    dx = diagnosis(resource, terms)
    assert (dx.abatement, dx.abatement_latest, dx.abated) == (
        date(2021, 11, 1),
        date(2021, 11, 30),
        False,
    )


def test_onset_string_written_as_a_date_is_read(terms: Terminology) -> None:
    resource = condition(PNEUMONIA)
    resource["onsetString"] = "2026-11-10"
    assert diagnosis(resource, terms).onset == date(2026, 11, 10)
    resource["onsetString"] = "两周前"
    assert diagnosis(resource, terms).onset is None
