"""Did Synthea's codes reach the criteria they belong to? A routing report on a screened population.

    python -m service.cli screen --trial NCT06946485 --data DIR --as-of 2026-11-20 \
        --format json > screen.json
    python scripts/synthea_report.py --data DIR --screen screen.json [--markdown]

Reads the raw resources under DIR (Bundles or NDJSON, as scripts/make_synthea.py writes them)
and sorts every Condition, AllergyIntolerance, medication record, dialysis Procedure and HIV
result into the categories issue 9 names, by the words of its display (CATEGORIES below: a
category is what the record *is*, decided without our code tables). For each distinct code it
then asks two questions:

- in value set: is the code in a value set the criterion reads (terminology/valuesets/)?
- cited: how many of its records does the screen output cite as evidence of that criterion?

"not routed" lists codes of a category that no value set of its criterion knows, except those
in DELIBERATELY_OUT (a judgement recorded with its reason). A code in the value set but never
cited is listed apart: usually the rule's window or activity filter (an old resolved sinusitis
does not fail E4), sometimes a mapper or rule problem worth a look. Deceased patients are
checked on the patient's status. Prints patient data only as codes and counts.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.terminology import Terminology  # noqa: E402

SNOMED = "http://snomed.info/sct"

# (category, criterion, resource types, display pattern). First match wins, so the narrower
# categories come first (HIV before infection, dialysis before the rest).
CATEGORIES: list[tuple[str, str, frozenset[str], re.Pattern[str]]] = [
    (
        "hiv",
        "E10.hiv",
        frozenset({"Condition", "Observation"}),
        re.compile(r"human immunodeficiency virus|\bhiv\b|acquired immune deficiency", re.I),
    ),
    (
        "cancer",
        "E8",
        frozenset({"Condition"}),
        re.compile(
            r"malignan|carcinoma|cancer|neoplasm|leuka?emia|lymphoma|myeloma|melanoma|sarcoma",
            re.I,
        ),
    ),
    (
        "esrd/dialysis",
        "E9",
        frozenset({"Condition", "Procedure"}),
        re.compile(r"end.stage renal|kidney disease stage 5|dialysis", re.I),
    ),
    (
        "cardiac",
        "E6",
        frozenset({"Condition"}),
        re.compile(
            r"heart failure|myocardial infarction|cardiomyopathy|cardiac arrest|preinfarction"
            r"|angina|ventricular (fibrillation|tachycardia)|heart block|myocarditis"
            r"|injury of heart|atrial fibrillation|valve (stenosis|regurgitation)|ischemic heart",
            re.I,
        ),
    ),
    (
        "pregnancy",
        "E13",
        frozenset({"Condition"}),
        re.compile(r"pregnan|eclampsia|blighted ovum|fetus|miscarriage", re.I),
    ),
    (
        "cns",
        "E5",
        frozenset({"Condition"}),
        re.compile(
            r"brain|concussion|seizure|epilep|cerebrovascular|stroke|cerebral|multiple sclerosis"
            r"|parkinson|hydroceph|encephal|spinal cord|meningo|meningitis|chiari|paralysis",
            re.I,
        ),
    ),
    (
        "psychiatric/dementia",
        "E11",
        frozenset({"Condition"}),
        re.compile(
            r"dementia|alzheimer|depress|bipolar|schizo|psychos|psychotic|anxiety|stress disorder"
            r"|attention deficit|drug abuse|opioid abuse|alcoholism|dependence|suicid"
            r"|intellectual disability|misuses drugs|panic",
            re.I,
        ),
    ),
    (
        "infection",
        "E4",
        frozenset({"Condition"}),
        re.compile(
            r"infect|sepsis|septic|sinusitis|pharyngitis|bronchitis|pneumonia|otitis|cystitis"
            r"|pyelonephritis|bacteremia|hepatitis|covid|coronavirus|cellulitis|abscess"
            r"|mediastinitis|streptococcal",
            re.I,
        ),
    ),
    (
        "antibiotic",
        "E4",
        frozenset({"MedicationRequest", "MedicationAdministration"}),
        re.compile(
            r"amoxicillin|penicillin|ampicillin|cillin\b|\bcef|ceph|mycin\b|floxacin|cycline"
            r"|sulfamethoxazole|trimethoprim|nitrofurantoin|metronidazole|vancomycin|clindamycin"
            r"|meropenem|tazobactam|oseltamivir|acyclovir|fluconazole",
            re.I,
        ),
    ),
]

# Codes a category's words catch that deliberately do not reach the criterion, with the reason.
DELIBERATELY_OUT: dict[tuple[str, str], str] = {
    (SNOMED, "162573006"): "suspected lung cancer: a suspicion, not a diagnosis (review)",
    (SNOMED, "315268008"): "suspected prostate cancer: a suspicion, not a diagnosis (review)",
    (SNOMED, "126906006"): "neoplasm of prostate: behaviour not stated (review)",
    (SNOMED, "49436004"): "atrial fibrillation: not a severe cardiac disease by itself",
    (SNOMED, "414545008"): "chronic ischaemic heart disease without a severe event: out",
    (SNOMED, "399211009"): "history of myocardial infarction: old MI (I25.2) is out",
    (SNOMED, "60573004"): "valvular disease: severity not coded (cardiac_severe notes)",
    (SNOMED, "60234000"): "valvular disease: severity not coded",
    (SNOMED, "48724000"): "valvular disease: severity not coded",
    (SNOMED, "79619009"): "valvular disease: severity not coded",
    (SNOMED, "111287006"): "valvular disease: severity not coded",
    (SNOMED, "49915006"): "valvular disease: severity not coded",
    (SNOMED, "56786000"): "valvular disease: severity not coded",
    (SNOMED, "91434003"): "valvular disease: severity not coded",
    (SNOMED, "86175003"): "myocardial injury in COVID-19: severity not coded (review)",
    (SNOMED, "156073000"): "miscarriage: the pregnancy has ended",
    (SNOMED, "19169002"): "miscarriage: the pregnancy has ended",
    (SNOMED, "85116003"): "miscarriage: the pregnancy has ended",
    (SNOMED, "161744009"): "past history of miscarriage: not pregnant",
    (SNOMED, "10383002"): "counselling procedure, not a pregnancy state",
    (SNOMED, "10509002"): "acute bronchitis: deliberately out of infection (J20, self-limiting)",
    (SNOMED, "195662009"): "acute viral pharyngitis: deliberately out (J02, self-limiting URI)",
    (SNOMED, "444814009"): "viral sinusitis: deliberately out (J01, self-limiting URI)",
    (SNOMED, "36971009"): "sinusitis: deliberately out (J01/J32, self-limiting URI)",
    (SNOMED, "128302006"): "chronic hepatitis C: E10.hcv decides on results (E4 also reads it)",
    (SNOMED, "1290882004"): "history of seizure: a past event (review), not a seizure disorder",
    (SNOMED, "225444004"): "at risk for suicide: a risk finding, not a disorder (review)",
    (SNOMED, "6471006"): "suicidal thoughts: a finding, not a diagnosis (review)",
    (
        SNOMED,
        "192127007",
    ): "childhood ADHD, left active for life by Synthea: not read as E11 (review)",
    (SNOMED, "361055000"): "misuses drugs: a social-history finding, not a diagnosis (review)",
    (SNOMED, "185086009"): "chronic obstructive bronchitis is COPD, not an infection",
    (
        SNOMED,
        "40055000",
    ): "chronic sinusitis: chronic inflammation (J32), not an uncontrolled infection",
    (
        "http://loinc.org",
        "55277-8",
    ): "HIV status: a self-reported survey answer (PRAPARE), not a test",
    (SNOMED, "80583007"): "severe anxiety from a GAD-7 screen: a finding, not a diagnosis (review)",
    (SNOMED, "110359009"): "intellectual disability of unrecorded severity: severe only (F72-F73)",
    (SNOMED, "15724005"): "vertebral fracture without spinal cord injury: not a CNS disorder",
    (SNOMED, "262521009"): "spinal cord and/or vertebral column: cord not stated (review)",
    (
        SNOMED,
        "129721000119106",
    ): "acute renal failure on dialysis: not end-stage; E9 reads dialysis",
}


# Value sets a criterion is to read under issue 9 but whose rule does not name them yet: their
# codes count as routed (in value set) and show as never cited until the rule change lands.
PENDING_VALUESETS: dict[str, set[str]] = {"E10.hiv": {"hiv_infection"}}


@dataclass
class CodeRow:
    """One code of one category across the population."""

    category: str
    criterion: str
    system: str
    code: str
    display: str
    records: int = 0
    patients: set[str] = field(default_factory=set)
    cited: int = 0
    in_valueset: bool = False


def resources(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(patient id, resource) for every resource under root: Bundles or NDJSON."""
    files = [root] if root.is_file() else sorted(root.rglob("*"))
    for path in files:
        name = path.name
        if name.startswith(".") or not path.is_file():
            continue
        if name.endswith((".ndjson", ".jsonl")):
            for line in path.read_bytes().splitlines():
                if line.strip():
                    item = orjson.loads(line)
                    yield _subject(item), item
        elif name.endswith(".json"):
            doc = orjson.loads(path.read_bytes())
            if doc.get("resourceType") != "Bundle":
                yield _subject(doc), doc
                continue
            items = [entry.get("resource") or {} for entry in doc.get("entry") or ()]
            patient = next((r["id"] for r in items if r.get("resourceType") == "Patient"), "")
            for item in items:
                yield patient, item


def _subject(item: dict[str, Any]) -> str:
    if item.get("resourceType") == "Patient":
        return str(item.get("id", ""))
    ref = (item.get("subject") or item.get("patient") or {}).get("reference", "")
    return str(ref).rsplit("/", 1)[-1].removeprefix("urn:uuid:")


def codings(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The codings that say what the record is."""
    concept = item.get("code") or item.get("medicationCodeableConcept") or {}
    return [c for c in concept.get("coding") or () if isinstance(c, dict)]


def criterion_valuesets(trial: Path) -> dict[str, set[str]]:
    """Criterion id -> every value set name its rule mentions (rule keys vary by type)."""
    doc = yaml.safe_load(trial.read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {}
    for criterion in doc["criteria"]:
        names: set[str] = set()
        _strings(criterion.get("rule") or {}, names)
        found[criterion["id"]] = names
    return found


def _strings(node: Any, out: set[str]) -> None:
    if isinstance(node, str):
        out.add(node)
    elif isinstance(node, dict):
        for value in node.values():
            _strings(value, out)
    elif isinstance(node, list):
        for value in node:
            _strings(value, out)


def cited_references(screen: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(patient id, criterion id) -> references cited as evidence."""
    cited: dict[tuple[str, str], set[str]] = defaultdict(set)
    for candidate in screen["candidates"]:
        patient = candidate["patient"]["reference"].rsplit("/", 1)[-1]
        for criterion in candidate["criteria"]:
            for item in criterion.get("evidence") or ():
                if item.get("reference"):
                    cited[(patient, criterion["id"])].add(item["reference"])
    return cited


def classify(rtype: str, display: str) -> tuple[str, str] | None:
    for category, criterion, types, pattern in CATEGORIES:
        if rtype in types and pattern.search(display):
            return category, criterion
    return None


def collect(
    root: Path, screen: dict[str, Any], terms: Terminology, vsets: dict[str, set[str]]
) -> tuple[dict[tuple[str, str, str], CodeRow], Counter[str]]:
    """Rows per (category, system, code), and counters about allergies and deaths."""
    cited = cited_references(screen)
    status = {
        c["patient"]["reference"].rsplit("/", 1)[-1]: c["status"] for c in screen["candidates"]
    }
    rows: dict[tuple[str, str, str], CodeRow] = {}
    other: Counter[str] = Counter()
    for patient, item in resources(root):
        rtype = item.get("resourceType", "")
        ref = f"{rtype}/{item.get('id')}"
        if rtype == "Patient":
            if item.get("deceasedDateTime") or item.get("deceasedBoolean"):
                other["deceased patients"] += 1
                if status.get(patient) == "ineligible":
                    other["deceased patients ineligible (for any reason)"] += 1
            continue
        if rtype == "AllergyIntolerance":
            drug = "medication" in (item.get("category") or ()) or any(
                "rxnorm" in c.get("system", "") for c in codings(item)
            )
            key = "drug allergies" if drug else "other allergies"
            other[key] += 1
            if drug and ref in cited.get((patient, "E3"), ()):
                other["drug allergies cited by E3"] += 1
            continue
        for coding in codings(item)[:1]:
            display = str(coding.get("display", ""))
            found = classify(rtype, display)
            if found is None:
                continue
            category, criterion = found
            system, code = str(coding.get("system", "")), str(coding.get("code", ""))
            row = rows.setdefault(
                (category, system, code), CodeRow(category, criterion, system, code, display)
            )
            row.records += 1
            row.patients.add(patient)
            row.cited += ref in cited.get((patient, criterion), ())
            row.in_valueset = bool(terms.concepts_of_code(system, code) & vsets[criterion])
    return rows, other


def table(rows: list[CodeRow], note: dict[tuple[str, str], str] | None = None) -> str:
    lines = ["| category | criterion | code | display | records | patients | cited | note |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for row in rows:
        system = "sct" if row.system == SNOMED else row.system.rsplit("/", 1)[-1]
        text = (note or {}).get((row.system, row.code), "")
        lines.append(
            f"| {row.category} | {row.criterion} | {system} {row.code} | {row.display} "
            f"| {row.records} | {len(row.patients)} | {row.cited} | {text} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--screen", type=Path, help="screen JSON; screened here when absent")
    parser.add_argument("--trial", default="NCT06946485")
    parser.add_argument("--as-of", default="2026-11-20")
    args = parser.parse_args(argv)

    if args.screen:
        screen = orjson.loads(args.screen.read_bytes())
    else:
        command = [sys.executable, "-m", "service.cli", "screen", "--trial", args.trial]
        command += ["--data", str(args.data), "--as-of", args.as_of, "--format", "json"]
        screen = orjson.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    terms = Terminology.load(REPO / "terminology")
    vsets = criterion_valuesets(REPO / "trials" / f"{args.trial}.yaml")
    for criterion_id, names in PENDING_VALUESETS.items():
        vsets.setdefault(criterion_id, set()).update(names)
    rows, other = collect(args.data, screen, terms, vsets)
    ordered = sorted(rows.values(), key=lambda r: (r.criterion, r.category, -r.records, r.code))

    routed = [r for r in ordered if r.in_valueset]
    out = [r for r in ordered if not r.in_valueset and (r.system, r.code) in DELIBERATELY_OUT]
    missing = [
        r for r in ordered if not r.in_valueset and (r.system, r.code) not in DELIBERATELY_OUT
    ]
    print(f"patients screened: {screen['counts']['patients']}; codes by category: {len(ordered)}")
    print(f"\n## Not routed: in no value set of their criterion ({len(missing)})\n")
    print(table(missing))
    print(f"\n## Deliberately not routed ({len(out)})\n")
    print(table(out, DELIBERATELY_OUT))
    print(f"\n## Routed: in a value set of their criterion ({len(routed)})\n")
    print(table(routed))
    print("\n## Allergies and deaths\n")
    for key, count in sorted(other.items()):
        print(f"- {key}: {count}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
