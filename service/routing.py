"""Stage 1 of a population screen: which patient a line belongs to, and whether to keep it.

    router = Router(terms)
    route = router(line)          # an NDJSON line's bytes
    route = router.resource(res)  # a resource already parsed

gives `Route(patient, relevant, problem)`: the `Patient/<id>` the resource belongs to, whether
any criterion can read it (a Patient, a type some mapper reads, an Observation with a code in
some value set), and, for a line that cannot be routed, why (not JSON, no resource, names no
patient). A Medication names no patient but is read: its route is `shared` (its
`Medication/<id>`), and an engine keeps it in a side table that every patient's screen is
given (`MedicationTable`): medication records name it by reference. The single-machine
screen (service/screening.py) and the Spark job route with it, so both keep and report the
same lines; an engine that can filter before data reaches Python
(a Spark or DuckDB predicate on the code column) filters on `relevant_codes(terms)` and
`RELEVANT_TYPES`, and routes what is left here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from service.mappers import (
    MAPPERS,
    SHARED_TYPES,
    MappingError,
    map_resource,
    relevant,
    subject_of,
)
from service.sources import observation_prefilter
from service.terminology import Terminology

__all__ = ["RELEVANT_TYPES", "Route", "Router", "relevant_codes"]

# Resource types a screen reads; an Observation only when `relevant_codes` holds its code.
RELEVANT_TYPES = frozenset({"Patient", *MAPPERS, *SHARED_TYPES})


def relevant_codes(terms: Terminology) -> frozenset[tuple[str, str]]:
    """(system, code) of every value-set row and of every local code the site's code map
    sends to one: an Observation with none of these codings is read by no criterion.

    Codes are as the tables hold them; `Terminology.may_match` (what `Router` applies) also
    keeps an Observation whose code it cannot read, so an engine filtering on this set must
    keep lines whose codings are missing or malformed, and let the router decide those."""
    return frozenset(terms.codes_in(frozenset(terms.valuesets)))


@dataclass(slots=True)
class Route:
    """Where a line goes: its patient, whether a screen reads it, or why it cannot go.
    Treated as immutable, not declared `frozen=True`: one is built per line of a population,
    and a frozen `__init__` sets each field through `object.__setattr__`."""

    patient: str | None
    relevant: bool
    problem: str | None = None  # set when the line is unreadable or names no patient
    resource: dict[str, Any] | None = None  # as parsed, when it was
    # `Medication/<id>` of a resource of no patient that every patient's records may name:
    # kept in the run's side table, not with a patient
    shared: str | None = None

    @property
    def kept(self) -> bool:
        return self.relevant and self.patient is not None


class Router:
    """Routes lines and resources with the code tables `terms` (see the module docstring).

    Most irrelevant Observations are recognised from a line's bytes, without parsing
    (`observation_prefilter`); those route as `Route(None, False)`."""

    def __init__(self, terms: Terminology) -> None:
        self.terms = terms
        self.skip: Callable[[bytes], bool] = observation_prefilter(terms.may_match)

    def __call__(self, line: bytes) -> Route:
        if self.skip(line):
            return Route(None, False)
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return Route(None, False, f"not valid JSON ({str(exc).splitlines()[0][:120]})")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return Route(None, False, "not a FHIR resource (no resourceType)")
        return self.resource(resource)

    def resource(self, resource: dict[str, Any]) -> Route:
        """The route of a parsed resource (with its `resourceType`)."""
        if not relevant(resource, self.terms):
            return Route(None, False, resource=resource)
        kind, ident = resource.get("resourceType"), resource.get("id")
        if kind in SHARED_TYPES:
            # one without an id cannot be named by reference: read by no record
            key = f"{kind}/{ident}" if isinstance(ident, str) and ident else None
            return Route(None, key is not None, resource=resource, shared=key)
        try:
            patient = subject_of(resource)
        except (TypeError, AttributeError):
            patient = None
        if patient is not None:
            return Route(patient, True, resource=resource)
        try:  # mapped here only to report the resource as the mapper names it
            map_resource(resource, self.terms)
        except MappingError as exc:
            return Route(None, True, str(exc), resource)
        # a resource the mapper reads to nothing (a ResearchSubject of no interest) is
        # dropped, as it would be once mapped
        return Route(None, False, resource=resource)
