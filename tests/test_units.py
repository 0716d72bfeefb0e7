"""UCUM conversion (service/units.py) and the aliases labs send (terminology/units/aliases.csv).

Each conversion the trial relies on has its own case; the molar masses are those of the
value-set metadata (bilirubin 584.66 g/mol, creatinine 113.12 g/mol).
"""

from __future__ import annotations

import pytest

from service import terminology
from service.paths import data_root
from service.terminology import Terminology
from service.units import UnitError, conversion_factor, normalize_unit

BILIRUBIN = 584.66
CREATININE = 113.12


@pytest.mark.parametrize(
    ("source", "target", "molar_mass", "factor"),
    [
        pytest.param("g/dL", "g/L", None, 10.0, id="hgb-g/dL-to-g/L"),
        pytest.param("mg/dL", "umol/L", BILIRUBIN, 17.104, id="bilirubin-mg/dL-to-umol/L"),
        pytest.param("umol/L", "mg/dL", BILIRUBIN, 1 / 17.104, id="bilirubin-umol/L-to-mg/dL"),
        pytest.param("mg/dL", "umol/L", CREATININE, 88.4017, id="creatinine-mg/dL-to-umol/L"),
        pytest.param("umol/L", "mg/dL", CREATININE, 0.011312, id="creatinine-umol/L-to-mg/dL"),
        pytest.param("/uL", "10*9/L", None, 0.001, id="count-per-uL-to-10*9/L"),
        pytest.param("/mm3", "10*9/L", None, 0.001, id="count-per-mm3-to-10*9/L"),
        pytest.param("10*3/uL", "10*9/L", None, 1.0, id="count-10*3/uL-to-10*9/L"),
        pytest.param("ukat/L", "U/L", None, 60.0, id="enzyme-ukat/L-to-U/L"),
        pytest.param("[lb_av]", "kg", None, 0.45359237, id="weight-lb-to-kg"),
        pytest.param("g", "kg", None, 0.001, id="weight-g-to-kg"),
        pytest.param("g/L", "g/dL", None, 0.1, id="hgb-g/L-to-g/dL"),
        pytest.param("10*9/L", "/uL", None, 1000.0, id="count-10*9/L-to-per-uL"),
        pytest.param("10*12/L", "10*9/L", None, 1000.0, id="count-tera-to-giga"),
        pytest.param("%", "1", None, 0.01, id="percent-to-fraction"),
        pytest.param("m[IU]/mL", "[IU]/L", None, 1.0, id="hcg-mIU/mL-to-IU/L"),
        pytest.param("[IU]/L", "m[IU]/mL", None, 1.0, id="hcg-IU/L-to-mIU/mL"),
        pytest.param("mL/s", "mL/min", None, 60.0, id="clearance-mL/s-to-mL/min"),
        pytest.param("g", "mg", None, 1000.0, id="dose-g-to-mg"),
        pytest.param("ug", "mg", None, 0.001, id="dose-ug-to-mg"),
        pytest.param("{score}", "{score}", None, 1.0, id="annotation-is-unity"),
        pytest.param("{INR}", "1", None, 1.0, id="inr-annotation-is-unity"),
    ],
)
def test_conversion_factor(
    source: str, target: str, molar_mass: float | None, factor: float
) -> None:
    assert conversion_factor(source, target, molar_mass) == pytest.approx(factor, rel=1e-4)


@pytest.mark.parametrize(
    ("source", "target", "molar_mass"),
    [
        pytest.param("mg/dL", "umol/L", None, id="mass-to-substance-without-molar-mass"),
        pytest.param("mg", "g/L", None, id="mass-to-concentration"),
        pytest.param("g/L", "10*9/L", None, id="concentration-to-count"),
        pytest.param("s", "%", None, id="time-to-percent"),
        pytest.param("not a unit", "g/L", None, id="not-ucum"),
        pytest.param("mg/dL", "mL/min", CREATININE, id="molar-mass-does-not-make-flow"),
        # UCUM has no decimal numbers; its grammar reads "1.73" as 1 x 73 (a clearance x 73)
        pytest.param("mL/min/1.73", "mL/min", None, id="decimal-number-not-ucum"),
        pytest.param("mg/1.5", "mg", None, id="decimal-divisor-not-ucum"),
    ],
)
def test_incommensurable_units_raise(source: str, target: str, molar_mass: float | None) -> None:
    with pytest.raises(UnitError):
        conversion_factor(source, target, molar_mass)


def test_normalize_unit_without_aliases_only_strips() -> None:
    assert normalize_unit("  g/dL ") == "g/dL"


def test_normalize_unit_prefers_exact_alias_then_lower_case() -> None:
    aliases = {"K/uL": "10*3/uL", "iu/l": "[IU]/L"}
    assert normalize_unit("K/uL", aliases) == "10*3/uL"
    assert normalize_unit("IU/L", aliases) == "[IU]/L"
    assert normalize_unit("g/L", aliases) == "g/L"


# ------------------------------------------------------------------ the tables' aliases
@pytest.mark.parametrize(
    ("text", "ucum"),
    [
        pytest.param("K/uL", "10*3/uL", id="K/uL"),
        pytest.param("K/µL", "10*3/uL", id="K/micro-sign-L"),
        pytest.param("k/ul", "10*3/uL", id="k/ul-any-case"),
        pytest.param("x10^9/L", "10*9/L", id="x10^9/L"),
        pytest.param("×10^9/L", "10*9/L", id="times-10^9/L"),
        pytest.param("×10⁹/L", "10*9/L", id="times-10-superscript-9/L"),
        pytest.param("10^9/L", "10*9/L", id="10^9/L"),
        pytest.param("10E9/L", "10*9/L", id="10E9/L"),
        pytest.param("x10E3/uL", "10*3/uL", id="x10E3/uL"),
        pytest.param("10^3/uL", "10*3/uL", id="10^3/uL"),
        pytest.param("10^3/µL", "10*3/uL", id="10^3/micro-L"),
        pytest.param("/uL", "/uL", id="per-uL"),
        pytest.param("cells/uL", "/uL", id="cells/uL"),
        pytest.param("Cells/µL", "/uL", id="Cells/micro-L"),
        pytest.param("µmol/L", "umol/L", id="micro-sign-umol/L"),
        pytest.param("μmol/L", "umol/L", id="greek-mu-umol/L"),
        pytest.param("µmol/l", "umol/L", id="micro-sign-umol/l"),
        pytest.param("umol/l", "umol/L", id="umol/l"),
        pytest.param("UMOL/L", "umol/L", id="UMOL/L"),
        pytest.param("IU/L", "[IU]/L", id="IU/L"),
        pytest.param("iu/l", "[IU]/L", id="iu/l"),
        pytest.param("mIU/mL", "m[IU]/mL", id="mIU/mL"),
        pytest.param("mIU/ml", "m[IU]/mL", id="mIU/ml"),
        pytest.param("Kg", "kg", id="Kg"),
        pytest.param("KG", "kg", id="KG"),
        pytest.param("g/dl", "g/dL", id="g/dl"),
        pytest.param("G/DL", "g/dL", id="G/DL"),
        pytest.param("mg/dl", "mg/dL", id="mg/dl"),
        pytest.param("U/l", "U/L", id="U/l"),
        pytest.param("u/L", "U/L", id="u/L"),
        pytest.param("sec", "s", id="sec"),
        pytest.param("secs", "s", id="secs"),
        pytest.param("SEC", "s", id="SEC"),
        pytest.param("G/L", "10*9/L", id="G/L-is-giga-per-litre"),
        pytest.param("T/L", "10*12/L", id="T/L-is-tera-per-litre"),
        pytest.param("g/L", "g/L", id="g/L-stays-gram-per-litre"),
        pytest.param("%", "%", id="percent"),
        pytest.param("ｇ/Ｌ", "g/L", id="full-width-g/L"),
        pytest.param(" 10^9 /L ", "10*9/L", id="spaces"),
    ],
)
def test_alias_table(terms: Terminology, text: str, ucum: str) -> None:
    assert terms.ucum(text) == ucum


@pytest.mark.parametrize(
    ("concept", "value", "unit", "expected"),
    [
        pytest.param("hemoglobin", 6.2, "g/dl", 62.0, id="hgb-g/dl"),
        pytest.param("hemoglobin", 62, "G/L", None, id="hgb-G/L-is-a-count-not-grams"),
        pytest.param("wbc", 4.2, "G/L", 4.2, id="wbc-G/L"),
        pytest.param("wbc", 0.0042, "T/L", 4.2, id="wbc-T/L"),
        pytest.param("wbc", 4.2, "×10⁹/L", 4.2, id="wbc-times-10-superscript-9"),
        pytest.param("wbc", 4.2, "10E9/L", 4.2, id="wbc-10E9/L"),
        pytest.param("wbc", 4.2, "x10E3/uL", 4.2, id="wbc-x10E3/uL"),
        pytest.param("wbc", 4.2, "K/µL", 4.2, id="wbc-K/micro-L"),
        pytest.param("neutrophils_abs", 1500, "cells/uL", 1.5, id="anc-cells/uL"),
        pytest.param("neutrophils_abs", 1500, "/µL", 1.5, id="anc-per-micro-L"),
        pytest.param("creatinine", 1.0, "mg/dl", 88.40, id="creatinine-mg/dl"),
        pytest.param("creatinine", 88.4, "µmol/l", 88.4, id="creatinine-micro-mol/l"),
        pytest.param("bilirubin_total", 1.0, "MG/DL", 17.104, id="bilirubin-MG/DL"),
        pytest.param("bilirubin_total", 17.1, "μmol/L", 17.1, id="bilirubin-greek-mu"),
        pytest.param("alt", 40, "U/l", 40, id="alt-U/l"),
        pytest.param("alt", 40, "IU/L", 40, id="alt-IU/L"),
        pytest.param("body_weight", 60, "Kg", 60, id="weight-Kg"),
        pytest.param("body_weight", 60, "KG", 60, id="weight-KG"),
        pytest.param("hcg_serum", 25, "mIU/ml", 25, id="hcg-mIU/ml"),
        pytest.param("prothrombin_time", 12, "secs", 12, id="pt-secs"),
    ],
)
def test_lab_spellings_convert(
    terms: Terminology, concept: str, value: float, unit: str, expected: float | None
) -> None:
    converted = terms.canonical(concept, value, unit)
    if expected is None:
        assert converted is None
        return
    assert converted is not None
    assert converted[0] == pytest.approx(expected, rel=1e-3)


def test_normalize_unit_spelling_without_aliases() -> None:
    assert normalize_unit("×10⁹/L") == "10*9/L"
    assert normalize_unit("µmol/L") == "umol/L"


@pytest.mark.parametrize(
    ("concept", "value", "unit", "expected"),
    [
        pytest.param("wbc", 4.2, "K/uL", 4.2, id="wbc-K/uL"),
        pytest.param("wbc", 4200, "/uL", 4.2, id="wbc-per-uL"),
        pytest.param("hemoglobin", 6.0, "g/dL", 60.0, id="hgb-g/dL"),
        pytest.param(
            "bilirubin_total", 1.0, "mg/dL", 17.104, id="bilirubin-mg/dL-molar-mass-584.66"
        ),
        pytest.param("bilirubin_total", 20, "µmol/L", 20.0, id="bilirubin-micro-sign"),
        pytest.param("creatinine", 1.0, "mg/dL", 88.40, id="creatinine-mg/dL-molar-mass-113.12"),
        pytest.param("alt", 1.0, "ukat/L", 60.0, id="alt-ukat/L"),
        pytest.param("body_weight", 132.27735731092653, "[lb_av]", 60.0, id="weight-lb"),
        pytest.param("hcg_serum", 25, "[IU]/L", 25.0, id="hcg-IU/L"),
        pytest.param("creatinine_clearance", 1.0, "mL/s", 60.0, id="clearance-mL/s"),
        # spellings LIS interfaces send: German Gpt/L, US thou/uL, the classical g% and mg%
        pytest.param("neutrophils_abs", 1.2, "Gpt/L", 1.2, id="anc-Gpt/L"),
        pytest.param("wbc", 4.2, "thou/uL", 4.2, id="wbc-thou/uL"),
        pytest.param("wbc", 4.2, "thou/mm3", 4.2, id="wbc-thou/mm3"),
        pytest.param("hemoglobin", 5.5, "g%", 55.0, id="hgb-g%"),
        pytest.param("creatinine", 1.0, "mg%", 88.40, id="creatinine-mg%"),
        # eGFR codes are per 1.73 m2: a bare mL/min (Synthea, some LIS) is that value written short
        pytest.param("egfr", 66.5, "mL/min", 66.5, id="egfr-bare-mL/min"),
        pytest.param("egfr", 66.5, "mL/min/1.73", 66.5, id="egfr-mL/min/1.73"),
        pytest.param("egfr", 66.5, "mL/min/{1.73_m2}", 66.5, id="egfr-ucum"),
    ],
)
def test_canonical_uses_the_value_set_unit_and_molar_mass(
    terms: Terminology, concept: str, value: float, unit: str, expected: float
) -> None:
    converted = terms.canonical(concept, value, unit)
    assert converted is not None
    assert converted[0] == pytest.approx(expected, rel=1e-3)
    assert converted[1] == terms.valuesets[concept].canonical_unit


@pytest.mark.parametrize(
    ("concept", "unit"),
    [
        pytest.param("hemoglobin", "mmol/L", id="no-molar-mass-for-hemoglobin"),
        pytest.param("wbc", "g/L", id="incommensurable"),
        pytest.param("hemoglobin", None, id="no-unit"),
        pytest.param("hbsag", "{index}", id="value-set-without-canonical-unit"),
        pytest.param("no-such-value-set", "g/L", id="unknown-value-set"),
        # a clearance is not normalised: the eGFR spellings never convert to it
        pytest.param("creatinine_clearance", "mL/min/1.73", id="clearance-not-per-1.73-m2"),
        pytest.param("creatinine_clearance", "mL/min/1.73m2", id="clearance-not-per-1.73m2"),
    ],
)
def test_canonical_is_none_when_it_cannot_convert(
    terms: Terminology, concept: str, unit: str | None
) -> None:
    assert terms.canonical(concept, 1.0, unit) is None


# ------------------------------------------------------------------ cached answers
def test_canonical_answers_the_same_from_its_cache() -> None:
    terms = Terminology.load(data_root() / "terminology")
    first = terms.canonical("hemoglobin", 6.0, "g/dL")
    again = terms.canonical("hemoglobin", 6.0, "g/dL")
    other_value = terms.canonical("hemoglobin", 7.5, "g/dL")
    assert first == again == (pytest.approx(60.0), "g/L")
    assert other_value == (pytest.approx(75.0), "g/L")
    assert terms.canonical("hemoglobin", 1.0, "mmol/L") is None
    assert terms.canonical("hemoglobin", 1.0, "mmol/L") is None  # a cached "cannot convert"


def test_caches_start_over_at_their_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(terminology, "CACHE_LIMIT", 2)
    terms = Terminology.load(data_root() / "terminology")
    answers = [terms.canonical("wbc", 4.2, unit) for unit in ("K/uL", "/uL", "10*9/L", "K/uL")]
    assert [a[0] if a else None for a in answers] == pytest.approx([4.2, 0.0042, 4.2, 4.2])
    assert len(terms._canonical_cache) <= 2


def test_a_unit_that_is_not_a_string_fails_as_without_the_cache(terms: Terminology) -> None:
    for _ in range(2):
        with pytest.raises(AttributeError):
            terms.canonical("hemoglobin", 1.0, {"not": "a unit"})  # type: ignore[arg-type]


def test_factor_errors_are_raised_every_time(terms: Terminology) -> None:
    assert terms.factor("g/dL", "g/L") == pytest.approx(10.0)
    assert terms.factor("g/dL", "g/L") == pytest.approx(10.0)
    for _ in range(2):
        with pytest.raises(UnitError):
            terms.factor("g/dL", "10*9/L")


@pytest.mark.parametrize(
    ("concepts", "expected"),
    [
        pytest.param({"hemoglobin"}, "hemoglobin", id="one-with-a-canonical-unit"),
        pytest.param({"hbsag", "hemoglobin"}, "hemoglobin", id="skips-one-without"),
        pytest.param({"wbc", "hemoglobin"}, "hemoglobin", id="first-by-name"),
        pytest.param({"hbsag"}, None, id="none-with-a-canonical-unit"),
        pytest.param(set(), None, id="no-concepts"),
    ],
)
def test_quantity_concept(terms: Terminology, concepts: set[str], expected: str | None) -> None:
    assert terms.quantity_concept(frozenset(concepts)) == expected
    assert terms.quantity_concept(frozenset(concepts)) == expected  # from the cache
