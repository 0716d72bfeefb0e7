"""One patient's screening result -> a CDS Hooks card (or none). Pure: no I/O.

- `ineligible`: no card. The chart's user learns nothing they could act on, and a card per
  ineligible patient would train users to ignore the ones that matter.
- `likely_eligible` (every automatic criterion met): indicator `warning`, so the EHR shows it
  prominently; what is left is decided at the screening visit.
- `possibly_eligible`: indicator `info`; the detail lists what the record could not decide.

The summary names the trial, the status and the number of open criteria, in under 140
characters, and a score computed from the record that a verdict rests on and that is met
("SLEDAI-2K ≥ 8 from the record") when it fits. The detail (GitHub-flavoured Markdown) says
which verdicts rest on a computed score (criteria/scores.py: SLEDAI-2K without a recorded
total; EULAR/ACR 2019 met without a diagnosis code, which turns `fail` into `unknown`), then
lists the first unknowns, cheapest to settle first (`next_steps`), then the inclusion criteria
the record already meets, with the values that decided them. A `smart` link opens the
patient's full result in the cohort-match app; `appContext` tells it the trial and the date
screened.

The detail's first line says who (name, MRN, age, sex: `patient_line`), so a card read or
copied out of the chart still names its patient.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from service.cds.models import CardPublic, LinkPublic, SourcePublic
from service.criteria.model import DiagnosisRequiredRule, MeasurementRule, TrialDefinition
from service.criteria.verdict import CriterionResult, PatientResult, PatientSummary, Score

__all__ = ["card_for", "markdown_text", "patient_line"]

SHOWN_UNKNOWNS = 5
SHOWN_PASSES = 8
LABELS = {"likely_eligible": "Likely eligible", "possibly_eligible": "Possibly eligible"}
SIGNS = {">=": "\u2265", "<=": "\u2264"}
MAX_LINE = 300  # characters of one listed criterion, before it is cut
# GFM punctuation that could start emphasis, code, links, HTML, tables or strikethrough inside
# a line. Every line starts with text of ours, so block syntax (">", "#", "-") cannot arise.
_MARKDOWN = re.compile(r"([\\`*_\[\]<|~])")


def markdown_text(text: str, limit: int | None = None) -> str:
    """Text shown literally in GitHub-flavoured Markdown: one line, specials escaped, cut to
    `limit` characters (before escaping) with an ellipsis."""
    line = " ".join(text.split())
    if limit is not None and len(line) > limit:
        line = line[: limit - 1].rstrip() + "\u2026"
    return _MARKDOWN.sub(r"\\\1", line)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Computed:
    """A verdict that rests on a score computed from the record."""

    criterion: CriterionResult
    score: Score
    outcome: str  # "met", "met; no SLE diagnosis coded: review", "the clinical items ..."


def resting_on_scores(result: PatientResult, trial: TrialDefinition) -> list[Computed]:
    """The criteria whose verdict a score computed from the record decided: an activity score
    is computed only without a recorded total, so it decides whenever present; a
    classification score decides only when it is met and the verdict is `unknown` (no
    diagnosis coded); beside a coded diagnosis it is evidence, not the reason."""
    rules = {c.id: c.rule for c in trial.criteria}
    resting = []
    for c in result.criteria:
        rule, score = rules.get(c.id), c.score
        if score is None:
            continue
        if isinstance(rule, MeasurementRule) and rule.activity is not None:
            outcome = "met" if score.met else "the clinical items need an assessment"
            resting.append(Computed(c, score, outcome))
        elif (
            isinstance(rule, DiagnosisRequiredRule)
            and rule.classification is not None
            and c.verdict == "unknown"
            and score.met
        ):
            condition = rule.classification.condition
            resting.append(Computed(c, score, f"met; no {condition} diagnosis coded: review"))
    return resting


def score_line(computed: Computed) -> str:
    """`I2: SLEDAI-2K ≥ 8 from the record (computed, last 30 days; > 6 needed): met`."""
    score = computed.score
    window = f"last {score.window_days} days" if score.window_days is not None else "any time"
    return (
        f"{computed.criterion.id}: {score.title} \u2265 {score.total} from the record "
        f"(computed, {window}; {SIGNS.get(score.op, score.op)} {_number(score.threshold)} "
        f"needed): {computed.outcome}"
    )


def summary(result: PatientResult, trial: TrialDefinition) -> str:
    unknown = sum(1 for c in result.criteria if c.verdict == "unknown")
    text = (
        f"{LABELS[result.status]} for trial {trial.id}: "
        f"{_plural(unknown, 'criterion', 'criteria')} still unknown"
    )
    for computed in resting_on_scores(result, trial):
        shown = f"{text}; {computed.score.title} \u2265 {computed.score.total} from the record"
        if computed.score.met and len(shown) < 140:
            text = shown
    return text if len(text) < 140 else text[:136] + "..."


def patient_line(patient: PatientSummary) -> str:
    """Who, as a coordinator knows them: "Patient: Jane Doe · MRN 0012 · age 35 · female";
    what is not recorded is left out, the FHIR reference stands in for a missing name."""
    parts = [markdown_text(patient.name or patient.reference)]
    if patient.mrn:
        parts.append(f"MRN {markdown_text(patient.mrn)}")
    if patient.age is not None:
        parts.append(f"age {patient.age}")
    if patient.sex:
        parts.append(patient.sex)
    return "Patient: " + " \u00b7 ".join(parts)


def detail(result: PatientResult, trial: TrialDefinition) -> str:
    registry = trial.source.get("registry")
    name = f"[{trial.id}]({registry})" if registry else trial.id
    lines = [
        f"**{LABELS[result.status]}** for {name}: {markdown_text(trial.title)}",
        "",
        patient_line(result.patient),
        "",
        f"Screened by cohort-match as of {result.as_of.isoformat()} "
        f"(trial file {markdown_text(trial.version)}; score {result.score:.2f}).",
    ]
    computed = resting_on_scores(result, trial)
    if computed:
        lines += ["", "**Computed from the record** (a lower bound; a visit may add items):"]
        lines += [f"- {markdown_text(score_line(c), MAX_LINE)}" for c in computed]
    unknown = result.next_steps
    if unknown:
        lines += ["", f"**To check ({len(unknown)})**, quickest first:"]
        lines += [f"- {markdown_text(step, MAX_LINE)}" for step in unknown[:SHOWN_UNKNOWNS]]
        if len(unknown) > SHOWN_UNKNOWNS:
            lines.append(f"- and {len(unknown) - SHOWN_UNKNOWNS} more in the full result")
    passes = [
        c
        for c in result.criteria
        if c.kind == "inclusion" and c.assessment == "automatic" and c.verdict == "pass"
    ]
    if passes:
        lines += ["", f"**Inclusion criteria met ({len(passes)})**:"]
        lines += [
            f"- {markdown_text(f'{c.id}: {c.reason}', MAX_LINE)}" for c in passes[:SHOWN_PASSES]
        ]
        if len(passes) > SHOWN_PASSES:
            lines.append(f"- and {len(passes) - SHOWN_PASSES} more in the full result")
    exclusions = [c for c in result.criteria if c.kind == "exclusion"]
    clear = sum(1 for c in exclusions if c.verdict in ("pass", "not_applicable"))
    lines += ["", f"Exclusion criteria ruled out by the record: {clear} of {len(exclusions)}."]
    if result.problems:
        lines += [
            "",
            f"{_plural(len(result.problems), 'record', 'records')} could not be read; "
            "the criteria relying on them are unknown.",
        ]
    return "\n".join(lines)


def card_for(
    result: PatientResult,
    trial: TrialDefinition,
    *,
    card_id: str,
    launch_url: str | None,
) -> CardPublic | None:
    """The card for one patient's result; None for an ineligible patient."""
    if result.status == "ineligible":
        return None
    registry = trial.source.get("registry")
    links = None
    if launch_url:
        context = {"trial": trial.id, "as_of": result.as_of.isoformat()}
        links = [
            LinkPublic(
                label="Open the screening result",
                url=launch_url,
                type="smart",
                appContext=json.dumps(context, separators=(",", ":"), sort_keys=True),
            )
        ]
    return CardPublic(
        uuid=card_id,
        summary=summary(result, trial),
        detail=detail(result, trial),
        indicator="warning" if result.status == "likely_eligible" else "info",
        source=SourcePublic(label=f"cohort-match: trial {trial.id}", url=registry),
        links=links,
    )
