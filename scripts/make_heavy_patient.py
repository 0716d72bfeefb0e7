"""One synthetic "heavy" patient for scripts/bench_api.py: two years of a lupus clinic's
record, about 500 resources, as a FHIR transaction Bundle (PUT entries).

    python scripts/make_heavy_patient.py --out /tmp/heavy [--resources 500]

The patient starts as the demo's likely-eligible case (make_demo_data.full: SLE, SLEDAI-2K,
BILAG-2004, therapy, a screening panel and serology, anchored to make_demo_data.AS_OF) and
adds what a real chart holds around it:
- the trial's labs (CBC, LFTs, creatinine, coagulation, weight) every two months for two
  years, SLEDAI-2K every three months, BILAG-2004 every six, and hydroxychloroquine and
  low-dose prednisone prescribed (MedicationRequest) every three months;
- most of the rest is irrelevant to the trial: vital signs every five weeks and chemistry
  panels (electrolytes, glucose, lipids, CRP, complement) with LOINC codes in no value set,
  plus conditions and medications no criterion reads. `check_irrelevant` proves that with the
  service's own Terminology, so the filler can never change a verdict.
Vital signs fill the record up to exactly --resources. Deterministic: a seeded PRNG.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from make_demo_data import AS_OF, BILAG_DOMAINS, Case, full  # sibling module in scripts/

from service.config import Settings
from service.mappers.common import codes_of
from service.synthetic import LUPUS, make_condition, transaction_bundle
from service.terminology import Terminology

HEAVY_ID = "heavy"
DEFAULT_RESOURCES = 500
SEED = 20261120
TWO_YEARS = 730

# The trial's labs in SI units (code, unit, typical value, relative spread).
TRIAL_LABS = (
    ("6690-2", "10*9/L", 5.2, 0.15),  # WBC
    ("751-8", "10*9/L", 3.1, 0.15),  # ANC
    ("718-7", "g/L", 118.0, 0.06),  # hemoglobin
    ("1742-6", "U/L", 25.0, 0.2),  # ALT
    ("1920-8", "U/L", 28.0, 0.2),  # AST
    ("14631-6", "umol/L", 9.0, 0.15),  # total bilirubin
    ("14682-9", "umol/L", 62.0, 0.1),  # creatinine
    ("6301-6", "{INR}", 1.0, 0.05),  # INR
    ("5902-2", "s", 12.0, 0.05),  # prothrombin time
    ("29463-7", "kg", 58.0, 0.03),  # body weight
)
# Irrelevant to the trial: codes in no value set (checked, see check_irrelevant).
VITALS = (
    ("8867-4", "/min", 76.0, 0.1),  # heart rate
    ("9279-1", "/min", 16.0, 0.1),  # respiratory rate
    ("8480-6", "mm[Hg]", 124.0, 0.08),  # systolic blood pressure
    ("8462-4", "mm[Hg]", 78.0, 0.08),  # diastolic blood pressure
    ("8310-5", "Cel", 36.7, 0.01),  # body temperature
    ("59408-5", "%", 98.0, 0.01),  # SpO2 by pulse oximetry
    ("39156-5", "kg/m2", 22.4, 0.03),  # BMI
)
CHEMISTRY = (
    ("2951-2", "mmol/L", 140.0, 0.02),  # sodium
    ("2823-3", "mmol/L", 4.1, 0.06),  # potassium
    ("2075-0", "mmol/L", 103.0, 0.02),  # chloride
    ("1963-8", "mmol/L", 25.0, 0.06),  # bicarbonate
    ("2345-7", "mmol/L", 5.1, 0.1),  # glucose
    ("3094-0", "mmol/L", 5.0, 0.15),  # urea nitrogen
    ("17861-6", "mmol/L", 2.3, 0.04),  # calcium
    ("1751-7", "g/L", 40.0, 0.06),  # albumin
    ("2885-2", "g/L", 70.0, 0.05),  # total protein
    ("6768-6", "U/L", 80.0, 0.15),  # alkaline phosphatase
    ("2093-3", "mmol/L", 4.8, 0.1),  # cholesterol
    ("2571-8", "mmol/L", 1.3, 0.2),  # triglycerides
    ("1988-5", "mg/L", 4.0, 0.5),  # C-reactive protein
    ("4485-9", "g/L", 0.8, 0.15),  # complement C3
    ("4498-2", "g/L", 0.15, 0.2),  # complement C4
)
MAINTENANCE = (  # RxNorm ingredient, mg, times a day
    ("5521", 200.0, 2),  # hydroxychloroquine
    ("8640", 5.0, 1),  # prednisone, low maintenance dose
)
OTHER_CONDITIONS = (
    "38341003",  # hypertension
    "235595009",  # gastro-oesophageal reflux disease
    "312894000",  # osteopenia
    "55822004",  # hyperlipidaemia
    "34713006",  # vitamin D deficiency
    "197480006",  # anxiety disorder
)
OTHER_MEDICATIONS = (  # RxNorm ingredient, mg, times a day
    ("17767", 5.0, 1),  # amlodipine
    ("7646", 20.0, 1),  # omeprazole
    ("1897", 500.0, 2),  # calcium carbonate
    ("2418", 0.02, 1),  # cholecalciferol
    ("52175", 50.0, 1),  # losartan
)


def _value(rng: random.Random, typical: float, spread: float) -> float:
    return round(typical * (1 + rng.uniform(-spread, spread)), 2)


def _ago(days: int) -> date:
    return AS_OF - timedelta(days=days)


def heavy_case(resources: int = DEFAULT_RESOURCES, seed: int = SEED) -> Case:
    """The heavy patient, likely eligible, with exactly `resources` resources."""
    rng = random.Random(seed)
    case = full(Case(f"{HEAVY_ID}-two-years", "1990-07-01", "female"))
    # Older results of what the trial reads; the screening panel (10 days ago) stays latest.
    for days in range(71, TWO_YEARS, 61):
        for code, unit, typical, spread in TRIAL_LABS:
            case.obs(_ago(days), code, value=_value(rng, typical, spread), unit=unit)
    for days in range(105, TWO_YEARS, 91):
        case.obs(
            _ago(days), "sledai-2k", system=LUPUS, value=rng.choice((8, 10, 12)), unit="{score}"
        )
    for days in range(196, TWO_YEARS, 182):
        for domain in BILAG_DOMAINS:
            case.obs(_ago(days), f"bilag-2004-{domain}", system=LUPUS, text=rng.choice("BCD"))
    # Maintenance therapy, prescribed every three months (read by the therapy criterion).
    for days in range(14, TWO_YEARS, 91):
        for code, mg, per_day in MAINTENANCE:
            start = _ago(days + 90)
            case.med(
                code,
                kind="MedicationRequest",
                status="completed" if days > 90 else "active",
                start=start,
                end=start + timedelta(days=90),
                dose_mg=mg,
                per_day=per_day,
            )
    # What no criterion reads.
    for days in range(20, TWO_YEARS, 61):
        for code, unit, typical, spread in CHEMISTRY:
            case.obs(_ago(days), code, value=_value(rng, typical, spread), unit=unit)
    for code in OTHER_CONDITIONS:
        case.add(make_condition(case.next_id("c"), case.pid, code=code, onset=_ago(600)))
    for code, mg, per_day in OTHER_MEDICATIONS:
        case.med(code, start=_ago(500), status="active", dose_mg=mg, per_day=per_day)
    if len(case.resources) > resources:
        raise ValueError(f"{len(case.resources)} resources before vitals; ask for more")
    for days, (code, unit, typical, spread) in _vitals_slots():
        if len(case.resources) >= resources:
            break
        case.obs(_ago(days), code, value=_value(rng, typical, spread), unit=unit)
    return case


def _vitals_slots() -> Iterator[tuple[int, tuple[str, str, float, float]]]:
    """Vital signs at a visit every five weeks, newest first, going back as far as needed."""
    days = 3
    while True:
        for vital in VITALS:
            yield days, vital
        days += 35


def check_irrelevant(resources: list[dict[str, Any]], terms: Terminology) -> int:
    """Count the resources whose codes are in no value set; fail if a filler code is in one."""
    filler = {c for c, *_ in VITALS + CHEMISTRY} | set(OTHER_CONDITIONS)
    filler |= {c for c, *_ in OTHER_MEDICATIONS}
    irrelevant = 0
    for resource in resources:
        field = "medicationCodeableConcept" if "Medication" in resource["resourceType"] else "code"
        codes = codes_of(resource.get(field))
        if not codes:
            continue
        concepts = terms.resolve(codes)[1]
        if concepts and any(code.code in filler for code in codes):
            raise ValueError(f"{resource['id']}: filler code in value sets {sorted(concepts)}")
        irrelevant += not concepts
    return irrelevant


def write(out: Path, resources: int = DEFAULT_RESOURCES) -> tuple[Path, list[dict[str, Any]]]:
    """Write the heavy patient's transaction Bundle into `out`; returns the path and resources."""
    case = heavy_case(resources)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{HEAVY_ID}-{len(case.resources)}-resources.json"
    path.write_text(json.dumps(transaction_bundle(case.resources), indent=1) + "\n")
    return path, case.resources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the Bundle")
    parser.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    parser.add_argument("--terminology", type=Path, default=None, help="default: the bundled one")
    args = parser.parse_args()
    path, resources = write(args.out, args.resources)
    settings = Settings()
    terms = Terminology.load(args.terminology or settings.terminology_dir, settings.site_code_map)
    irrelevant = check_irrelevant(resources, terms)
    print(f"wrote {path}: {len(resources)} resources, {irrelevant} in no value set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
