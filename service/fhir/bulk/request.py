"""What a Bulk Data kick-off asks for (IG v2 query parameters or a Parameters resource), and
the small pure helpers around it. No I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from service.fhir.ids import is_fhir_id
from service.fhir.plan import FetchPlan

__all__ = [
    "NDJSON",
    "RESOURCE_TYPE",
    "ExportRequest",
    "Level",
    "fhir_instant",
    "observation_type_filters",
    "plan_types",
]

NDJSON = "application/fhir+ndjson"
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


def fhir_instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds and `Z` (sekmet compares `_since` as text)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("since must be timezone-aware (a naive time is ambiguous)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plan_types(plan: FetchPlan) -> list[str]:
    """The resource types a screen needs: Patient, Observation (if any codes), the rest, then
    the types those name by reference (Medication: no patient's, kept beside them)."""
    types = ["Patient"]
    if plan.observation_codes:
        types.append("Observation")
    types += [t for t in plan.other_types if t not in types]
    return [*types, *(t for t in plan.shared_types if t not in types)]


def observation_type_filters(plan: FetchPlan) -> list[str]:
    """`_typeFilter` values narrowing Observation to the plan's codes, in the IG's form: one
    query per code, which a server ORs. Not for sekmet-fhir 0.1.1 (see module notes)."""
    return [f"Observation?code={quote(code, safe=':/|')}" for code in plan.observation_codes]


@dataclass(frozen=True)
class Level:
    kind: Literal["system", "patient", "group"]
    group: str | None = None

    @classmethod
    def parse(cls, level: str) -> Level:
        if level == "system":
            return cls("system")
        if level == "patient":
            return cls("patient")
        group = level.removeprefix("Group/")
        if not is_fhir_id(group):
            raise ValueError(f"level must be 'system', 'patient' or a Group id, not {level!r}")
        return cls("group", group)

    def path(self) -> str:
        if self.kind == "group":
            return f"Group/{self.group}/$export"
        return "Patient/$export" if self.kind == "patient" else "$export"


@dataclass(frozen=True)
class ExportRequest:
    """What one export asks for: `types` at `level`, narrowed by `type_filters` (`_typeFilter`)
    and `since` (`_since`, timezone-aware: only resources changed since then), kicked off by
    `method` (GET with query parameters, or POST with a Parameters resource)."""

    level: Level
    types: tuple[str, ...]
    type_filters: tuple[str, ...]
    since: datetime | None
    method: Literal["GET", "POST"]

    @classmethod
    def of(
        cls,
        types: Sequence[str],
        *,
        level: str = "system",
        type_filters: Sequence[str] | None = None,
        since: datetime | None = None,
        method: Literal["GET", "POST"] = "GET",
    ) -> ExportRequest:
        """The request for `types` at `level` ("system", "patient", or a Group id); a
        ValueError for a name that is no resource type, a bad level or a naive `since`,
        before anything is sent."""
        bad = [t for t in types if not RESOURCE_TYPE.fullmatch(t)]
        if bad:
            raise ValueError(f"not resource types: {bad}")
        request = cls(Level.parse(level), tuple(types), tuple(type_filters or ()), since, method)
        if since is not None:
            fhir_instant(since)  # refuse a naive time before anything is sent
        return request

    def query(self) -> list[tuple[str, str]]:
        params = [("_outputFormat", NDJSON)]
        if self.types:
            params.append(("_type", ",".join(self.types)))
        if self.since is not None:
            params.append(("_since", fhir_instant(self.since)))
        # The IG lets a client repeat _typeFilter; repeating avoids commas inside one value.
        params.extend(("_typeFilter", f) for f in self.type_filters)
        return params

    def parameters(self) -> dict[str, Any]:
        values: list[dict[str, Any]] = []
        for name, value in self.query():
            kind = "valueInstant" if name == "_since" else "valueString"
            values.append({"name": name, kind: value})
        return {"resourceType": "Parameters", "parameter": values}
