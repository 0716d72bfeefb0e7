"""Medication resources that medication records name by reference: the side table. Pure.

Hospital EHRs (Epic, Cerner) send MedicationRequest, MedicationAdministration,
MedicationDispense and MedicationStatement with `medicationReference: {"reference":
"Medication/123"}` naming a Medication resource sent separately, not contained. A Medication
names no patient, and one may serve the records of many patients, so it is kept apart from
any patient's records, in a `MedicationTable` that every source fills from what it has (the
patient's own list or Bundle, a Bulk export's Medication.ndjson, a FHIR read) and that the
mapper reads as data (service/mappers/medication.py).

A reference finds its Medication by
- `Medication/<id>`, with or without `/_history/<version>` (the version held is the one read);
- an absolute URL ending in `Medication/<id>` (a server's fullUrl form);
- the fullUrl the Medication had in its Bundle (`urn:uuid:...`: `add(resource, full_url)`;
  `service.sources.bundle_entries` also rewrites such references to `Medication/<id>`).
A conditional reference (`Medication?code=...`) or one by identifier only finds none.

When none is found, `find` says why, for the record's note: not sent with the records,
could not be fetched (`unavailable(key, why)`, from a failed read), sent in two versions that
read differently (which one is meant cannot be told), or entered in error. The mapper then
makes the record a medication exposure with an unknown drug: unmapped is not absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["MedicationTable", "medication_key", "medication_reference"]

Resource = dict[str, Any]
# FHIR R4 id: 1-64 of letters, digits, '-' and '.'.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def medication_key(reference: str) -> str | None:
    """`Medication/<id>` of a literal reference to a Medication resource (relative, absolute
    or versioned); None for a contained (`#id`), conditional or other reference."""
    text = reference.strip()
    if text.startswith("#") or "?" in text:
        return None
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Medication" and _ID.fullmatch(parts[-1]):
        return f"Medication/{parts[-1]}"
    return None


def medication_reference(resource: Resource) -> str | None:
    """The reference text of a medication record's `medicationReference` when it names a
    Medication outside the record (not `#contained`); None otherwise."""
    value = resource.get("medicationReference")
    reference = value.get("reference") if isinstance(value, dict) else None
    if isinstance(reference, str) and reference.strip() and not reference.startswith("#"):
        return reference.strip()
    return None


def _essence(resource: Resource) -> bytes:
    """What the mapper reads of a Medication: two versions with the same essence read alike."""
    kept = {k: resource.get(k) for k in ("code", "ingredient", "status")}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


class MedicationTable:
    """Medication resources by `Medication/<id>` (see the module docstring).

    Resources may be added parsed (`add`) or as the JSON bytes of a line (`add_line`, parsed
    when first read). The result never depends on the order of adding: a key sent in versions
    that read differently is ambiguous whichever came first. `parent` is a table this one
    extends (the population's, under a patient's own): a key found here wins.
    """

    def __init__(
        self, resources: Iterable[Resource] = (), *, parent: MedicationTable | None = None
    ) -> None:
        self._held: dict[str, bytes | Resource] = {}
        self._aliases: dict[str, str] = {}  # a Bundle fullUrl -> key
        self._why: dict[str, str] = {}  # key -> why it is not available
        self._parent = parent
        for resource in resources:
            self.add(resource)

    def add(self, resource: Resource, full_url: str | None = None) -> None:
        """Hold a Medication resource (anything else, or one without an id, is passed over)."""
        ident = resource.get("id")
        if resource.get("resourceType") != "Medication" or not isinstance(ident, str):
            return
        if not _ID.fullmatch(ident):
            return
        key = f"Medication/{ident}"
        if isinstance(full_url, str) and full_url.strip() and full_url.strip() != key:
            self._aliases[full_url.strip()] = key
        self._hold(key, resource)

    def add_line(self, key: str, line: bytes) -> None:
        """Hold the Medication `key` (`Medication/<id>`) as the JSON bytes it was read as."""
        self._hold(key, line)

    def unavailable(self, key: str, why: str) -> None:
        """Record why Medication `key` could not be obtained ("could not be fetched: ...")."""
        if key not in self._held:
            self._why.setdefault(key, why)

    def keys(self) -> set[str]:
        """Every `Medication/<id>` held, here and in the parent."""
        return set(self._held) | (self._parent.keys() if self._parent is not None else set())

    def find(self, reference: str) -> tuple[Resource | None, str]:
        """The Medication `reference` names, or None and why not (a phrase naming it, for a
        record's note: "Medication/123 (not sent with the records)")."""
        text = reference.strip()
        key = self._aliases.get(text) or medication_key(text)
        if key is None:
            if self._parent is not None and text in self._parent._aliases:
                return self._parent.find(text)
            if text.startswith("urn:"):
                return None, f"{text} (not in the Bundle)"
            return None, f"{text} (not a reference to a Medication by id)"
        resource, why = self._lookup(key)
        if resource is None and self._parent is not None:
            found, parent_why = self._parent.find(key)
            if found is not None or (key not in self._held and key not in self._why):
                return found, parent_why
        return resource, why

    def _lookup(self, key: str) -> tuple[Resource | None, str]:
        if key in self._why:
            return None, f"{key} ({self._why[key]})"
        held = self._held.get(key)
        if held is None:
            return None, f"{key} (not sent with the records)"
        if isinstance(held, bytes):
            try:
                parsed = orjson.loads(held)
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):
                self._why[key] = "not readable"
                return None, f"{key} (not readable)"
            held = self._held[key] = parsed
        if held.get("status") == "entered-in-error":
            return None, f"{key} (entered in error)"
        return held, ""

    def _hold(self, key: str, resource: bytes | Resource) -> None:
        if self._why.get(key, "").startswith("sent in "):
            return  # ambiguous already: stays so, whatever comes
        held = self._held.get(key)
        if held is None:
            self._held[key] = resource
            self._why.pop(key, None)  # obtained after all (a failed read, then a Bundle)
            return
        if held == resource or _essence(_parsed(held)) == _essence(_parsed(resource)):
            return
        del self._held[key]
        self._why[key] = "sent in versions that read differently: which one is meant is unknown"


def _parsed(resource: bytes | Resource) -> Resource:
    if isinstance(resource, dict):
        return resource
    try:
        parsed = orjson.loads(resource)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
