"""The trial definition: what a trial file (trials/<id>.yaml) may say, validated on load.

Each rule type is a small, protocol-shaped vocabulary; a second trial needs a new file,
not new code, as long as its criteria are made of these. Unknown keys are refused so a
typo in a trial file fails loudly at load instead of silently changing a verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.criteria.instrument import ScoreSpec, read_instrument
from service.errors import DataError
from service.paths import data_root, parse_yaml

__all__ = [
    "Criterion",
    "Rule",
    "TrialDefinition",
    "TrialError",
    "check_valuesets",
    "load_trial",
    "valuesets_named",
]

Op = Literal[">", ">=", "<", "<=", "="]


class TrialError(DataError):
    """A trial file that cannot be read or does not describe a trial."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Amount(_Strict):
    value: float
    unit: str


class DerivedProduct(_Strict):
    """Derive a value as the product of other results (ANC = WBC x neutrophil % x 0.01)."""

    labs: list[str] = Field(min_length=2)
    scale: float = 1.0
    same_day: bool = True


class InvalidAfterMedication(_Strict):
    """A result drawn within `within_days_before` after this medication does not decide."""

    valueset: str
    within_days_before: int


class RaisedLimit(_Strict):
    valueset: str
    uln_multiple: float


class MeasurementRule(_Strict):
    """Latest result in the window compared with a fixed limit or a multiple of the ULN."""

    type: Literal["measurement"]
    lab: str
    op: Op
    value: float | None = None
    unit: str | None = None
    # x ULN: the ULN comes from the result's normal reference range, else the value set's
    # `uln_interval` (criteria/measurement.py); a trial gives no fixed default.
    uln_multiple: float | None = None
    lookback_days: int | None = None
    derive_product: DerivedProduct | None = None
    invalid_after_medication: InvalidAfterMedication | None = None
    raised_limit_if_diagnosis: RaisedLimit | None = None
    # Without a recorded result in the window, compute the score from the record
    # (criteria/scores.py: a lower bound that passes above the limit, else `unknown`).
    activity: ScoreSpec | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> MeasurementRule:
        fixed = self.value is not None and self.unit is not None
        relative = self.uln_multiple is not None
        if fixed == relative:
            raise ValueError("give either value+unit or uln_multiple")
        return self


class CreatinineClearanceRule(_Strict):
    """Cockcroft-Gault from the latest creatinine (criteria/creatinine_clearance.py)."""

    type: Literal["creatinine_clearance"]
    op: Op
    value: float
    unit: str
    measured_lab: str  # a measured clearance: shown as evidence, never deciding
    creatinine_lab: str
    weight_lab: str
    lookback_days: int | None = None
    weight_lookback_days: int = 180  # of the creatinine, before or after
    # A Cockcroft-Gault value calculated by the lab: counts if not older than the creatinine.
    reported_lab: str | None = None
    # Among creatinine results of one instant, those the formula needs (serum/plasma).
    serum_creatinine_lab: str | None = None


class GradeCount(_Strict):
    grade: str
    at_least: int


class GradedDomainsRule(_Strict):
    type: Literal["graded_domains"]
    domains: list[str] = Field(min_length=1)
    pass_if_any: list[GradeCount] = Field(min_length=1)
    lookback_days: int | None = None


class TherapyComponent(_Strict):
    """One part of a therapy history (criteria/therapy_history.py states the policies).

    `course_gap_days`: single-day records (infusions, one per MedicationAdministration) no
    more than this many days apart form one course, from the first to the last plus this
    interval. `pulse_max_days` / `pulse_min_prednisone_mg`: a glucocorticoid course of at most
    that many days, given intravenously or at that many mg/day prednisone equivalent or more,
    is a pulse: shown and flagged, not counted toward the dose. Unset: neither rule applies.
    """

    name: str
    valueset: str
    min_prednisone_mg_per_kg_day: float | None = None
    duration_months_more_than: int | None = None
    course_gap_days: int | None = Field(default=None, ge=1)
    pulse_max_days: int | None = Field(default=None, ge=1)
    pulse_min_prednisone_mg: float | None = Field(default=None, gt=0)


class TherapyHistoryRule(_Strict):
    type: Literal["therapy_history"]
    components: list[TherapyComponent] = Field(min_length=1)
    weight_lab: str
    weight_lookback_days: int = 365


class AgeRule(_Strict):
    type: Literal["age"]
    min_years: int
    max_years: int


class DiagnosisRequiredRule(_Strict):
    type: Literal["diagnosis_required"]
    valueset: str
    uncertain_valueset: str | None = None
    # Classification criteria computed from the record (criteria/scores.py): shown beside a
    # diagnosis; met without one, `unknown` ("review") instead of `fail`.
    classification: ScoreSpec | None = None


class TestSpec(_Strict):
    """How one test's latest result reads as positive or negative."""

    __test__ = False  # not a pytest class

    lab: str
    positive: Literal["qualitative", "detectable"] = "qualitative"
    positive_at_or_above: Amount | None = None
    negative_below: Amount | None = None
    # For a test that reads positive when low (eGFR < 15 for kidney failure).
    positive_below: Amount | None = None
    negative_at_or_above: Amount | None = None
    # In `diagnosis_excludes.positive_tests`: a positive result raises a doubt (`unknown`) and
    # never fails by itself (one eGFR < 15 may be acute kidney injury, not end-stage disease).
    positive_suggests_only: bool = False
    confirm_negative_after_days: int | None = None
    # A positive result counts at any age, not only inside the look-back window (HIV, HBsAg,
    # treponemal antibodies); a later negative after it is `unknown` (review).
    positive_persists: bool = False
    # Diagnoses that show the test would read positive, used when no result is in the window
    # (chronic hepatitis B for HBsAg, HIV infection for the HIV antibody).
    diagnosis_valueset: str | None = None


class TestResultsRule(_Strict):
    """Fails when every test of any group in `fail_when` is positive (three-valued logic)."""

    __test__ = False

    type: Literal["test_results"]
    tests: dict[str, TestSpec]
    fail_when: list[list[str]] = Field(min_length=1)
    lookback_days: int | None = None

    @model_validator(mode="after")
    def _known_tests(self) -> TestResultsRule:
        for group in self.fail_when:
            for name in group:
                if name not in self.tests:
                    raise ValueError(f"fail_when names unknown test {name!r}")
        for name, spec in self.tests.items():
            if spec.positive_suggests_only:
                raise ValueError(
                    f"test {name!r}: positive_suggests_only is read only by "
                    "diagnosis_excludes.positive_tests"
                )
        return self


class DiseaseFreeException(_Strict):
    """Records of this value set do not exclude once over for more than N years.

    Over on an unrecorded date (or never recorded over) is `unknown` by default: a
    "history of" code is often recorded active. `when_unresolved: fail` is for value sets
    whose active record means the disease is present now (a current CNS infection); one that
    began more than N years before stays `unknown` (it may have been over that long).
    """

    valueset: str
    disease_free_years_more_than: int
    when_unresolved: Literal["unknown", "fail"] = "unknown"


class ProcedureWindow(_Strict):
    valueset: str
    within_days: int


class PositiveTests(_Strict):
    tests: dict[str, TestSpec]
    lookback_days: int


class DiagnosisExcludesRule(_Strict):
    type: Literal["diagnosis_excludes"]
    valuesets: list[str] = Field(min_length=1)
    active_only: bool = False
    onset_within_days: int | None = None
    exceptions: list[DiseaseFreeException] = Field(default_factory=list)
    procedures: ProcedureWindow | None = None
    suspect_if_medication_active: str | None = None
    positive_tests: PositiveTests | None = None
    # Value sets whose records never exclude on their own: at most `unknown` (superficial
    # infections under "uncontrolled infections requiring treatment").
    at_most_unknown: list[str] = Field(default_factory=list)
    # Procedures that never exclude by themselves but suggest the disease (a CABG for E6): one
    # on record on or before as_of, whenever, is `unknown` for review.
    review_procedures: list[str] = Field(default_factory=list)
    # A record with no clinical status and no end date stops counting this many days after
    # its onset (or recorded date): a pregnancy or lactation entry nobody closed.
    unstated_status_counts_days: int | None = None


class AllergyRule(_Strict):
    type: Literal["allergy"]
    category: Literal["medication", "food", "environment", "biologic"]
    severe_manifestations: str
    # Allergen codes that are drugs whatever the record's category (SNOMED substances,
    # "allergy to <drug>" findings); RxNorm and ATC codes are drugs anyway.
    allergens: str | None = None
    # Severe drug hypersensitivity recorded as a Condition (SJS/TEN, DRESS, drug anaphylaxis).
    diagnoses: str | None = None
    # Allergens known not to be drugs (foods, environment, latex, venom): with neither this nor a
    # drug code, text or category, an allergy is unclassified and never passes on its own.
    non_drug_allergens: str | None = None


class StudyParticipationRule(_Strict):
    type: Literal["study_participation"]
    within_months: int


class ManualRule(_Strict):
    type: Literal["manual"]


Rule = Annotated[
    MeasurementRule
    | CreatinineClearanceRule
    | GradedDomainsRule
    | TherapyHistoryRule
    | AgeRule
    | DiagnosisRequiredRule
    | TestResultsRule
    | DiagnosisExcludesRule
    | AllergyRule
    | StudyParticipationRule
    | ManualRule,
    Field(discriminator="type"),
]


class AppliesTo(_Strict):
    sex: Literal["female", "male"]


class Criterion(_Strict):
    id: str
    kind: Literal["inclusion", "exclusion"]
    number: int
    text: str
    assessment: Literal["automatic", "manual"]
    rule: Rule
    check: str
    cost: float = Field(ge=0)
    note: str | None = None
    applies_to: AppliesTo | None = None


class AbsentCriterion(_Strict):
    number: int
    kind: Literal["inclusion", "exclusion"]
    note: str


class Defaults(_Strict):
    lookback_days: int = 90


class TrialDefinition(_Strict):
    id: str
    version: str
    title: str
    sponsor_site: str | None = None
    source: dict[str, str] = Field(default_factory=dict)
    defaults: Defaults = Defaults()
    absent_criteria: list[AbsentCriterion] = Field(default_factory=list)
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> TrialDefinition:
        seen: set[str] = set()
        for criterion in self.criteria:
            if criterion.id in seen:
                raise ValueError(f"criterion id {criterion.id} appears twice")
            seen.add(criterion.id)
        return self

    def criterion(self, criterion_id: str) -> Criterion:
        for criterion in self.criteria:
            if criterion.id == criterion_id:
                return criterion
        raise KeyError(criterion_id)


VALUESET_KEYS = frozenset(
    {
        "lab",
        "labs",
        "valueset",
        "valuesets",
        "uncertain_valueset",
        "domains",
        "measured_lab",
        "creatinine_lab",
        "weight_lab",
        "reported_lab",
        "serum_creatinine_lab",
        "diagnosis_valueset",
        "suspect_if_medication_active",
        "severe_manifestations",
        "allergens",
        "non_drug_allergens",
        "review_procedures",
        "diagnoses",
        "at_most_unknown",
        "medications",
    }
)


def valuesets_named(trial: TrialDefinition) -> set[str]:
    """Every value-set name the trial's rules refer to."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in VALUESET_KEYS and value is not None:
                    names.update([value] if isinstance(value, str) else value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk([criterion.rule.model_dump() for criterion in trial.criteria])
    return names


def check_valuesets(trial: TrialDefinition, known: set[str] | frozenset[str]) -> None:
    """Refuse a trial that names a value set the terminology does not have."""
    missing = sorted(valuesets_named(trial) - set(known))
    if missing:
        raise TrialError(
            f"trial {trial.id} names value sets not in terminology/: {', '.join(missing)}"
        )


SCORE_KEYS = ("classification", "activity")


def instrument_path(trial_path: Path, name: str) -> Path:
    """`instruments/<name>.yaml` beside the trial file, else the bundled one (a site's own
    trials directory may name the instruments shipped with cohort-match)."""
    beside = trial_path.parent / "instruments" / f"{name}.yaml"
    if beside.is_file():
        return beside
    return data_root() / "trials" / "instruments" / f"{name}.yaml"


def _resolve_instruments(raw: object, path: Path) -> None:
    """Replace each `instrument: <id>` of a score by its file (`instrument_path`), in place, so
    the trial is validated with the instrument it names."""
    if not isinstance(raw, dict):
        return
    for criterion in raw.get("criteria") or ():
        rule = criterion.get("rule") if isinstance(criterion, dict) else None
        if not isinstance(rule, dict):
            continue
        for key in SCORE_KEYS:
            spec = rule.get(key)
            if isinstance(spec, dict) and isinstance(spec.get("instrument"), str):
                name = spec["instrument"]
                where = instrument_path(path, name)
                try:
                    spec["instrument"] = read_instrument(where)
                except (OSError, ValueError, yaml.YAMLError) as exc:
                    raise TrialError(f"{path}: instrument {name!r}: {exc}") from exc


def load_trial(path: Path) -> TrialDefinition:
    """Read and validate one trial file; errors name the file and the offending field.

    Instruments a score names are read from `instruments/` beside the trial file (else the
    bundled ones)."""
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TrialError(f"{path}: {exc}") from exc
    _resolve_instruments(raw, path)
    try:
        return TrialDefinition.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise TrialError(f"{path}: {where}: {first['msg']}") from exc
