"""The FHIR id rule, in one place, for every id that reaches a FHIR server URL.

FHIR R4 `id` (datatypes.html#id): `[A-Za-z0-9\\-\\.]{1,64}`. The dot-segments `.` and `..` match
that pattern but resolve to other URLs (`Patient/..` is the type's base), so they are refused
too. An id that fails the rule must never be sent: `p01#x` reads `Patient/p01` (the fragment is
dropped) while a search with the literal id finds nothing, so the patient would be judged on
half their record.
"""

from __future__ import annotations

import re

from service.errors import DataError

__all__ = ["FHIR_ID", "InvalidFhirId", "fhir_id", "is_fhir_id", "reference_id"]

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class InvalidFhirId(DataError):
    """Text that is not a FHIR id (or not a reference to the expected resource type)."""


def is_fhir_id(text: object) -> bool:
    return isinstance(text, str) and text not in (".", "..") and FHIR_ID.fullmatch(text) is not None


def fhir_id(text: object, what: str = "id") -> str:
    """`text` if it is a FHIR id; raises InvalidFhirId naming `what` otherwise."""
    if not is_fhir_id(text):
        raise InvalidFhirId(f"not a FHIR {what}: {_shown(text)}")
    assert isinstance(text, str)
    return text


def reference_id(text: object, resource_type: str) -> str:
    """The id of `"<resource_type>/<id>"` or a bare `"<id>"`; raises InvalidFhirId."""
    if not isinstance(text, str):
        raise InvalidFhirId(f"not a FHIR {resource_type} id or reference: {_shown(text)}")
    ident = text.removeprefix(f"{resource_type}/")
    if not is_fhir_id(ident):
        raise InvalidFhirId(f"not a FHIR {resource_type} id or reference: {_shown(text)}")
    return ident


def _shown(value: object) -> str:
    """The offending value, quoted and cut short: it may be long or hold control characters."""
    shown = ascii(value)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."
