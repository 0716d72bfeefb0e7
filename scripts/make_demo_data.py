"""Generate the bundled synthetic demo population for NCT06946485 (demo/NCT06946485/).

Deterministic: the same script writes the same files. Every patient is made up. Each file
is a FHIR transaction Bundle named after the case it exercises, anchored to AS_OF, and
written in the unit style of a Chinese (SI) or a US lab. The scenarios cover the pass,
fail and unknown paths of every criterion; `EXPECTED` records what each should show, and
tests/test_demo_data.py holds the engine to it
(tests/data/demo_expected.json). p51 onwards send one record the way a hospital system does
(SNOMED CT below a listed code, clinical-drug RxNorm codes, MedicationAdministration, an
allergy without `category`, Chinese result text, titers, lab unit spellings, several reference
ranges, a deceased patient). Every patient carries an MRN (Patient.identifier, type MR).

    python scripts/make_demo_data.py [--out demo/NCT06946485] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from service.synthetic import (
    ICD10CM,
    LOINC,
    LUPUS,
    SNOMED,
    make_allergy,
    make_condition,
    make_medication,
    make_observation,
    make_patient,
    make_procedure,
    make_research_subject,
    transaction_bundle,
)

AS_OF = date(2026, 11, 20)
ROOT = Path(__file__).resolve().parent.parent
# What each case should show; kept beside the tests, not in demo/ (which is screened as data).
EXPECTED = ROOT / "tests" / "data" / "demo_expected.json"
LOCAL_LAB = "http://hospital.example.org/fhir/CodeSystem/lab"
ATC = "http://www.whocc.no/atc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
BILAG_DOMAINS = [
    "constitutional",
    "mucocutaneous",
    "neuropsychiatric",
    "musculoskeletal",
    "cardiorespiratory",
    "gastrointestinal",
    "ophthalmic",
    "renal",
    "haematological",
]
POSITIVE, NEGATIVE = ("http://snomed.info/sct", "10828004"), ("http://snomed.info/sct", "260385009")
# Business identifiers: every patient carries a medical record number (Patient.identifier, type
# MR) as the hospital's EHR sends it, so results can name the chart.
MRN_SYSTEM = "http://hospital.example.org/fhir/NamingSystem/mrn"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
LOCAL_DX = "http://hospital.example.org/fhir/CodeSystem/diagnosis"
LOCAL_DRUG = "http://hospital.example.org/fhir/CodeSystem/drug"


def days_ago(n: int) -> date:
    return AS_OF - timedelta(days=n)


@dataclass
class Case:
    """One synthetic patient: its resources, and what the engine should conclude."""

    slug: str
    birth: str | None
    sex: str | None
    style: str = "si"  # "si" (China) or "us"
    resources: list[dict[str, Any]] = field(default_factory=list)
    expect_status: str = ""
    expect: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    @property
    def pid(self) -> str:
        return self.slug.split("-")[0]

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{self.pid}-{prefix}{self.counter}"

    def add(self, resource: dict[str, Any]) -> None:
        self.resources.append(resource)

    def obs(self, when: date, code: str, **kw: Any) -> None:
        self.add(make_observation(self.next_id("o"), self.pid, when, code=code, **kw))

    def dx(self, code: str, system: str = SNOMED, **kw: Any) -> None:
        kw.setdefault("onset", date(2019, 5, 1))
        self.add(make_condition(self.next_id("c"), self.pid, code=code, system=system, **kw))

    def med(self, code: str, **kw: Any) -> None:
        self.add(make_medication(self.next_id("m"), self.pid, code=code, **kw))

    def patient(self) -> dict[str, Any]:
        return next(r for r in self.resources if r["resourceType"] == "Patient")

    def drop_obs(self, *codes: str) -> None:
        """Remove the panel's results with these codes (a scenario sends its own instead)."""
        self.resources = [
            r
            for r in self.resources
            if not (r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] in codes)
        ]

    def lab(self, when: date, code: str, display: str, **value: Any) -> None:
        """A result shaped as a hospital LIS sends it: LOINC with display, a timestamp with the
        site's UTC offset, and the value element (`valueQuantity`, `valueString` ...) as given."""
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.next_id("o"),
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{self.pid}"},
            "effectiveDateTime": f"{when.isoformat()}T09:30:00+08:00",
        }
        resource.update(value)
        self.add(resource)

    def administration(
        self, when: date, coding: dict[str, str], dose: tuple[float, str] | None = None
    ) -> None:
        """A MedicationAdministration (a nurse's record of one dose given on the ward)."""
        resource: dict[str, Any] = {
            "resourceType": "MedicationAdministration",
            "id": self.next_id("ma"),
            "status": "completed",
            "medicationCodeableConcept": {"coding": [coding], "text": coding["display"]},
            "subject": {"reference": f"Patient/{self.pid}"},
            "effectiveDateTime": f"{when.isoformat()}T10:00:00+08:00",
        }
        if dose is not None:
            resource["dosage"] = {"dose": {"value": dose[0], "unit": dose[1]}}
        self.add(resource)


# ------------------------------------------------------------------ building blocks
def labs(case: Case, when: date | None = None, **override: Any) -> None:
    """A complete screening panel that passes every lab criterion, in the case's unit style."""
    d = when or days_ago(10)
    us = case.style == "us"
    v = {
        "wbc": 5.2,
        "anc": 3.1,
        "hgb": 118.0,
        "alt": 25.0,
        "ast": 28.0,
        "tbil": 9.0,
        "crea": 62.0,
        "inr": 1.0,
        "pt": 12.0,
        "lvef": 62.0,
        "weight": 58.0,
    } | override
    if us:
        case.obs(d, "6690-2", value=v["wbc"], unit="K/uL", ucum=False)
        if v["anc"] is not None:
            case.obs(d, "751-8", value=v["anc"] * 1000, unit="/uL")
        case.obs(d, "718-7", value=round(v["hgb"] / 10, 2), unit="g/dL")
        case.obs(d, "1975-2", value=round(v["tbil"] / 17.1, 2), unit="mg/dL", ref_high=1.2)
        case.obs(d, "2160-0", value=round(v["crea"] / 88.42, 2), unit="mg/dL")
        case.obs(days_ago(20), "29463-7", value=round(v["weight"] / 0.45359237, 1), unit="[lb_av]")
    else:
        case.obs(d, "6690-2", value=v["wbc"], unit="10*9/L")
        if v["anc"] is not None:
            case.obs(d, "751-8", value=v["anc"], unit="10*9/L")
        case.obs(d, "718-7", value=v["hgb"], unit="g/L")
        case.obs(d, "14631-6", value=v["tbil"], unit="umol/L", ref_high=21.0)
        case.obs(d, "14682-9", value=v["crea"], unit="umol/L")
        case.obs(days_ago(20), "29463-7", value=v["weight"], unit="kg")
    case.obs(d, "1742-6", value=v["alt"], unit="U/L", ref_high=40.0)
    case.obs(d, "1920-8", value=v["ast"], unit="U/L", ref_high=40.0)
    case.obs(d, "6301-6", value=v["inr"], unit="{INR}", ref_high=1.2)
    case.obs(d, "5902-2", value=v["pt"], unit="s", ref_high=13.5)
    if v["lvef"] is not None:
        case.obs(d - timedelta(days=20), "10230-1", value=v["lvef"], unit="%")


def serology(case: Case, when: date | None = None, **override: Any) -> None:
    """Hepatitis B/C, HIV and syphilis screening, all negative unless overridden."""
    d = when or days_ago(12)
    results = {
        "hbsag": NEGATIVE,
        "hbcab": NEGATIVE,
        "hcv_ab": NEGATIVE,
        "hiv": NEGATIVE,
        "tpha": NEGATIVE,
        "rpr": NEGATIVE,
    } | override
    codes = {
        "hbsag": "5196-1",
        "hbcab": "16933-4",
        "hcv_ab": "16128-1",
        "hiv": "56888-1",
        "tpha": "24110-9",
        "rpr": "20507-0",
    }
    for name, value in results.items():
        if value is None:
            continue
        if isinstance(value, str):
            case.obs(d, codes[name], text=value)
        else:
            case.obs(d, codes[name], coded=value)


def activity(case: Case, sledai: float | None = 12, bilag: dict[str, str] | None = None) -> None:
    d = days_ago(14)
    if sledai is not None:
        case.obs(d, "sledai-2k", system=LUPUS, value=sledai, unit="{score}")
    grades = {domain: "D" for domain in BILAG_DOMAINS} | (
        bilag if bilag is not None else {"renal": "A"}
    )
    for domain, grade in grades.items():
        if grade:
            case.obs(d, f"bilag-2004-{domain}", system=LUPUS, text=grade)


def sle(case: Case, code: str = "55464009", system: str = SNOMED, **kw: Any) -> None:
    case.dx(code, system, onset=date(2018, 3, 1), **kw)


def therapy(case: Case, *, pred_mg: float = 60, cyc: bool = True, mmf_months: int = 14) -> None:
    """Prednisone at pred_mg/day, IV cyclophosphamide, then mycophenolate for mmf_months,
    with the body weight taken when the steroid course began (mg/kg/day needs it)."""
    start = date(2024, 1, 10)
    if case.style == "us":
        case.obs(start - timedelta(days=3), "29463-7", value=130.0, unit="[lb_av]")
    else:
        case.obs(start - timedelta(days=3), "29463-7", value=60.0, unit="kg")
    case.med("8640", start=start, end=start + timedelta(days=42), dose_mg=pred_mg)
    if cyc:
        case.med("3002", start=date(2024, 2, 1), end=date(2024, 7, 31), dose_mg=750, per_day=None)
    if mmf_months:
        end = date(2024, 3, 1) + timedelta(days=int(mmf_months * 30.5))
        case.med("68149", start=date(2024, 3, 1), end=end, dose_mg=1000, per_day=2)


def full(case: Case, **lab_override: Any) -> Case:
    """A patient who meets every automatic criterion (before a scenario changes one thing)."""
    case.add(make_patient(case.pid, case.birth, case.sex))
    sle(case)
    activity(case)
    therapy(case)
    labs(case, **lab_override)
    serology(case)
    return case


# ------------------------------------------------------------------ the scenarios
def scenarios() -> list[Case]:
    cases: list[Case] = []

    def case(
        slug: str,
        birth: str | None,
        sex: str | None,
        status: str,
        style: str = "si",
        expect: dict[str, str] | None = None,
        build: Callable[[Case], None] | None = None,
        base: bool = True,
        **lab_override: Any,
    ) -> Case:
        c = Case(slug, birth, sex, style, expect_status=status, expect=expect or {})
        if base:
            full(c, **lab_override)
        if build:
            build(c)
        cases.append(c)
        return c

    case(
        "p01-likely-eligible-si-units",
        "1991-04-12",
        "female",
        "likely_eligible",
        expect={"I1": "pass", "I6.hgb": "pass", "I7.hcg": "unknown", "E10.hbv": "pass"},
    )
    case(
        "p02-likely-eligible-us-units",
        "1987-09-30",
        "female",
        "likely_eligible",
        style="us",
        expect={"I6.wbc": "pass", "I6.tbil": "pass", "I6.crcl": "pass", "I4": "pass"},
    )
    case(
        "p03-likely-eligible-male",
        "1979-01-05",
        "male",
        "likely_eligible",
        expect={"I7.hcg": "not_applicable", "E13": "not_applicable", "I7.contraception": "unknown"},
    )

    def local_codes(c: Case) -> None:
        c.resources = [
            r
            for r in c.resources
            if not (
                r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "718-7"
            )
        ]
        c.obs(days_ago(10), "HGB", system=LOCAL_LAB, value=121, unit="g/L")

    case(
        "p04-site-local-hemoglobin-code",
        "1994-06-18",
        "female",
        "likely_eligible",
        build=local_codes,
        expect={"I6.hgb": "pass"},
    )
    case(
        "p05-hemoglobin-58-g-per-l",
        "1990-02-11",
        "female",
        "ineligible",
        hgb=58.0,
        expect={"I6.hgb": "fail"},
    )
    case(
        "p06-hemoglobin-exactly-6.0-g-per-dl",
        "1985-12-01",
        "female",
        "likely_eligible",
        style="us",
        hgb=60.0,
        expect={"I6.hgb": "pass"},
    )
    case(
        "p07-leukopenia-wbc-2.5",
        "1992-08-08",
        "female",
        "ineligible",
        wbc=2.5,
        expect={"I6.wbc": "fail"},
    )
    case(
        "p08-anc-derived-from-differential",
        "1989-03-03",
        "female",
        "likely_eligible",
        anc=None,
        build=lambda c: c.obs(days_ago(10), "770-8", value=55.0, unit="%"),
        expect={"I6.anc": "pass"},
    )

    def gcsf(c: Case) -> None:
        c.med("68442", start=days_ago(18), end=days_ago(16), dose_mg=0.3, per_day=1)

    case(
        "p09-anc-within-2-weeks-of-g-csf",
        "1993-11-21",
        "female",
        "possibly_eligible",
        build=gcsf,
        expect={"I6.anc": "unknown"},
    )
    case(
        "p10-alt-and-ast-4x-uln",
        "1988-05-14",
        "female",
        "ineligible",
        alt=165.0,
        ast=150.0,
        expect={"I6.alt": "fail", "I6.ast": "fail"},
    )
    case(
        "p11-gilbert-bilirubin-2.5x-uln",
        "1996-07-07",
        "male",
        "likely_eligible",
        tbil=52.0,
        build=lambda c: c.dx("E80.4", ICD10CM, onset=date(2015, 1, 1)),
        expect={"I6.tbil": "pass"},
    )
    case(
        "p12-bilirubin-2x-uln-us-units",
        "1986-10-10",
        "female",
        "ineligible",
        style="us",
        tbil=42.0,
        expect={"I6.tbil": "fail"},
    )
    case(
        "p13-low-creatinine-clearance",
        "1963-01-15",
        "female",
        "ineligible",
        crea=130.0,
        weight=45.0,
        expect={"I6.crcl": "fail"},
    )

    def measured(c: Case) -> None:
        # A measured 24-hour clearance below 60 is shown but does not decide: the protocol asks
        # for Cockcroft-Gault, which passes here (creatinine 70 umol/L, 50 kg, 44: 71.6 mL/min).
        c.obs(days_ago(9), "2164-2", value=45, unit="mL/min")

    case(
        "p14-measured-creatinine-clearance",
        "1982-04-04",
        "female",
        "likely_eligible",
        crea=70.0,
        weight=50.0,
        build=measured,
        expect={"I6.crcl": "pass"},
    )
    case(
        "p15-inr-2.0-on-anticoagulant",
        "1984-09-09",
        "female",
        "ineligible",
        inr=2.0,
        pt=24.0,
        expect={"I6.inr": "fail", "I6.pt": "fail"},
    )
    case(
        "p16-lvef-45-percent",
        "1981-12-12",
        "female",
        "ineligible",
        lvef=45.0,
        expect={"I6.lvef": "fail"},
    )

    def low_sledai(c: Case) -> None:
        c.resources = [r for r in c.resources if "sledai" not in json.dumps(r)]
        c.obs(days_ago(14), "sledai-2k", system=LUPUS, value=6, unit="{score}")

    case(
        "p17-sledai-exactly-6",
        "1995-05-05",
        "female",
        "ineligible",
        build=low_sledai,
        expect={"I2": "fail"},
    )

    def one_b(c: Case) -> None:
        c.resources = [r for r in c.resources if "bilag" not in json.dumps(r)]
        activity(c, sledai=None, bilag={"mucocutaneous": "B"})

    case(
        "p18-bilag-one-b-all-domains",
        "1990-10-20",
        "female",
        "ineligible",
        build=one_b,
        expect={"I3": "fail"},
    )

    def partial_workup(c: Case) -> None:
        c.add(make_patient(c.pid, c.birth, c.sex))
        sle(c)
        c.obs(days_ago(14), "sledai-2k", system=LUPUS, value=9, unit="{score}")
        c.obs(days_ago(14), "bilag-2004-renal", system=LUPUS, text="B")
        c.med("5521", start=date(2023, 1, 1), status="active", dose_mg=200, per_day=2)
        labs(c)

    case(
        "p19-partial-workup-needs-bilag-serology-therapy",
        "1997-02-28",
        "female",
        "possibly_eligible",
        base=False,
        build=partial_workup,
        expect={"I3": "unknown", "I4": "unknown", "E10.hiv": "unknown"},
    )
    case(
        "p20-age-17-turns-18-tomorrow", "2008-11-21", "female", "ineligible", expect={"I5": "fail"}
    )
    case("p21-66th-birthday-today", "1960-11-20", "female", "ineligible", expect={"I5": "fail"})

    def cutaneous(c: Case) -> None:
        c.resources = [r for r in c.resources if r["resourceType"] != "Condition"]
        c.dx("L93.0", ICD10CM, onset=date(2020, 6, 1))

    case(
        "p22-discoid-lupus-only",
        "1983-03-17",
        "female",
        "possibly_eligible",
        build=cutaneous,
        expect={"I1": "unknown"},
    )

    def rheumatoid(c: Case) -> None:
        c.add(make_patient(c.pid, c.birth, c.sex))
        c.dx("69896004", onset=date(2016, 1, 1))  # rheumatoid arthritis: not in any trial set
        labs(c)

    case(
        "p23-rheumatoid-arthritis-no-sle",
        "1975-08-19",
        "female",
        "ineligible",
        base=False,
        build=rheumatoid,
        expect={"I1": "fail"},
    )

    def hbsag_pos(c: Case) -> None:
        c.resources = [r for r in c.resources if "5196-1" not in json.dumps(r)]
        c.obs(days_ago(12), "5196-1", coded=POSITIVE)

    case(
        "p24-hbsag-positive",
        "1986-06-06",
        "male",
        "ineligible",
        build=hbsag_pos,
        expect={"E10.hbv": "fail"},
    )

    def core_ab_dna_undetectable(c: Case) -> None:
        c.resources = [r for r in c.resources if "16933-4" not in json.dumps(r)]
        c.obs(days_ago(12), "16933-4", coded=POSITIVE)
        # "<20" alone is below quantitation, not "not detected": the lab's ND flag says it.
        c.obs(days_ago(8), "29615-2", value=20, unit="[IU]/mL", comparator="<", interpretation="ND")

    case(
        "p25-hbcab-positive-dna-undetectable",
        "1980-01-31",
        "female",
        "likely_eligible",
        build=core_ab_dna_undetectable,
        expect={"E10.hbv": "pass"},
    )

    def core_ab_no_dna(c: Case) -> None:
        c.resources = [r for r in c.resources if "16933-4" not in json.dumps(r)]
        c.obs(days_ago(12), "16933-4", text="Positive")

    case(
        "p26-hbcab-positive-no-dna",
        "1991-09-09",
        "female",
        "possibly_eligible",
        build=core_ab_no_dna,
        expect={"E10.hbv": "unknown"},
    )

    def hcv(c: Case) -> None:
        c.resources = [r for r in c.resources if "16128-1" not in json.dumps(r)]
        c.obs(days_ago(12), "16128-1", coded=POSITIVE)
        c.obs(days_ago(8), "11011-4", value=154000, unit="[IU]/mL")

    case(
        "p27-hcv-viraemic",
        "1977-07-27",
        "male",
        "ineligible",
        build=hcv,
        expect={"E10.hcv": "fail"},
    )

    def hiv(c: Case) -> None:
        c.resources = [r for r in c.resources if "56888-1" not in json.dumps(r)]
        c.obs(days_ago(12), "56888-1", text="阳性")

    case(
        "p28-hiv-positive-chinese-result-text",
        "1989-12-25",
        "female",
        "ineligible",
        build=hiv,
        expect={"E10.hiv": "fail"},
    )

    def false_rpr(c: Case) -> None:
        c.resources = [r for r in c.resources if "20507-0" not in json.dumps(r)]
        c.obs(days_ago(12), "20507-0", text="Reactive")

    case(
        "p29-rpr-reactive-tpha-negative",
        "1992-03-08",
        "female",
        "likely_eligible",
        build=false_rpr,
        expect={"E10.syphilis": "pass"},
    )
    case(
        "p30-history-of-ttp",
        "1985-04-25",
        "female",
        "ineligible",
        build=lambda c: c.dx(
            "78129009", onset=date(2021, 2, 2), clinical="resolved", abatement=date(2021, 4, 1)
        ),
        expect={"E2": "fail"},
    )
    case(
        "p31-breast-cancer-2019",
        "1970-10-02",
        "female",
        "ineligible",
        build=lambda c: c.dx(
            "C50.911",
            ICD10CM,
            onset=date(2019, 9, 1),
            clinical="remission",
            abatement=date(2020, 3, 1),
        ),
        expect={"E8": "fail"},
    )
    case(
        "p32-basal-cell-carcinoma-2015-excepted",
        "1968-02-14",
        "male",
        "likely_eligible",
        build=lambda c: c.dx(
            "C44.311",
            ICD10CM,
            onset=date(2015, 1, 5),
            clinical="resolved",
            abatement=date(2015, 2, 20),
        ),
        expect={"E8": "pass"},
    )

    def dialysis(c: Case) -> None:
        c.dx("N18.6", ICD10CM, onset=date(2025, 5, 1))
        c.add(make_procedure(c.next_id("pr"), c.pid, code="302497006", performed=days_ago(3)))

    case(
        "p33-end-stage-renal-disease-on-dialysis",
        "1979-05-19",
        "female",
        "ineligible",
        crea=600.0,
        build=dialysis,
        expect={"E9": "fail", "I6.crcl": "fail"},
    )
    case(
        "p34-active-pneumonia",
        "1990-06-30",
        "female",
        "ineligible",
        build=lambda c: c.dx("J18.9", ICD10CM, onset=days_ago(6)),
        expect={"E4": "fail"},
    )

    def antibiotics(c: Case) -> None:
        c.med(
            "J01CA04",
            system=ATC,
            start=days_ago(3),
            status="active",
            dose_mg=500,
            per_day=3,
            kind="MedicationRequest",
        )

    case(
        "p35-on-antibiotics-no-diagnosis",
        "1994-01-16",
        "female",
        "possibly_eligible",
        build=antibiotics,
        expect={"E4": "unknown"},
    )
    case(
        "p36-anaphylaxis-to-penicillin",
        "1987-11-11",
        "female",
        "ineligible",
        build=lambda c: c.add(
            make_allergy(
                c.next_id("a"),
                c.pid,
                code="7980",
                criticality="high",
                severity="severe",
                manifestation="39579001",
                recorded="2012-05-05",
            )
        ),
        expect={"E3": "fail"},
    )
    case(
        "p37-other-trial-two-months-ago",
        "1988-08-28",
        "female",
        "ineligible",
        build=lambda c: c.add(
            make_research_subject(
                c.next_id("rs"),
                c.pid,
                study="other-lupus-trial",
                status="off-study",
                start="2025-06-01",
                end=days_ago(60),
            )
        ),
        expect={"E12": "fail"},
    )

    def pregnant(c: Case) -> None:
        c.dx("77386006", onset=days_ago(70))
        c.obs(days_ago(3), "21198-7", value=52000, unit="m[IU]/mL")

    case(
        "p38-pregnant-positive-hcg",
        "1995-09-14",
        "female",
        "ineligible",
        build=pregnant,
        expect={"E13": "fail", "I7.hcg": "fail"},
    )
    case(
        "p39-schizophrenia",
        "1986-02-02",
        "male",
        "ineligible",
        build=lambda c: c.dx("58214004", onset=date(2010, 1, 1)),
        expect={"E11": "fail"},
    )

    def stale(c: Case) -> None:
        c.add(make_patient(c.pid, c.birth, c.sex))
        sle(c)
        activity(c)
        therapy(c)
        labs(c, when=days_ago(120))  # LVEF 140 days old as well
        serology(c, when=days_ago(150))

    case(
        "p40-labs-older-than-90-days",
        "1991-07-19",
        "female",
        "possibly_eligible",
        base=False,
        build=stale,
        expect={"I6.hgb": "unknown", "E10.hiv": "unknown", "I5": "pass"},
    )

    def messy(c: Case) -> None:
        bad = make_observation(
            c.next_id("o"), c.pid, days_ago(5), code="718-7", value=1, unit="g/L"
        )
        bad["valueQuantity"]["value"] = "1O2"  # a typo in the source system: not a number
        bad["id"] = f"{c.pid}-broken-value"
        c.add(bad)
        wrong = make_observation(
            c.next_id("o"),
            c.pid,
            days_ago(4),
            code="718-7",
            value=41,
            unit="g/L",
            status="entered-in-error",
        )
        c.add(wrong)

    case(
        "p41-malformed-and-entered-in-error-results",
        "1990-04-01",
        "female",
        "possibly_eligible",
        build=messy,
        # The newest hemoglobin ("1O2") cannot be read: the older one does not decide.
        expect={"I6.hgb": "unknown"},
    )
    case(
        "p42-neuropsychiatric-lupus-seizures",
        "1993-10-10",
        "female",
        "ineligible",
        build=lambda c: c.dx("84757009", onset=date(2022, 8, 8)),
        expect={"E5": "fail"},
    )
    case(
        "p43-heart-failure",
        "1972-12-03",
        "female",
        "ineligible",
        build=lambda c: c.dx("I50.22", ICD10CM, onset=date(2024, 4, 4)),
        expect={"E6": "fail"},
    )
    case(
        "p44-x-linked-agammaglobulinemia",
        "1999-05-29",
        "male",
        "ineligible",
        build=lambda c: c.dx("D80.0", ICD10CM, onset=date(2001, 1, 1)),
        expect={"E7": "fail"},
    )
    case(
        "p45-breastfeeding",
        "1994-12-12",
        "female",
        "ineligible",
        build=lambda c: c.dx("Z39.1", ICD10CM, onset=days_ago(40)),
        expect={"I7.lactation": "fail"},
    )
    case(
        "p46-birth-year-only-1960", "1960", "female", "possibly_eligible", expect={"I5": "unknown"}
    )
    case(
        "p47-low-steroid-dose-therapy-unknown",
        "1990-01-20",
        "female",
        "possibly_eligible",
        build=lambda c: _replace_prednisone(c, 20),
        expect={"I4": "unknown"},
    )
    case(
        "p48-neutropenia-anc-0.8",
        "1992-12-30",
        "female",
        "ineligible",
        anc=0.8,
        expect={"I6.anc": "fail"},
    )

    def syphilis(c: Case) -> None:
        c.resources = [
            r
            for r in c.resources
            if "24110-9" not in json.dumps(r) and "20507-0" not in json.dumps(r)
        ]
        c.obs(days_ago(12), "24110-9", coded=POSITIVE)
        c.obs(days_ago(12), "20507-0", text="Reactive")

    case(
        "p49-syphilis-tpha-and-rpr-positive",
        "1983-06-21",
        "male",
        "ineligible",
        build=syphilis,
        expect={"E10.syphilis": "fail"},
    )

    def unreadable_history(c: Case) -> None:
        broken = make_condition(c.next_id("c"), c.pid, code="55464009", onset="2020-13-45")
        broken["id"] = f"{c.pid}-broken-onset"
        c.add(broken)  # an impossible onset date: the record cannot be read
        text_only = make_condition(c.next_id("c"), c.pid, code="x", onset="2021-01-01")
        text_only["code"] = {"text": "history of thrombotic event, details at referring hospital"}
        c.add(text_only)  # no code: could be an exclusion, so it withholds passes
        unclear = make_allergy(c.next_id("a"), c.pid, code="2670", recorded="2019-03-03")
        c.add(unclear)  # codeine allergy with no criticality or reaction recorded
        study = make_research_subject(
            c.next_id("rs"), c.pid, study="x", status="on-study", start="2026-01-01"
        )
        del study["study"]
        study["id"] = f"{c.pid}-broken-study"
        c.add(study)  # names no study: cannot be read

    case(
        "p50-uncoded-condition-and-unreadable-records",
        "1989-02-17",
        "female",
        "possibly_eligible",
        build=unreadable_history,
        expect={
            "I1": "pass",
            "E2": "unknown",
            "E8": "unknown",
            "E3": "unknown",
            "E12": "unknown",
            "E13": "unknown",
            "I6.lvef": "pass",
        },
    )
    # -------------------------------------------------------------- records as hospitals send them
    # p51 onwards: each shows one behaviour of issue 9 on a record shaped the way an EHR or LIS
    # sends it (codes one level deeper than a list's root, clinical-drug codes, administrations,
    # no allergy category, Chinese result text, lab unit spellings, several reference ranges).
    case(
        "p51-anterior-wall-stemi-deeper-snomed-code",
        "1969-03-22",
        "male",
        "ineligible",
        build=lambda c: c.dx("54329005", onset=days_ago(50)),  # a descendant of "MI"
        expect={"E6": "fail"},
    )

    def nephritis_class(c: Case) -> None:
        c.resources = [r for r in c.resources if r["resourceType"] != "Condition"]
        sle(c, "36402006")  # SLE glomerulonephritis, WHO class IV: a descendant of SLE

    case(
        "p52-lupus-nephritis-class-iv-snomed-code",
        "1993-05-09",
        "female",
        "likely_eligible",
        build=nephritis_class,
        expect={"I1": "pass"},
    )

    def gcsf_clinical_drug(c: Case) -> None:
        neupogen = {
            "system": RXNORM,
            "code": "1649944",
            "display": "1 ML filgrastim 0.3 MG/ML Injection",
        }
        for n in (17, 16, 15):  # three daily doses, the last 5 days before the ANC
            c.administration(days_ago(n), neupogen, (300, "ug"))

    case(
        "p53-g-csf-clinical-drug-administered-before-anc",
        "1990-08-14",
        "female",
        "possibly_eligible",
        build=gcsf_clinical_drug,
        expect={"I6.anc": "unknown"},
    )

    def iv_cyclophosphamide(c: Case) -> None:
        c.resources = [r for r in c.resources if '"3002"' not in json.dumps(r)]
        ampoule = {
            "system": RXNORM,
            "code": "1734919",
            "display": "cyclophosphamide 1000 MG Injection",
        }
        for month in range(6):  # monthly NIH-protocol pulses, one administration each
            c.administration(date(2024, 2, 1) + timedelta(days=28 * month), ampoule, (750, "mg"))

    case(
        "p54-iv-cyclophosphamide-as-administrations",
        "1987-01-30",
        "female",
        "likely_eligible",
        build=iv_cyclophosphamide,
        expect={"I4": "pass"},
    )

    def sulfonamide_allergy(c: Case) -> None:
        c.add(
            {
                "resourceType": "AllergyIntolerance",
                "id": c.next_id("a"),
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "active",
                        }
                    ]
                },
                # No `category`: most EHRs leave it out. The SNOMED substance says "drug".
                "code": {
                    "coding": [
                        {
                            "system": SNOMED,
                            "code": "387406002",
                            "display": "Sulfonamide (substance)",
                        }
                    ],
                    "text": "磺胺类药物过敏",
                },
                "patient": {"reference": f"Patient/{c.pid}"},
                "criticality": "high",
                "recordedDate": "2019-01-01",
            }
        )

    case(
        "p55-severe-sulfonamide-allergy-without-category",
        "1984-11-03",
        "female",
        "ineligible",
        build=sulfonamide_allergy,
        expect={"E3": "fail"},
    )

    def hbsag_index(c: Case) -> None:
        c.drop_obs("5196-1")
        c.lab(
            days_ago(12),
            "5196-1",
            "HBsAg",
            valueQuantity={"value": 250.0, "unit": "COI"},
            interpretation=[{"coding": [{"system": V3_INTERPRETATION, "code": "H"}]}],
        )

    case(
        "p56-hbsag-index-value-with-high-flag",
        "1978-04-16",
        "male",
        "ineligible",
        build=hbsag_index,
        expect={"E10.hbv": "fail"},
    )

    def rpr_titer(c: Case) -> None:
        c.drop_obs("20507-0", "24110-9")
        c.lab(days_ago(12), "20507-0", "RPR", valueString="1:8")
        c.lab(days_ago(12), "24312-1", "TPPA", valueString="阳性(+)")

    case(
        "p57-rpr-titer-1-to-8-and-reactive-tppa",
        "1982-07-07",
        "male",
        "ineligible",
        build=rpr_titer,
        expect={"E10.syphilis": "fail"},
    )

    def wbc_spelling(c: Case) -> None:
        c.drop_obs("6690-2", "751-8")
        c.lab(
            days_ago(10),
            "6690-2",
            "白细胞计数",
            valueQuantity={"value": 2.5, "unit": "\u00d710^9/L"},
        )  # the multiplication sign, as Chinese LIS print it
        c.lab(
            days_ago(10),
            "751-8",
            "中性粒细胞绝对值",
            valueQuantity={"value": 1.6, "unit": "10^9/L"},
        )

    case(
        "p58-wbc-2.5-in-x10-9-per-l-spelling",
        "1991-02-19",
        "female",
        "ineligible",
        build=wbc_spelling,
        expect={"I6.wbc": "fail", "I6.anc": "pass"},
    )

    def inr_ranges(c: Case) -> None:
        c.drop_obs("6301-6")
        normal = {"coding": [{"system": RANGE_MEANING, "code": "normal"}]}
        therapeutic = {"coding": [{"system": RANGE_MEANING, "code": "therapeutic"}]}
        c.lab(
            days_ago(10),
            "6301-6",
            "INR",
            valueQuantity={"value": 2.0, "unit": "{INR}"},
            referenceRange=[
                {"low": {"value": 0.8}, "high": {"value": 1.2}, "type": normal},
                {"low": {"value": 2.0}, "high": {"value": 3.0}, "type": therapeutic},
            ],
        )

    case(
        "p59-inr-2.0-normal-and-therapeutic-ranges",
        "1976-10-28",
        "female",
        "ineligible",
        build=inr_ranges,
        expect={"I6.inr": "fail"},
    )

    def lvef_fraction(c: Case) -> None:
        c.drop_obs("10230-1")
        c.lab(days_ago(30), "10230-1", "LVEF", valueQuantity={"value": 0.58, "unit": "%"})

    case(
        "p60-lvef-sent-as-fraction-0.58-percent",
        "1989-06-25",
        "female",
        "likely_eligible",
        build=lvef_fraction,
        expect={"I6.lvef": "pass"},
    )

    def local_nephritis(c: Case) -> None:
        c.resources = [r for r in c.resources if r["resourceType"] != "Condition"]
        c.dx("LN-4", LOCAL_DX, onset=date(2018, 1, 1))
        c.resources[-1]["code"]["coding"][0]["display"] = "狼疮性肾炎 IV型"
        c.resources[-1]["code"]["text"] = "狼疮性肾炎 IV型"

    case(
        "p61-lupus-nephritis-local-code-chinese-text",
        "1995-01-12",
        "female",
        "possibly_eligible",
        build=local_nephritis,
        expect={"I1": "unknown"},
    )

    def unmapped_gcsf(c: Case) -> None:
        local = {
            "system": LOCAL_DRUG,
            "code": "X-77",
            "display": "重组人粒细胞刺激因子注射液 (非格司亭) 150ug",
        }
        c.administration(days_ago(15), local, (150, "ug"))

    case(
        "p62-unmapped-g-csf-named-filgrastim-in-chinese",
        "1992-09-02",
        "female",
        "possibly_eligible",
        build=unmapped_gcsf,
        expect={"I6.anc": "unknown"},
    )

    def deceased(c: Case) -> None:
        c.patient()["deceasedDateTime"] = "2026-06-01"

    case(
        "p63-deceased-before-screening",
        "1980-12-05",
        "female",
        "ineligible",
        build=deceased,
        expect={"I1": "pass"},
    )

    def hbv_dna_loq(c: Case) -> None:
        c.drop_obs("5196-1", "16933-4", "56888-1", "20507-0", "24110-9")
        d = days_ago(12)
        c.lab(d, "5196-1", "乙肝表面抗原", valueString="阴性")
        c.lab(d, "16933-4", "乙肝核心抗体", valueString="阳性(+)")
        c.lab(d, "56888-1", "HIV抗体", valueString="阴性")
        c.lab(d, "20507-0", "RPR", valueString="阴性(-)")
        c.lab(d, "24110-9", "TPHA", valueString="(-)")
        # "<20" is below quantitation, not "not detected": no ND flag, no 未检出 text.
        c.lab(
            days_ago(8),
            "29615-2",
            "HBV DNA",
            valueQuantity={"value": 20, "comparator": "<", "unit": "IU/mL"},
        )

    case(
        "p64-hbcab-positive-hbv-dna-below-quantitation",
        "1985-03-30",
        "female",
        "possibly_eligible",
        build=hbv_dna_loq,
        expect={"E10.hbv": "unknown", "E10.hiv": "pass", "E10.syphilis": "pass"},
    )

    def old_antibiotic(c: Case) -> None:
        c.add(
            {
                "resourceType": "MedicationRequest",
                "id": c.next_id("m"),
                "status": "active",  # never closed in the old system
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [
                        {
                            "system": RXNORM,
                            "code": "308182",
                            "display": "Amoxicillin 250 MG Oral Capsule",
                        }
                    ]
                },
                "subject": {"reference": f"Patient/{c.pid}"},
                "authoredOn": "1980-05-04",
            }
        )

    case(
        "p65-antibiotic-order-from-1980-still-active",
        "1966-12-24",
        "female",
        "likely_eligible",
        build=old_antibiotic,
        expect={"E4": "pass"},
    )
    case(
        "p66-concussion-resolved-in-2009",
        "1988-02-08",
        "male",
        "likely_eligible",
        build=lambda c: c.dx(
            "62106007", onset=date(2009, 4, 2), clinical="resolved", abatement=date(2009, 5, 1)
        ),
        expect={"E5": "pass"},
    )

    # p67 onwards: scores computed from the record (issue 12): EULAR/ACR 2019 for I1 and
    # SLEDAI-2K for I2, from labs and coded findings sent as a Chinese LIS and EHR send them.
    case(
        "p67-eular-classified-without-an-sle-code",
        "1993-03-08",
        "female",
        "possibly_eligible",
        build=eular_without_code,
        expect={"I1": "unknown", "I2": "pass"},
    )
    case(
        "p68-sledai-from-labs-8-no-recorded-total",
        "1988-12-14",
        "female",
        "likely_eligible",
        build=lambda c: sledai_labs(c, hematuria=18),
        expect={"I2": "pass"},
    )
    case(
        "p69-sledai-from-labs-4-no-recorded-total",
        "1990-05-27",
        "female",
        "possibly_eligible",
        build=lambda c: sledai_labs(c, hematuria=None),
        expect={"I2": "unknown"},
    )
    case(
        "p70-pyuria-withheld-urinary-infection",
        "1986-08-03",
        "female",
        "possibly_eligible",
        build=pyuria_with_infection,
        expect={"I2": "unknown", "E4": "pass"},
    )

    # p71: an order as Epic and Cerner send it, naming its drug by reference to a Medication
    # resource sent beside it (not contained): read like a contained one.
    case(
        "p71-g-csf-order-naming-a-separate-medication",
        "1991-10-19",
        "female",
        "possibly_eligible",
        build=gcsf_by_reference,
        expect={"I6.anc": "unknown", "E4": "pass"},
    )

    return cases


def gcsf_by_reference(c: Case) -> None:
    """A filgrastim order 13 days before as_of (3 before the ANC), still active, whose drug
    is only `Medication/<id>`: the Medication carries the codes (clinical drug, ingredient)."""
    medication = {
        "resourceType": "Medication",
        "id": c.next_id("med"),
        "code": {
            "coding": [
                {
                    "system": RXNORM,
                    "code": "1649944",
                    "display": "1 ML filgrastim 0.3 MG/ML Injection",
                }
            ]
        },
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "68442"}]}}],
    }
    c.add(medication)
    c.add(
        {
            "resourceType": "MedicationRequest",
            "id": c.next_id("m"),
            "status": "active",
            "intent": "order",
            "medicationReference": {"reference": f"Medication/{medication['id']}"},
            "subject": {"reference": f"Patient/{c.pid}"},
            "authoredOn": f"{days_ago(13).isoformat()}T08:40:00+08:00",
        }
    )


NORMAL = {"coding": [{"system": RANGE_MEANING, "code": "normal"}]}


def _ranged(value: float, unit: str, low: float | None, high: float | None) -> dict[str, Any]:
    """valueQuantity with the lab's own normal range, as an LIS sends both."""
    reference: dict[str, Any] = {"type": NORMAL}
    if low is not None:
        reference["low"] = {"value": low, "unit": unit}
    if high is not None:
        reference["high"] = {"value": high, "unit": unit}
    return {"valueQuantity": {"value": value, "unit": unit}, "referenceRange": [reference]}


def _flag(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": V3_INTERPRETATION, "code": code}]}]


def lupus_serology(c: Case, when: date, *, ana: str | None = "1:320") -> None:
    """Anti-dsDNA above the lab's range and C3 below it (H/L flags), and an ANA titer."""
    if ana is not None:
        c.lab(date(2025, 9, 2), "5048-4", "抗核抗体(ANA) 滴度", valueString=ana)
    dsdna = _ranged(286, "IU/mL", None, 100)
    c.lab(when, "5130-0", "抗dsDNA抗体", interpretation=_flag("H"), **dsdna)
    c.lab(when, "4485-9", "补体C3", interpretation=_flag("L"), **_ranged(0.52, "g/L", 0.9, 1.8))


def eular_without_code(c: Case) -> None:
    """No SLE code anywhere (a rheumatology referral not yet coded): ANA 1:320, anti-dsDNA 6,
    low C3 and C4 4, thrombocytopenia 4, proteinuria 4 = 18 from labs alone."""
    c.resources = [r for r in c.resources if r["resourceType"] != "Condition"]
    d = days_ago(9)
    lupus_serology(c, d)
    c.lab(d, "4498-2", "补体C4", interpretation=_flag("L"), **_ranged(0.06, "g/L", 0.1, 0.4))
    c.lab(d, "777-3", "血小板计数", valueQuantity={"value": 86, "unit": "\u00d710^9/L"})
    c.lab(d, "2889-4", "24小时尿蛋白定量", valueQuantity={"value": 1.2, "unit": "g/24h"})


def sledai_labs(c: Case, *, hematuria: float | None) -> None:
    """No SLEDAI-2K total recorded: low C3 2, anti-dsDNA above range 2, and haematuria 4 when
    given, in the last 30 days."""
    c.resources = [r for r in c.resources if "sledai" not in json.dumps(r)]
    d = days_ago(6)
    lupus_serology(c, d, ana=None)
    if hematuria is not None:
        c.lab(d, "13945-1", "尿沉渣红细胞", valueQuantity={"value": hematuria, "unit": "/HPF"})


def pyuria_with_infection(c: Case) -> None:
    """Pyuria 25/hpf and haematuria 15/hpf drawn during a urinary tract infection (treated and
    resolved): both withheld as better explained by it; low C3 and anti-dsDNA count (4)."""
    sledai_labs(c, hematuria=15)
    c.lab(days_ago(6), "5821-4", "尿沉渣白细胞", valueQuantity={"value": 25, "unit": "/HPF"})
    c.dx("N39.0", ICD10CM, onset=days_ago(10), clinical="resolved", abatement=days_ago(2))


def _replace_prednisone(case: Case, mg: float) -> None:
    case.resources = [r for r in case.resources if "8640" not in json.dumps(r)]
    start = date(2024, 1, 10)
    case.med("8640", start=start, end=start + timedelta(days=42), dose_mg=mg)


def with_mrn(case: Case) -> None:
    """Give the patient a medical record number, first among its identifiers."""
    patient = case.patient()
    mrn = {
        "type": {"coding": [{"system": V2_0203, "code": "MR", "display": "Medical record number"}]},
        "system": MRN_SYSTEM,
        "value": f"NJ{int(case.pid[1:]):07d}",
    }
    patient["identifier"] = [mrn, *patient.get("identifier", [])]


def write(out: Path, expected_path: Path = EXPECTED) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    written = []
    for c in scenarios():
        with_mrn(c)
        path = out / f"{c.slug}.json"
        path.write_text(
            json.dumps(transaction_bundle(c.resources), indent=1, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        written.append(path)
    expected = {
        c.slug: {"patient": f"Patient/{c.pid}", "status": c.expect_status, "criteria": c.expect}
        for c in scenarios()
    }
    expected_path.write_text(
        json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo" / "NCT06946485")
    parser.add_argument("--expected", type=Path, default=EXPECTED)
    args = parser.parse_args()
    files = write(args.out, args.expected)
    print(f"wrote {len(files)} patients to {args.out} (as of {AS_OF})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
