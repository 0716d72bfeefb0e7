"""Glucocorticoid drugs missing from glucocorticoid_equivalents.csv roll up to their
ingredient by their RxNorm name (terminology._rolled_up_potency)."""

from __future__ import annotations

import pytest

from service.facts import Code
from service.terminology import RXNORM, GlucocorticoidPotency, Terminology, _rolled_up_potency


def ingredient(code: str, name: str, factor: str) -> dict[str, str]:
    """A row of glucocorticoid_equivalents.csv for an ingredient (no strength)."""
    return {
        "system": RXNORM,
        "code": code,
        "display": name,
        "prednisone_mg_per_mg": factor,
        "strength_mg": "",
    }


INGREDIENTS = [
    ingredient("6902", "methylprednisolone", "1.25"),
    ingredient("8638", "prednisolone", "1"),
    ingredient("5492", "hydrocortisone", "0.25"),
]


def rolled(display: str) -> GlucocorticoidPotency | None:
    drugs = [{"system": RXNORM, "code": "1", "display": display}]
    return _rolled_up_potency(INGREDIENTS, drugs).get((RXNORM, "1"))


@pytest.mark.parametrize(
    ("display", "factor", "strength"),
    [
        ("methylprednisolone sodium succinate 125 MG Injection", 1.25, None),
        ("prednisolone 5 MG Oral Tablet", 1.0, 5.0),  # not methylprednisolone's factor
        ("{21 (methylprednisolone 4 MG Oral Tablet) } Pack [Medrol]", 1.25, 4.0),
        ("prednisolone 15 MG Disintegrating Oral Tablet", 1.0, 15.0),
        ("prednisolone 3 MG/ML Oral Solution", 1.0, None),
        ("hydrocortisone 20 MG Oral Tablet [Cortef]", 0.25, 20.0),
    ],
)
def test_rolls_up_to_the_one_ingredient(
    display: str, factor: float, strength: float | None
) -> None:
    assert rolled(display) == GlucocorticoidPotency(factor, strength)


@pytest.mark.parametrize(
    "display",
    [
        "hydrocortisone 10 MG / prednisolone 5 MG Oral Tablet",  # two ingredients
        "fludrocortisone acetate 0.1 MG Oral Tablet",  # no listed ingredient
    ],
)
def test_left_out_when_not_exactly_one_ingredient(display: str) -> None:
    assert rolled(display) is None


def test_the_table_row_wins_over_the_roll_up(terms: Terminology) -> None:
    # prednisone 5 MG Oral Tablet is a row of the equivalents table: strength 5 from there
    potency = terms.glucocorticoid_potency([Code(RXNORM, "312617")])
    assert potency == GlucocorticoidPotency(1.0, 5.0)
