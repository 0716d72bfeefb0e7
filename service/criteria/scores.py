"""The verdict paths of a score computed from the record (the computation: scoring.py).

Classification (`diagnosis_required` with `classification:`; I1, EULAR/ACR 2019):
- with the diagnosis on record, the verdict is the diagnosis rule's (`pass`), with the computed
  score beside it as evidence;
- without it, a computed score that meets the classification (entry criterion, a clinical item,
  the threshold) gives `unknown`: "classification criteria met from the record; no <condition>
  diagnosis coded: review" instead of `fail`: the patients a code-only search never finds;
- without it and not met, the diagnosis rule's verdict stands (`fail`, or `unknown` for a
  related code or review-term match), with the score shown.

Activity (`measurement` with `activity:`; I2, SLEDAI-2K > 6), only when no recorded total is in
the look-back window (a recorded total decides as before):
- the computed value is a lower bound (a visit's clinical items are missing): above the limit
  it passes, with every counted item as evidence;
- otherwise `unknown`: "<instrument> at least N from the record; the clinical items need an
  assessment". A computed score never fails a patient: what it cannot see may add to it.
- a record whose drug is unknown (it names a Medication that could not be read) might be a
  competing cause (a myelotoxic drug before a low count): when the limit is reached only by
  counting an item it could explain, `unknown` instead of `pass`, naming the record. The
  classification path needs no such check: the score it shows counts those items, so a
  `fail` stands only when even counting them it is not met.
"""

from __future__ import annotations

from dataclasses import replace

from service.criteria.common import Context, fmt, unidentified
from service.criteria.instrument import ScoreSpec
from service.criteria.scoring import compute_score
from service.criteria.verdict import Evidence, Score, ScoreItem, Verdict
from service.facts import PatientFacts

__all__ = ["activity_verdict", "classification_verdict", "score_evidence"]


def score_evidence(score: Score) -> tuple[Evidence, ...]:
    """The score as one derived evidence line, then each counted item's records."""
    counted = [item for item in score.items if item.counted]
    items = ([score.entry] if score.entry is not None and score.entry.counted else []) + counted
    records = tuple(
        replace(e, note=f"{score.title}: {item.label} ({_weight(item)})")
        for item in items
        for e in item.evidence[:1]
    )
    summary = Evidence(
        reference=None,
        value=score.total,
        rule=score.summary,
        note=(
            f"derived: {score.title} from the record; "
            + ", ".join(f"{i.label} {i.weight}" for i in counted)
            if counted
            else f"derived: {score.title} from the record; no item counted"
        ),
        inputs=tuple(e.reference for e in records if e.reference),
    )
    return (summary, *records)


def _weight(item: ScoreItem) -> str:
    return "entry criterion" if item.domain == "entry" else f"weight {item.weight}"


def classification_verdict(
    verdict: Verdict, spec: ScoreSpec, facts: PatientFacts, ctx: Context
) -> Verdict:
    """The diagnosis rule's verdict, with the classification computed beside it."""
    score = compute_score(spec, facts, ctx)
    shown = score_evidence(score)
    if verdict.verdict == "fail" and score.met:
        reason = (
            f"classification criteria met from the record ({score.title} {score.total} "
            f"{score.op} {fmt(score.threshold)}); no {spec.condition} diagnosis coded: review"
        )
        return Verdict("unknown", reason, shown + verdict.evidence, score)
    return Verdict(verdict.verdict, verdict.reason, verdict.evidence + shown, score)


def activity_verdict(
    recorded: Verdict, spec: ScoreSpec, limit: tuple[str, float], facts: PatientFacts, ctx: Context
) -> Verdict:
    """No recorded total in the window: the computed lower bound passes above the limit, and
    is otherwise `unknown` (never `fail`)."""
    score = compute_score(spec, facts, ctx, limit)
    shown = score_evidence(score)
    window = f"last {score.window_days} days" if score.window_days is not None else "record"
    counted = [item for item in score.items if item.counted]
    listed = ", ".join(f"{i.label} {i.weight}" for i in counted) or "no item"
    if score.met and any(unidentified(m) or m.start is None for m in facts.medications):
        strict = compute_score(spec, facts, ctx, limit, unknown_drugs=True)
        doubt = None if strict.met else _unknown_drug_verdict(recorded, score, strict, window)
        if doubt is not None:
            return doubt
    if score.met:
        reason = (
            f"{score.title} at least {score.total} from the record ({window}: {listed}) "
            f"{score.op} {fmt(score.threshold)}: met (no recorded total)"
        )
        return Verdict("pass", reason, shown + recorded.evidence, score)
    reason = (
        f"{recorded.reason}; {score.title} at least {score.total} from the record "
        f"({window}: {listed}); the clinical items need an assessment"
    )
    return Verdict("unknown", reason, shown + recorded.evidence, score)


def _unknown_drug_verdict(
    recorded: Verdict, score: Score, strict: Score, window: str
) -> Verdict | None:
    """`unknown`: the limit is reached only by counting items a record whose drug is unknown
    might explain; the strict score (those items withheld) is the one shown."""
    doubtful = [
        kept
        for item, kept in zip(score.items, strict.items, strict=True)
        if item.counted and kept.status == "withheld"
    ]
    if not doubtful:
        return None
    first = doubtful[0]
    reason = (
        f"{recorded.reason}; {score.title} {score.total} from the record ({window}) would be "
        f"met, but {first.label}: {first.reason}; without it at least {strict.total}"
    )
    return Verdict("unknown", reason, score_evidence(strict) + recorded.evidence, strict)
