"""`allergy`: a history of severe drug allergy or hypersensitivity.

A drug allergy with high criticality, a severe reaction or the rule's severe manifestation
(anaphylaxis) fails; one of unrecorded severity is `unknown`; low-criticality, non-severe ones
pass and are shown.
"""

from __future__ import annotations

from service.criteria.common import Context, Findings, decide, unreadable
from service.criteria.model import AllergyRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import Allergy, PatientFacts

MEDICATION_SYSTEMS = frozenset(
    {"http://www.nlm.nih.gov/research/umls/rxnorm", "http://www.whocc.no/atc"}
)


def evaluate_allergy(rule: AllergyRule, facts: PatientFacts, ctx: Context) -> Verdict:
    found = Findings()
    for allergy in facts.allergies:
        if allergy.negated or not _is_drug(rule, allergy):
            continue
        evidence = _allergy_evidence(allergy)
        if (
            allergy.criticality == "high"
            or "severe" in allergy.severities
            or rule.severe_manifestations in allergy.manifestations
        ):
            found.decisive.append(evidence)
        elif allergy.criticality == "low" or allergy.severities & {"mild", "moderate"}:
            found.shown.append(evidence)
        else:
            found.doubt(f"drug allergy of unrecorded severity ({allergy.reference})", evidence)
    return decide(
        found,
        decided=lambda first: f"severe drug allergy on record ({first.reference})",
        problem=unreadable(facts, "AllergyIntolerance"),
        nothing="no severe drug allergy found",
        only_shown="only non-severe drug allergies on record",
        absent="no record of drug allergy",
    )


def _is_drug(rule: AllergyRule, allergy: Allergy) -> bool:
    return rule.category in allergy.category or any(
        c.system in MEDICATION_SYSTEMS for c in allergy.codes
    )


def _allergy_evidence(allergy: Allergy) -> Evidence:
    return Evidence(
        reference=allergy.reference,
        code=allergy.codes[0] if allergy.codes else None,
        date=allergy.recorded,
        value=allergy.criticality,
        rule=f"criticality {allergy.criticality or 'not recorded'}; reaction severity "
        f"{'/'.join(sorted(allergy.severities)) or 'not recorded'}",
    )
