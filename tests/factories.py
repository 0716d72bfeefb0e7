"""Thin wrappers over service.synthetic for the unit tests: one patient, dates as days before
AS_OF, fresh ids. Everything here is synthetic.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

from service import synthetic as syn
from tests.conftest import AS_OF, PATIENT

Resource = dict[str, Any]
LOINC, SNOMED, RXNORM, ATC = syn.LOINC, syn.SNOMED, syn.RXNORM, syn.ATC
ICD10, ICD10CM, UCUM, LUPUS = syn.ICD10, syn.ICD10CM, syn.UCUM, syn.LUPUS

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"


def ago(days: int) -> date:
    """The date `days` before AS_OF."""
    return AS_OF - timedelta(days=days)


def patient(birth: date | str | None = "1990-03-15", gender: str | None = "female") -> Resource:
    return syn.make_patient(PATIENT.removeprefix("Patient/"), birth, gender)


def obs(
    code: str,
    value: float | None = None,
    unit: str | None = None,
    *,
    days: int = 1,
    system: str = LOINC,
    **kwargs: Any,
) -> Resource:
    """An Observation `days` before AS_OF (see synthetic.make_observation for kwargs)."""
    return syn.make_observation(
        _id("o"), PATIENT, ago(days), code=code, system=system, value=value, unit=unit, **kwargs
    )


def score(code: str, value: float, *, days: int = 1) -> Resource:
    """A lupus score from the local code system, sent with no unit (as scores usually are)."""
    return obs(code, value, system=LUPUS, days=days)


def grade(domain: str, letter: str, *, days: int = 1) -> Resource:
    """A BILAG-2004 domain grade, e.g. grade("renal", "A")."""
    return obs(f"bilag-2004-{domain}", system=LUPUS, text=letter, days=days)


def condition(code: str, system: str = SNOMED, **kwargs: Any) -> Resource:
    return syn.make_condition(_id("c"), PATIENT, code=code, system=system, **kwargs)


def medication(code: str, system: str = RXNORM, **kwargs: Any) -> Resource:
    return syn.make_medication(_id("m"), PATIENT, code=code, system=system, **kwargs)


def allergy(code: str, system: str = RXNORM, **kwargs: Any) -> Resource:
    return syn.make_allergy(_id("a"), PATIENT, code=code, system=system, **kwargs)


def procedure(code: str, *, days: int, **kwargs: Any) -> Resource:
    return syn.make_procedure(_id("pr"), PATIENT, code=code, performed=ago(days), **kwargs)


def study(name: str, *, status: str, start: date | str, end: date | str | None = None) -> Resource:
    return syn.make_research_subject(
        _id("rs"), PATIENT, study=name, status=status, start=start, end=end
    )


def contained_request(
    ingredient: tuple[str, str],
    *,
    dose: dict[str, Any],
    frequency: int = 1,
    start: date,
    end: date | None = None,
) -> Resource:
    """A MedicationRequest whose drug is a contained Medication (code only on the ingredient)."""
    bounds = {"start": start.isoformat()} | ({"end": end.isoformat()} if end else {})
    return {
        "resourceType": "MedicationRequest",
        "id": _id("mr"),
        "status": "active",
        "intent": "order",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med1",
                "code": {"text": "local brand, no standard code"},
                "ingredient": [
                    {
                        "itemCodeableConcept": {
                            "coding": [{"system": ingredient[0], "code": ingredient[1]}]
                        }
                    }
                ],
            }
        ],
        "medicationReference": {"reference": "#med1"},
        "subject": {"reference": PATIENT},
        "authoredOn": start.isoformat(),
        "dosageInstruction": [
            {
                "timing": {
                    "repeat": {
                        "frequency": frequency,
                        "period": 1,
                        "periodUnit": "d",
                        "boundsPeriod": bounds,
                    }
                },
                "doseAndRate": [{"doseQuantity": dose}],
            }
        ],
    }


def medication_resource(
    ident: str, code: str, system: str = RXNORM, *, ingredient: bool = False, **extra: Any
) -> Resource:
    """A Medication resource sent apart from the records naming it (as Epic and Cerner send
    orders): its code on `code`, or with `ingredient` only on its ingredient."""
    concept = {"coding": [{"system": system, "code": code}]}
    resource: Resource = {"resourceType": "Medication", "id": ident}
    if ingredient:
        resource["code"] = {"text": "local brand, no standard code"}
        resource["ingredient"] = [{"itemCodeableConcept": concept}]
    else:
        resource["code"] = concept
    return resource | extra


def by_reference(record: Resource, reference: str, display: str | None = None) -> Resource:
    """`record` naming its drug by `medicationReference` instead of a CodeableConcept."""
    changed = {k: v for k, v in record.items() if k != "medicationCodeableConcept"}
    target = {"reference": reference} | ({"display": display} if display else {})
    return changed | {"medicationReference": target}


# ---------------------------------------------------------------------- codes
# Codes the tests use, each a member of the value set named in the comment
# (terminology/valuesets/<name>.csv).
HGB = "718-7"  # hemoglobin
WBC = "6690-2"  # wbc
ANC = "751-8"  # neutrophils_abs
NEUT_PCT = "770-8"  # neutrophils_pct
ALT = "1742-6"  # alt
AST = "1920-8"  # ast
TBIL = "1975-2"  # bilirubin_total
CREAT = "2160-0"  # creatinine
CRCL = "2164-2"  # creatinine_clearance
WEIGHT = "29463-7"  # body_weight
INR = "6301-6"  # inr
PT = "5902-2"  # prothrombin_time
LVEF = "10230-1"  # lvef
HCG = "21198-7"  # hcg_serum
HBSAG = "5196-1"  # hbsag
HBCAB = "16933-4"  # hbcab
HBV_DNA = "42595-9"  # hbv_dna
HCV_AB = "16128-1"  # hcv_ab
HCV_RNA = "11011-4"  # hcv_rna
HIV = "7917-8"  # hiv_ab
RPR = "20507-0"  # rpr
TPHA = "8041-6"  # treponemal (T. pallidum Ab by hemagglutination: TPHA)
SLEDAI = "sledai-2k"  # sledai_2k (local lupus-scores system)

# Qualitative result codes (terminology/results/qualitative_codes.csv).
POSITIVE = (SNOMED, "10828004")
NEGATIVE = (SNOMED, "260385009")
DETECTED = (SNOMED, "260373001")
NOT_DETECTED = (SNOMED, "260415000")

# Diagnoses (SNOMED CT unless said otherwise).
SLE = "55464009"  # sle
CUTANEOUS_LUPUS = "200938002"  # lupus_non_sle (discoid lupus)
DRUG_LUPUS = "201436003"  # lupus_non_sle (drug-induced systemic lupus erythematosus)
GILBERT = "E80.4"  # gilbert_syndrome (ICD-10-CM)
TTP = "78129009"  # ttp_tma
LACTATION = "169750002"  # lactation
PNEUMONIA = "233604007"  # infection
STROKE = "230690007"  # cns_disorder
HEART_FAILURE = "84114007"  # cardiac_severe
CVID = "23238000"  # immunoglobulin_deficiency_congenital (common variable agammaglobulinemia)
SCHIZOPHRENIA = "58214004"  # psychiatric_severe
PREGNANCY = "77386006"  # pregnancy
BREAST_CANCER = "254837009"  # malignancy
MELANOMA = "372244006"  # malignancy
BCC = "254701007"  # malignancy and malignancy_exceptions (basal cell carcinoma of skin)
ESRD = "46177005"  # esrd
HEMODIALYSIS = "302497006"  # dialysis (procedure)

# Medications (RxNorm ingredients unless said otherwise).
PREDNISONE = "8640"  # glucocorticoids
PREDNISONE_5MG_TAB = "312617"  # glucocorticoids, strength 5 mg in glucocorticoid_equivalents
METHYLPREDNISOLONE = "6902"  # glucocorticoids (x 1.25 prednisone)
CYCLOPHOSPHAMIDE = "3002"  # cyclophosphamide
MYCOPHENOLATE = "68149"  # sle_immunosuppressants
AZATHIOPRINE = "1256"  # sle_immunosuppressants
FILGRASTIM = "68442"  # gcsf
AMOXICILLIN = "723"  # anti_infectives_systemic
PENICILLIN = "7980"  # a drug, for allergies
ANAPHYLAXIS = "39579001"  # anaphylaxis (reaction manifestation)
NKDA = "409137002"  # no_known_allergy
