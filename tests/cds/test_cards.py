"""The CDS card says when a verdict rests on a score computed from the record (demo patients:
p68 SLEDAI-2K 8 from labs, p69 4 from labs, p67 EULAR/ACR 2019 met without an SLE code, p01
with a recorded SLEDAI-2K total and an SLE code)."""

from __future__ import annotations

from service.cds.cards import card_for
from service.cds.models import CardPublic
from tests.conftest import load_nct
from tests.demo import demo_result


def card(patient: str) -> CardPublic:
    made = card_for(demo_result(patient), load_nct(), card_id="c1", launch_url=None)
    assert made is not None
    return made


def computed_lines(detail: str) -> list[str]:
    """The list under "Computed from the record", up to the next blank line."""
    if "**Computed from the record**" not in detail:
        return []
    section = detail.split("**Computed from the record**")[1].split("\n\n")[0]
    return [line for line in section.splitlines() if line.startswith("- ")]


def test_an_activity_score_computed_above_the_limit_is_named_in_summary_and_detail() -> None:
    made = card("p68")
    assert made.summary == (
        "Likely eligible for trial NCT06946485: 5 criteria still unknown; "
        "SLEDAI-2K \u2265 8 from the record"
    )
    assert computed_lines(made.detail) == [
        "- I2: SLEDAI-2K \u2265 8 from the record (computed, last 30 days; > 6 needed): met"
    ]


def test_an_activity_score_at_or_below_the_limit_is_in_the_detail_only() -> None:
    made = card("p69")
    assert "SLEDAI" not in made.summary
    assert computed_lines(made.detail) == [
        "- I2: SLEDAI-2K \u2265 4 from the record (computed, last 30 days; > 6 needed): "
        "the clinical items need an assessment"
    ]


def test_a_classification_met_without_a_code_says_review() -> None:
    made = card("p67")
    assert made.summary.endswith("; EULAR/ACR 2019 \u2265 18 from the record")
    assert computed_lines(made.detail)[0] == (
        "- I1: EULAR/ACR 2019 \u2265 18 from the record (computed, any time; \u2265 10 needed): "
        "met; no SLE diagnosis coded: review"
    )


def test_a_recorded_total_and_a_coded_diagnosis_rest_on_no_computed_score() -> None:
    made = card("p01")
    assert "from the record" not in made.summary
    assert computed_lines(made.detail) == []
    assert "Computed from the record" not in made.detail
