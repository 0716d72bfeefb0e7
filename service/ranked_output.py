"""The ranked list, written once: `rank`, JSON (streamed), CSV, status counts and the funnel.

Every channel that writes a ranked list uses these functions: `cohort-match screen --format
json|csv`, a sweep's stored results and its exports (service/sweeps/report.py), POST
/trials/{id}/candidates, GET /sweeps/{id}/candidates, and the coordinator page's table, CSV
and funnel. Pure: nothing here reads a file, a database or the network; the writers yield
chunks for the caller to send.

- `rank_body` / `ranked_bodies`: one result's JSON (the `PatientResultPublic` contract) with
  its `rank` set, exactly once. The engine serialises `PatientResult` with `"rank":null` as
  its last key; results stored by sweeps before this module carried a second `"rank"` after
  it, and reading them back drops the first.
- `json_chunks`: the ranked-list document (`RankedListPublic`): the head, the candidates one
  per line, then `counts` and any further keys (the API's `unscreened`).
- `CSV_HEAD`, `csv_row`, `csv_lines`: one row per patient: `CSV_HEAD`, then one verdict
  column per criterion in protocol order; QUOTE_MINIMAL, `\\n` line ends.
- `status_counts`: patients, and how many of each status.
- `Funnel`: per criterion, in protocol order, the counts of each verdict over every patient
  and the sequential drop: patients remaining before the criterion (no `fail` so far), how
  many of them fail it and how many it leaves `unknown`. Only `fail` drops a patient. A
  patient who is no candidate whatever the criteria say (ineligible without any `fail`:
  deceased) is `excluded` before the first step; their verdicts still count.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.ranking import excluded_before_criteria, stored_next_step

__all__ = [
    "CSV_HEAD",
    "STATUSES",
    "VERDICTS",
    "Funnel",
    "FunnelStep",
    "csv_lines",
    "csv_row",
    "identifiers_text",
    "json_chunks",
    "rank_body",
    "ranked_bodies",
    "status_counts",
]

STATUSES = ("likely_eligible", "possibly_eligible", "ineligible")
VERDICTS = ("pass", "fail", "unknown", "not_applicable")
# `name`, `mrn` and `identifiers` so a coordinator finds the chart; `status_reason` says why a
# patient is ineligible apart from the criteria (deceased); `next_step` is ranking.next_step.
CSV_HEAD = [
    "rank",
    "patient",
    "name",
    "mrn",
    "identifiers",
    "status",
    "status_reason",
    "score",
    "age",
    "sex",
    "next_step",
]

_RANK_KEY = b',"rank":'
_STALE_RANK = b',"rank":null'  # before a second "rank", in results stored before the fix
_RANK_VALUE = re.compile(rb"null|\d+")


# ---------------------------------------------------------------- rank
def rank_body(body: bytes, rank: int | None = None) -> bytes:
    """One result's JSON with one `"rank"` key: `rank`, or (None) the last one it carries.

    The fast path rewrites the last key in place (a result is ~20 KB: no parse); a body
    whose last key is not `rank` is parsed and written again, keys in their order.
    """
    cut = body.rfind(_RANK_KEY)
    value = body[cut + len(_RANK_KEY) :].rstrip()
    if cut >= 0 and value.endswith(b"}") and _RANK_VALUE.fullmatch(value[:-1]):
        head = body[:cut]
        if head.endswith(_STALE_RANK):
            head = head[: -len(_STALE_RANK)]
        number = value[:-1] if rank is None else str(rank).encode()
        return head + _RANK_KEY + number + b"}"
    result = orjson.loads(body)  # a duplicate key keeps its first place and last value
    if rank is not None:
        result["rank"] = rank
    return orjson.dumps(result)


def ranked_bodies(bodies: Iterable[bytes], start: int = 1) -> Iterator[bytes]:
    """Results in rank order, numbered from `start`."""
    for rank, body in enumerate(bodies, start=start):
        yield rank_body(body, rank)


# ---------------------------------------------------------------- JSON
def json_chunks(
    head: Mapping[str, Any],
    candidates: Iterable[bytes],
    counts: Mapping[str, int],
    tail: Mapping[str, Any] | None = None,
) -> Iterator[bytes]:
    """The ranked-list document, streamed: `head` (trial, as_of), `candidates` (each one
    result's JSON with its rank, see `rank_body`), `counts`, then the keys of `tail`."""
    yield orjson.dumps(dict(head))[:-1] + b', "candidates": ['
    for index, body in enumerate(candidates):
        yield (b"\n" if index == 0 else b",\n") + body
    end = b'\n], "counts": ' + orjson.dumps(dict(counts))
    for key, value in (tail or {}).items():
        end += b", " + orjson.dumps(key) + b": " + orjson.dumps(value)
    yield end + b"}\n"


# ---------------------------------------------------------------- CSV
def csv_row(result: Mapping[str, Any], ids: Sequence[str]) -> list[Any]:
    """One result (the JSON contract, with its rank) as a CSV row under CSV_HEAD + ids.

    Results stored before identifiers were recorded have none: the cells stay empty."""
    verdicts = {c["id"]: c["verdict"] for c in result["criteria"]}
    patient = result["patient"]
    return [
        result["rank"],
        patient["reference"],
        patient.get("name") or "",
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


def identifiers_text(identifiers: Iterable[Mapping[str, Any]]) -> str:
    """Identifiers in one cell: "MR 0012345; PI 88-2" (type code, else label, then value)."""
    return "; ".join(
        " ".join(part for part in (i.get("type") or i.get("label"), i["value"]) if part)
        for i in identifiers
    )


def csv_lines(ids: Sequence[str], results: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The header, then one line per result (the JSON contract, with its rank)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(row: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue()

    yield line([*CSV_HEAD, *ids])
    for result in results:
        yield line(csv_row(result, ids))


# ---------------------------------------------------------------- counts
def status_counts(statuses: Iterable[str]) -> dict[str, int]:
    """`patients`, then how many of each status (every status named, zero or not)."""
    counts = dict.fromkeys(STATUSES, 0)
    patients = 0
    for status in statuses:
        counts[status] += 1
        patients += 1
    return {"patients": patients, **counts}


@dataclass(frozen=True)
class FunnelStep:
    id: str
    verdicts: dict[str, int]  # over every patient, excluded ones included
    remaining_before: int  # patients with no `fail` before this criterion
    dropped: int  # of those, how many fail it
    remaining_after: int
    unknown: int  # of those remaining before, how many it leaves `unknown`


class Funnel:
    """The funnel, fed one patient at a time (see the module docstring)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        self.verdicts = [dict.fromkeys(VERDICTS, 0) for _ in self.ids]
        self.dropped = [0] * len(self.ids)
        self.unknown = [0] * len(self.ids)
        self.patients = 0
        self.excluded = 0
        self.statuses = dict.fromkeys(STATUSES, 0)

    def add(self, verdicts: Mapping[str, str], status: str) -> None:
        self.patients += 1
        self.statuses[status] += 1
        remaining = not excluded_before_criteria(verdicts, status)
        if not remaining:
            self.excluded += 1
        for index, criterion in enumerate(self.ids):
            verdict = verdicts[criterion]
            self.verdicts[index][verdict] += 1
            if not remaining:
                continue
            if verdict == "fail":
                self.dropped[index] += 1
                remaining = False
            elif verdict == "unknown":
                self.unknown[index] += 1

    def steps(self) -> list[FunnelStep]:
        steps = []
        remaining = self.patients - self.excluded
        for index, criterion in enumerate(self.ids):
            before = remaining
            remaining -= self.dropped[index]
            steps.append(
                FunnelStep(
                    id=criterion,
                    verdicts=dict(self.verdicts[index]),
                    remaining_before=before,
                    dropped=self.dropped[index],
                    remaining_after=remaining,
                    unknown=self.unknown[index],
                )
            )
        return steps

    @property
    def remaining(self) -> int:
        """Patients with no `fail` in any criterion: the likely + possibly eligible."""
        return self.patients - self.excluded - sum(self.dropped)
