"""`allergy`: a history of severe drug allergy or hypersensitivity.

- An allergy is a drug allergy when its category says so (often absent), or its code is a drug:
  an RxNorm or ATC code, a code in the rule's `allergens` value set (SNOMED CT substances and
  "allergy to <drug>" findings) or in any medication value set.
- A drug allergy with high criticality, a severe reaction or the rule's severe manifestation
  (anaphylaxis) fails; one of unrecorded severity is `unknown`; low-criticality, non-severe ones
  pass and are shown. Inactive and resolved allergies are still history ("history of ...");
  refuted and entered-in-error ones never reach here (the mapper drops them); one whose
  verification status could not be read is `unknown` where it would count.
- Severe drug hypersensitivity recorded as a Condition (the rule's `diagnoses` value set:
  SJS/TEN, DRESS, drug anaphylaxis, drug-allergy status) fails; an unconfirmed one is `unknown`.
- Unmapped is not absent: an allergy or diagnosis no value set knows whose text suggests a drug
  allergen (review terms) is `unknown` when it would be severe or of unrecorded severity.
- An allergy without a category whose allergen is neither a drug nor known not to be one (the
  rule's `non_drug_allergens`: foods, environment, latex, venom, by code or text) is
  unclassified: `unknown` when severe or of unrecorded severity ("not known whether ... is a
  drug"), shown when mild. An unlisted SNOMED CT substance with anaphylaxis may be a drug.
"""

from __future__ import annotations

from typing import Literal

from service.criteria.common import (
    Context,
    Findings,
    decide,
    diagnosis_evidence,
    partial_note,
    review_reason,
    title,
    unreadable,
)
from service.criteria.model import AllergyRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import RESOLVED_STATUSES, Allergy, PatientFacts, status_unread, written

MEDICATION_SYSTEMS = frozenset(
    {"http://www.nlm.nih.gov/research/umls/rxnorm", "http://www.whocc.no/atc"}
)
Severity = Literal["severe", "mild", "unclear"]


def evaluate_allergy(rule: AllergyRule, facts: PatientFacts, ctx: Context) -> Verdict:
    found = Findings()
    drug_sets = _drug_valuesets(rule, ctx)
    for allergy in facts.allergies:
        if allergy.negated or (allergy.recorded is not None and allergy.recorded > ctx.as_of):
            continue
        latest = allergy.recorded_latest
        if allergy.recorded is not None and latest is not None and latest > ctx.as_of:
            # Recorded "2026-11", screened on 5 November: it may not exist yet. What it would
            # decide is a doubt.
            maybe = Findings()
            _judge_allergy(rule, allergy, drug_sets, ctx, maybe)
            why = f"recorded {written(allergy.recorded, latest)}: may be after {ctx.as_of}"
            for evidence in maybe.decisive:
                found.doubt(f"{allergy.reference}: {why}", evidence)
            found.doubts += maybe.doubts
            found.shown += maybe.shown
            continue
        _judge_allergy(rule, allergy, drug_sets, ctx, found)
    _judge_diagnoses(rule, facts, ctx, found)
    problem = unreadable(facts, "AllergyIntolerance")
    if problem is None and rule.diagnoses:
        problem = unreadable(facts, "Condition", concepts=[rule.diagnoses])
    return decide(
        found,
        decided=lambda first: (
            f"severe drug allergy or hypersensitivity on record "
            f"({first.reference}{', ' + first.note if first.note else ''})"
        ),
        problem=problem,
        nothing="no severe drug allergy found",
        only_shown="only non-severe drug allergies on record",
        absent="no record of drug allergy",
    )


def _judge_allergy(
    rule: AllergyRule, allergy: Allergy, drug_sets: frozenset[str], ctx: Context, found: Findings
) -> None:
    basis = _drug_basis(rule, allergy, drug_sets)
    if basis is None:
        return
    severity = _severity(rule, allergy)
    history = allergy.clinical_status in RESOLVED_STATUSES
    note = f"history of: clinical status {allergy.clinical_status}" if history else None
    if basis == "unclassified":
        shown_as = allergy.text or (
            f"{allergy.codes[0].system} {allergy.codes[0].code}" if allergy.codes else "no code"
        )
        reason = (
            f"{allergy.reference}: allergy to '{shown_as}' without a category; not known whether "
            "the allergen is a drug: review"
        )
        _doubt_unless_mild(found, severity, reason, _allergy_evidence(allergy, note=reason))
        return
    if basis == "review":
        suggested = sorted(allergy.review & drug_sets)
        if rule.allergens in suggested:  # the rule's own set names the concern best
            suggested.insert(0, rule.allergens)
        reason = review_reason(ctx.terms, suggested[0], allergy.codes, allergy.text)
        _doubt_unless_mild(found, severity, reason, _allergy_evidence(allergy, note=reason))
        return
    if status_unread(allergy.verification_status) and severity != "mild":
        # It may say refuted: neither dropped nor counted (mappers/common.status_code).
        why = f"verification status {allergy.verification_status}; confirm"
        found.doubt(f"{allergy.reference}: {why}", _allergy_evidence(allergy, note=why))
        return
    evidence = _allergy_evidence(allergy, note=note)
    if severity == "severe":
        found.decisive.append(evidence)
    elif severity == "mild":
        found.shown.append(evidence)
    else:
        found.doubt(f"drug allergy of unrecorded severity ({allergy.reference})", evidence)


def _doubt_unless_mild(
    found: Findings, severity: Severity, reason: str, evidence: Evidence
) -> None:
    """A record the rule cannot place: shown when mild, else a doubt (`unknown`)."""
    if severity == "mild":
        found.shown.append(evidence)
    else:
        found.doubt(reason, evidence)


def _drug_basis(rule: AllergyRule, allergy: Allergy, drug_sets: frozenset[str]) -> str | None:
    """'coded' when the record says the allergen is a drug, 'review' when only its text
    suggests one, None when it is not a drug allergy (another category, or an allergen known
    not to be a drug), 'unclassified' when nothing says either."""
    if (
        rule.category in allergy.category
        or any(c.system in MEDICATION_SYSTEMS for c in allergy.codes)
        or allergy.concepts & drug_sets
    ):
        return "coded"
    if allergy.review & drug_sets:
        return "review"
    if allergy.category or rule.non_drug_allergens is None:
        return None
    known = allergy.concepts | allergy.review
    return None if rule.non_drug_allergens in known else "unclassified"


def _drug_valuesets(rule: AllergyRule, ctx: Context) -> frozenset[str]:
    """The rule's allergen value set and every medication value set of the code tables."""
    names = ctx.terms.valuesets_of_kind("medication")  # cached: not a scan per patient
    return names | {rule.allergens} if rule.allergens else names


def _severity(rule: AllergyRule, allergy: Allergy) -> Severity:
    if (
        allergy.criticality == "high"
        or "severe" in allergy.severities
        or rule.severe_manifestations in allergy.manifestations
    ):
        return "severe"
    if allergy.criticality == "low" or allergy.severities & {"mild", "moderate"}:
        return "mild"
    return "unclear"


def _judge_diagnoses(rule: AllergyRule, facts: PatientFacts, ctx: Context, found: Findings) -> None:
    """Severe drug hypersensitivity recorded on the problem list, at any time before as_of."""
    if not rule.diagnoses:
        return
    name = title(ctx.terms, rule.diagnoses)
    for dx in facts.diagnoses_for(rule.diagnoses):
        if not dx.known_on(ctx.as_of):
            continue
        if dx.uncertain:
            note = f"{name} recorded as {dx.verification_status}; confirm"
            found.doubt(f"{dx.reference}: {note}", diagnosis_evidence(dx, note=note))
        else:
            found.decisive.append(diagnosis_evidence(dx, note=f"{name} (diagnosis)"))
    for dx in facts.diagnoses:
        if rule.diagnoses in dx.review and dx.known_on(ctx.as_of):
            reason = review_reason(ctx.terms, rule.diagnoses, dx.codes, dx.text)
            found.doubt(reason, diagnosis_evidence(dx, note=reason))


def _allergy_evidence(allergy: Allergy, note: str | None = None) -> Evidence:
    return Evidence(
        reference=allergy.reference,
        code=allergy.codes[0] if allergy.codes else None,
        date=allergy.recorded if allergy.recorded_latest is None else None,
        value=allergy.criticality,
        rule=f"criticality {allergy.criticality or 'not recorded'}; reaction severity "
        f"{'/'.join(sorted(allergy.severities)) or 'not recorded'}",
        note=note
        if allergy.recorded is None or allergy.recorded_latest is None
        else partial_note(f"recorded {written(allergy.recorded, allergy.recorded_latest)}", note),
    )
