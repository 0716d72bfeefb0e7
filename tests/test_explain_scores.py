"""`explain` shows a computed score under its criterion: total against the threshold, and a
table of the items the record holds (points, status, evidence) on the demo's scored patients."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings

runner = CliRunner(env={"COLUMNS": "220"})


@pytest.fixture(autouse=True)
def _fresh_settings() -> None:
    get_settings.cache_clear()


def explain(patient: str) -> list[str]:
    result = runner.invoke(app, ["explain", "--patient", patient, "--as-of", "2026-11-20"])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def row(lines: list[str], label: str) -> list[str]:
    """The words of the score table's row for one item."""
    found = [line.split() for line in lines if line.strip().startswith(label + "  ")]
    assert found, f"no row for {label!r}"
    return found[0]


def test_a_withheld_item_is_listed_with_its_points_status_and_record() -> None:
    lines = explain("p70")
    assert any(
        "SLEDAI-2K computed from the record (the 30 days before as of): 4 (> 6 needed): not met"
        in line
        for line in lines
    )
    hematuria = " ".join(row(lines, "Hematuria"))
    assert hematuria.startswith("Hematuria 4 withheld Observation/p70-o35 2026-11-14 15.0 /HPF")
    assert "withheld: infection" in hematuria
    assert " ".join(row(lines, "Low complement")).startswith(
        "Low complement 2 counted Observation/p70-o34 2026-11-14 0.52 g/L"
    )
    # Items with no record at all are named on one line, not given a row each.
    absent = next(line for line in lines if "not in the record:" in line and "Pleurisy" in line)
    assert "Urinary casts" in absent
    assert not any(line.strip().startswith("Seizure  ") for line in lines)


def test_a_classification_met_without_a_code_shows_the_total_and_the_domain_rule() -> None:
    lines = explain("p67")
    assert any(
        "EULAR/ACR 2019 computed from the record (any time before as of): 18 (>= 10 needed): met"
        in line
        for line in lines
    )
    assert row(lines, "Low C3 and low C4")[5:7] == ["4", "counted"]
    assert " ".join(row(lines, "Low C3 or low C4")).startswith(
        "Low C3 or low C4 3 met, lower in domain"
    )


def test_a_recorded_total_shows_no_computed_activity_score() -> None:
    lines = explain("p02")
    computed = [line for line in lines if "computed from the record" in line]
    assert len(computed) == 1
    assert "EULAR/ACR 2019" in computed[0]
