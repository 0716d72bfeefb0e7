"""`age`: the patient's age in whole years at `as_of`, within [min_years, max_years].

A partial date of birth ("1980", "1980-06") gives a range of possible ages: the verdict stands
only when every possible age gives it; otherwise `unknown`.
"""

from __future__ import annotations

from service.criteria.common import Context, Findings, age_missing, age_range, decide
from service.criteria.model import AgeRule
from service.criteria.verdict import Evidence, Verdict
from service.facts import PatientFacts, written


def evaluate_age(rule: AgeRule, facts: PatientFacts, ctx: Context) -> Verdict:
    ages = age_range(facts.demographics, ctx.as_of)
    if ages is None or facts.demographics is None:
        why = age_missing(facts.demographics, ctx.as_of)
        demographics = facts.demographics
        if demographics is None or demographics.birth_date is None:
            return Verdict("unknown", why)
        birth = Evidence(
            reference=demographics.reference,
            value=written(demographics.birth_date, demographics.birth_date_latest),
            date=ctx.as_of,
            note=why,
        )
        return Verdict("unknown", why, (birth,))
    youngest, oldest = ages
    assert facts.demographics.birth_date is not None  # age_range found an age
    shown = _ages(youngest, oldest)
    allowed = f"{rule.min_years}-{rule.max_years}"
    evidence = Evidence(
        reference=facts.demographics.reference,
        value=written(facts.demographics.birth_date, facts.demographics.birth_date_latest),
        date=ctx.as_of,
        rule=f"age {shown} at {ctx.as_of}, allowed {allowed}",
    )
    found = Findings()
    if oldest < rule.min_years or youngest > rule.max_years:
        found.decisive.append(evidence)
    elif not (rule.min_years <= youngest and oldest <= rule.max_years):
        found.doubt(f"partial date of birth: age {shown} straddles the {allowed} limit", evidence)
    else:
        found.shown.append(evidence)
    return decide(
        found,
        decided=lambda _: f"age {shown} at {ctx.as_of} is outside {allowed}",
        problem=None,
        nothing="",
        only_shown=f"age {shown} at {ctx.as_of} is within {allowed}",
        absent="",
    )


def _ages(youngest: int, oldest: int) -> str:
    return str(youngest) if youngest == oldest else f"{youngest}-{oldest}"
