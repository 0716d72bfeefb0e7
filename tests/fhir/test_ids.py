"""The FHIR id rule (service/fhir/ids.py)."""

from __future__ import annotations

import pytest

from service.fhir.ids import InvalidFhirId, fhir_id, is_fhir_id, reference_id


@pytest.mark.parametrize("text", ["p01", "A-1.b", "x" * 64, "0", "a.b.c"])
def test_fhir_ids(text: str) -> None:
    assert is_fhir_id(text)
    assert fhir_id(text) == text
    assert reference_id(f"Patient/{text}", "Patient") == text
    assert reference_id(text, "Patient") == text


NOT_IDS = ["", ".", "..", "x" * 65, "p01#x", "p01?a=b", "p\t01", "p01\n", "p 01", "é", "a/b"]


@pytest.mark.parametrize("text", [*NOT_IDS, "\ud800", 7])
def test_not_fhir_ids(text: object) -> None:
    assert not is_fhir_id(text)
    with pytest.raises(InvalidFhirId, match="not a FHIR"):
        fhir_id(text)
    with pytest.raises(InvalidFhirId, match="not a FHIR Patient id"):
        reference_id(f"Patient/{text}" if isinstance(text, str) else text, "Patient")


def test_a_reference_to_another_type_is_not_a_patient_id() -> None:
    with pytest.raises(InvalidFhirId):
        reference_id("Group/g1", "Patient")


def test_the_offending_value_is_shown_short_and_printable() -> None:
    with pytest.raises(InvalidFhirId) as caught:
        fhir_id("\x00" * 500)
    assert len(str(caught.value)) < 120
    assert "\x00" not in str(caught.value)
