"""I4: glucocorticoids >= 1 mg/kg/day (prednisone equivalent) + cyclophosphamide + a listed
immunosuppressant for > 6 months. A component not documented is `unknown`, never `fail`:
treatment may have been given at another hospital.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from tests.conftest import AS_OF, run
from tests.factories import (
    AZATHIOPRINE,
    CYCLOPHOSPHAMIDE,
    METHYLPREDNISOLONE,
    MYCOPHENOLATE,
    PREDNISONE,
    PREDNISONE_5MG_TAB,
    RXNORM,
    WEIGHT,
    contained_request,
    medication,
    obs,
)

# Treatment within the last year, with the weight measured when it began: the dose per kg is
# the same whether it is read with the weight at the time or the latest weight (see report).
START = date(2026, 1, 10)


def weight(kg: float, unit: str = "kg", on: date = START) -> dict[str, Any]:
    return obs(WEIGHT, kg, unit, days=(AS_OF - on).days)


def steroid(dose: float, per_day: int = 1, code: str = PREDNISONE, **kwargs: Any) -> dict[str, Any]:
    return medication(
        code, start=START, end=date(2026, 3, 10), dose_mg=dose, per_day=per_day, **kwargs
    )


def cyclophosphamide() -> dict[str, Any]:
    return medication(CYCLOPHOSPHAMIDE, start=date(2026, 2, 1), end=date(2026, 2, 1), dose_mg=500)


def immunosuppressant(end: date, start: date = START, code: str = MYCOPHENOLATE) -> dict[str, Any]:
    return medication(code, start=start, end=end, dose_mg=1000, per_day=2)


MORE_THAN_6_MONTHS = date(2026, 7, 11)  # START + 6 months + 1 day
EXACTLY_6_MONTHS = date(2026, 7, 10)


def full(**replace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts = {
        "weight": [weight(60)],
        "steroid": [steroid(60)],
        "cyclophosphamide": [cyclophosphamide()],
        "immunosuppressant": [immunosuppressant(MORE_THAN_6_MONTHS)],
    }
    parts.update(replace)
    return [resource for group in parts.values() for resource in group]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(full(), "pass", id="prednisone-60-mg-60-kg-is-1.0-mg/kg/day-pass"),
        pytest.param(
            full(steroid=[steroid(59.4)]), "unknown", id="prednisone-0.99-mg/kg/day-unknown"
        ),
        pytest.param(
            full(steroid=[steroid(30, per_day=2)]), "pass", id="prednisone-30-mg-2x/day-pass"
        ),
        pytest.param(
            full(steroid=[steroid(48, code=METHYLPREDNISOLONE)]),
            "pass",
            id="methylprednisolone-48-mg-is-60-prednisone-pass",
        ),
        pytest.param(
            full(steroid=[steroid(47, code=METHYLPREDNISOLONE)]),
            "unknown",
            id="methylprednisolone-47-mg-is-58.75-prednisone-unknown",
        ),
        pytest.param(
            full(weight=[weight(132.27735731092653, "[lb_av]")]),
            "pass",
            id="weight-132.28-lb-is-60-kg-pass",
        ),
        pytest.param(full(weight=[weight(61)]), "unknown", id="prednisone-60-mg-61-kg-unknown"),
        pytest.param(full(weight=[]), "unknown", id="no-weight-unknown"),
        pytest.param(full(steroid=[steroid(60, per_day=None)]), "unknown", id="no-timing-unknown"),
        pytest.param(full(steroid=[]), "unknown", id="no-glucocorticoid-unknown"),
        pytest.param(full(cyclophosphamide=[]), "unknown", id="no-cyclophosphamide-unknown"),
        pytest.param(full(immunosuppressant=[]), "unknown", id="no-immunosuppressant-unknown"),
        pytest.param(
            full(immunosuppressant=[immunosuppressant(EXACTLY_6_MONTHS)]),
            "unknown",
            id="immunosuppressant-exactly-6-months-unknown",
        ),
        pytest.param(
            full(
                immunosuppressant=[
                    immunosuppressant(date(2026, 4, 30)),
                    immunosuppressant(MORE_THAN_6_MONTHS, date(2026, 5, 1), AZATHIOPRINE),
                ]
            ),
            "pass",
            id="consecutive-mmf-then-azathioprine-over-6-months-pass",
        ),
        pytest.param(
            full(
                immunosuppressant=[
                    immunosuppressant(date(2026, 4, 1)),
                    immunosuppressant(MORE_THAN_6_MONTHS, date(2026, 5, 1), AZATHIOPRINE),
                ]
            ),
            "unknown",
            id="courses-with-a-gap-do-not-add-up-unknown",
        ),
        pytest.param([], "unknown", id="no-medication-record-unknown-never-fail"),
    ],
)
def test_i4_therapy_history(resources: list[dict[str, Any]], expected: str) -> None:
    result = run(resources, "I4")
    assert result.verdict == expected, result.reason


def test_i4_never_fails_on_missing_components() -> None:
    result = run([], "I4")
    assert result.verdict == "unknown"
    assert "no record of cyclophosphamide" in result.reason


def test_i4_open_ended_active_immunosuppressant_runs_to_as_of() -> None:
    active = medication(MYCOPHENOLATE, start=date(2026, 5, 26), status="active", dose_mg=500)
    result = run(full(immunosuppressant=[active]), "I4")
    assert result.verdict == "pass"  # 26 May to 27 Nov 2026: 6 months and 1 day


def test_i4_open_ended_active_immunosuppressant_of_exactly_6_months() -> None:
    active = medication(MYCOPHENOLATE, start=date(2026, 5, 27), status="active", dose_mg=500)
    assert run(full(immunosuppressant=[active]), "I4").verdict == "unknown"


def test_i4_dose_shows_the_arithmetic() -> None:
    result = run(full(), "I4")
    rules = [e.rule for e in result.evidence if e.rule]
    assert any("60 mg/day x 1 (prednisone equivalent) / 60 kg = 1 mg/kg/day" in r for r in rules)


def test_i4_dose_in_tablets_with_strength() -> None:
    tablets = steroid(6, per_day=2, code=PREDNISONE_5MG_TAB, dose_unit="{tablet}")
    assert run(full(steroid=[tablets]), "I4").verdict == "pass"  # 6 x 5 mg x 2 = 60 mg


def test_i4_dose_in_tablets_below_threshold() -> None:
    tablets = steroid(5, per_day=2, code=PREDNISONE_5MG_TAB, dose_unit="{tablet}")
    assert run(full(steroid=[tablets]), "I4").verdict == "unknown"  # 50 mg


def test_i4_glucocorticoid_order_with_contained_medication() -> None:
    order = contained_request(
        (RXNORM, PREDNISONE),
        dose={"value": 30, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
        frequency=2,
        start=START,
        end=date(2026, 3, 10),
    )
    assert run(full(steroid=[order]), "I4").verdict == "pass"


def test_i4_treatment_after_as_of_is_not_counted() -> None:
    later = medication(CYCLOPHOSPHAMIDE, start=date(2026, 12, 1), end=date(2026, 12, 1))
    assert run(full(cyclophosphamide=[later]), "I4").verdict == "unknown"
