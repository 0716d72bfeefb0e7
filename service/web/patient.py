"""The patient page's view model: one patient's checklist, banner, status and score explained.
Pure: built from the engine's result and the Patient resource the EHR returned (if any)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.criteria.model import TrialDefinition
from service.criteria.verdict import PatientResult
from service.web.cohort import nav_query
from service.web.views import (
    STATUS_LABEL,
    checklist,
    display_user,
    ehr_link,
    explain,
    patient_banner,
)

__all__ = ["patient_context"]


def patient_context(
    trial: TrialDefinition,
    day: dt.date,
    result: PatientResult,
    resource: dict[str, Any] | None,
    *,
    user: str,
    iss: str,
    show_banner: bool,
    ehr_url: str | None = None,
) -> dict[str, Any]:
    """The context of patient.html."""
    tally = {v: 0 for v in ("pass", "fail", "unknown", "not_applicable")}
    for criterion in result.criteria:
        tally[criterion.verdict] += 1
    banner: dict[str, Any] = patient_banner(resource)
    banner["show"] = show_banner
    return {
        "title": f"{trial.id} checklist",
        "user": display_user(user, iss),
        "nav_query": nav_query(trial, day),
        "trial": trial,
        "result": result,
        "banner": banner,
        "status_label": STATUS_LABEL[result.status],
        "explanation": explain(result, trial),
        "tally": tally,
        "sheet": checklist(result, iss),
        "iss": iss,
        "ehr_href": ehr_link(ehr_url, result.patient.reference),
    }
