"""The recruitment report's layout on the cohort page: one bar per funnel step, scaled to
the widest, and the table that is the chart's text alternative."""

from __future__ import annotations

import datetime as dt

from service.web.report import report_view
from service.worklist.model import STATES
from service.worklist.report import RecruitmentReport


def report(screened: int, **states: int) -> RecruitmentReport:
    counts = dict.fromkeys(STATES, 0) | states
    return RecruitmentReport(
        trial_id="NCT06946485",
        start=dt.date(2026, 11, 1),
        end=dt.date(2026, 11, 30),
        sweep=3 if screened else None,
        screened=screened,
        candidates=10,
        reviewed=sum(counts.values()),
        states=counts,  # type: ignore[arg-type]
        screen_failed_by_reason={"I6.hgb": counts["screen_failed"]},
    )


def test_bars_are_scaled_to_the_engines_count() -> None:
    view = report_view(report(40, contacted=4, enrolled=2))
    widths = {b["label"]: b["width"] for b in view["bars"]}
    assert widths["Screened by the engine"] == 260
    assert widths["Candidates"] == 65
    assert widths["Enrolled"] == 13
    assert [b["label"] for b in view["bars"]] == [
        "Screened by the engine",
        "Candidates",
        "Reviewed",
        "Contacted",
        "Consented",
        "Enrolled",
    ]
    assert [b["y"] for b in view["bars"]] == [0, 28, 56, 84, 112, 140]
    assert view["height"] == 162


def test_without_a_sweep_the_widest_step_sets_the_scale() -> None:
    view = report_view(report(0, contacted=4))
    widths = {b["label"]: b["width"] for b in view["bars"]}
    assert widths["Candidates"] == 260
    assert widths["Screened by the engine"] == 0


def test_the_table_holds_every_count_and_the_reasons() -> None:
    view = report_view(report(40, screen_failed=3))
    assert view["rows"][:4] == [
        ("Screened by the engine", 40, ""),
        ("Candidates", 10, ""),
        ("Reviewed", 3, ""),
        ("To review", 0, ""),
    ]
    assert view["rows"][-1] == ("Screen-failed on", 3, "I6.hgb")
    assert view["summary"].startswith("Screened by the engine 40, Candidates 10, Reviewed 3")
