"""The patient page's table per computed score, rendered without a browser: under its
criterion, a caption with the total against the threshold, column and row headers, each item's
points, status and records linked to the EHR (demo patients p67 and p70)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from service.web import render
from service.web.patient import patient_context
from tests.conftest import load_nct
from tests.demo import DEMO_AS_OF, demo_result

ISS = "https://ehr.hospital.test/fhir"


def page(patient: str) -> str:
    """patient.html for one demo patient, as the SMART page renders it."""
    context = patient_context(
        load_nct(),
        DEMO_AS_OF,
        demo_result(patient),
        None,
        user="Practitioner/dr-lee",
        iss=ISS,
        show_banner=False,
    )
    # No other trial served: the page's "other trials" partial (web/other_trials.py) is empty.
    other = {"other_trials": [], "other_ruled_out": 0, "other_served": 0}
    return render("patient.html", **context, **other)


class Tables(HTMLParser):
    """Each score table of a page: the criterion it sits under, its caption, its column
    headers (with scope), and its rows as lists of (tag, attributes, text) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self.criterion: str | None = None
        self.table: dict[str, Any] | None = None
        self.cell: list[Any] | None = None
        self.in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "article":
            self.criterion = a.get("data-criterion")
        elif tag == "table" and "score" in (a.get("class") or "").split():
            self.table = {"criterion": self.criterion, "attrs": a, "caption": "", "head": []}
            self.table["rows"] = []
            self.tables.append(self.table)
        elif self.table is None:
            return
        elif tag == "caption":
            self.in_caption = True
        elif tag == "tr":
            self.table["rows"].append({"attrs": a, "cells": []})
        elif tag in ("th", "td"):
            self.cell = [tag, a, ""]
            if a.get("scope") == "col":
                self.table["head"].append(self.cell)
            else:
                self.table["rows"][-1]["cells"].append(self.cell)
        elif tag == "a" and self.cell is not None:
            self.cell[2] += f"<{a.get('href')}>"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None
        elif tag == "caption":
            self.in_caption = False
        elif tag in ("th", "td"):
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.table is not None and self.in_caption:
            self.table["caption"] += data
        elif self.cell is not None:
            self.cell[2] += data


def score_tables(patient: str) -> list[dict[str, Any]]:
    parser = Tables()
    parser.feed(page(patient))
    return parser.tables


def item_row(table: dict[str, Any], item: str) -> list[Any]:
    rows = [r for r in table["rows"] if r["attrs"].get("data-item") == item]
    assert len(rows) == 1, f"{item}: {len(rows)} rows"
    cells: list[Any] = rows[0]["cells"]
    return cells


def test_a_table_per_instrument_under_its_criterion_with_caption_and_headers() -> None:
    tables = score_tables("p70")
    assert [(t["criterion"], t["attrs"]["data-instrument"]) for t in tables] == [
        ("I1", "eular_acr_2019"),
        ("I2", "sledai_2k"),
    ]
    sledai = tables[1]
    assert " ".join(sledai["caption"].split()) == (
        "SLEDAI-2K computed from the record (the 30 days before the screening date): 4 "
        "(> 6 needed), not met; a lower bound: items a visit would score are missing"
    )
    assert [(c[0], c[1]["scope"], c[2]) for c in sledai["head"]] == [
        ("th", "col", "Item"),
        ("th", "col", "Points"),
        ("th", "col", "Status"),
        ("th", "col", "Record"),
        ("th", "col", "Why"),
    ]
    # Every body row is headed by its item (th scope=row), then four data cells.
    body = sledai["rows"][1:]  # after the header row
    assert [r["attrs"]["data-item"] for r in body] == [
        "hematuria",
        "pyuria",
        "low_complement",
        "dna_binding",
        "leukopenia",
    ]
    for row in body:
        tags = [(c[0], c[1].get("scope")) for c in row["cells"]]
        assert tags == [("th", "row")] + [("td", None)] * 4


def test_a_withheld_item_shows_its_points_status_record_and_cause() -> None:
    sledai = score_tables("p70")[1]
    label, points, status, record, why = (c[2].strip() for c in item_row(sledai, "hematuria"))
    assert (label, points, status) == ("Hematuria", "4", "Withheld: another cause")
    # The record links to the EHR, with its date and value as recorded.
    assert record.startswith(f"<{ISS}/Observation/p70-o35>Observation/p70-o35 · 2026-11-14 · 15")
    assert "withheld: infection" in why
    assert item_row(sledai, "low_complement")[2][2] == "Counted"
    # Items with no record are named once below the table, not given rows.
    assert not any(r["attrs"].get("data-item") == "seizure" for r in sledai["rows"])
    assert "Not in the record: Seizure, Psychosis" in page("p70")


def test_the_classification_table_shows_the_domain_rule_and_the_total_met() -> None:
    eular = score_tables("p67")[0]
    assert eular["criterion"] == "I1"
    assert eular["attrs"]["data-met"] == "true"
    assert "18 (>= 10 needed), met" in " ".join(eular["caption"].split())
    lower = item_row(eular, "low_c3_or_c4")
    assert (lower[1][2], lower[2][2]) == ("3", "Met; a higher item of its domain counts")
    assert item_row(eular, "low_c3_and_c4")[2][2] == "Counted"
