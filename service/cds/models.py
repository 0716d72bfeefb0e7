"""CDS Hooks 2.0 JSON shapes (https://cds-hooks.hl7.org/2.0/), as pydantic models.

Requests are read leniently where the specification leaves room (unknown fields, a hook
context with more than `patient-view` defines, extensions) and strictly where this service
relies on a value (`context.patientId` ends up in FHIR URLs). Responses omit optional fields
that have no value, as the specification requires ("null" and empty values are prohibited):
serialize them with `model_dump(exclude_none=True)`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from service.as_of import check_as_of
from service.fhir.ids import is_fhir_id

__all__ = [
    "AS_OF_EXTENSION",
    "AcceptedSuggestion",
    "CardPublic",
    "CdsFeedbackItem",
    "CdsFeedbackRequest",
    "CdsResponsePublic",
    "CdsServicePublic",
    "CdsServicesPublic",
    "CodingPublic",
    "FeedbackStoredPublic",
    "FhirAuthorization",
    "HookRequest",
    "LinkPublic",
    "OverrideReason",
    "PatientViewContext",
    "ReasonCoding",
    "SourcePublic",
]

# A request extension (CDS Hooks 2.0, Extensions: reverse-domain names) giving the date to
# screen as on, "YYYY-MM-DD"; without it, today.
AS_OF_EXTENSION = "org.cohort-match.as-of"
FHIR_ID = r"^[A-Za-z0-9\-\.]{1,64}$"  # FHIR R4 id datatype


class _In(BaseModel):
    """Request side: fields the specification (or a later version) adds are ignored."""

    model_config = ConfigDict(extra="allow")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- the hook call
class FhirAuthorization(_In):
    """An OAuth 2.0 access token for the CDS client's FHIR server, granted to this service."""

    access_token: str = Field(min_length=1)
    token_type: str = Field(description='Fixed value "Bearer"')
    expires_in: int
    scope: str
    subject: str = Field(description="This service's client id at the CDS client's server")

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError('token_type must be "Bearer"')
        return value


class PatientViewContext(_In):
    """`patient-view` context: the user and the patient whose chart was opened."""

    userId: str = Field(min_length=1, max_length=256, description='e.g. "Practitioner/123"')
    patientId: str = Field(pattern=FHIR_ID, description="FHIR id of the patient in context")
    encounterId: str | None = None

    @field_validator("patientId")
    @classmethod
    def _not_a_dot_segment(cls, value: str) -> str:
        if not is_fhir_id(value):  # "." and ".." match the pattern but name other URLs
            raise ValueError("patientId must be a FHIR id, not a dot-segment")
        return value


class HookRequest(_In):
    """POST /cds-services/{id}: one hook invocation."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "hook": "patient-view",
                    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                    "fhirServer": "https://ehr.hospital.example/fhir",
                    "context": {"userId": "Practitioner/example", "patientId": "p01"},
                    "prefetch": {"patient": {"resourceType": "Patient", "id": "p01"}},
                    "extension": {AS_OF_EXTENSION: "2026-11-20"},
                }
            ]
        },
    )

    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1, max_length=256)
    fhirServer: str | None = Field(None, description="Base URL of the CDS client's FHIR server")
    fhirAuthorization: FhirAuthorization | None = None
    context: PatientViewContext
    prefetch: dict[str, Any] | None = Field(
        None, description="Prefetch key -> FHIR resource (a searchset Bundle for searches) or null"
    )
    extension: dict[str, Any] | None = Field(
        None, description=f'"{AS_OF_EXTENSION}": "YYYY-MM-DD" screens as on that date'
    )

    @field_validator("fhirServer")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("fhirServer must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequest:
        # CDS Hooks 2.0: "If fhirAuthorization is provided, this field is REQUIRED."
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirAuthorization is given without fhirServer")
        return self

    def as_of(self) -> dt.date | None:
        """The date the `org.cohort-match.as-of` extension gives, if any (ValueError if bad)."""
        value = (self.extension or {}).get(AS_OF_EXTENSION)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"extension {AS_OF_EXTENSION} must be a YYYY-MM-DD string")
        return check_as_of(dt.date.fromisoformat(value))


# ---------------------------------------------------------------------------- the response
class CodingPublic(_Out):
    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None


class SourcePublic(_Out):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: CodingPublic | None = None


class LinkPublic(_Out):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = Field(None, description="Passed to the SMART app at launch")


class CardPublic(_Out):
    uuid: str | None = Field(None, description="Sent back by the CDS client as feedback.card")
    summary: str = Field(max_length=139, description="One sentence, under 140 characters")
    detail: str | None = Field(None, description="GitHub-flavoured Markdown")
    indicator: Literal["info", "warning", "critical"]
    source: SourcePublic
    links: list[LinkPublic] | None = None


class CdsResponsePublic(_Out):
    cards: list[CardPublic] = Field(description="Empty when there is no guidance (e.g. ineligible)")


class CdsServicePublic(_Out):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    extension: dict[str, Any] | None = None


class CdsServicesPublic(_Out):
    services: list[CdsServicePublic]


# ---------------------------------------------------------------------------- feedback
def _no_nul(value: str) -> str:
    # PostgreSQL refuses NUL in text: refused here (400), never a failed write after the call.
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


# Feedback text as stored: no NUL; the lengths below are the columns' (service/cds/store.py).
Stored = Annotated[str, AfterValidator(_no_nul)]


class ReasonCoding(_In):
    system: Stored = Field(min_length=1, max_length=256)
    code: Stored = Field(min_length=1, max_length=128)
    display: Stored | None = Field(None, max_length=256)


class AcceptedSuggestion(_In):
    id: Stored = Field(min_length=1, max_length=128)


class OverrideReason(_In):
    reason: ReasonCoding | None = None
    userComment: Stored | None = Field(None, max_length=2000)


class CdsFeedbackItem(_In):
    card: Stored = Field(min_length=1, max_length=128, description="card.uuid from the response")
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: dt.datetime = Field(description="When the user acted on the card (UTC)")

    @model_validator(mode="after")
    def _accepted_names_suggestions(self) -> CdsFeedbackItem:
        # CDS Hooks 2.0: acceptedSuggestions is "Required for accepted outcomes".
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an accepted outcome needs acceptedSuggestions")
        return self


class CdsFeedbackRequest(_In):
    """POST /cds-services/{id}/feedback."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "feedback": [
                        {
                            "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                            "outcome": "overridden",
                            "overrideReason": {"userComment": "already referred"},
                            "outcomeTimestamp": "2026-11-20T09:30:00Z",
                        }
                    ]
                }
            ]
        },
    )

    feedback: list[CdsFeedbackItem] = Field(min_length=1, max_length=1000)


class FeedbackStoredPublic(_Out):
    stored: int = Field(description="Feedback items stored")
