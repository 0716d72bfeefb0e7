"""Trim a Synthea patient Bundle to what the trial's criteria read, for a small test fixture.

    python scripts/trim_synthea.py bench-data/synthea/fhir/Some_Patient_1234.json \
        tests/data/synthea/current-pregnancy.json

Records stay exactly as Synthea wrote them (references to dropped Encounters stay, as in a
partial export); `keep_ids` says which. Encounters, claims, care plans, immunizations, imaging
and diagnostic reports are dropped: no criterion reads them. A record of several MB becomes a
few tens of KB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.terminology import Terminology  # noqa: E402

CLINICAL = frozenset(
    {
        "Condition",
        "AllergyIntolerance",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationStatement",
        "Procedure",
        "Observation",
    }
)
LATEST = 3  # records per code a value set knows: the history a rule looks at


def _code(resource: dict[str, Any]) -> tuple[str, str]:
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    coding = next(iter(concept.get("coding") or ()), {})
    return str(coding.get("system", "")), str(coding.get("code", ""))


def _when(resource: dict[str, Any]) -> str:
    for key in ("onsetDateTime", "authoredOn", "effectiveDateTime", "performedDateTime"):
        if resource.get(key):
            return str(resource[key])
    period = resource.get("performedPeriod") or resource.get("effectivePeriod") or {}
    return str(period.get("start") or resource.get("recordedDate") or "")


def _active(resource: dict[str, Any]) -> bool:
    status = (resource.get("clinicalStatus") or {}).get("coding") or [{}]
    return status[0].get("code") == "active" or resource.get("status") == "active"


def keep_ids(resources: list[dict[str, Any]], terms: Terminology, extra: set[str]) -> set[str]:
    """Ids of the clinical records to keep.

    Of each code a value set knows (or named with --keep-code): every active record and the
    latest three others (Observations: the latest two only). Of each other code ("Medication
    review due", social findings, chronic meds no rule reads ...): the latest record, so the
    unmapped variety survives the trim. Procedures no value set knows go.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in resources:
        if item.get("resourceType") in CLINICAL:
            groups.setdefault((item["resourceType"], *_code(item)), []).append(item)
    kept: set[str] = set()
    for (kind, system, code), items in groups.items():
        items.sort(key=_when)
        known = code in extra or bool(terms.concepts_of_code(system, code))
        if kind == "Observation":
            chosen = items[-LATEST + 1 :] if known else []
        elif not known:
            chosen = [] if kind == "Procedure" else items[-1:]
        else:
            chosen = [*(i for i in items[:-LATEST] if _active(i)), *items[-LATEST:]]
        kept.update(str(i.get("id")) for i in chosen)
    return kept


def trim(bundle: dict[str, Any], terms: Terminology, extra: set[str]) -> dict[str, Any]:
    """The Bundle with the Patient and the kept records, in their original order."""
    entries = list(bundle.get("entry") or ())
    kept = keep_ids([e.get("resource") or {} for e in entries], terms, extra)
    chosen = [
        e
        for e in entries
        if (e.get("resource") or {}).get("resourceType") == "Patient"
        or str((e.get("resource") or {}).get("id")) in kept
    ]
    return {**bundle, "entry": chosen}


def dumps(bundle: dict[str, Any]) -> bytes:
    """Compact JSON with one entry per line: small, and a reviewer can still read a diff."""
    head = {k: v for k, v in bundle.items() if k != "entry"}
    lines = [orjson.dumps(entry) for entry in bundle["entry"]]
    return orjson.dumps(head)[:-1] + b',"entry":[\n' + b",\n".join(lines) + b"\n]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--keep-code", action="append", default=[], help="also keep this code")
    args = parser.parse_args(argv)
    terms = Terminology.load(REPO / "terminology")
    bundle = orjson.loads(args.source.read_bytes())
    trimmed = trim(bundle, terms, set(args.keep_code))
    args.target.write_bytes(dumps(trimmed))
    print(f"{len(bundle['entry'])} -> {len(trimmed['entry'])} entries: {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
