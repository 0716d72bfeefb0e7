"""The ranked-list writer (service/ranked_output.py): rank once, JSON streamed, CSV, counts."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

import orjson
import pytest

from service.criteria.verdict import CriterionResult, PatientResult, PatientSummary, TrialRef
from service.facts import Identifier
from service.ranked_output import (
    CSV_HEAD,
    Funnel,
    csv_lines,
    json_chunks,
    rank_body,
    ranked_bodies,
    status_counts,
)
from service.ranking import result_next_step
from service.schemas import RankedListPublic
from tests.strict_json import DuplicateKey, strict_loads

HEAD = {"trial": {"id": "T-1", "version": "1", "terminology": "t"}, "as_of": date(2026, 11, 20)}


def _result(reference: str, status: str = "likely_eligible", **patient: Any) -> PatientResult:
    """A result as the engine makes it: `rank` None, the last field."""
    criteria = [
        CriterionResult("A", "inclusion", "automatic", "Age >= 18", "pass", "why", ()),
        CriterionResult("B", "exclusion", "manual", "Pregnant", "unknown", "why", (), "ask"),
    ]
    result = PatientResult(
        TrialRef("T-1", "1", "t"),
        PatientSummary(
            reference,
            patient.get("age", 40),
            patient.get("sex", "female"),
            patient.get("identifiers", ()),
            patient.get("mrn"),
            name=patient.get("name"),
        ),
        date(2026, 11, 20),
        status,  # type: ignore[arg-type]
        1.0 if status == "likely_eligible" else 0.0,
        criteria,
        [],
        status_reason=patient.get("status_reason"),
    )
    result.next_step = result_next_step(result)
    return result


def test_strict_loads_rejects_a_duplicate_key() -> None:
    with pytest.raises(DuplicateKey, match="rank"):
        strict_loads(b'{"a": {"rank": null, "x": 1, "rank": 1}}')


def test_rank_body_sets_rank_once_in_the_engines_place() -> None:
    body = orjson.dumps(_result("Patient/a"))
    assert body.endswith(b',"rank":null}')
    ranked = rank_body(body, 7)
    parsed = strict_loads(ranked)
    assert parsed["rank"] == 7
    assert list(parsed)[-1] == "rank"  # where the engine puts it
    assert {**orjson.loads(body), "rank": 7} == parsed
    assert rank_body(ranked, 8).endswith(b',"rank":8}')  # set again: replaced, not added


def test_rank_body_repairs_a_result_stored_with_two_ranks() -> None:
    body = orjson.dumps(_result("Patient/a"))
    stored = body[:-1] + b',"rank":3}'  # what sweeps stored before the fix
    with pytest.raises(DuplicateKey):
        strict_loads(stored)
    assert strict_loads(rank_body(stored))["rank"] == 3
    assert rank_body(stored) == rank_body(body, 3)
    assert rank_body(rank_body(body, 3)) == rank_body(body, 3)  # kept as it is


def test_rank_body_parses_a_body_whose_last_key_is_not_rank() -> None:
    body = b'{"rank":null,"patient":{"reference":"Patient/a","rank":2}}'
    assert strict_loads(rank_body(body, 5)) == {
        "rank": 5,
        "patient": {"reference": "Patient/a", "rank": 2},
    }


def test_ranked_bodies_number_from_one_in_order() -> None:
    bodies = [orjson.dumps(_result(f"Patient/{n}")) for n in "abc"]
    assert [strict_loads(b)["rank"] for b in ranked_bodies(bodies)] == [1, 2, 3]
    assert [strict_loads(b)["rank"] for b in ranked_bodies(bodies, start=4)] == [4, 5, 6]


def test_json_chunks_stream_the_ranked_list_contract() -> None:
    results = [_result("Patient/a"), _result("Patient/b", "ineligible")]
    counts = {**status_counts(r.status for r in results), "resources": 9, "errors": 0}
    unscreened = [{"patient": "Patient/c", "reason": "timed out"}]
    chunks = list(
        json_chunks(
            HEAD,
            ranked_bodies(orjson.dumps(r) for r in results),
            counts,
            {"unscreened": unscreened},
        )
    )
    assert len(chunks) == 4  # head, one per candidate, the end: nothing held back
    document = strict_loads(b"".join(chunks))
    RankedListPublic.model_validate(document)
    # streaming writes the same document as dumping it whole
    whole = {
        **HEAD,
        "candidates": [
            {**orjson.loads(orjson.dumps(r)), "rank": n} for n, r in enumerate(results, 1)
        ],
        "counts": counts,
        "unscreened": unscreened,
    }
    assert document == orjson.loads(orjson.dumps(whole))
    assert list(document) == ["trial", "as_of", "candidates", "counts", "unscreened"]


def test_json_chunks_of_an_empty_list() -> None:
    document = strict_loads(b"".join(json_chunks(HEAD, [], status_counts([]))))
    assert document["candidates"] == []
    assert document["counts"] == {
        "patients": 0,
        "likely_eligible": 0,
        "possibly_eligible": 0,
        "ineligible": 0,
    }


def test_status_counts_names_every_status() -> None:
    assert status_counts(["ineligible", "likely_eligible", "ineligible"]) == {
        "patients": 3,
        "likely_eligible": 1,
        "possibly_eligible": 0,
        "ineligible": 2,
    }


def test_csv_header_rows_and_quoting() -> None:
    tricky = _result(
        "Patient/a",
        "ineligible",
        identifiers=(Identifier("0012,345", type="MR"), Identifier('88 "2"', label="Passport")),
        mrn="0012,345",
        name="Doe, Jane",
        sex=None,
        age=None,
        status_reason="deceased on 2026-01-02",
    )
    results = [
        strict_loads(b)
        for b in ranked_bodies([orjson.dumps(_result("Patient/b")), orjson.dumps(tricky)])
    ]
    text = "".join(csv_lines(["A", "B"], results))
    lines = text.split("\n")
    assert lines[0] == (
        "rank,patient,name,mrn,identifiers,status,status_reason,score,age,sex,next_step,A,B"
    )
    assert lines[1] == "1,Patient/b,,,,likely_eligible,,1.0,40,female,,pass,unknown"
    # QUOTE_MINIMAL: a comma or a quote in a cell quotes it, quotes doubled; "\n" line ends
    assert lines[2] == (
        '2,Patient/a,"Doe, Jane","0012,345","MR 0012,345; Passport 88 ""2""",ineligible,'
        "deceased on 2026-01-02,0.0,,,deceased on 2026-01-02,pass,unknown"
    )
    assert text.endswith("\n")
    assert "\r" not in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [*CSV_HEAD, "A", "B"]
    assert rows[2][2] == "Doe, Jane"
    assert rows[2][4] == 'MR 0012,345; Passport 88 "2"'


def test_funnel_drops_on_fail_only_and_sets_the_deceased_apart() -> None:
    funnel = Funnel(["A", "B"])
    funnel.add({"A": "fail", "B": "unknown"}, "ineligible")
    funnel.add({"A": "unknown", "B": "fail"}, "ineligible")
    funnel.add({"A": "unknown", "B": "pass"}, "possibly_eligible")
    funnel.add({"A": "pass", "B": "not_applicable"}, "likely_eligible")
    funnel.add({"A": "pass", "B": "pass"}, "ineligible")  # deceased: no fail, still ineligible
    first, second = funnel.steps()
    assert (first.remaining_before, first.dropped, first.remaining_after, first.unknown) == (
        4,
        1,
        3,
        2,
    )
    assert first.verdicts == {"pass": 2, "fail": 1, "unknown": 2, "not_applicable": 0}
    # B's unknown is a patient A already dropped: not among the remaining
    assert (second.remaining_before, second.dropped, second.remaining_after, second.unknown) == (
        3,
        1,
        2,
        0,
    )
    assert (funnel.patients, funnel.excluded, funnel.remaining) == (5, 1, 2)
    assert funnel.statuses == {"likely_eligible": 1, "possibly_eligible": 1, "ineligible": 3}
