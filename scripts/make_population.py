"""Generate a synthetic population as Bulk Data ($export) NDJSON, for benchmarks.

    python scripts/make_population.py --patients 10000 --out bench-data/10000-7 --seed 7 \
        --as-of 2026-11-27

Writes one file per resource type (Patient.ndjson, Observation.ndjson, ...), grouped by type
and not by patient, as a FHIR server's $export does, so a reader meets a patient's records
scattered over every file. The mix imitates a general hospital's record rather than a lupus
clinic's: most Observations are vitals, chemistry, lipids and urinalysis that no trial
criterion reads (their codes are checked to be in no value set), a minority are the labs the
trial reads (CBC, LFTs, creatinine, weight, coagulation, serology, SLEDAI-2K and BILAG-2004),
in a mix of SI and US units.

Codes for everything a criterion reads come from terminology/valuesets/*.csv (and the
qualitative-result, unit-alias and glucocorticoid tables when present), so the population
follows the code tables as they change. Everything is made up and built with the
service.synthetic builders.

Output is a pure function of (--patients, --seed, --as-of, the code tables): one seeded PRNG
is consumed in patient order, and nothing iterates a set or a dict whose order could vary.
Patients are generated and written one at a time, so memory stays flat in N. The files are
written under DIR.partial and renamed to DIR when complete, with a `.population.json`
manifest (a dot file because the screen reads every *.json under the data directory).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from service.synthetic import (
    ATC,
    ICD10,
    ICD10CM,
    LOINC,
    LUPUS,
    RXNORM,
    SNOMED,
    make_allergy,
    make_condition,
    make_medication,
    make_observation,
    make_patient,
    make_procedure,
)

REPO = Path(__file__).resolve().parent.parent
RESOURCE_TYPES = (
    "Patient",
    "Observation",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "AllergyIntolerance",
    "Procedure",
)
MANIFEST = ".population.json"
GENERATOR_VERSION = 1  # bump when the output for the same arguments changes
SLE_SHARE = 0.12  # of patients; --sle-share changes it (the default draws are unchanged)
HISTORY_DAYS = 1100  # encounters spread over the three years before as_of
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
MRN_SYSTEM = "http://hospital.example.org/fhir/sid/mrn"

Row = tuple[str, str, str]  # system, code, display
Resource = dict[str, Any]


# ---------------------------------------------------------------- code tables
@dataclass(frozen=True)
class Tables:
    """The code tables the generator draws from, read once from terminology/."""

    valuesets: dict[str, list[Row]]
    members: frozenset[tuple[str, str]]  # every (system, code) in any value set
    qualitative: dict[str, list[tuple[str, str]]]  # result -> [(system, code)]
    qualitative_text: dict[str, list[str]]  # result -> [text]
    unit_aliases: dict[str, list[str]]  # UCUM -> [texts labs send]
    glucocorticoids: dict[tuple[str, str], float]  # mg prednisone per mg
    digest: str  # of every table read: a cached population is stale when it changes

    def rows(self, name: str) -> list[Row]:
        rows = self.valuesets.get(name)
        if not rows:
            raise SystemExit(f"terminology/valuesets/{name}.csv is missing or empty")
        return rows

    def pick(self, name: str, preferred: Sequence[str] = (), system: str | None = None) -> Row:
        """The first preferred code in the set, else its first row (of `system` if given)."""
        rows = self.rows(name)
        for code in preferred:
            for row in rows:
                if row[1] == code:
                    return row
        for row in rows:
            if system is None or row[0] == system:
                return row
        return rows[0]

    def choice(self, rng: random.Random, name: str, systems: Sequence[str] = ()) -> Row:
        rows = self.rows(name)
        usable = [row for row in rows if row[0] in systems] if systems else rows
        return rng.choice(usable or rows)

    def covered(self, name: str, system: str, candidates: Sequence[Any]) -> list[Any]:
        """Candidates (code first) the value set covers: a row's code or, for ATC and ICD
        rows, a code under it in the hierarchy (J01 covers J01CA04)."""
        prefixes = [code for row_system, code, _ in self.rows(name) if row_system == system]
        return [c for c in candidates if any(c[0].startswith(p) for p in prefixes)]

    def outside(self, system: str, candidates: Sequence[Any]) -> list[Any]:
        """Candidates (code first) whose code is in no value set: the irrelevant records."""
        kept = []
        for candidate in candidates:
            if (system, candidate[0]) in self.members:
                print(
                    f"note: {system}|{candidate[0]} is in a value set; not used as filler",
                    file=sys.stderr,
                )
                continue
            kept.append(candidate)
        return kept


def _csv(path: Path, digest: Any = None) -> list[dict[str, str]]:
    if not path.exists():
        return []
    if digest is not None:
        digest.update(path.name.encode() + path.read_bytes())
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def tables_digest(root: Path) -> str:
    """The digest of the code tables the generator reads: what a population was made from."""
    return load_tables(root).digest


def load_tables(root: Path) -> Tables:
    digest = hashlib.sha256()
    valuesets: dict[str, list[Row]] = {}
    for path in sorted((root / "valuesets").glob("*.csv")):
        valuesets[path.stem] = [
            (row["system"].strip(), row["code"].strip(), (row.get("display") or "").strip())
            for row in _csv(path, digest)
        ]
    members = frozenset((s, c) for rows in valuesets.values() for s, c, _ in rows)
    qualitative: dict[str, list[tuple[str, str]]] = {"positive": [], "negative": []}
    for row in _csv(root / "results" / "qualitative_codes.csv", digest):
        if row["system"] == SNOMED:  # the others are interpretation flags, not result values
            qualitative.setdefault(row["result"], []).append((row["system"], row["code"]))
    for result, default in (("negative", "260385009"), ("positive", "10828004")):
        qualitative[result] = qualitative[result] or [(SNOMED, default)]
    texts: dict[str, list[str]] = {"positive": [], "negative": []}
    for row in _csv(root / "results" / "qualitative_text.csv", digest):
        texts.setdefault(row["result"], []).append(row["text"])
    texts["positive"] = texts["positive"] or ["Positive"]
    texts["negative"] = texts["negative"] or ["Negative"]
    aliases: dict[str, list[str]] = {}
    for row in _csv(root / "units" / "aliases.csv", digest):
        aliases.setdefault(row["ucum"], []).append(row["text"])
    gluco = {
        (row["system"], row["code"]): float(row["prednisone_mg_per_mg"])
        for row in _csv(root / "glucocorticoid_equivalents.csv", digest)
    }
    return Tables(valuesets, members, qualitative, texts, aliases, gluco, digest.hexdigest()[:16])


# ---------------------------------------------------------------- lab catalogue
@dataclass(frozen=True)
class Unit:
    ucum: str
    factor: float  # multiply a canonical value by this to get the value in this unit
    decimals: int
    weight: float = 1.0


@dataclass(frozen=True)
class Lab:
    """A quantitative lab a criterion reads: its value set, units and a plausible spread."""

    valueset: str
    preferred: tuple[str, ...]  # codes used when the value set has them
    units: tuple[Unit, ...]
    _: KW_ONLY
    mean: float
    sd: float
    low: float
    high: float
    ref_high: float | None = None  # in the canonical (first) unit
    category: str = "laboratory"


# Each lab's first unit is the SI one; the others are what US or older analysers send.
LABS: dict[str, Lab] = {
    lab.valueset: lab
    for lab in (
        Lab(
            "hemoglobin",
            ("718-7",),
            (Unit("g/L", 1, 0, 0.6), Unit("g/dL", 0.1, 1, 0.4)),
            mean=132,
            sd=17,
            low=45,
            high=185,
        ),
        Lab(
            "wbc",
            ("6690-2",),
            (Unit("10*9/L", 1, 1, 0.6), Unit("10*3/uL", 1, 1, 0.4)),
            mean=6.6,
            sd=2.2,
            low=0.9,
            high=22,
        ),
        Lab("neutrophils_pct", ("770-8",), (Unit("%", 1, 1),), mean=60, sd=9, low=15, high=92),
        Lab(
            "neutrophils_abs",
            ("751-8",),
            (Unit("10*9/L", 1, 2, 0.6), Unit("10*3/uL", 1, 2, 0.4)),
            mean=4.0,
            sd=1.6,
            low=0.2,
            high=18,
        ),
        Lab(
            "alt",
            ("1742-6",),
            (Unit("U/L", 1, 0),),
            mean=26,
            sd=14,
            low=5,
            high=400,
            ref_high=40,
        ),
        Lab(
            "ast",
            ("1920-8",),
            (Unit("U/L", 1, 0),),
            mean=24,
            sd=11,
            low=6,
            high=350,
            ref_high=40,
        ),
        Lab(
            "bilirubin_total",
            ("1975-2",),
            (Unit("umol/L", 1, 1, 0.6), Unit("mg/dL", 1 / 17.1, 2, 0.4)),
            mean=11,
            sd=5,
            low=2,
            high=90,
            ref_high=21,
        ),
        Lab(
            "creatinine",
            ("2160-0",),
            (Unit("umol/L", 1, 0, 0.6), Unit("mg/dL", 1 / 88.42, 2, 0.4)),
            mean=78,
            sd=20,
            low=35,
            high=900,
        ),
        Lab(
            "body_weight",
            ("29463-7",),
            (Unit("kg", 1, 1, 0.75), Unit("[lb_av]", 2.20462, 1, 0.25)),
            mean=70,
            sd=15,
            low=35,
            high=160,
            category="vital-signs",
        ),
        Lab(
            "inr",
            ("6301-6", "34714-6"),
            (Unit("{INR}", 1, 2),),
            mean=1.02,
            sd=0.12,
            low=0.8,
            high=4,
            ref_high=1.2,
        ),
        Lab(
            "prothrombin_time",
            ("5902-2",),
            (Unit("s", 1, 1),),
            mean=12.1,
            sd=1.0,
            low=9,
            high=40,
            ref_high=13.5,
        ),
        Lab(
            "lvef",
            ("10230-1", "8806-2"),
            (Unit("%", 1, 0),),
            mean=61,
            sd=6,
            low=20,
            high=78,
            category="imaging",
        ),
        Lab(
            "hcg_serum",
            ("21198-7", "19180-9", "2118-8"),
            (Unit("m[IU]/mL", 1, 1),),
            mean=1.2,
            sd=0.8,
            low=0.1,
            high=4.9,
        ),
        Lab(
            "creatinine_clearance",
            ("2164-2",),
            (Unit("mL/min", 1, 0),),
            mean=95,
            sd=25,
            low=10,
            high=180,
        ),
    )
}

# Filler: real LOINC codes no criterion reads (checked against the value sets at start).
# (code, display, ucum, mean, sd, decimals, category)
Filler = tuple[str, str, str, float, float, int, str]
VITALS: tuple[Filler, ...] = (
    ("8867-4", "Heart rate", "/min", 76, 12, 0, "vital-signs"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 126, 17, 0, "vital-signs"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 78, 10, 0, "vital-signs"),
    ("9279-1", "Respiratory rate", "/min", 16, 2.5, 0, "vital-signs"),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.4, 1, "vital-signs"),
    (
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
        "%",
        97.4,
        1.5,
        0,
        "vital-signs",
    ),
)
ANTHROPOMETRY: tuple[Filler, ...] = (
    ("8302-2", "Body height", "cm", 167, 10, 0, "vital-signs"),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 25.8, 4.6, 1, "vital-signs"),
)
CHEMISTRY: tuple[Filler, ...] = (
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 140, 2.6, 0, "laboratory"),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.4, 1, "laboratory"),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 103, 3, 0, "laboratory"),
    (
        "2028-9",
        "Carbon dioxide, total [Moles/volume] in Serum or Plasma",
        "mmol/L",
        25,
        2.5,
        0,
        "laboratory",
    ),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 14, 4, 0, "laboratory"),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 99, 22, 0, "laboratory"),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 9.4, 0.4, 1, "laboratory"),
)
CBC_OTHER: tuple[Filler, ...] = (
    (
        "777-3",
        "Platelets [#/volume] in Blood by Automated count",
        "10*3/uL",
        252,
        60,
        0,
        "laboratory",
    ),
    ("787-2", "MCV [Entitic volume] by Automated count", "fL", 90, 5, 0, "laboratory"),
    (
        "4544-3",
        "Hematocrit [Volume Fraction] of Blood by Automated count",
        "%",
        41,
        4,
        1,
        "laboratory",
    ),
    (
        "789-8",
        "Erythrocytes [#/volume] in Blood by Automated count",
        "10*6/uL",
        4.7,
        0.5,
        2,
        "laboratory",
    ),
)
LFT_OTHER: tuple[Filler, ...] = (
    ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 4.2, 0.4, 1, "laboratory"),
    (
        "6768-6",
        "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        76,
        20,
        0,
        "laboratory",
    ),
)
LIPIDS: tuple[Filler, ...] = (
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 192, 36, 0, "laboratory"),
    (
        "2085-9",
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
        "mg/dL",
        52,
        12,
        0,
        "laboratory",
    ),
    (
        "13457-7",
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
        "mg/dL",
        112,
        30,
        0,
        "laboratory",
    ),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 140, 60, 0, "laboratory"),
)
URINALYSIS: tuple[Filler, ...] = (
    ("5803-2", "pH of Urine by Test strip", "[pH]", 6.0, 0.7, 1, "laboratory"),
    ("5811-5", "Specific gravity of Urine by Test strip", "1", 1.016, 0.006, 3, "laboratory"),
)
URINE_PRESENCE = (
    ("5792-7", "Glucose [Mass/volume] in Urine by Test strip"),
    ("2514-8", "Ketones [Presence] in Urine by Test strip"),
    ("5794-3", "Hemoglobin [Presence] in Urine by Test strip"),
)
OTHER_LABS: tuple[Filler, ...] = (
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.8, 0.8, 1, "laboratory"),
    (
        "3016-3",
        "Thyrotropin [Units/volume] in Serum or Plasma",
        "m[IU]/L",
        2.1,
        1.0,
        2,
        "laboratory",
    ),
)

SEROLOGY = ("hbsag", "hbcab", "hcv_ab", "hiv_ab", "rpr", "treponemal")
SEROLOGY_PREFERRED = {
    "hbsag": ("5196-1",),
    "hbcab": ("16933-4",),
    "hbv_dna": ("29615-2",),
    "hcv_ab": ("16128-1",),
    "hcv_rna": ("11011-4",),
    "hiv_ab": ("56888-1", "7917-8"),
    "rpr": ("20507-0",),
    "treponemal": ("24312-1", "8041-9", "11597-2"),
}
SEROLOGY_POSITIVE = {
    "hbsag": 0.03,
    "hbcab": 0.08,
    "hcv_ab": 0.015,
    "hiv_ab": 0.004,
    "rpr": 0.03,
    "treponemal": 0.02,
}
BILAG_DOMAINS = (
    "constitutional",
    "mucocutaneous",
    "neuropsychiatric",
    "musculoskeletal",
    "cardiorespiratory",
    "gastrointestinal",
    "ophthalmic",
    "renal",
    "haematological",
)

# Filler conditions, medications, allergies and procedures (checked against value sets too).
OTHER_CONDITIONS = (
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Diabetes mellitus type 2"),
    ("55822004", "Hyperlipidemia"),
    ("195967001", "Asthma"),
    ("235595009", "Gastroesophageal reflux disease"),
    ("396275006", "Osteoarthritis"),
    ("40930008", "Hypothyroidism"),
    ("414916001", "Obesity"),
    ("61582004", "Allergic rhinitis"),
    ("87522002", "Iron deficiency anemia"),
    ("279039007", "Low back pain"),
    ("267036007", "Dyspnea"),
)
OTHER_MEDICATIONS = (
    ("29046", "lisinopril", 10),
    ("6809", "metformin", 500),
    ("83367", "atorvastatin", 20),
    ("7646", "omeprazole", 20),
    ("17767", "amlodipine", 5),
    ("10582", "levothyroxine", 0.1),
    ("5640", "ibuprofen", 400),
    ("161", "acetaminophen", 500),
    ("4603", "furosemide", 40),
    ("1191", "aspirin", 81),
)
DRUG_ALLERGENS = (
    ("7980", "penicillin G"),
    ("10180", "sulfamethoxazole"),
    ("2670", "codeine"),
    ("1191", "aspirin"),
    ("3640", "doxycycline"),
    ("5640", "ibuprofen"),
)
ANTI_INFECTIVE_DRUGS = (  # ATC
    ("J01CA04", "amoxicillin"),
    ("J01DD04", "ceftriaxone"),
    ("J01FA10", "azithromycin"),
    ("J01MA02", "ciprofloxacin"),
    ("J02AC01", "fluconazole"),
    ("J04AB02", "rifampicin"),
    ("J05AB01", "aciclovir"),
)
FOOD_ALLERGENS = (("91935009", "Peanut allergy"), ("300913006", "Shellfish allergy"))
MILD_REACTIONS = (
    ("247472004", "Hives"),
    ("271807003", "Eruption of skin"),
    ("418363000", "Itching of skin"),
)
OTHER_PROCEDURES = (
    ("80146002", "Appendectomy"),
    ("73761001", "Colonoscopy"),
    ("38102005", "Cholecystectomy"),
    ("14768001", "Tonsillectomy"),
    ("274025005", "Colonic polypectomy"),
)

# Conditions a criterion excludes: (value set, share of patients, active, onset within days).
EXCLUSIONS = (
    ("infection", 0.04, True, 60),
    ("malignancy", 0.03, True, 2000),
    ("cardiac_severe", 0.03, True, 2000),
    ("cns_disorder", 0.015, True, 3000),
    ("psychiatric_severe", 0.02, True, 3000),
    ("esrd", 0.008, True, 1500),
    ("ttp_tma", 0.004, False, 2000),
    ("immunoglobulin_deficiency_congenital", 0.002, True, 9000),
    ("gilbert_syndrome", 0.02, True, 5000),
)
GIVEN = ("Wei", "Li", "Mei", "Jun", "Anna", "Maria", "John", "Sara", "Omar", "Yan", "Lucas")
FAMILY = ("Wang", "Zhang", "Chen", "Smith", "Garcia", "Nguyen", "Khan", "Muller", "Rossi")
CITIES = ("Nanjing", "Suzhou", "Wuxi", "Yangzhou", "Changzhou")


# ---------------------------------------------------------------- one patient
class PatientWriter:
    """Builds one patient's resources with a shared PRNG and appends them to the type files."""

    def __init__(
        self,
        tables: Tables,
        as_of: date,
        rng: random.Random,
        out: dict[str, IO[bytes]],
        sle_share: float = SLE_SHARE,
        filler_share: float = 1.0,
    ):
        self.t = tables
        self.sle_share = sle_share
        self.filler_share = filler_share
        self.as_of = as_of
        self.rng = rng
        self.out = out
        self.counts = dict.fromkeys(RESOURCE_TYPES, 0)
        # Resolve codes once: the per-patient loop only draws from these lists.
        self.lab_codes = {
            name: tables.pick(lab.valueset, lab.preferred, LOINC) for name, lab in LABS.items()
        }
        self.sero_codes = {
            name: tables.pick(name, SEROLOGY_PREFERRED[name], LOINC)
            for name in (*SEROLOGY, "hbv_dna", "hcv_rna")
        }
        self.sledai = tables.pick("sledai_2k", (), LUPUS)
        self.bilag = [tables.pick(f"bilag_{d}", (), LUPUS) for d in BILAG_DOMAINS]
        self.vitals = tables.outside(LOINC, VITALS)
        self.anthropometry = tables.outside(LOINC, ANTHROPOMETRY)
        self.chemistry = tables.outside(LOINC, CHEMISTRY)
        self.cbc_other = tables.outside(LOINC, CBC_OTHER)
        self.lft_other = tables.outside(LOINC, LFT_OTHER)
        self.lipids = tables.outside(LOINC, LIPIDS)
        self.urinalysis = tables.outside(LOINC, URINALYSIS)
        self.urine_presence = tables.outside(LOINC, URINE_PRESENCE)
        self.other_labs = tables.outside(LOINC, OTHER_LABS)
        self.other_conditions = tables.outside(SNOMED, OTHER_CONDITIONS)
        self.other_meds = tables.outside(RXNORM, OTHER_MEDICATIONS)
        self.mild_reactions = tables.outside(SNOMED, MILD_REACTIONS)
        self.other_procedures = tables.outside(SNOMED, OTHER_PROCEDURES)
        # Glucocorticoids with a known potency, so a dose can be set in prednisone equivalents.
        self.glucocorticoids = [
            (row, tables.glucocorticoids[row[0], row[1]])
            for row in tables.rows("glucocorticoids")
            if (row[0], row[1]) in tables.glucocorticoids
        ] or [(row, 1.0) for row in tables.rows("glucocorticoids")]
        self.anti_infectives = tables.covered(
            "anti_infectives_systemic", ATC, ANTI_INFECTIVE_DRUGS
        ) or [row[1:] for row in tables.rows("anti_infectives_systemic")]
        for name, _, _, _ in EXCLUSIONS:
            tables.rows(name)  # fail early, naming the missing table

    # -------------------------------------------------------------- helpers
    def uid(self) -> str:
        bits = f"{self.rng.getrandbits(128):032x}"
        return f"{bits[:8]}-{bits[8:12]}-4{bits[13:16]}-a{bits[17:20]}-{bits[20:]}"

    def emit(self, resource: Resource) -> None:
        kind = resource["resourceType"]
        self.out[kind].write(orjson.dumps(resource) + b"\n")
        self.counts[kind] += 1

    def when(self, day: date) -> str:
        """A dateTime as hospital systems send it: local time with the site's offset."""
        minute = self.rng.randrange(7 * 60, 18 * 60)
        return f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00+08:00"

    def gauss(self, mean: float, sd: float, low: float, high: float) -> float:
        return min(high, max(low, self.rng.gauss(mean, sd)))

    def observation(
        self, pid: str, encounter: str, day: date, row: Row, category: str, **kwargs: Any
    ) -> None:
        status = "final"
        roll = self.rng.random()
        if roll < 0.02:
            status = "amended"
        elif roll < 0.03:
            status = self.rng.choice(("preliminary", "cancelled", "entered-in-error"))
        resource = make_observation(
            self.uid(),
            pid,
            self.when(day),
            code=row[1],
            system=row[0],
            display=row[2] or None,
            status=status,
            **kwargs,
        )
        resource["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": category}]}]
        resource["encounter"] = {"reference": f"Encounter/{encounter}"}
        resource["issued"] = f"{day.isoformat()}T19:00:00+08:00"
        self.emit(resource)

    def filler(self, pid: str, encounter: str, day: date, items: Sequence[Filler]) -> None:
        # Below 1, a panel no criterion reads is left out at that rate (a lupus clinic's
        # record); at 1 no draw is made, so the default population is unchanged.
        if self.filler_share < 1 and self.rng.random() >= self.filler_share:
            return
        for code, display, unit, mean, sd, decimals, category in items:
            value = round(max(0.0, self.rng.gauss(mean, sd)), decimals)
            self.observation(
                pid, encounter, day, (LOINC, code, display), category, value=value, unit=unit
            )

    def lab(self, pid: str, encounter: str, day: date, name: str, canonical: float) -> None:
        """One quantitative lab, sent in a unit chosen as a lab would (some non-UCUM text)."""
        spec = LABS[name]
        unit = self.rng.choices(spec.units, weights=[u.weight for u in spec.units])[0]
        value = round(canonical * unit.factor, unit.decimals)
        text = unit.ucum
        ucum = True
        aliases = self.t.unit_aliases.get(unit.ucum)
        if aliases and self.rng.random() < 0.15:
            text, ucum = self.rng.choice(aliases), False  # free text, no UCUM system
        high = None
        if spec.ref_high is not None and self.rng.random() < 0.8:
            high = round(spec.ref_high * unit.factor, unit.decimals)
        self.observation(
            pid,
            encounter,
            day,
            self.lab_codes[name],
            spec.category,
            value=value,
            unit=text,
            ucum=ucum,
            ref_high=high,
        )

    def draw(self, name: str, shift: float = 0.0) -> float:
        spec = LABS[name]
        return self.gauss(spec.mean + shift, spec.sd, spec.low, spec.high)

    def qualitative(self, pid: str, encounter: str, day: date, row: Row, positive: bool) -> None:
        result = "positive" if positive else "negative"
        if self.rng.random() < 0.7:
            coded = self.rng.choice(self.t.qualitative[result])
            self.observation(pid, encounter, day, row, "laboratory", coded=coded)
        else:
            text = self.rng.choice(self.t.qualitative_text[result])
            self.observation(pid, encounter, day, row, "laboratory", text=text)

    # -------------------------------------------------------------- the patient
    def write(self) -> None:
        rng, as_of = self.rng, self.as_of
        pid = self.uid()
        sle = rng.random() < self.sle_share
        lupus_other = not sle and rng.random() < 0.03
        female = rng.random() < (0.88 if sle or lupus_other else 0.52)
        age_days = rng.randrange(16 * 365 if sle else 2 * 365, (70 if sle else 92) * 365)
        birth = as_of - timedelta(days=age_days)
        age = age_days / 365.25
        patient = make_patient(pid, birth, "female" if female else "male")
        patient["identifier"] = [{"system": MRN_SYSTEM, "value": f"{rng.randrange(10**8):08d}"}]
        patient["name"] = [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}]
        patient["address"] = [{"city": rng.choice(CITIES), "country": "CN"}]
        patient["meta"] = {"lastUpdated": f"{as_of.isoformat()}T02:00:00+08:00"}
        self.emit(patient)

        # Encounters: distinct days (so no lab has two results on one day), most patients
        # seen within the last three months.
        visits = rng.randint(3, 5) + (1 if sle else 0)
        days_back = sorted(rng.sample(range(1, HISTORY_DAYS), visits))
        if rng.random() < 0.7 and days_back[0] > 80:
            days_back[0] = rng.randrange(1, 80)
            days_back = sorted(set(days_back))
        weight = self.draw("body_weight", -3 if female else 6)
        hgb_shift = (-18 if sle else 0) - (8 if female else 0)
        if sle and rng.random() < 0.08:
            hgb_shift -= 55  # autoimmune haemolytic anaemia: haemoglobin around 55 g/L
        for back in days_back:
            self.encounter(pid, as_of - timedelta(days=back), female, sle, weight, hgb_shift)
        assessed = [as_of - timedelta(days=b) for b in days_back[:2]]
        serology_day = as_of - timedelta(days=rng.choice(days_back))
        workup = sle and rng.random() < 0.35
        if workup:
            # A pre-screening work-up on a day of its own: everything the trial reads, so
            # some patients can be decided on every automatic criterion.
            day = as_of - timedelta(
                days=rng.choice([d for d in range(3, 45) if d not in days_back])
            )
            self.encounter(pid, day, female, sle, weight, hgb_shift, workup=True)
            assessed = [day, *assessed[:1]]
            serology_day = day
        if sle:
            self.lupus_assessments(pid, assessed)
        if sle or rng.random() < 0.1:
            self.serology(pid, serology_day)
        if female and 18 <= age <= 50 and rng.random() < (0.3 if sle else 0.03):
            self.lab(
                pid,
                self.uid(),
                as_of - timedelta(days=rng.randrange(0, 40)),
                "hcg_serum",
                self.draw("hcg_serum") if rng.random() > 0.03 else 1200.0,
            )

        self.conditions(pid, sle, lupus_other, female, age)
        self.medications(pid, sle, weight, refractory=workup)
        self.allergies(pid)
        self.procedures(pid)

    def encounter(
        self,
        pid: str,
        day: date,
        female: bool,
        sle: bool,
        weight: float,
        hgb_shift: float,
        workup: bool = False,
    ) -> None:
        """One visit's vitals and panels; a trial `workup` draws every panel a criterion reads."""
        rng = self.rng

        def drawn(share: float) -> bool:
            return workup or rng.random() < share

        enc = self.uid()
        self.filler(pid, enc, day, self.vitals)
        if rng.random() < 0.3:
            self.filler(pid, enc, day, self.anthropometry)
        if drawn(0.7):
            self.lab(pid, enc, day, "body_weight", weight + rng.gauss(0, 1.5))
        if drawn(0.55):
            self.filler(pid, enc, day, self.chemistry)
            self.lab(pid, enc, day, "creatinine", self.draw("creatinine", -10 if female else 8))
        if drawn(0.75 if sle else 0.45):
            wbc = self.draw("wbc", -1.5 if sle else 0)
            pct = self.draw("neutrophils_pct")
            self.lab(pid, enc, day, "wbc", wbc)
            self.lab(pid, enc, day, "hemoglobin", self.draw("hemoglobin", hgb_shift))
            if drawn(0.8):
                self.lab(pid, enc, day, "neutrophils_pct", pct)
            if drawn(0.6):
                self.lab(pid, enc, day, "neutrophils_abs", max(0.05, wbc * pct / 100))
            self.filler(pid, enc, day, self.cbc_other)
        if drawn(0.6 if sle else 0.35):
            self.lab(pid, enc, day, "alt", self.draw("alt"))
            self.lab(pid, enc, day, "ast", self.draw("ast"))
            self.lab(pid, enc, day, "bilirubin_total", self.draw("bilirubin_total"))
            self.filler(pid, enc, day, self.lft_other)
        if rng.random() < 0.15:
            self.filler(pid, enc, day, self.lipids)
        if rng.random() < (0.5 if sle else 0.2):
            self.filler(pid, enc, day, self.urinalysis)
            for code, display in self.urine_presence:
                self.qualitative(pid, enc, day, (LOINC, code, display), rng.random() < 0.05)
        if rng.random() < 0.12:
            self.filler(pid, enc, day, self.other_labs)
        if drawn(0.25 if sle else 0.06):
            self.lab(pid, enc, day, "inr", self.draw("inr"))
            self.lab(pid, enc, day, "prothrombin_time", self.draw("prothrombin_time"))
        if sle and drawn(0.15):
            self.lab(pid, enc, day, "lvef", self.draw("lvef"))
        if rng.random() < 0.02:
            self.lab(pid, enc, day, "creatinine_clearance", self.draw("creatinine_clearance"))

    def lupus_assessments(self, pid: str, days: list[date]) -> None:
        rng = self.rng
        activity = rng.random()  # how active this patient's lupus is
        for day in days:
            enc = self.uid()
            score = max(0, round(rng.gauss(2 + 12 * activity, 3)))
            self.observation(pid, enc, day, self.sledai, "survey", value=score, unit="{score}")
            graded = rng.random() < 0.7  # otherwise only the domains with findings
            for row in self.bilag:
                grade = rng.choices("ABCDE", weights=(activity * 0.3, activity, 1, 1.5, 4))[0]
                if not graded and grade in "DE":
                    continue
                if rng.random() < 0.5:
                    self.observation(pid, enc, day, row, "survey", coded=(row[0], grade))
                else:
                    self.observation(pid, enc, day, row, "survey", text=f"Grade {grade}")

    def serology(self, pid: str, day: date) -> None:
        rng = self.rng
        enc = self.uid()
        positive = {name: rng.random() < SEROLOGY_POSITIVE[name] for name in SEROLOGY}
        if positive["treponemal"] and rng.random() < 0.5:
            positive["rpr"] = True  # untreated syphilis: both tests reactive
        for name in SEROLOGY:
            self.qualitative(pid, enc, day, self.sero_codes[name], positive[name])
        for antibody, rna in (("hbcab", "hbv_dna"), ("hcv_ab", "hcv_rna")):
            if positive[antibody]:
                if rng.random() < 0.7:
                    self.observation(
                        pid,
                        enc,
                        day,
                        self.sero_codes[rna],
                        "laboratory",
                        value=20,
                        unit="[IU]/mL",
                        comparator="<",
                    )
                else:
                    self.observation(
                        pid,
                        enc,
                        day,
                        self.sero_codes[rna],
                        "laboratory",
                        value=float(rng.randrange(50, 10**6)),
                        unit="[IU]/mL",
                    )

    def conditions(self, pid: str, sle: bool, lupus_other: bool, female: bool, age: float) -> None:
        rng, as_of = self.rng, self.as_of
        for code, display in rng.sample(self.other_conditions, rng.randint(0, 4)):
            onset = as_of - timedelta(days=rng.randrange(30, 5000))
            resource = make_condition(self.uid(), pid, code=code, onset=onset)
            resource["code"]["coding"][0]["display"] = display
            self.emit(resource)
        if sle:
            system, code, _ = self.t.choice(rng, "sle", (SNOMED, ICD10CM, ICD10))
            onset = as_of - timedelta(days=rng.randrange(365, 7000))
            self.emit(make_condition(self.uid(), pid, code=code, system=system, onset=onset))
        if lupus_other:
            system, code, _ = self.t.choice(rng, "lupus_non_sle", (SNOMED, ICD10CM, ICD10))
            onset = as_of - timedelta(days=rng.randrange(90, 4000))
            self.emit(make_condition(self.uid(), pid, code=code, system=system, onset=onset))
        for name, share, active, within in EXCLUSIONS:
            if rng.random() >= share * (2 if sle else 1):
                continue
            system, code, _ = self.t.choice(rng, name, (SNOMED, ICD10CM, ICD10))
            onset = as_of - timedelta(days=rng.randrange(1, within))
            resolved = not active or rng.random() < 0.2
            self.emit(
                make_condition(
                    self.uid(),
                    pid,
                    code=code,
                    system=system,
                    onset=onset,
                    clinical="resolved" if resolved else "active",
                    abatement=onset + timedelta(days=30) if resolved else None,
                )
            )
        if rng.random() < 0.01:  # an old, excepted cancer with years of disease-free survival
            system, code, _ = self.t.choice(rng, "malignancy_exceptions", (SNOMED, ICD10CM, ICD10))
            onset = as_of - timedelta(days=rng.randrange(2500, 6000))
            self.emit(
                make_condition(
                    self.uid(),
                    pid,
                    code=code,
                    system=system,
                    onset=onset,
                    clinical="resolved",
                    abatement=onset + timedelta(days=60),
                )
            )
        if female and 18 <= age <= 45:
            for name, share in (("pregnancy", 0.015), ("lactation", 0.008)):
                if rng.random() < share:
                    system, code, _ = self.t.choice(rng, name, (SNOMED, ICD10CM, ICD10))
                    onset = as_of - timedelta(days=rng.randrange(10, 200))
                    self.emit(
                        make_condition(self.uid(), pid, code=code, system=system, onset=onset)
                    )

    def medication(self, pid: str, row: Row, start: date, end: date | None, **kwargs: Any) -> None:
        kind = "MedicationStatement" if self.rng.random() < 0.5 else "MedicationRequest"
        status = "active" if end is None or end >= self.as_of else "completed"
        resource = make_medication(
            self.uid(),
            pid,
            code=row[1],
            system=row[0],
            start=start,
            end=end,
            status=status,
            kind=kind,
            **kwargs,
        )
        if row[2]:
            resource["medicationCodeableConcept"]["coding"][0]["display"] = row[2]
        self.emit(resource)

    def medications(self, pid: str, sle: bool, weight: float, refractory: bool) -> None:
        """Filler drugs for everyone; for SLE, the conventional therapy I4 asks about, in full
        for `refractory` patients (the ones worked up for the trial)."""
        rng, as_of = self.rng, self.as_of
        for code, name, dose in rng.sample(self.other_meds, rng.randint(0, 4)):
            start = as_of - timedelta(days=rng.randrange(30, 2000))
            end = None if rng.random() < 0.6 else start + timedelta(days=rng.randrange(30, 400))
            self.medication(pid, (RXNORM, code, name), start, end, dose_mg=dose)
        if rng.random() < 0.04:  # a current systemic anti-infective
            code, display = rng.choice(self.anti_infectives)
            row = (ATC, code, display)
            start = as_of - timedelta(days=rng.randrange(1, 10))
            self.medication(pid, row, start, start + timedelta(days=10), dose_mg=500, per_day=3)
        if not sle:
            return
        first = as_of - timedelta(days=rng.randrange(400, 4000))
        if refractory or rng.random() < 0.85:  # glucocorticoids, sometimes at >= 1 mg/kg/day
            row, potency = rng.choice(self.glucocorticoids)
            high = refractory or rng.random() < 0.45
            dose = math.ceil(weight * (1.1 if high else 0.4) / potency)
            self.medication(
                pid, row, first, first + timedelta(days=rng.randrange(20, 90)), dose_mg=float(dose)
            )
        if refractory or rng.random() < 0.5:
            row = self.t.choice(rng, "cyclophosphamide", (RXNORM,))
            start = first + timedelta(days=rng.randrange(0, 60))
            self.medication(
                pid,
                row,
                start,
                start + timedelta(days=180),
                dose_mg=float(round(weight * 10, -1)),
                per_day=None,
            )
        for _ in range(rng.randint(1, 3)):
            row = self.t.choice(rng, "sle_immunosuppressants", (RXNORM,))
            start = first + timedelta(days=rng.randrange(0, 300))
            days = rng.randrange(200 if refractory else 60, 700)
            end = None if rng.random() < 0.5 else start + timedelta(days=days)
            self.medication(pid, row, start, end, dose_mg=200, per_day=2)
        if rng.random() < 0.05:  # G-CSF shortly before a blood count
            row = self.t.choice(rng, "gcsf", (RXNORM,))
            start = as_of - timedelta(days=rng.randrange(1, 30))
            self.medication(pid, row, start, start + timedelta(days=3), dose_mg=0.3, dose_unit="mg")

    def allergies(self, pid: str) -> None:
        rng, as_of = self.rng, self.as_of
        roll = rng.random()
        if roll < 0.12:
            system, code, _ = self.t.choice(rng, "no_known_allergy", (SNOMED,))
            self.emit(
                make_allergy(
                    self.uid(),
                    pid,
                    code=code,
                    system=system,
                    category=None,
                    recorded=as_of - timedelta(days=rng.randrange(1, 3000)),
                )
            )
        elif roll < 0.35:
            for _ in range(rng.randint(1, 2)):
                recorded = as_of - timedelta(days=rng.randrange(1, 5000))
                if rng.random() < 0.2:
                    code, _display = rng.choice(FOOD_ALLERGENS)
                    self.emit(
                        make_allergy(
                            self.uid(),
                            pid,
                            code=code,
                            system=SNOMED,
                            category="food",
                            recorded=recorded,
                        )
                    )
                    continue
                code, _display = rng.choice(DRUG_ALLERGENS)
                severe = rng.random() < 0.08
                manifestation = (
                    self.t.choice(rng, "anaphylaxis", (SNOMED,))[1]
                    if severe
                    else rng.choice(self.mild_reactions)[0]
                )
                self.emit(
                    make_allergy(
                        self.uid(),
                        pid,
                        code=code,
                        system=RXNORM,
                        criticality="high" if severe else rng.choice(("low", "low", None)),
                        severity="severe" if severe else rng.choice(("mild", "moderate", None)),
                        manifestation=manifestation if rng.random() < 0.8 else None,
                        recorded=recorded,
                    )
                )

    def procedures(self, pid: str) -> None:
        rng, as_of = self.rng, self.as_of
        for code, _display in rng.sample(self.other_procedures, rng.choice((0, 0, 1, 1, 2))):
            performed = as_of - timedelta(days=rng.randrange(1, 6000))
            self.emit(make_procedure(self.uid(), pid, code=code, performed=performed))
        if rng.random() < 0.006:
            system, code, _ = self.t.choice(rng, "dialysis", (SNOMED,))
            for _ in range(rng.randint(1, 4)):
                performed = as_of - timedelta(days=rng.randrange(1, 120))
                resource = make_procedure(self.uid(), pid, code=code, performed=performed)
                resource["code"]["coding"][0]["system"] = system
                self.emit(resource)


# ---------------------------------------------------------------- driver
def generate(
    patients: int,
    out: Path,
    seed: int,
    as_of: date,
    terminology: Path,
    sle_share: float = SLE_SHARE,
    filler_share: float = 1.0,
) -> dict[str, Any]:
    """Write the population to `out` (replacing it) and return its manifest."""
    tables = load_tables(terminology)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    handles = {
        kind: (partial / f"{kind}.ndjson").open("wb", buffering=1 << 20) for kind in RESOURCE_TYPES
    }
    try:
        writer = PatientWriter(tables, as_of, random.Random(seed), handles, sle_share, filler_share)
        step = max(1, patients // 10)
        for index in range(patients):
            writer.write()
            if (index + 1) % step == 0:
                print(f"  {index + 1}/{patients} patients", file=sys.stderr)
    finally:
        for handle in handles.values():
            handle.close()
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "patients": patients,
        "seed": seed,
        "as_of": as_of.isoformat(),
        "sle_share": sle_share,
        "filler_share": filler_share,
        "terminology_digest": tables.digest,
        "resources": sum(writer.counts.values()),
        "by_type": writer.counts,
        "bytes": sum(p.stat().st_size for p in partial.glob("*.ndjson")),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (partial / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 11, 27))
    parser.add_argument("--terminology", type=Path, default=REPO / "terminology")
    parser.add_argument(
        "--sle-share",
        type=float,
        default=SLE_SHARE,
        help=f"share of patients with SLE (default {SLE_SHARE}, a general hospital's record); "
        "near 1 makes an SLE-heavy population, where most lines are ones the trial reads",
    )
    parser.add_argument(
        "--filler-share",
        type=float,
        default=1.0,
        help="share of the panels no criterion reads (vitals, chemistry, lipids, ...) that "
        "are written (default 1); with --sle-share 1, 0.25 makes most lines relevant",
    )
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error("--patients must be at least 1")
    if not (0 <= args.sle_share <= 1 and 0 <= args.filler_share <= 1):
        parser.error("--sle-share and --filler-share must be between 0 and 1")
    manifest = generate(
        args.patients,
        args.out,
        args.seed,
        args.as_of,
        args.terminology,
        args.sle_share,
        args.filler_share,
    )
    per_patient = manifest["by_type"]["Observation"] / manifest["patients"]
    print(
        f"wrote {manifest['patients']} patients, {manifest['resources']} resources "
        f"({per_patient:.0f} Observations/patient), {manifest['bytes'] / 1e6:.0f} MB "
        f"to {args.out} in {manifest['seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
