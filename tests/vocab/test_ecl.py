"""The ECL subset the offline readers evaluate, and what it refuses."""

from __future__ import annotations

import pytest

from service.vocab.ecl import EclUnsupported, Focus, evaluate, parse, strip_terms


def test_strip_terms_removes_labels() -> None:
    assert strip_terms("<< 55464009 |Systemic lupus erythematosus|") == "<< 55464009"


def test_parse_operators_and_terms() -> None:
    parsed = parse("<< 55464009 |SLE| MINUS < 68815009 |SLE GN| OR 404684003")
    assert parsed == [
        ("OR", Focus("<<", "55464009")),
        ("MINUS", Focus("<", "68815009")),
        ("OR", Focus("self", "404684003")),
    ]


def test_too_short_an_id_is_not_a_concept() -> None:
    with pytest.raises(EclUnsupported):
        parse("<< 12345")


def test_evaluate_descendants_self_and_minus() -> None:
    tree = {"100000": {"200000", "300000"}, "200000": {"400000"}}

    def below(concept: str) -> set[str]:
        found: set[str] = set()
        for child in tree.get(concept, ()):
            found |= {child, *below(child)}
        return found

    assert evaluate("<< 100000", below) == {"100000", "200000", "300000", "400000"}
    assert evaluate("< 100000", below) == {"200000", "300000", "400000"}
    assert evaluate("100000", below) == {"100000"}
    assert evaluate("<< 100000 MINUS << 200000", below) == {"100000", "300000"}
    assert evaluate("300000 OR 400000", below) == {"300000", "400000"}


@pytest.mark.parametrize(
    "ecl",
    [
        ">> 55464009",
        "<! 55464009",
        "^ 700043003",
        "<< 404684003 : 363698007 = << 64033007",
        "<< 55464009 AND << 239887007",
        "(<< 55464009)",
        "*",
        "<< 55464009 MINUS",
        "<< << 55464009",
    ],
)
def test_refuses_what_it_does_not_support(ecl: str) -> None:
    with pytest.raises(EclUnsupported, match="ECL"):
        parse(ecl)
