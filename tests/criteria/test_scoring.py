"""EULAR/ACR 2019 (I1) and SLEDAI-2K (I2) computed from the record (issue 12).

Records are built the way hospital systems send them (tests/criteria/realworld.py: LOINC with
Chinese text, SI units and unit spellings, timestamps with offsets, reference ranges with type
and appliesTo, interpretation flags; problem-list Conditions with several codings). Each item is
tested met and not met at its boundary, the domain rule (highest weight only), each limit source
(the result's own range, the lab's flag, the documented fallback), the window edges, the
competing causes, and every verdict path of scores.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from service.criteria.verdict import CriterionResult, Score, ScoreItem
from tests.conftest import AS_OF, run
from tests.criteria.realworld import lab, ref_range
from tests.factories import medication, patient
from tests.realworld import coding, ehr_condition

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
Resource = dict[str, Any]


def at(days_ago: int) -> str:
    """A timestamp as the LIS sends it, `days_ago` days before AS_OF, at 08:15 China time."""
    return f"{(AS_OF - timedelta(days=days_ago)).isoformat()}T08:15:00+08:00"


def day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat()


# ------------------------------------------------------------------ hospital-shaped records
def ana(text: str, days_ago: int = 400) -> Resource:
    return lab("5048-4", string=text, at=at(days_ago), text="抗核抗体(ANA) 滴度")


def ana_ratio(dilution: float, days_ago: int = 400) -> Resource:
    resource = lab("5048-4", at=at(days_ago), text="ANA IIF HEp-2")
    resource["valueRatio"] = {"numerator": {"value": 1}, "denominator": {"value": dilution}}
    return resource


def wbc(value: float, unit: str = "\u00d710^9/L", days_ago: int = 20) -> Resource:
    return lab("6690-2", value, unit, at=at(days_ago), text="白细胞计数")


def platelets(value: float, days_ago: int = 20) -> Resource:
    return lab("777-3", value, "10^9/L", at=at(days_ago), text="血小板计数")


def c3(
    value: float, unit: str = "g/L", low: float | None = 0.9, high: float = 1.8, **kw: Any
) -> Resource:
    ranges = [ref_range(low, high, unit, meaning="normal")] if low is not None else None
    return lab(
        "4485-9", value, unit, at=at(kw.pop("days_ago", 20)), ranges=ranges, text="补体C3", **kw
    )


def c4(value: float, low: float | None = 0.1, **kw: Any) -> Resource:
    ranges = [ref_range(low, 0.4, "g/L", meaning="normal")] if low is not None else None
    return lab(
        "4498-2", value, "g/L", at=at(kw.pop("days_ago", 20)), ranges=ranges, text="补体C4", **kw
    )


def dsdna(value: float, high: float | None = 100, **kw: Any) -> Resource:
    ranges = [ref_range(None, high, "IU/mL")] if high is not None else None
    return lab(
        "5130-0",
        value,
        "IU/mL",
        at=at(kw.pop("days_ago", 20)),
        ranges=ranges,
        text="抗dsDNA抗体",
        **kw,
    )


def urine(code: str, value: float, days_ago: int = 10, unit: str = "/HPF") -> Resource:
    return lab(code, value, unit, at=at(days_ago), text="尿沉渣镜检")


def temperature(value: float, days_ago: int = 10, unit: str = "Cel") -> Resource:
    resource = lab("8310-5", value, unit, at=at(days_ago), text="体温")
    resource["category"][0]["coding"][0]["code"] = "vital-signs"
    return resource


def finding(code: str, onset_days_ago: int = 10, **kw: Any) -> Resource:
    return ehr_condition(coding(SNOMED, code), onset=day(onset_days_ago), **kw)


def infection(onset_days_ago: int) -> Resource:
    # a urinary tract infection coded in ICD-10-CM with Chinese text, as a problem-list entry
    return ehr_condition(coding(ICD10CM, "N39.0"), text="尿路感染", onset=day(onset_days_ago))


def sle_code() -> Resource:
    return ehr_condition(coding(SNOMED, "55464009"), text="系统性红斑狼疮", onset="2018-03-01")


def score_of(result: CriterionResult) -> Score:
    assert result.score is not None, result.reason
    return result.score


def item(result: CriterionResult, item_id: str) -> ScoreItem:
    return next(i for i in score_of(result).items if i.id == item_id)


def i1(*resources: Resource) -> CriterionResult:
    return run([patient(), *resources], "I1")


def i2(*resources: Resource) -> CriterionResult:
    return run([patient(), *resources], "I2")


# A record that classifies without an SLE code: ANA 1:160, anti-dsDNA above range (6), low C3 and
# low C4 (4), leukopenia (3, clinical) = 13.
CLASSIFIED = [ana("1:160"), dsdna(320), c3(0.55), c4(0.05), wbc(3.2)]


# ------------------------------------------------------------------ EULAR/ACR 2019: entry
@pytest.mark.parametrize(
    ("record", "status"),
    [
        (ana("1:160"), "counted"),
        (ana("1:80"), "counted"),  # at the titer: >= 1:80
        (ana("1:40"), "not_met"),
        (ana("阳性 1:40"), "not_met"),  # the titer decides, not the word
        (ana("<1:80"), "not_met"),
        (ana("阳性"), "counted"),  # an equivalent positive test without a titer
        (ana("阴性"), "not_met"),
        (ana_ratio(320), "counted"),
        (ana_ratio(40), "not_met"),
    ],
    ids=[
        "1:160",
        "1:80",
        "1:40",
        "positive-1:40",
        "below-1:80",
        "阳性",
        "阴性",
        "ratio-320",
        "ratio-40",
    ],
)
def test_entry_criterion_ana(record: Resource, status: str) -> None:
    entry = score_of(i1(record)).entry
    assert entry is not None
    assert entry.status == status, entry.reason


def test_without_ana_nothing_classifies() -> None:
    result = i1(*CLASSIFIED[1:])
    score = score_of(result)
    assert score.total == 13
    assert not score.met
    assert "entry criterion not met" in score.summary
    assert result.verdict == "fail"


# ------------------------------------------------------------------ items at their limits
@pytest.mark.parametrize(
    ("record", "item_id", "status"),
    [
        (wbc(3.9), "leukopenia", "counted"),
        (wbc(4.0), "leukopenia", "not_met"),  # < 4, not <=
        (wbc(3900, "/uL"), "leukopenia", "counted"),  # US units, converted
        (wbc(3.9, "K/uL"), "leukopenia", "counted"),
        (platelets(99), "thrombocytopenia", "counted"),
        (platelets(100), "thrombocytopenia", "not_met"),
        (temperature(38.4), "fever", "counted"),
        (temperature(38.3), "fever", "not_met"),  # > 38.3
        (temperature(38.4, unit="℃"), "fever", "counted"),
        (temperature(101.3, unit="[degF]"), "fever", "undetermined"),  # not converted: shown
        (finding("386661006"), "fever", "counted"),  # fever coded on the problem list
        (lab("2889-4", 0.6, "g/24h", at=at(30), text="24小时尿蛋白定量"), "proteinuria", "counted"),
        (lab("2889-4", 500, "mg/24h", at=at(30)), "proteinuria", "not_met"),  # > 0.5 g
        (finding("36402006"), "ln_class_3_4", "counted"),
        (finding("52042003"), "ln_class_2_5", "counted"),
        (finding("3723001"), "joints", "counted"),
        (finding("26284000"), "oral_ulcers", "counted"),
        (finding("373945007"), "effusion", "counted"),
        (finding("69322001", verification="provisional"), "psychosis", "undetermined"),
        (lab("3181-5", 45, "GPL-U/mL", at=at(60)), "antiphospholipid", "counted"),
        (lab("3181-5", 40, "GPL-U/mL", at=at(60)), "antiphospholipid", "not_met"),  # > 40
        (lab("40647-0", string="阳性", at=at(60)), "antiphospholipid", "counted"),
        (lab("11090-8", string="Positive", at=at(60)), "sle_antibodies", "counted"),
    ],
)
def test_eular_item(record: Resource, item_id: str, status: str) -> None:
    found = item(i1(record), item_id)
    assert found.status == status, found.reason
    assert found.counted == (status == "counted")


def test_counted_item_cites_its_record_and_converted_value() -> None:
    found = item(i1(wbc(3900, "/uL")), "leukopenia")
    (evidence,) = found.evidence
    assert evidence.reference is not None
    assert evidence.reference.startswith("Observation/")
    assert (evidence.value, evidence.unit) == (3900, "/uL")
    assert (evidence.converted_value, evidence.converted_unit) == (3.9, "10*9/L")
    assert evidence.date == AS_OF - timedelta(days=20)


def test_autoimmune_hemolysis_needs_both_findings() -> None:
    low_hp = lab("4542-7", 0.05, "g/L", at=at(40), ranges=[ref_range(0.3, 2.0, "g/L")])
    coombs = lab("1007-4", string="阳性(+)", at=at(40), text="直接抗人球蛋白试验")
    assert item(i1(low_hp, coombs), "autoimmune_hemolysis").status == "counted"
    assert item(i1(low_hp), "autoimmune_hemolysis").status == "not_in_record"
    assert len(item(i1(low_hp, coombs), "autoimmune_hemolysis").evidence) == 2


# ------------------------------------------------------------------ the domain rule
def test_only_the_highest_item_of_a_domain_counts() -> None:
    result = i1(ana("1:160"), wbc(3.2), platelets(80))
    assert item(result, "thrombocytopenia").status == "counted"
    leukopenia = item(result, "leukopenia")
    assert leukopenia.status == "lower_in_domain"
    assert "Thrombocytopenia (weight 4)" in leukopenia.reason
    assert score_of(result).total == 4


def test_low_c3_and_c4_outweighs_low_c3_or_c4() -> None:
    result = i1(c3(0.55), c4(0.05))
    assert item(result, "low_c3_and_c4").status == "counted"
    assert item(result, "low_c3_or_c4").status == "lower_in_domain"
    assert score_of(result).total == 4
    only_c3 = i1(c3(0.55), c4(0.2))
    assert item(only_c3, "low_c3_or_c4").status == "counted"
    assert item(only_c3, "low_c3_and_c4").status == "not_met"
    assert score_of(only_c3).total == 3


def _unitless_range(record: Resource, low: float, high: float) -> Resource:
    """`record` with one range whose limits carry no unit, as some LIS interfaces send it."""
    record["referenceRange"] = [{"low": {"value": low}, "high": {"value": high}}]
    return record


# ------------------------------------------------------------------ where a limit comes from
@pytest.mark.parametrize(
    ("record", "status", "source"),
    [
        # the result's own range: 0.85 is below this lab's 0.9
        (c3(0.85), "counted", "reference range low 0.9 g/L"),
        (c3(0.95), "not_met", "reference range low 0.9 g/L"),
        # another lab's range in mg/dL, converted with the value
        (c3(70, "mg/dL", low=79, high=152), "counted", "reference range low 0.79 g/L"),
        # no range: the lab's flag
        (c3(0.85, low=None, interpretation="L"), "counted", "flagged L"),
        (c3(0.85, low=None, interpretation="N"), "not_met", "flagged N"),
        # neither: the documented fallback (the lowest lower limit in common use, 0.75 g/L)
        (c3(0.85, low=None), "not_met", "0.75 g/L (fallback"),
        (c3(0.7, low=None), "counted", "0.75 g/L (fallback"),
        # a range sent without its unit, in mg/dL beside a value in g/L: not a limit of 90 g/L
        (_unitless_range(c3(1.2), 90, 180), "not_met", "0.75 g/L (fallback"),
        (_unitless_range(c3(0.6), 90, 180), "counted", "0.75 g/L (fallback"),
        # a placeholder range: "0-0"
        (_unitless_range(c3(1.2), 0, 0), "not_met", "0.75 g/L (fallback"),
    ],
    ids=[
        "range-low",
        "range-normal",
        "range-mg-dl",
        "flag-L",
        "flag-N",
        "fallback-no",
        "fallback",
        "range-in-another-unit-not-low",
        "range-in-another-unit-low",
        "range-0-0",
    ],
)
def test_complement_limit_source(record: Resource, status: str, source: str) -> None:
    found = item(i1(record), "low_c3_or_c4")
    assert found.status == status, found.reason
    assert source in found.reason


def test_a_range_for_the_other_sex_is_not_used() -> None:
    # a male range (low 1.0) does not apply to this woman; the untyped female range (0.8) does
    record = lab(
        "4485-9",
        0.85,
        "g/L",
        at=at(20),
        ranges=[
            ref_range(1.0, 1.9, "g/L", sex="248153007"),
            ref_range(0.8, 1.7, "g/L", sex="248152002"),
        ],
    )
    assert item(i1(record), "low_c3_or_c4").status == "not_met"


@pytest.mark.parametrize(
    ("record", "status"),
    [
        (dsdna(320), "counted"),  # above the lab's range
        (dsdna(80), "not_met"),
        (dsdna(320, high=None, interpretation="H"), "counted"),  # flagged high
        (dsdna(320, high=None), "undetermined"),  # no range, no flag: no fixed anti-dsDNA limit
        (lab("5130-0", string="阳性(+)", at=at(20)), "counted"),
        (dsdna(30, high=0), "undetermined"),  # a high of 0: a placeholder, no range
        (_unitless_range(dsdna(30), 0, 0), "undetermined"),  # "0-0"
    ],
    ids=["above-range", "in-range", "flag-H", "no-range", "阳性", "high-0", "range-0-0"],
)
def test_anti_dsdna(record: Resource, status: str) -> None:
    assert item(i1(record), "sle_antibodies").status == status


# ------------------------------------------------------------------ better explained by
def test_fever_with_an_infection_in_its_span_is_withheld() -> None:
    result = i1(temperature(39.1, days_ago=10), infection(onset_days_ago=12))
    fever = item(result, "fever")
    assert fever.status == "withheld"
    assert "infection" in fever.reason
    assert "Condition/" in fever.reason
    assert any(e.note and "competing cause" in e.note for e in fever.evidence)


def test_fever_long_after_an_infection_counts() -> None:
    infection_resolved = ehr_condition(
        coding(ICD10CM, "N39.0"), onset=day(200), abatement=day(190), clinical="resolved"
    )
    assert item(i1(temperature(39.1, days_ago=10), infection_resolved), "fever").counted


def test_leukopenia_on_azathioprine_is_withheld() -> None:
    aza = medication("1256", start=AS_OF - timedelta(days=300), status="active", dose_mg=50)
    found = item(i1(wbc(3.2), aza), "leukopenia")
    assert found.status == "withheld"
    assert "myelotoxic drug" in found.reason


# ------------------------------------------------------------------ I1 verdict paths
def test_i1_with_an_sle_code_passes_with_the_score_beside_it() -> None:
    result = i1(sle_code(), *CLASSIFIED)
    assert result.verdict == "pass"
    assert result.reason.startswith("Systemic lupus erythematosus")
    assert score_of(result).met
    assert score_of(result).total == 13
    assert result.evidence[0].reference is not None  # the diagnosis first, as before
    assert any(e.note and "EULAR/ACR 2019" in e.note for e in result.evidence)


def test_i1_classified_without_a_code_is_unknown_for_review() -> None:
    result = i1(*CLASSIFIED)
    assert result.verdict == "unknown"
    assert result.reason == (
        "classification criteria met from the record (EULAR/ACR 2019 13 >= 10); "
        "no SLE diagnosis coded: review"
    )
    assert result.check is not None
    counted = {i.id for i in score_of(result).items if i.counted}
    assert counted == {"leukopenia", "low_c3_and_c4", "sle_antibodies"}


def test_i1_at_ten_without_a_clinical_item_fails() -> None:
    result = i1(ana("1:160"), dsdna(320), c3(0.55), c4(0.05))  # 6 + 4 = 10, no clinical item
    assert score_of(result).total == 10
    assert not score_of(result).met
    assert "no clinical item" in score_of(result).summary
    assert result.verdict == "fail"


def test_i1_exactly_ten_with_a_clinical_item_is_unknown() -> None:
    # anti-dsDNA 6 + proteinuria 4 (clinical) = 10
    result = i1(ana("1:160"), dsdna(320), lab("2889-4", 0.8, "g/24h", at=at(50)))
    assert score_of(result).total == 10
    assert result.verdict == "unknown"


def test_i1_below_ten_without_a_code_fails_as_before() -> None:
    result = i1(ana("1:160"), dsdna(320), wbc(3.2))
    assert result.verdict == "fail"
    assert (
        result.reason
        == "no Systemic lupus erythematosus (established diagnosis) diagnosis on record"
    )
    assert score_of(result).total == 9


def test_i1_a_non_sle_lupus_code_stays_unknown() -> None:
    discoid = ehr_condition(coding(ICD10CM, "L93.0"), text="盘状红斑狼疮", onset="2020-06-01")
    result = i1(discoid, ana("1:160"))
    assert result.verdict == "unknown"
    assert "does not establish" in result.reason
    assert item(result, "scle_dle").counted  # the same record counts as a finding (weight 4)


def test_i1_upcr_counts_only_when_the_trial_enables_it() -> None:
    from service.criteria.common import Context
    from service.criteria.scoring import compute_score
    from tests.conftest import context, facts_of, load_nct

    rule = load_nct().criterion("I1").rule
    spec = rule.classification  # type: ignore[union-attr]
    assert spec is not None
    facts = facts_of([patient(), lab("2890-2", 1.2, "mg/mg", at=at(40), text="尿蛋白/肌酐比值")])
    ctx: Context = context()
    off = compute_score(spec, facts, ctx)
    assert next(i for i in off.items if i.id == "proteinuria").status == "not_in_record"
    on = compute_score(
        spec.model_copy(update={"options": {"upcr_as_24h_proteinuria": True}}), facts, ctx
    )
    proteinuria = next(i for i in on.items if i.id == "proteinuria")
    assert proteinuria.counted
    assert proteinuria.evidence[0].note is not None
    assert "UPCR" in proteinuria.evidence[0].note


# ------------------------------------------------------------------ I2 SLEDAI-2K
def sledai_total(value: float, days_ago: int) -> Resource:
    resource = lab("sledai-2k", value, "{score}", at=at(days_ago), text="SLEDAI-2K")
    resource["code"]["coding"][0]["system"] = "http://cohort-match.org/fhir/CodeSystem/lupus-scores"
    return resource


def test_i2_a_recorded_total_in_the_window_decides() -> None:
    result = i2(sledai_total(4, days_ago=20), urine("13945-1", 30), c3(0.5), dsdna(400))
    assert result.verdict == "fail"
    assert result.score is None


def test_i2_a_recorded_total_older_than_the_window_leaves_the_computation_to_decide() -> None:
    result = i2(
        sledai_total(12, days_ago=120),
        urine("13945-1", 30),
        c3(0.5, days_ago=5),
        dsdna(400, days_ago=5),
    )
    assert result.verdict == "pass"
    assert score_of(result).total == 8  # hematuria 4 + low complement 2 + DNA binding 2


def test_i2_labs_above_six_pass_with_every_counted_item() -> None:
    result = i2(urine("13945-1", 12), c3(0.5, days_ago=5), dsdna(400, days_ago=5))
    assert result.verdict == "pass"
    assert result.reason.startswith("SLEDAI-2K at least 8 from the record (last 30 days:")
    refs = {e.reference for e in result.evidence if e.reference}
    assert len(refs) == 3


@pytest.mark.parametrize(
    ("records", "total"),
    [
        ((urine("13945-1", 12), c3(0.5, days_ago=5)), 6),  # exactly 6: not > 6
        ((), 0),
    ],
    ids=["six", "nothing"],
)
def test_i2_at_or_below_six_is_unknown_never_fail(
    records: tuple[Resource, ...], total: int
) -> None:
    result = i2(*records)
    assert result.verdict == "unknown"
    assert f"SLEDAI-2K at least {total} from the record" in result.reason
    assert result.reason.endswith("the clinical items need an assessment")
    assert score_of(result).lower_bound


@pytest.mark.parametrize(
    ("days_ago", "status"),
    [(30, "counted"), (31, "outside_window")],
    ids=["day-30", "day-31"],
)
def test_i2_window_edge(days_ago: int, status: str) -> None:
    assert item(i2(urine("13945-1", 12, days_ago=days_ago)), "hematuria").status == status


@pytest.mark.parametrize(
    ("record", "item_id", "status"),
    [
        (urine("13945-1", 6), "hematuria", "counted"),
        (urine("13945-1", 5), "hematuria", "not_met"),  # > 5 /hpf
        (urine("5821-4", 8, unit="个/HP"), "pyuria", "counted"),
        (urine("5793-5", 2, unit="/LPF"), "urinary_casts", "counted"),
        (urine("5793-5", 0, unit="/LPF"), "urinary_casts", "not_met"),
        (lab("2889-4", 1.2, "g/24h", at=at(10)), "proteinuria", "counted"),
        (temperature(38.1), "fever", "counted"),  # > 38 for SLEDAI-2K
        (temperature(38.0), "fever", "not_met"),
        (wbc(2.9), "leukopenia", "counted"),  # < 3 for SLEDAI-2K
        (wbc(3.0), "leukopenia", "not_met"),
        (platelets(90), "thrombocytopenia", "counted"),
        (
            lab("4532-8", 20, "U/mL", at=at(10), ranges=[ref_range(23, 46, "U/mL")]),
            "low_complement",
            "counted",
        ),
        (finding("271807003"), "rash", "counted"),
        (finding("271807003", onset_days_ago=60), "rash", "outside_window"),  # an old entry
        (finding("91175000"), "seizure", "counted"),
    ],
)
def test_sledai_item(record: Resource, item_id: str, status: str) -> None:
    found = item(i2(record), item_id)
    assert found.status == status, found.reason


def test_i2_hematuria_in_another_unit_uses_its_own_range() -> None:
    # a Chinese LIS counting red cells per microlitre, with its own range 0-25/uL
    record = lab(
        "13945-1", 60, "/uL", at=at(10), ranges=[ref_range(0, 25, "/uL")], text="尿红细胞计数"
    )
    assert item(i2(record), "hematuria").status == "counted"


def test_i2_pyuria_with_a_urinary_infection_is_listed_not_counted() -> None:
    result = i2(
        urine("5821-4", 30), urine("13945-1", 20), c3(0.5, days_ago=5), infection(onset_days_ago=8)
    )
    assert item(result, "pyuria").status == "withheld"
    assert item(result, "hematuria").status == "withheld"
    assert score_of(result).total == 2
    assert result.verdict == "unknown"  # never fail


@pytest.mark.parametrize(
    ("when", "status"),
    [
        ("2026-10", "undetermined"),  # the 30-day window opens on 28 October: either side
        ("2026-11", "undetermined"),  # may be after AS_OF (27 November)
        ("2026-09", "outside_window"),
    ],
)
def test_i2_item_dated_a_month_is_counted_only_when_every_day_is_in_the_window(
    when: str, status: str
) -> None:
    record = urine("13945-1", 12)
    record["effectiveDateTime"] = when
    found = item(i2(record), "hematuria")
    assert found.status == status, found.reason


def test_i2_finding_with_a_month_onset_across_the_window_is_undetermined() -> None:
    record = finding("271807003")
    record["onsetDateTime"] = "2026-10"
    found = item(i2(record), "rash")
    assert found.status == "undetermined", found.reason
    assert "2026-10" in found.reason
