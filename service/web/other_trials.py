"""The patient page's "other trials" section: the trials besides the one shown that the
record does not rule the patient out of, best fit first (service/all_trials.py), each with its
status, score and next step, and a link to that trial's checklist. Rendered by the partial
templates/_other_trials.html, included from patient.html.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from service.all_trials import EveryTrial
from service.web.views import STATUS_LABEL

__all__ = ["other_trials_context"]


def other_trials_context(every: EveryTrial, shown: str, ident: str, day: dt.date) -> dict[str, Any]:
    """`other_trials` (rows of the trials the patient may fit, `shown` left out) and
    `other_ruled_out` (how many other trials the record rules out), for the partial."""
    others = [f for f in every.fits if f.trial_id != shown]
    rows = [
        {
            "trial_id": f.trial_id,
            "title": f.title,
            "status": f.status,
            "status_label": STATUS_LABEL[f.status],
            "score": f.score,
            "next_step": f.next_step,
            "href": "/app/patient?"
            + urlencode({"id": ident, "trial": f.trial_id, "as_of": day.isoformat()}),
        }
        for f in others
        if f.status != "ineligible"
    ]
    return {
        "other_trials": rows,
        "other_ruled_out": sum(1 for f in others if f.status == "ineligible"),
        "other_served": len(others),
    }
