"""One CSV row per patient result: the columns every CSV writer shares.

`cohort-match screen --format csv`, a sweep's export and the cohort page's download write
the same columns from the same function: `CSV_HEAD`, then one verdict column per criterion
in protocol order. Pure; reads the result as its JSON contract (a dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.ranking import stored_next_step

__all__ = ["CSV_HEAD", "csv_row", "identifiers_text"]

# `mrn` and `identifiers` so a coordinator finds the chart; `status_reason` says why a
# patient is ineligible apart from the criteria (deceased); `next_step` is ranking.next_step.
CSV_HEAD = [
    "rank",
    "patient",
    "mrn",
    "identifiers",
    "status",
    "status_reason",
    "score",
    "age",
    "sex",
    "next_step",
]


def csv_row(result: dict[str, Any], ids: list[str]) -> list[Any]:
    """One result (the JSON contract, with its rank) as a CSV row under CSV_HEAD + ids.

    Results stored before identifiers were recorded have none: the cells stay empty."""
    verdicts = {c["id"]: c["verdict"] for c in result["criteria"]}
    patient = result["patient"]
    return [
        result["rank"],
        patient["reference"],
        patient.get("mrn") or "",
        identifiers_text(patient.get("identifiers") or ()),
        result["status"],
        result.get("status_reason") or "",
        result["score"],
        patient["age"] if patient["age"] is not None else "",
        patient["sex"] or "",
        stored_next_step(result) or "",
        *(verdicts[i] for i in ids),
    ]


def identifiers_text(identifiers: Iterable[dict[str, Any]]) -> str:
    """Identifiers in one cell: "MR 0012345; PI 88-2" (type code, else label, then value)."""
    return "; ".join(
        " ".join(part for part in (i.get("type") or i.get("label"), i["value"]) if part)
        for i in identifiers
    )
