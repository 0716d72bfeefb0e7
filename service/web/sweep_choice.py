"""Which stored sweep the coordinator page may show: pure, given the runs read from the store.

The cohort page (and its CSV) shows the newest completed sweep of the trial when one fits,
and screens on demand otherwise (or when asked to with `fresh=1`). A run fits (`showable`)
when all of these hold:

- it is of the trial, completed, with its results still kept;
- of the trial file and code tables the app serves now (else its verdicts are not what a
  screen now would give);
- of the FHIR server behind the session's EHR (`same_server`): only then are its patient ids
  the EHR's (the page's links open them there) and its data the EHR's data:
  - a run of the session's `iss` itself (`--source <iss>`): yes;
  - a run of COHORT_MATCH_FHIR_BASE_URL (what API and scheduled sweeps export, with the
    backend credentials): yes only when the session's `iss` is the one and only EHR on the
    allowlist (COHORT_MATCH_SMART_ISSUERS). Such a deployment says "the EHR we trust fronts
    the server we sweep", as an EHR that proxies its FHIR server does. With two EHRs on the
    allowlist the configured server is behind at most one of them, and its `Patient/p1`
    could be someone else on the other: we do not guess;
  - a run of files (COHORT_MATCH_SWEEP_DATA_DIR, the CLI's --data): never; nothing ties a
    directory's patient ids to the EHR's patients.

Without a sweep named, the newest showable run is shown if the page asks for no `as_of` or
for the run's own; otherwise the page screens on demand (`newest`). A sweep named by the
page's CSV link (so that a sweep completing in between does not change the CSV) must still
be showable, and of the `as_of` asked for if any; otherwise it is refused (`named_fits`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from service.sweeps.store import RunInfo

__all__ = ["Wanted", "named_fits", "newest", "same_server", "showable"]


@dataclass(frozen=True)
class Wanted:
    """What the page would show now, and for whom."""

    trial_id: str
    trial_version: str
    terminology_version: str
    iss: str  # the session's EHR FHIR server (as on the allowlist)
    issuers: tuple[str, ...]  # COHORT_MATCH_SMART_ISSUERS
    configured: str | None  # COHORT_MATCH_FHIR_BASE_URL
    as_of: dt.date | None = None  # asked for by the page; None: any


def _normal(url: str) -> str:
    return url.strip().rstrip("/")


def same_server(run: RunInfo, wanted: Wanted) -> bool:
    """Whether `run` read the FHIR server behind the session's EHR (module docstring)."""
    if run.source_kind != "fhir":
        return False
    source = run.source.rstrip("/")
    if source == wanted.iss.rstrip("/"):
        return True
    configured = (wanted.configured or "").rstrip("/")
    return bool(configured) and source == configured and wanted.issuers == (_normal(wanted.iss),)


def showable(run: RunInfo, wanted: Wanted) -> bool:
    """A completed run of the trial, results kept, of the trial file and code tables served
    now, from the EHR's server."""
    return (
        run.trial_id == wanted.trial_id
        and run.has_results
        and run.trial_version == wanted.trial_version
        and run.terminology_version == wanted.terminology_version
        and same_server(run, wanted)
    )


def newest(runs: Iterable[RunInfo], wanted: Wanted) -> RunInfo | None:
    """The run to show among `runs` (newest first), or None to screen on demand."""
    found = next((r for r in runs if showable(r, wanted)), None)
    if found is None or (wanted.as_of is not None and found.as_of != wanted.as_of):
        return None
    return found


def named_fits(run: RunInfo | None, wanted: Wanted) -> bool:
    """Whether a sweep the page named (None: no such run) may still be shown."""
    return (
        run is not None
        and showable(run, wanted)
        and (wanted.as_of is None or run.as_of == wanted.as_of)
    )
