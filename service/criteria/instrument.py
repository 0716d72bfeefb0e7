"""A scoring instrument (EULAR/ACR 2019, SLEDAI-2K ...) as data: trials/instruments/<id>.yaml.

An instrument is a list of *findings* (what the record can show: a lab result past a limit, a
positive test, a coded finding) and of weighted *items* made of findings (one of them, or all of
them: "low C3 AND low C4"), grouped in domains. The file says everything a rheumatologist
reviews: weights, domains, the domain rule, the entry criterion, the classification threshold,
the window, where each limit comes from, and which records make an item "better explained by
another cause". Strict like the trial file: unknown keys are refused.

A trial names an instrument from a criterion's rule (`classification:` on `diagnosis_required`,
`activity:` on `measurement`); `service/criteria/model.py: load_trial` reads the file from the
`instruments/` folder beside the trial, so a second lupus trial reuses it. The engine is
`service/criteria/scoring.py`; the verdict paths are `service/criteria/scores.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.paths import parse_yaml

__all__ = [
    "CodedFinding",
    "CompetingCause",
    "FixedLimit",
    "Instrument",
    "Item",
    "LabFinding",
    "PositiveFinding",
    "ScoreSpec",
    "read_instrument",
]

Comparison = Literal["<", "<=", ">", ">="]
# Where a lab finding's limit comes from, tried in the order the item lists them.
RangeSource = Literal["reference_range_low", "reference_range_high", "interpretation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedLimit(_Strict):
    """A number with its UCUM unit, and where it comes from (the instrument's definition, or a
    documented fallback for results sent without a reference range)."""

    value: float
    unit: str
    source: str


class Substitute(_Strict):
    """Another test that may stand in for the finding's own when a trial option enables it
    (a urine protein/creatinine ratio for 24-hour proteinuria): its value in the substitute's
    canonical unit, times `factor`, is read in the finding's unit."""

    option: str
    valuesets: list[str] = Field(min_length=1)
    factor: float = Field(gt=0)
    note: str


class LabFinding(_Strict):
    """A result past a limit: `op` against the first of `limits` that the result allows."""

    kind: Literal["lab"]
    label: str
    valuesets: list[str] = Field(min_length=1)
    op: Comparison
    limits: list[RangeSource | FixedLimit] = Field(min_length=1)
    substitute: Substitute | None = None


class PositiveFinding(_Strict):
    """A test read as positive: a positive qualitative result or interpretation, a titer at or
    above `min_titer`, or a number above the lab's reference range (else above `above`)."""

    kind: Literal["positive"]
    label: str
    valuesets: list[str] = Field(min_length=1)
    min_titer: float | None = Field(default=None, gt=0)
    above: FixedLimit | None = None


class CodedFinding(_Strict):
    """A coded clinical finding on the problem list (a Condition in one of these value sets)."""

    kind: Literal["coded"]
    label: str
    diagnoses: list[str] = Field(min_length=1)


Finding = Annotated[LabFinding | PositiveFinding | CodedFinding, Field(discriminator="kind")]


class CompetingCause(_Strict):
    """Records that make a met finding "better explained by another cause": a diagnosis active,
    or a medication taken, from `days_before` the finding to `days_after` it."""

    why: str
    diagnoses: list[str] = Field(default_factory=list)
    medications: list[str] = Field(default_factory=list)
    days_before: int = Field(default=14, ge=0)
    days_after: int = Field(default=14, ge=0)


class Item(_Strict):
    id: str
    label: str
    domain: str
    weight: int = Field(ge=0)
    clinical: bool = False  # EULAR/ACR 2019: classification needs at least one clinical item
    findings: list[str] = Field(min_length=1)
    combine: Literal["any", "all"] = "any"
    better_explained_by: list[CompetingCause] = Field(default_factory=list)
    note: str | None = None


class NotComputed(_Strict):
    """An item of the published instrument that the record cannot show, and why."""

    label: str
    weight: int
    why: str


class Option(_Strict):
    default: bool = False
    note: str


class Instrument(_Strict):
    id: str
    title: str
    purpose: Literal["classification", "activity"]
    source: str
    # Days before as_of an item counts; None: at any time before as_of (classification criteria
    # count an item that occurred once, ever).
    window_days: int | None = Field(default=None, ge=0)
    window_note: str
    domain_rule: Literal["highest_per_domain", "each_item"]
    entry: str | None = None  # a finding that must be met before anything counts
    requires_clinical_item: bool = False
    threshold: float | None = None  # classified at >= threshold (classification instruments)
    options: dict[str, Option] = Field(default_factory=dict)
    findings: dict[str, Finding]
    items: list[Item] = Field(min_length=1)
    not_computed: list[NotComputed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        ids = [item.id for item in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("item ids must be unique")
        for item in self.items:
            missing = [f for f in item.findings if f not in self.findings]
            if missing:
                raise ValueError(f"item {item.id} names unknown findings {missing}")
        if self.entry is not None and self.entry not in self.findings:
            raise ValueError(f"entry names unknown finding {self.entry!r}")
        if self.purpose == "classification" and self.threshold is None:
            raise ValueError("a classification instrument needs a threshold")
        for name, finding in self.findings.items():
            if isinstance(finding, LabFinding) and finding.substitute is not None:
                if finding.substitute.option not in self.options:
                    raise ValueError(
                        f"finding {name}: unknown option {finding.substitute.option!r}"
                    )
        return self

    def item(self, item_id: str) -> Item:
        return next(item for item in self.items if item.id == item_id)


class ScoreSpec(_Strict):
    """What a criterion computes: the instrument (read from its file) and the trial's options."""

    instrument: Instrument
    options: dict[str, bool] = Field(default_factory=dict)
    # How a reason names the condition the score classifies ("no SLE diagnosis coded").
    condition: str = "the"

    @model_validator(mode="after")
    def _known_options(self) -> ScoreSpec:
        unknown = sorted(set(self.options) - set(self.instrument.options))
        if unknown:
            raise ValueError(f"unknown options {unknown} for instrument {self.instrument.id}")
        return self

    def enabled(self, option: str) -> bool:
        if option in self.options:
            return self.options[option]
        known = self.instrument.options.get(option)
        return known.default if known is not None else False


def read_instrument(path: Path) -> dict[str, Any]:
    """The raw mapping of one instrument file (validated as part of the trial that names it)."""
    loaded = parse_yaml(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping")
    return loaded
