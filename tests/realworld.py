"""Records as hospital systems send them, and a Terminology with review terms, for the tests of
the diagnosis and allergy rules. Everything here is synthetic.

An EHR's Condition carries a problem-list category, several codings (SNOMED CT beside ICD-10-CM,
or only a local code), Chinese text, timestamps with offsets and a recordedDate; its
AllergyIntolerance often has no `category`, codes the allergen as a SNOMED CT finding or substance
or a clinical-drug RxNorm code, and writes the reaction in text.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from service.criteria.common import Context
from service.criteria.engine import evaluate_criterion
from service.criteria.verdict import CriterionResult
from service.facts import Fact, PatientFacts
from service.mappers import MappingError, map_resource, problem_for
from service.paths import parse_yaml
from service.terminology import Terminology
from tests.conftest import AS_OF, PATIENT, ROOT, load_nct

Resource = dict[str, Any]
LOCAL = "http://hospital.example.cn/fhir/CodeSystem/diagnosis"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

_ids = itertools.count(1)

# Review terms the tests rely on, per value set (the data engineers ship the real ones).
REVIEW_TERMS: dict[str, dict[str, list[str]]] = {
    "ttp_tma": {"en": ["thrombotic thrombocytopenic purpura"], "zh": ["血栓性血小板减少性紫癜"]},
    "infection": {"en": ["pneumonia", "infection"], "zh": ["肺炎", "感染"]},
    "drug_allergen": {"en": ["penicillin", "sulfonamide"], "zh": ["青霉素", "磺胺"]},
    "drug_hypersensitivity": {"en": ["stevens-johnson"], "zh": ["史蒂文斯-约翰逊"]},
    "anti_infectives_systemic": {"en": ["amoxicillin"], "zh": ["阿莫西林"]},
    "pregnancy": {"en": ["pregnant"], "zh": ["妊娠"]},
}


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code} | ({"display": display} if display else {})


def status_concept(status: str | Resource, system: str) -> Resource:
    """A status CodeableConcept: the standard coding of `status`, or `status` itself if a dict."""
    return status if isinstance(status, dict) else {"coding": [coding(system, status)]}


def ehr_condition(
    *codings: dict[str, str],
    text: str | None = None,
    clinical: str | Resource | None = "active",
    verification: str | Resource | None = "confirmed",
    onset: str | None = None,
    abatement: str | None = None,
    recorded: str | None = None,
) -> Resource:
    """A problem-list Condition as an EHR sends it (statuses left out when None; a status given
    as a dict is sent as that CodeableConcept)."""
    code: dict[str, Any] = {"coding": list(codings)} if codings else {}
    if text:
        code["text"] = text
    resource: Resource = {
        "resourceType": "Condition",
        "id": f"ehr-c{next(_ids)}",
        "meta": {"lastUpdated": "2026-11-20T09:12:44.120+08:00"},
        "category": [
            {
                "coding": [
                    coding(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "problem-list-item",
                        "Problem List Item",
                    )
                ]
            }
        ],
        "code": code,
        "subject": {"reference": PATIENT, "display": "测试 患者"},
    }
    if clinical:
        resource["clinicalStatus"] = status_concept(clinical, CLINICAL)
    if verification:
        resource["verificationStatus"] = status_concept(verification, VERIFICATION)
    if onset:
        resource["onsetDateTime"] = onset
    if abatement:
        resource["abatementDateTime"] = abatement
    if recorded:
        resource["recordedDate"] = recorded
    return resource


def ehr_allergy(
    *codings: dict[str, str],
    text: str | None = None,
    criticality: str | None = None,
    severity: str | None = None,
    reaction_text: str | None = None,
    clinical: str | Resource | None = "active",
    verification: str | Resource | None = "unconfirmed",
    recorded: str | None = "2024-03-02T15:30:00+08:00",
) -> Resource:
    """An AllergyIntolerance without `category`, as most EHRs send it."""
    code: dict[str, Any] = {"coding": list(codings)} if codings else {}
    if text:
        code["text"] = text
    resource: Resource = {
        "resourceType": "AllergyIntolerance",
        "id": f"ehr-a{next(_ids)}",
        "type": "allergy",
        "code": code,
        "patient": {"reference": PATIENT},
    }
    if clinical:
        resource["clinicalStatus"] = status_concept(clinical, ALLERGY_CLINICAL)
    if verification:
        resource["verificationStatus"] = status_concept(verification, ALLERGY_VERIFICATION)
    if criticality:
        resource["criticality"] = criticality
    if severity or reaction_text:
        reaction: dict[str, Any] = {"manifestation": [{"text": reaction_text or "皮疹"}]}
        if severity:
            reaction["severity"] = severity
        resource["reaction"] = [reaction]
    if recorded:
        resource["recordedDate"] = recorded
    return resource


def ehr_procedure(
    *codings: dict[str, str],
    text: str | None = None,
    performed: str | None = "2026-11-02T08:30:00+08:00",
    status: str = "completed",
) -> Resource:
    """A Procedure as an EHR sends it: CPT, ICD-10-PCS or a local code beside the text."""
    code: dict[str, Any] = {"coding": list(codings)} if codings else {}
    if text:
        code["text"] = text
    resource: Resource = {
        "resourceType": "Procedure",
        "id": f"ehr-p{next(_ids)}",
        "status": status,
        "code": code,
        "subject": {"reference": PATIENT},
    }
    if performed:
        resource["performedDateTime"] = performed
    return resource


def ehr_observation(
    loinc: str, answer: dict[str, str], *, effective: str, text: str | None = None
) -> Resource:
    """A final Observation answered with a code (valueCodeableConcept)."""
    return {
        "resourceType": "Observation",
        "id": f"ehr-o{next(_ids)}",
        "status": "final",
        "code": {"coding": [coding("http://loinc.org", loinc)], "text": text or loinc},
        "subject": {"reference": PATIENT},
        "effectiveDateTime": effective,
        "valueCodeableConcept": {"coding": [answer]},
    }


@lru_cache(maxsize=1)
def review_terms() -> Terminology:
    """The shipped code tables, with REVIEW_TERMS added to their value sets' YAML."""
    scratch = tempfile.mkdtemp(prefix="cohort-match-review-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    target = Path(scratch) / "terminology"
    shutil.copytree(ROOT / "terminology", target)
    for name, terms in REVIEW_TERMS.items():
        path = target / "valuesets" / f"{name}.yaml"
        meta = parse_yaml(path.read_text(encoding="utf-8"))
        merged = dict(meta.get("review_terms") or {})
        for language, words in terms.items():
            merged[language] = [*merged.get(language, []), *words]
        meta["review_terms"] = merged
        path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    return Terminology.load(target)


def facts_with(
    resources: Iterable[Resource], terms: Terminology, extra: Iterable[Fact] = ()
) -> PatientFacts:
    facts = PatientFacts(PATIENT)
    for resource in resources:
        try:
            mapped = map_resource(resource, terms, "test")
        except MappingError as exc:
            mapped = problem_for(resource, str(exc), "test", terms)
        if mapped is not None:
            facts.add(mapped.fact)
    facts.extend(extra)
    return facts


def run_ehr(
    resources: Iterable[Resource],
    criterion_id: str,
    *,
    as_of: date = AS_OF,
    extra: Iterable[Fact] = (),
    terms: Terminology | None = None,
) -> CriterionResult:
    """One criterion of the trial on these records, mapped with review terms loaded."""
    terms = terms or review_terms()
    trial = load_nct()
    ctx = Context(as_of, terms, trial.id, trial.defaults.lookback_days)
    facts = facts_with(resources, terms, extra)
    return evaluate_criterion(trial.criterion(criterion_id), facts, ctx)


def notes(result: CriterionResult) -> str:
    return " | ".join(filter(None, (e.note for e in result.evidence)))


def by_ref(result: CriterionResult) -> Mapping[str | None, Any]:
    return {e.reference: e for e in result.evidence}
