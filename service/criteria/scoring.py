"""compute_score(spec, facts, ctx, limit) -> Score: an instrument's items from the record. Pure.

Per finding, every record in the instrument's window (before `as_of`; classification criteria:
at any time before it) is judged met, not met or undetermined:

- **lab**: the value against the first limit source the result allows, in the order the item
  lists them: `reference_range_low` / `reference_range_high` (the result's own normal range for
  the patient's sex and age; all that may apply must agree; never a placeholder such as "0-0",
  nor a limit more than PLAUSIBLE_FACTOR times off the item's fixed limit: sent in another
  unit), `interpretation` (L/LL or H/HH flags; N is not met), or a fixed UCUM limit (the
  instrument's definition, or a documented fallback). A limit is compared in the canonical
  unit, or in the unit both were sent in. A bound ("<5") that straddles the limit, or no usable
  source, is undetermined, never met;
- **positive**: a titer decides when one is sent (at least `min_titer`); else a positive or
  negative reading (coded value, text such as 阳性, interpretation); else a number above the
  result's reference range, else above the fixed `above`;
- **coded**: a confirmed Condition of the value sets whose onset (or recorded date) lies in the
  window; provisional ones are undetermined; one dated before the window is listed, not counted.

An item counts when its findings are met (any, or all for "low C3 AND low C4") by records not
"better explained by another cause": a met record with a competing cause in its span (an
infection around a fever) is *withheld* and listed with the cause. With `unknown_drugs`, a
record whose drug is unknown (`unidentified`: it names a Medication that could not be read)
in a medication cause's span withholds too, as "possibly" that drug, and so does a record of
the cause's drug with no date (`undated`): criteria/scores.py asks
so only to check that an activity score passes without such items. With the domain rule
`highest_per_domain`, only the highest-weighted counted item of a domain counts. Missing data
never counts against the patient: the total is a lower bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from service.criteria.common import (
    PLAUSIBLE_FACTOR,
    Context,
    age_range,
    compare_bounded,
    diagnosis_evidence,
    fmt,
    lab_evidence,
    medication_evidence,
    on_or_before,
    title,
    unidentified,
    unidentified_reason,
)
from service.criteria.exposure import exposure, undated
from service.criteria.instrument import (
    CodedFinding,
    CompetingCause,
    FixedLimit,
    Instrument,
    Item,
    LabFinding,
    PositiveFinding,
    ScoreSpec,
)
from service.criteria.verdict import Evidence, ItemStatus, Score, ScoreItem
from service.facts import Diagnosis, LabResult, PatientFacts, Quantity, written
from service.qualitative import parse_titer

__all__ = ["compute_score"]

State = Literal["met", "not_met", "undetermined"]
NORMAL_RANGE_TYPES = frozenset({None, "normal"})
V3_LOW = frozenset({"L", "LL", "LU"})
V3_HIGH = frozenset({"H", "HH", "HU"})
V3_POSITIVE = frozenset({"POS", "A", "AA", "DET", "R"})
V3_NEGATIVE = frozenset({"N", "NEG", "ND", "NR"})


@dataclass(slots=True)
class Hit:
    """One record judged for one finding.

    Its evidence is built only when asked for: of a finding's records, an item shows one or
    two (the record that decides it), and most are judged only to find that one. Not
    `frozen=True`, for the per-field cost of a frozen `__init__` (see facts.py); nothing
    assigns to a hit after it is built."""

    day: date | None
    state: State
    why: str
    in_window: bool
    record: LabResult | Diagnosis
    note: str | None = None  # on the evidence: a substitute test read for the finding

    @property
    def evidence(self) -> Evidence:
        if isinstance(self.record, LabResult):
            return lab_evidence(self.record, rule=self.why, note=self.note)
        return diagnosis_evidence(self.record, rule=self.why, note=self.note)


def compute_score(
    spec: ScoreSpec,
    facts: PatientFacts,
    ctx: Context,
    limit: tuple[str, float] | None = None,
    *,
    unknown_drugs: bool = False,
) -> Score:
    """The instrument's score for this patient on `ctx.as_of`.

    `limit` is the criterion's own (op, value) for an activity score (SLEDAI-2K > 6); a
    classification instrument brings its threshold (>= 10). `unknown_drugs`: records whose
    drug is unknown may be a competing cause (see the module docstring)."""
    instrument = spec.instrument
    plan = _plan(instrument)
    start = (
        ctx.as_of - timedelta(days=instrument.window_days)
        if instrument.window_days is not None
        else None
    )
    # Only the findings with a record: one whose value sets hold none of the patient's
    # records (most findings, for most patients) is passed over without a look-up.
    labs, diagnoses = facts.lab_concepts(), facts.diagnosis_concepts()
    hits: dict[str, list[Hit]] = {}
    for name, coded, reads in plan.findings:
        index = diagnoses if coded else labs
        for valueset in reads:
            if valueset in index:
                found = _hits(spec, name, facts, ctx, start)
                if found:
                    hits[name] = found
                break
    # An item none of whose findings has a record is `not in the record`: shared results.
    items = list(plan.absent)
    judged = sorted({position for name in hits for position in plan.items_of.get(name, ())})
    counted = False
    for position in judged:
        item = _judge_item(instrument.items[position], hits, facts, ctx, unknown_drugs)
        items[position] = item
        counted = counted or item.counted
    if counted:
        items = _domain_rule(instrument, items)
    scored = [items[position] for position in judged]
    total = sum(i.weight for i in scored if i.counted)
    entry = None
    if instrument.entry is not None:
        entry = _entry(instrument, hits) if instrument.entry in hits else plan.entry_absent
    op, threshold = limit if limit is not None else (">=", instrument.threshold or 0.0)
    reached = total >= threshold if op == ">=" else total > threshold
    clinical = any(i.counted and i.clinical for i in scored)
    met = (
        reached
        and (entry is None or entry.counted)
        and (clinical or not instrument.requires_clinical_item)
    )
    return Score(
        instrument=instrument.id,
        title=instrument.title,
        total=total,
        threshold=threshold,
        op=op,
        met=met,
        lower_bound=True,
        window_days=instrument.window_days,
        summary=_summary(instrument, total, op, threshold, entry, clinical, met),
        entry=entry,
        items=tuple(items),
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a score needs of its instrument, worked out once per instrument, not per patient."""

    instrument: Instrument  # kept, so that its id (the cache key) is not reused
    # (finding, coded, the value sets it reads): diagnoses for a coded finding, else labs; a
    # substitute's value sets whether or not the trial enables it (then nothing is found)
    findings: tuple[tuple[str, bool, tuple[str, ...]], ...]
    items_of: dict[str, tuple[int, ...]]  # finding -> the positions of the items naming it
    # Each item's, and the entry criterion's, "not in the record" result: a ScoreItem is never
    # changed once built, so one serves every patient.
    absent: tuple[ScoreItem, ...]
    entry_absent: ScoreItem | None


_PLANS: dict[int, _Plan] = {}


def _plan(instrument: Instrument) -> _Plan:
    plan = _PLANS.get(id(instrument))
    if plan is None or plan.instrument is not instrument:
        plan = _PLANS[id(instrument)] = _make_plan(instrument)
    return plan


def _make_plan(instrument: Instrument) -> _Plan:
    names = [f for item in instrument.items for f in item.findings]
    if instrument.entry:
        names.append(instrument.entry)
    findings = []
    for name in dict.fromkeys(names):
        finding = instrument.findings[name]
        if isinstance(finding, CodedFinding):
            findings.append((name, True, tuple(finding.diagnoses)))
        else:
            reads = list(finding.valuesets)
            if isinstance(finding, LabFinding) and finding.substitute is not None:
                reads += finding.substitute.valuesets
            findings.append((name, False, tuple(dict.fromkeys(reads))))
    items_of: dict[str, list[int]] = {}
    for position, item in enumerate(instrument.items):
        for name in dict.fromkeys(item.findings):
            items_of.setdefault(name, []).append(position)
    entry_absent = None
    if instrument.entry is not None:
        entry_absent = _entry(instrument, {})
    return _Plan(
        instrument,
        tuple(findings),
        {name: tuple(positions) for name, positions in items_of.items()},
        tuple(_item(item, "not_in_record", "not in the record", ()) for item in instrument.items),
        entry_absent,
    )


def _summary(
    instrument: Instrument,
    total: int,
    op: str,
    threshold: float,
    entry: ScoreItem | None,
    clinical: bool,
    met: bool,
) -> str:
    counted = f"{instrument.title} {total} from the record ({op} {fmt(threshold)} needed)"
    if entry is not None and not entry.counted:
        return f"{counted}; entry criterion not met from the record: {entry.reason}"
    if instrument.requires_clinical_item and not clinical:
        return f"{counted}; no clinical item counted"
    return f"{counted}: {'met' if met else 'not met'}"


# ---------------------------------------------------------------- findings
def _hits(
    spec: ScoreSpec, name: str, facts: PatientFacts, ctx: Context, start: date | None
) -> list[Hit]:
    finding = spec.instrument.findings[name]
    if isinstance(finding, CodedFinding):
        return _coded_hits(finding, facts, ctx, start)
    found: list[Hit] = []
    if isinstance(finding, LabFinding):
        for result in _results(facts, finding.valuesets, ctx.as_of):
            found.append(_lab_hit(finding, result, facts, ctx, start, None))
        sub = finding.substitute
        if sub is not None and spec.enabled(sub.option):
            for result in _results(facts, sub.valuesets, ctx.as_of):
                hit = _lab_hit(finding, result, facts, ctx, start, sub.factor)
                note = f"{title(ctx.terms, sub.valuesets[0])} read as {finding.label}: {sub.note}"
                found.append(_with_note(hit, note))
    else:
        for result in _results(facts, finding.valuesets, ctx.as_of):
            found.append(_positive_hit(finding, result, facts, ctx, start))
    return found


def _results(facts: PatientFacts, valuesets: list[str], as_of: date) -> list[LabResult]:
    if len(valuesets) == 1:
        labs = facts.labs_for(valuesets[0])
        return on_or_before(labs, as_of) if labs else []  # most findings: no result at all
    seen: dict[str, LabResult] = {}
    for name in valuesets:
        for result in facts.labs_for(name):
            seen.setdefault(result.reference, result)
    return on_or_before(seen.values(), as_of)


def _with_note(hit: Hit, note: str) -> Hit:
    return Hit(hit.day, hit.state, hit.why, hit.in_window, hit.record, note)


def _window(day: date | None, start: date | None) -> bool:
    return start is None or (day is not None and day >= start)


def _straddles(result: LabResult, start: date | None) -> str | None:
    """Why a result dated as a month or year ("2026-08") may be before or inside the window
    that opens on `start`, or None: it never counts, nor is it read as outside."""
    first, last = result.effective, result.effective_latest
    if start is None or first is None or last is None or not first < start <= last:
        return None
    return f"dated {written(first, last)}: may be before or inside the window"


def _lab_hit(
    finding: LabFinding,
    result: LabResult,
    facts: PatientFacts,
    ctx: Context,
    start: date | None,
    factor: float | None,
) -> Hit:
    quantity = result.quantity
    in_window = _window(result.effective, start)
    if (partial := _straddles(result, start)) is not None:
        return _hit(result, "undetermined", f"{finding.label}: {partial}", True)
    if quantity is None:
        return _hit(result, "undetermined", f"{finding.label}: no value", in_window)
    for source in finding.limits:
        decided = _against(finding, source, result, quantity, facts, ctx, factor)
        if decided is not None:
            state, rule = decided
            return _hit(result, state, rule, in_window)
    why = f"{finding.label}: no reference range sent, and the unit cannot be compared"
    return _hit(result, "undetermined", why, in_window)


def _hit(result: LabResult, state: State, rule: str, in_window: bool) -> Hit:
    return Hit(result.effective, state, rule, in_window, result)


def _against(
    finding: LabFinding,
    source: str | FixedLimit,
    result: LabResult,
    quantity: Quantity,
    facts: PatientFacts,
    ctx: Context,
    factor: float | None,
) -> tuple[State, str] | None:
    """(state, the comparison as text) against one limit source, or None when the result does
    not allow that source (no range sent, no flag, a unit that does not convert).

    `factor` is set for a substitute test (a UPCR for 24-hour proteinuria): its canonical value
    times `factor` is read in the fixed limit's unit; its own ranges and flags are not used."""
    if factor is not None:
        if not isinstance(source, FixedLimit) or quantity.canonical_value is None:
            return None
        value = quantity.canonical_value * factor
        outcome = compare_bounded(value, quantity.comparator, finding.op, source.value)
        text = (
            f"{fmt(value)} {source.unit} (from {_shown(quantity, 1.0)}) {finding.op} "
            f"{fmt(source.value)} {source.unit} ({source.source})"
        )
        return _outcome(outcome, text)
    factor = 1.0
    shown = _shown(quantity, factor)
    if isinstance(source, FixedLimit):
        if quantity.canonical_value is not None and quantity.canonical_unit is not None:
            try:
                limit = source.value * ctx.terms.factor(source.unit, quantity.canonical_unit)
            except ValueError:
                return None
            value = quantity.canonical_value * factor
        elif quantity.unit is not None and ctx.terms.ucum(quantity.unit) == source.unit:
            # sent in the limit's own unit (a temperature in Cel: an offset unit has no factor)
            limit, value = source.value, quantity.value * factor
        else:
            return None
        outcome = compare_bounded(value, quantity.comparator, finding.op, limit)
        text = f"{shown} {finding.op} {fmt(source.value)} {source.unit} ({source.source})"
        return _outcome(outcome, text)
    if source == "interpretation":
        codes = {code.code for code in result.interpretation}
        wanted = V3_LOW if finding.op in ("<", "<=") else V3_HIGH
        if codes & wanted:
            return "met", f"{shown} flagged {'/'.join(sorted(codes & wanted))} by the lab"
        if "N" in codes:
            return "not_met", f"{shown} flagged N (normal) by the lab"
        return None
    side: Literal["low", "high"] = "low" if source == "reference_range_low" else "high"
    limits = _plausible(finding, _range_limits(result, facts, ctx.as_of, side), ctx)
    if not limits:
        return None
    outcomes = {_compare_limit(quantity, finding.op, lim, factor) for lim in limits}
    text = f"{shown} {finding.op} the lab's reference range {side} " + "/".join(
        _shown(lim, 1.0) for lim in limits
    )
    if len(outcomes) != 1:
        return "undetermined", f"{text}: the ranges that may apply disagree"
    return _outcome(outcomes.pop(), text)


def _outcome(outcome: bool | None, text: str) -> tuple[State, str]:
    if outcome is None:
        return "undetermined", f"{text}: the reported bound cannot decide"
    return ("met" if outcome else "not_met"), text


def _shown(quantity: Quantity, factor: float) -> str:
    if quantity.canonical_value is not None and quantity.canonical_unit is not None:
        value, unit = quantity.canonical_value * factor, quantity.canonical_unit
    else:
        value, unit = quantity.value, quantity.unit or ""
    return f"{quantity.comparator or ''}{fmt(value)} {unit}".strip()


def _compare_limit(quantity: Quantity, op: str, limit: Quantity, factor: float) -> bool | None:
    """In the canonical unit when both converted, else as sent when both share a unit."""
    if quantity.canonical_value is not None and limit.canonical_value is not None:
        value, bound = quantity.canonical_value * factor, limit.canonical_value
    elif (limit.unit or "").strip() == (quantity.unit or "").strip():
        value, bound = quantity.value * factor, limit.value
    else:
        return None
    return compare_bounded(value, quantity.comparator, op, bound)  # type: ignore[arg-type]


def _plausible(finding: LabFinding, limits: list[Quantity], ctx: Context) -> list[Quantity]:
    """The range limits no further than PLAUSIBLE_FACTOR from the finding's fixed limit (the
    limit in common use), when it gives one: a C3 range "90-180" sent without its unit (mg/dL)
    beside a value in g/L is no lower limit of 90 g/L."""
    fixed = next((s for s in finding.limits if isinstance(s, FixedLimit)), None)
    if fixed is None:
        return limits
    kept = []
    for limit in limits:
        if limit.canonical_value is None or limit.canonical_unit is None:
            kept.append(limit)  # compared as sent, if at all (`_compare_limit`)
            continue
        try:
            common = fixed.value * ctx.terms.factor(fixed.unit, limit.canonical_unit)
        except ValueError:
            kept.append(limit)
            continue
        if common / PLAUSIBLE_FACTOR <= limit.canonical_value <= common * PLAUSIBLE_FACTOR:
            kept.append(limit)
    return kept


def _range_limits(
    result: LabResult, facts: PatientFacts, as_of: date, side: Literal["low", "high"]
) -> list[Quantity]:
    """The low (or high) limits of the result's normal ranges that may apply to the patient:
    type normal or untyped, the patient's sex (any when not recorded), the patient's age."""
    sex = facts.demographics.sex if facts.demographics else None
    ages = age_range(facts.demographics, result.effective or as_of)
    found = []
    for entry in result.ref_ranges:
        limit = entry.low if side == "low" else entry.high
        if limit is None or entry.type not in NORMAL_RANGE_TYPES or entry.placeholder:
            continue  # a placeholder ("0-0", a high of 0): no limit of the analyte
        if entry.sex is None and entry.applies_to:
            continue
        if entry.sex is not None and sex in ("female", "male") and entry.sex != sex:
            continue
        if ages is not None and (
            (entry.age_low_years is not None and ages[0] < entry.age_low_years)
            or (entry.age_high_years is not None and ages[1] > entry.age_high_years)
        ):
            continue
        found.append(limit)
    if not found and side == "high" and not result.ref_ranges and result.ref_high is not None:
        found.append(result.ref_high)
    return found


def _positive_hit(
    finding: PositiveFinding,
    result: LabResult,
    facts: PatientFacts,
    ctx: Context,
    start: date | None,
) -> Hit:
    in_window = _window(result.effective, start)
    label = finding.label
    if (partial := _straddles(result, start)) is not None:
        return _hit(result, "undetermined", f"{label}: {partial}", True)
    titer = result.titer
    below = parse_titer(result.text) if titer is None and result.text else None
    if finding.min_titer is not None and (titer is not None or below is not None):
        need = f"1:{fmt(finding.min_titer)}"
        if titer is not None and titer >= finding.min_titer:
            return _hit(result, "met", f"{label}: titer 1:{fmt(titer)} >= {need}", in_window)
        sent = f"1:{fmt(titer)}" if titer is not None else result.text
        return _hit(result, "not_met", f"{label}: titer {sent} below {need}", in_window)
    if result.qualitative is not None:
        state: State = "met" if result.qualitative == "positive" else "not_met"
        return _hit(result, state, f"{label}: read as {result.qualitative}", in_window)
    quantity = result.quantity
    if quantity is not None:
        highs = _range_limits(result, facts, ctx.as_of, "high")
        if highs:
            outcomes = {_compare_limit(quantity, ">", high, 1.0) for high in highs}
            text = f"{label}: {_shown(quantity, 1.0)} above the lab's reference range " + "/".join(
                _shown(h, 1.0) for h in highs
            )
            if len(outcomes) == 1:
                return _hit(result, *_outcome(outcomes.pop(), text), in_window)
        codes = {code.code for code in result.interpretation}
        if codes & (V3_HIGH | V3_POSITIVE):
            flags = "/".join(sorted(codes & (V3_HIGH | V3_POSITIVE)))
            return _hit(result, "met", f"{label}: flagged {flags} by the lab", in_window)
        if codes & V3_NEGATIVE:
            return _hit(result, "not_met", f"{label}: flagged normal by the lab", in_window)
        if finding.above is not None:
            decided = _against(
                LabFinding(
                    kind="lab",
                    label=label,
                    valuesets=finding.valuesets,
                    op=">",
                    limits=[finding.above],
                ),
                finding.above,
                result,
                quantity,
                facts,
                ctx,
                1.0,
            )
            if decided is not None:
                return _hit(result, decided[0], f"{label}: {decided[1]}", in_window)
    return _hit(result, "undetermined", f"{label}: neither positive nor negative", in_window)


def _coded_hits(
    finding: CodedFinding, facts: PatientFacts, ctx: Context, start: date | None
) -> list[Hit]:
    found: list[Hit] = []
    seen: set[str] = set()
    for name in finding.diagnoses:
        for dx in facts.diagnoses_for(name):
            if dx.reference in seen or not dx.known_on(ctx.as_of):
                continue
            seen.add(dx.reference)
            day, last = dx.began()
            in_window = _window(day, start)
            state: State
            unsure = dx.unsure_on(ctx.as_of, False)
            if unsure is None and day is not None and last is not None and start is not None:
                if day < start <= last:
                    unsure = f"{written(day, last)}: may be before or inside the window"
            if unsure is not None:
                why, state = f"{finding.label}: {unsure}", "undetermined"
                in_window = True
            elif dx.uncertain:
                why = f"{finding.label}: recorded as {dx.verification_status}"
                state = "undetermined"
            elif start is not None and day is None:
                why, state = f"{finding.label}: no onset or recorded date", "undetermined"
            else:
                why, state = f"{finding.label}: coded ({title(ctx.terms, name)})", "met"
            found.append(Hit(day, state, why, in_window, dx))
    return found


# ---------------------------------------------------------------- items
def _judge_item(
    item: Item,
    hits: dict[str, list[Hit]],
    facts: PatientFacts,
    ctx: Context,
    unknown_drugs: bool = False,
) -> ScoreItem:
    per_finding = [
        _judge_finding(item, hits.get(name, []), facts, ctx, unknown_drugs)
        for name in item.findings
    ]
    if item.combine == "all":
        if all(status == "counted" for status, _, _ in per_finding):
            evidence = tuple(e for _, _, found in per_finding for e in found[:1])
            return _item(
                item, "counted", "met: " + "; ".join(r for _, r, _ in per_finding), evidence
            )
        worst = min(per_finding, key=lambda found: _RANK[found[0]] if found[0] != "counted" else 99)
        return _item(item, worst[0], worst[1], tuple(e for _, _, f in per_finding for e in f))
    best = min(per_finding, key=lambda found: _RANK[found[0]])
    return _item(item, best[0], best[1], best[2])


_RANK: dict[ItemStatus, int] = {
    "counted": 0,
    "lower_in_domain": 1,
    "withheld": 2,
    "undetermined": 3,
    "not_met": 4,
    "outside_window": 5,
    "not_in_record": 6,
}


def _item(item: Item, status: ItemStatus, reason: str, evidence: Iterable[Evidence]) -> ScoreItem:
    return ScoreItem(
        id=item.id,
        label=item.label,
        domain=item.domain,
        weight=item.weight,
        status=status,
        counted=status == "counted",
        reason=reason,
        clinical=item.clinical,
        evidence=tuple(evidence),
    )


def _judge_finding(
    item: Item, hits: list[Hit], facts: PatientFacts, ctx: Context, unknown_drugs: bool = False
) -> tuple[ItemStatus, str, list[Evidence]]:
    """The best a finding's records give: counted (newest met record without a competing
    cause), else withheld, undetermined, not met, outside the window, not in the record."""
    window = [h for h in hits if h.in_window]
    met = [h for h in window if h.state == "met"]
    withheld: list[tuple[Hit, str, Evidence]] = []
    for hit in met:
        cause = _competing(item.better_explained_by, hit, facts, ctx, unknown_drugs)
        if cause is None:
            return "counted", hit.why, [hit.evidence]
        withheld.append((hit, *cause))
    if withheld:
        hit, why, evidence = withheld[0]
        return "withheld", f"{hit.why}; withheld: {why}", [hit.evidence, evidence]
    for state, status in (("undetermined", "undetermined"), ("not_met", "not_met")):
        found = [h for h in window if h.state == state]
        if found:
            return status, found[0].why, [found[0].evidence]  # type: ignore[return-value]
    if hits:
        older = hits[0]
        return "outside_window", f"{older.why} (before the window; not counted)", [older.evidence]
    return "not_in_record", "not in the record", []


def _competing(
    causes: list[CompetingCause],
    hit: Hit,
    facts: PatientFacts,
    ctx: Context,
    unknown_drugs: bool = False,
) -> tuple[str, Evidence] | None:
    """The first record that explains a met finding otherwise, with why (with
    `unknown_drugs`, a record whose drug is unknown may be a medication cause)."""
    if not causes or hit.day is None:
        return None
    for cause in causes:
        low = hit.day - timedelta(days=cause.days_before)
        high = min(hit.day + timedelta(days=cause.days_after), ctx.as_of)
        for name in cause.diagnoses:
            for dx in facts.diagnoses_for(name):
                began = dx.onset or dx.recorded
                if began is not None and began > high:
                    continue
                ended = dx.abatement_latest or dx.abatement  # a partial end: its last day
                if ended is None and not dx.active and began is not None:
                    ended = began  # resolved on an unrecorded date: taken as over that day
                if ended is not None and ended < low:
                    continue
                why = f"{cause.why}: {title(ctx.terms, name)} ({dx.reference})"
                return why, diagnosis_evidence(dx, note=f"competing cause: {cause.why}")
        for name in cause.medications:
            for med in facts.medications_for(name):
                period = exposure(med, ctx.as_of, ctx.terms)
                if period is None or period.start > high or period.end < low:
                    continue
                why = f"{cause.why}: {title(ctx.terms, name)} ({med.reference})"
                return why, medication_evidence(med, note=f"competing cause: {cause.why}")
        found = _unknown_drug(cause, facts, ctx, low, high) if unknown_drugs else None
        if found is not None:
            return found
    return None


def _unknown_drug(
    cause: CompetingCause, facts: PatientFacts, ctx: Context, low: date, high: date
) -> tuple[str, Evidence] | None:
    """A record whose drug is unknown taken in the cause's span, or a record of the cause's
    drug with no date (exposure.py: `undated`, it may have been taken then): possibly the
    cause."""
    if not cause.medications:
        return None
    for med in facts.medications:
        if undated(med, low, running_only=False) and not med.concepts.isdisjoint(cause.medications):
            name = next(n for n in cause.medications if n in med.concepts)
            reason = (
                f"{title(ctx.terms, name)} ({med.reference}), no date recorded: possibly taken then"
            )
            note = f"possible competing cause: {reason}"
            return f"{cause.why}: {reason}", medication_evidence(med, note=note)
        period = exposure(med, ctx.as_of, ctx.terms) if unidentified(med) else None
        if period is None or period.start > high or period.end < low:
            continue
        reason = unidentified_reason(ctx.terms, cause.medications[0], med)
        note = f"possible competing cause: {reason}"
        return f"{cause.why}: {reason}", medication_evidence(med, note=note)
    return None


def _domain_rule(instrument: Instrument, items: list[ScoreItem]) -> list[ScoreItem]:
    """Only the highest-weighted counted item of each domain counts (EULAR/ACR 2019)."""
    if instrument.domain_rule != "highest_per_domain":
        return items
    best: dict[str, ScoreItem] = {}
    for item in items:
        if item.counted and (item.domain not in best or item.weight > best[item.domain].weight):
            best[item.domain] = item
    ruled = []
    for item in items:
        top = best.get(item.domain)
        if item.counted and top is not None and top is not item:
            reason = (
                f"{item.reason}; met, but {top.label} (weight {top.weight}) counts in the "
                f"{item.domain} domain"
            )
            item = ScoreItem(
                item.id,
                item.label,
                item.domain,
                item.weight,
                "lower_in_domain",
                False,
                reason,
                item.clinical,
                item.evidence,
            )
        ruled.append(item)
    return ruled


def _entry(instrument: Instrument, hits: dict[str, list[Hit]]) -> ScoreItem:
    """The entry criterion: met by any record before as_of (no competing cause applies)."""
    assert instrument.entry is not None
    finding = instrument.findings[instrument.entry]
    found = hits.get(instrument.entry, [])
    met = next((h for h in found if h.state == "met"), None)
    evidence: tuple[Evidence, ...]
    if met is not None:
        status: ItemStatus = "counted"
        reason, evidence = met.why, (met.evidence,)
    elif found:
        status = "undetermined" if found[0].state == "undetermined" else "not_met"
        reason, evidence = found[0].why, (found[0].evidence,)
    else:
        status, reason, evidence = "not_in_record", f"{finding.label}: not in the record", ()
    return ScoreItem(
        id=instrument.entry,
        label=finding.label,
        domain="entry",
        weight=0,
        status=status,
        counted=status == "counted",
        reason=reason,
        evidence=evidence,
    )
