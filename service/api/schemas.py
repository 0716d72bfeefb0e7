"""Request bodies of the API (responses are in service/schemas.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.as_of import AsOf

__all__ = ["BundleInput", "CandidatesRequest", "MatchRequest"]


def reference_pattern(resource_type: str) -> str:
    """The FHIR id rule (service/fhir/ids.py) as the contract states it: `<id>` or
    `<type>/<id>`, the id `[A-Za-z0-9\\-.]{1,64}` and not `.` or `..`. The handlers enforce it
    (400 OperationOutcome), so it is stated here, not checked twice."""
    return rf"^({resource_type}/)?(?!\.\.?$)[A-Za-z0-9\-.]{{1,64}}$"


PatientRef = Annotated[
    str, Field(min_length=1, json_schema_extra={"pattern": reference_pattern("Patient")})
]


class MatchRequest(BaseModel):
    """Screen one patient fetched from the configured FHIR server."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"patient": "Patient/p01", "as_of": "2026-11-20"}]},
    )

    patient: str = Field(
        min_length=1,
        max_length=200,
        description='"123" or "Patient/123"',
        json_schema_extra={"pattern": reference_pattern("Patient")},
    )
    as_of: AsOf | None = Field(
        None, description="Evaluate as on this date (1900-01-01 to 2200-12-31); default today"
    )


class BundleInput(BaseModel):
    """A FHIR Bundle holding one patient's resources, screened as sent (nothing is fetched)."""

    model_config = ConfigDict(extra="allow")

    resourceType: Literal["Bundle"]  # the FHIR element name
    entry: list[dict[str, Any]] = Field(default_factory=list)


class CandidatesRequest(BaseModel):
    """Rank several patients: a list, a Group, or (with neither) every patient on the server."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"patients": ["p01", "Patient/p05"], "as_of": "2026-11-20", "limit": 10}]
        },
    )

    patients: list[PatientRef] | None = Field(None, min_length=1, max_length=10000)
    group: str | None = Field(
        None,
        min_length=1,
        description='"Group/x" or "x"',
        json_schema_extra={"pattern": reference_pattern("Group")},
    )
    as_of: AsOf | None = None
    limit: int | None = Field(None, ge=1, le=100000)
