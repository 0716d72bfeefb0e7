"""One patient against every trial served -> one CDS Hooks card (or none). Pure: no I/O.

The `cohort-match-all-trials` patient-view service (service/cds/runtime.py) screens the patient
in view against every trial (service/all_trials.py) and answers with one card listing the trials
the record does not rule the patient out of, best first, each with its status, score and next
step (ranking.next_step, the text every channel shows). No card when every trial rules the
patient out, for the reason the per-trial service gives none (service/cds/cards.py).

- indicator `warning` when some trial finds the patient likely eligible, else `info`;
- summary: how many trials, and the best one with its status, under 140 characters;
- detail: one line per trial (registry link, title, status, score, next step), then how many
  trials the record rules out;
- links: one SMART link per listed trial, opening that trial's checklist (`appContext`).
"""

from __future__ import annotations

import json

from service.all_trials import EveryTrial
from service.cds.cards import MAX_LINE, markdown_text
from service.cds.models import CardPublic, LinkPublic, SourcePublic
from service.criteria.model import TrialDefinition

__all__ = ["ALL_TRIALS_LABELS", "all_trials_card"]

ALL_TRIALS_LABELS = {"likely_eligible": "likely eligible", "possibly_eligible": "possibly eligible"}
SHOWN_TRIALS = 10


def _summary(every: EveryTrial) -> str:
    fits = every.may_fit()
    best = fits[0]
    count = f"{len(fits)} clinical trial{'s' if len(fits) != 1 else ''}"
    text = f"May fit {count}; best: {best.trial_id} ({ALL_TRIALS_LABELS[best.status]})"
    return text if len(text) < 140 else text[:136] + "..."


def _detail(every: EveryTrial, trials: dict[str, TrialDefinition]) -> str:
    fits = every.may_fit()
    as_of = next(iter(every.results.values())).as_of
    lines = [
        f"**Trials this patient may fit ({len(fits)})**, best first; screened by cohort-match "
        f"as of {as_of.isoformat()}:",
        "",
    ]
    for position, fit in enumerate(fits[:SHOWN_TRIALS], start=1):
        registry = trials[fit.trial_id].source.get("registry")
        name = f"[{fit.trial_id}]({registry})" if registry else fit.trial_id
        line = (
            f"{markdown_text(fit.title, 120)}: **{ALL_TRIALS_LABELS[fit.status]}** "
            f"(score {fit.score:.2f})"
        )
        if fit.next_step:
            line += f". Next: {markdown_text(fit.next_step, MAX_LINE)}"
        lines.append(f"{position}. {name} {line}")
    if len(fits) > SHOWN_TRIALS:
        lines.append(f"- and {len(fits) - SHOWN_TRIALS} more")
    ruled_out = len(every.fits) - len(fits)
    if ruled_out:
        lines += ["", f"Ruled out by the record: {ruled_out} of {len(every.fits)} trials served."]
    return "\n".join(lines)


def all_trials_card(
    every: EveryTrial,
    trials: dict[str, TrialDefinition],
    *,
    card_id: str,
    launch_url: str | None,
) -> CardPublic | None:
    """The one card for a patient screened against every trial; None when none may fit."""
    fits = every.may_fit()
    if not fits:
        return None
    links = None
    if launch_url:
        links = [
            LinkPublic(
                label=f"Open the {fit.trial_id} screening result",
                url=launch_url,
                type="smart",
                appContext=json.dumps(
                    {"trial": fit.trial_id, "as_of": every.results[fit.trial_id].as_of.isoformat()},
                    separators=(",", ":"),
                    sort_keys=True,
                ),
            )
            for fit in fits[:SHOWN_TRIALS]
        ]
    likely = any(f.status == "likely_eligible" for f in fits)
    return CardPublic(
        uuid=card_id,
        summary=_summary(every),
        detail=_detail(every, trials),
        indicator="warning" if likely else "info",
        source=SourcePublic(label="cohort-match: every trial served"),
        links=links,
    )
