"""The recruitment report on the cohort page: a table and a server-rendered SVG funnel (the
table is the chart's text alternative). Pure: the report comes made
(service/worklist/report.py); this only lays it out."""

from __future__ import annotations

from typing import Any

from service.web.worklist import DECISION_LABEL
from service.worklist.report import RecruitmentReport, funnel

__all__ = ["report_view"]

WIDTH, BAR, GAP, LABEL = 480, 22, 6, 170  # the SVG's geometry, in user units


def report_view(report: RecruitmentReport) -> dict[str, Any]:
    """The context of _report.html: the period, the table's rows, and one bar per funnel
    step, each as wide as its count relative to the engine's (the widest step)."""
    steps = funnel(report)
    widest = max((count for _, count in steps), default=0) or 1
    span = WIDTH - LABEL - 50  # room for the count after the bar
    bars = [
        {
            "label": label,
            "count": count,
            "y": i * (BAR + GAP),
            "width": round(span * count / widest, 1),
        }
        for i, (label, count) in enumerate(steps)
    ]
    rows = [(label, count, "") for label, count in steps[:3]]
    rows += [(DECISION_LABEL[state], count, "") for state, count in report.states.items()]
    rows += [
        ("Screen-failed on", count, criterion)
        for criterion, count in report.screen_failed_by_reason.items()
    ]
    return {
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "sweep": report.sweep,
        "rows": rows,
        "bars": bars,
        "width": WIDTH,
        "height": len(bars) * (BAR + GAP) - GAP,
        "bar": BAR,
        "label_width": LABEL,
        "summary": ", ".join(f"{label} {count}" for label, count in steps),
    }
