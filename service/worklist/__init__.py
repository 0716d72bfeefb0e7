"""The coordinator's worklist: pre-screening decisions that persist across sweeps.

model.py             the decision states, `Decision`, and the pure rules: which decision is
                     open (`open_decision`), and when a patient comes back as new
                     (`returns_as_new`)
store.py             the `decisions` table (append-only history) and `DecisionStore`
research_subject.py  the patient's ResearchSubject as cohort-match writes it, the reviewed
                     state <-> status mapping (research_subject_status.csv), and the pure
                     read-back and write plan
subjects.py          the `research_subjects` table: what is known of each ResearchSubject
report.py            the recruitment report; pure
schemas.py           the API's bodies
"""

from service.worklist.model import (
    STATES,
    Decision,
    DecisionState,
    Screened,
    open_decision,
    returns_as_new,
)

__all__ = ["STATES", "Decision", "DecisionState", "Screened", "open_decision", "returns_as_new"]
