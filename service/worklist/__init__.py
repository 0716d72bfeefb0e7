"""The coordinator's worklist: pre-screening decisions that persist across sweeps.

model.py   the decision states, `Decision`, and the pure rules: which decision is open
           (`open_decision`), and when a patient comes back as new (`returns_as_new`)
store.py   the `decisions` table (append-only history) and `DecisionStore`
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
