"""The code tables under terminology/, loaded once, and the questions the mappers ask of them.

- Value-set membership on system + code, never display text. ICD-10, ICD-10-CM and ATC are
  hierarchies written into the code itself, so a row `M32.1` also covers `M32.14` and a row
  `J01` every antibacterial; SNOMED CT and LOINC codes match exactly.
- Site code map: a hospital's local codes translated to standard ones before membership.
- Each value set's `definition` (service/vocab/definition.py) is read and checked; the CSV is
  its expansion. Memberships a terminology server answered at run time are an overlay
  (`learn`), consulted by `concepts_of_code`; the tables themselves never change.
- Units: aliases for the non-UCUM strings labs send, then UCUM conversion to the value set's
  canonical unit (with its molar mass for mg/dL <-> umol/L).
- Qualitative results ("Positive", SNOMED 10828004, "阳性") and glucocorticoid potency.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from service.errors import DataError
from service.facts import Code
from service.paths import parse_yaml
from service.qualitative import Reading, normalize_result_text, read_qualitative
from service.units import UnitError, conversion_factor, fold_aliases, normalize_unit
from service.vocab.definition import DefinitionError, ValueSetDefinition, parse_definition
from service.vocab.systems import CodeSystems

__all__ = [
    "GlucocorticoidPotency",
    "Terminology",
    "TerminologyError",
    "UlnInterval",
    "ValueSetInfo",
    "remember",
]

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ATC = "http://www.whocc.no/atc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# The value set whose drugs without a row in glucocorticoid_equivalents.csv roll up to theirs.
GLUCOCORTICOID_DRUGS = "valuesets/glucocorticoids.csv"
# "5 MG Oral Tablet", "4 MG Disintegrating Oral Tablet", "20 MG Oral Capsule" (RxNorm names).
ORAL_UNIT_STRENGTH = re.compile(r"(\d+(?:\.\d+)?) mg (?:[a-z ]*)?(?:oral )?(?:tablet|capsule)\b")
# The shortest prefix that is a real level of each hierarchy (ICD-10 category; ATC group).
HIERARCHICAL = {ICD10: 3, ICD10CM: 3, ATC: 1}


# Per-instance caches of derived answers start over past this many keys: a screen sees a few
# hundred (concept, unit) pairs, but a malformed feed could send a new unit with every result.
CACHE_LIMIT = 4096


class TerminologyError(DataError):
    """A code table that cannot be read."""


@dataclass(frozen=True, slots=True)
class UlnInterval:
    """The upper limits of normal in common use for an analyte, for results sent without a
    usable reference range: a verdict stands only if it holds for every ULN in between."""

    low: float
    high: float
    unit: str
    source: str


@dataclass(frozen=True, slots=True)
class ValueSetInfo:
    name: str
    title: str
    kind: str
    canonical_unit: str | None
    molar_mass: float | None
    size: int
    unit_aliases: dict[str, str] | None = None  # analyte-specific, before the global table
    # medications: how long a record without an end is taken to run (criteria/exposure.py)
    default_course_days: int | None = None
    # words that suggest the concept in a record no value set knows (English, Chinese ...)
    review_terms: tuple[str, ...] = ()
    # words that say a text is not about the concept now ("history of", "not pregnant",
    # 既往): a text holding one is no review match of this set
    review_exclude_terms: tuple[str, ...] = ()
    # labs judged against a multiple of the ULN: the ULNs labs use (criteria/measurement.py)
    uln_interval: UlnInterval | None = None
    # what the CSV is the expansion of (service/vocab/definition.py); None where not yet written
    definition: ValueSetDefinition | None = None
    # qualitative tests: a reference-range flag (H, A, N ...) on a numeric value reads as
    # positive/negative (terminology/results/interpretation_flags.csv)
    interpretation_decides: bool = False
    # syphilis tests: a titer at any dilution (1:1 and up) is reactive
    titer_reactive_at_any_dilution: bool = False
    # a value below this sent as "%", "1" or without a unit is a fraction (LVEF 0.61 = 61 %)
    fraction_below: float | None = None


@dataclass(frozen=True, slots=True)
class GlucocorticoidPotency:
    prednisone_mg_per_mg: float
    strength_mg: float | None


def normalize_code(system: str, code: str) -> str:
    """ICD codes are compared upper-case with their dot (`m3214` -> `M32.14`)."""
    code = code.strip()
    if system in (ICD10, ICD10CM):
        code = code.upper()
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return code


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise TerminologyError(f"{path}: {exc}") from exc


class Terminology:
    """Read-only view of the code tables. Build with `Terminology.load(root)`."""

    def __init__(
        self,
        valuesets: dict[str, ValueSetInfo],
        members: dict[tuple[str, str], set[str]],
        unit_aliases: dict[str, str],
        qualitative_codes: dict[tuple[str, str], Reading],
        qualitative_text: dict[str, Reading],
        glucocorticoids: dict[tuple[str, str], GlucocorticoidPotency],
        site_map: dict[tuple[str, str], Code],
        version: str,
        interpretation_flags: dict[tuple[str, str], Reading] | None = None,
        case_sensitive_units: frozenset[str] = frozenset(),
        code_systems: CodeSystems | None = None,
        text_read: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self.valuesets = valuesets
        known = {system for system, _ in members} | {system for system, _ in glucocorticoids}
        known |= {system for system, _ in [*qualitative_codes, *(interpretation_flags or {})]}
        self._code_systems = code_systems or CodeSystems.from_rows((), known)
        self._system_cache: dict[str, str] = {}
        self._text_read = text_read
        self._covered: frozenset[str] | None = None
        self._of_kind: dict[str, frozenset[str]] = {}
        self._members = {key: frozenset(names) for key, names in members.items()}
        self.unit_aliases = unit_aliases
        self._folded_aliases = fold_aliases(unit_aliases, case_sensitive_units)
        self._qualitative_codes = qualitative_codes
        self._qualitative_text = {normalize_result_text(k): v for k, v in qualitative_text.items()}
        self._interpretation_flags = interpretation_flags or {}
        self._glucocorticoids = glucocorticoids
        self._site_map = site_map
        self.version = version
        self._concept_cache: dict[tuple[str, str], frozenset[str]] = {}
        # (concept, unit as recorded) -> (factor, canonical unit), None if not convertible
        self._canonical_cache: dict[tuple[str, str | None], tuple[float, str] | None] = {}
        # (unit, target, molar mass) -> factor, for units as written (before aliases)
        self._factor_cache: dict[tuple[str, str, float | None], float] = {}
        # concepts of a result -> the one whose canonical unit its value is converted to
        self._quantity_concept_cache: dict[frozenset[str], str | None] = {}
        # result text -> its qualitative reading (qualitative_of_text)
        self._qualitative_text_cache: dict[str, Reading | None] = {}
        self._review = _review_patterns(valuesets)
        # (system, ICD/ATC code) -> value sets with rows strictly below it; built on first use
        self._under: dict[tuple[str, str], frozenset[str]] | None = None
        # memberships a terminology server taught at run time (service/vocab/runtime.py)
        self._learned: dict[tuple[str, str], frozenset[str]] = {}
        # name -> a caller's cache of what raw codes read as under these tables (`memo`)
        self._memos: dict[str, dict[Any, Any]] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, root: Path, site_code_map: Path | None = None) -> Terminology:
        """Load every table under `root` (terminology/), plus an optional site code map."""
        digest = hashlib.sha256()
        valuesets: dict[str, ValueSetInfo] = {}
        members: dict[tuple[str, str], set[str]] = {}
        for csv_path in sorted((root / "valuesets").glob("*.csv")):
            name = csv_path.stem
            meta_path = csv_path.with_suffix(".yaml")
            meta = _read_yaml(meta_path)
            rows = _read_csv(csv_path)
            digest.update(csv_path.read_bytes() + meta_path.read_bytes())
            for row in rows:
                system = row["system"].strip()
                members.setdefault((system, normalize_code(system, row["code"])), set()).add(name)
            molar = meta.get("molar_mass_g_per_mol")
            valuesets[name] = ValueSetInfo(
                name=name,
                title=str(meta.get("title", name)),
                kind=str(meta.get("kind", "")),
                canonical_unit=meta.get("canonical_unit"),
                molar_mass=float(molar) if molar is not None else None,
                size=len(rows),
                unit_aliases={str(k): str(v) for k, v in (meta.get("unit_aliases") or {}).items()}
                or None,
                default_course_days=_optional_int(meta.get("default_course_days")),
                review_terms=_review_terms(meta.get("review_terms"), meta_path),
                review_exclude_terms=_review_terms(meta.get("review_exclude_terms"), meta_path),
                uln_interval=_uln_interval(meta.get("uln_interval"), meta_path),
                definition=_definition(meta.get("definition"), meta_path),
                interpretation_decides=_flag(meta, "interpretation_decides", meta_path),
                titer_reactive_at_any_dilution=_flag(
                    meta, "titer_reactive_at_any_dilution", meta_path
                ),
                fraction_below=_optional_float(meta.get("fraction_below"), meta_path),
            )

        def table(relative: str) -> list[dict[str, str]]:
            path = root / relative
            if not path.exists():
                return []
            digest.update(path.read_bytes())
            return _read_csv(path)

        alias_rows = table("units/aliases.csv")
        aliases = {row["text"]: row["ucum"] for row in alias_rows}
        exact_units = frozenset(row["text"] for row in alias_rows if row.get("case") == "exact")
        qual_codes: dict[tuple[str, str], Reading] = {
            (row["system"], row["code"]): _qualitative(row["result"], row)
            for row in table("results/qualitative_codes.csv")
        }
        qual_text: dict[str, Reading] = {
            row["text"]: _qualitative(row["result"], row)
            for row in table("results/qualitative_text.csv")
        }
        potency_rows = table("glucocorticoid_equivalents.csv")
        flags: dict[tuple[str, str], Reading] = {
            (row["system"], row["code"]): _qualitative(row["result"], row)
            for row in table("results/interpretation_flags.csv")
        }
        potency = {
            (row["system"], row["code"]): GlucocorticoidPotency(
                prednisone_mg_per_mg=float(row["prednisone_mg_per_mg"]),
                strength_mg=float(row["strength_mg"]) if row.get("strength_mg") else None,
            )
            for row in potency_rows
        }
        if (root / GLUCOCORTICOID_DRUGS).exists():
            drugs = _read_csv(root / GLUCOCORTICOID_DRUGS)
            potency = _rolled_up_potency(potency_rows, drugs) | potency
        site_rows = table("site_code_map.csv")
        if site_code_map is not None:
            digest.update(site_code_map.read_bytes())
            site_rows += _read_csv(site_code_map)
        site_map = {
            (row["local_system"], row["local_code"]): Code(row["system"], row["code"])
            for row in site_rows
        }
        return cls(
            valuesets,
            members,
            aliases,
            qual_codes,
            qual_text,
            potency,
            site_map,
            version=digest.hexdigest()[:12],
            interpretation_flags=flags,
            case_sensitive_units=exact_units,
            text_read=frozenset(
                (row["system"], normalize_code(row["system"], row["code"]))
                for row in table("text_read_codes.csv")
            ),
            code_systems=CodeSystems.from_rows(
                table("code_systems.csv"),
                {system for system, _ in members} | {system for system, _ in qual_codes},
            ),
        )

    # ------------------------------------------------------------------ code systems
    def canonical_system(self, system: str) -> str:
        """The canonical URI of the code system `system` names (an OID, a name, an edition
        URI, a national modification of ICD-10: terminology/code_systems.csv), else `system`."""
        found = self._system_cache.get(system)
        if found is None:
            found = self._code_systems.canonical(system)
            remember(self._system_cache, system, found)
        return found

    def has_other_names(self, system: str) -> bool:
        """Whether feeds may name this canonical system otherwise (code_systems.csv lists an
        OID, a name or a URI variant for it)."""
        return system in self._code_systems.aliased

    def covers_system(self, system: str) -> bool:
        """Whether a value set lists codes of this code system (canonical URI): a code of it
        that no table lists is then known not to be of the tables' sets."""
        if self._covered is None:
            self._covered = frozenset(system for system, _ in self._members)
        return self.canonical_system(system) in self._covered

    def reads_text_of(self, system: str, code: str) -> bool:
        """Whether an ICD code is a broad history or status category whose text names the
        disease (terminology/text_read_codes.csv: Z86.7 "personal history of diseases of the
        circulatory system" sent for 陈旧性脑梗死): review terms read its text, as for a local
        code, where other ICD codes outside the tables are left out on purpose."""
        system = self.canonical_system(system)
        shortest = HIERARCHICAL.get(system)
        if shortest is None or not self._text_read:
            return False
        normalized = normalize_code(system, code)
        return any(
            (system, level) in self._text_read
            for level in (normalized, *_levels_above(normalized, shortest))
        )

    def valuesets_of_kind(self, kind: str) -> frozenset[str]:
        """The value sets of one kind (`diagnosis`, `medication`, `procedure` ...)."""
        found = self._of_kind.get(kind)
        if found is None:
            found = frozenset(n for n, info in self.valuesets.items() if info.kind == kind)
            self._of_kind[kind] = found
        return found

    # ------------------------------------------------------------------ membership
    def concepts_of_code(self, system: str, code: str) -> frozenset[str]:
        key = (system, code)
        cached = self._concept_cache.get(key)
        if cached is not None:
            return cached
        system = self.canonical_system(system)
        normalized = normalize_code(system, code)
        found = set(self._members.get((system, normalized), ()))
        found |= self._learned.get((system, normalized), frozenset())
        shortest = HIERARCHICAL.get(system)
        if shortest is not None:
            for level in _levels_above(normalized, shortest):
                found |= self._members.get((system, level), frozenset())
        result = frozenset(found)
        self._concept_cache[key] = result
        return result

    def learn(self, system: str, code: str, concepts: frozenset[str]) -> None:
        """Add value-set memberships a terminology server answered for a code the tables do
        not list (an overlay: the tables are unchanged). Bounded like the caches: past
        CACHE_LIMIT codes the overlay starts over and codes are asked again."""
        system = self.canonical_system(system)
        key = (system, normalize_code(system, code))
        known = self._learned.get(key, frozenset())
        remember(self._learned, key, known | concepts)
        self._concept_cache.clear()
        self._memos.clear()

    def memo(self, name: str) -> dict[Any, Any]:
        """A cache of `name`'s (a mapper's) pure readings of raw codes under these tables: a
        population repeats a few hundred codes, read once each. `learn` starts every memo over
        (what a code means may change); keep it bounded with `remember`."""
        found = self._memos.get(name)
        if found is None:
            found = self._memos[name] = {}
        return found

    def learned(self, system: str, code: str) -> frozenset[str] | None:
        """What the server taught about this code, or None if it was never asked (or the
        overlay started over since)."""
        system = self.canonical_system(system)
        return self._learned.get((system, normalize_code(system, code)))

    def codes_in(self, names: set[str] | frozenset[str]) -> set[tuple[str, str]]:
        """(system, code) of every row of these value sets, and the site's local codes that
        map onto them: what to ask a FHIR server for."""
        found = {key for key, members in self._members.items() if members & names}
        for local, standard in self._site_map.items():
            if self.concepts_of_code(standard.system, standard.code) & names:
                found.add(local)
        return found

    def may_match(self, concept: Any) -> bool:
        """Cheap check on a raw CodeableConcept: could any coding be in a value set (directly
        or through the site map)? Lets a sweep drop most of a real EHR's Observations before
        building any object. Anything unexpected answers True so the full reader reports it."""
        if not isinstance(concept, dict):
            return True
        for coding in concept.get("coding") or ():
            if not isinstance(coding, dict):
                return True
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            if self.concepts_of_code(system, code) or (system, code) in self._site_map:
                return True
        return False

    def review_matches(self, text: str | None) -> frozenset[str]:
        """Value sets whose review terms occur in `text` (a display or CodeableConcept.text).

        For records no value set knows by code: a match never classifies the record, it only
        keeps a criterion from passing on absence. Text is NFKC-normalised and case-folded;
        terms in Latin script match whole words, others (Chinese) as substrings.
        """
        if not text or not self._review:
            return frozenset()
        folded = normalize_text(text)
        return frozenset(
            name
            for name, pattern, excluded in self._review
            if pattern.search(folded) and not (excluded and excluded.search(folded))
        )

    def concepts_under(self, system: str, code: str) -> frozenset[str]:
        """Value sets with rows below this ICD-10/ICD-10-CM/ATC code (a category such as `M32`
        above `M32.1`): the record may be one of them, or a sibling that is not. Empty for
        other systems and for codes that are value-set members themselves."""
        system = self.canonical_system(system)
        if system not in HIERARCHICAL or self.concepts_of_code(system, code):
            return frozenset()
        if self._under is None:
            self._under = _rows_under(self._members)
        return self._under.get((system, normalize_code(system, code).rstrip(".")), frozenset())

    def translate(self, code: Code) -> Code | None:
        """The standard code a site maps its local code to, if any."""
        return self._site_map.get((code.system, code.code))

    def translate_pair(self, system: str, code: str) -> tuple[str, str] | None:
        """`translate` for a bare (system, code)."""
        mapped = self._site_map.get((system, code))
        return (mapped.system, mapped.code) if mapped is not None else None

    def resolve(self, codes: Iterable[Code]) -> tuple[tuple[Code, ...], frozenset[str]]:
        """Codes as recorded plus site-mapped ones, ordered matching-first, and their concepts."""
        matched: list[Code] = []
        other: list[Code] = []
        concepts: set[str] = set()
        for code in codes:
            names = self.concepts_of_code(code.system, code.code)
            mapped = self.translate(code)
            if mapped is not None:
                mapped_names = self.concepts_of_code(mapped.system, mapped.code)
                if mapped_names:
                    note = f"mapped from {code.system}|{code.code} by the site code map"
                    matched.append(Code(mapped.system, mapped.code, note))
                    concepts |= mapped_names
            (matched if names else other).append(code)
            concepts |= names
        return tuple(matched + other), frozenset(concepts)

    # ------------------------------------------------------------------ units
    def canonical(self, concept: str, value: float, unit: str | None) -> tuple[float, str] | None:
        """`value unit` in the concept's canonical unit, or None if it cannot be converted."""
        key = (concept, unit)
        try:
            conversion = self._canonical_cache[key]
        except KeyError:
            conversion = self._canonical_conversion(concept, unit)
            remember(self._canonical_cache, key, conversion)
        except TypeError:  # an unhashable unit (not FHIR): fails as it would uncached
            conversion = self._canonical_conversion(concept, unit)
        if conversion is None:
            return None
        return value * conversion[0], conversion[1]

    def _canonical_conversion(self, concept: str, unit: str | None) -> tuple[float, str] | None:
        info = self.valuesets.get(concept)
        if info is None or info.canonical_unit is None or unit is None:
            return None
        if info.unit_aliases:
            unit = info.unit_aliases.get(unit.strip(), unit)
        try:
            factor = self.factor(unit, info.canonical_unit, info.molar_mass)
        except UnitError:
            return None
        return factor, info.canonical_unit

    def quantity_concept(self, concepts: frozenset[str]) -> str | None:
        """Of a result's concepts, the one whose canonical unit its value is converted to:
        the first by name that has a canonical unit."""
        try:
            return self._quantity_concept_cache[concepts]
        except KeyError:
            pass
        found = next(
            (
                name
                for name in sorted(concepts)
                if (info := self.valuesets.get(name)) is not None
                and info.canonical_unit is not None
            ),
            None,
        )
        remember(self._quantity_concept_cache, concepts, found)
        return found

    def factor(self, unit: str, target: str, molar_mass: float | None = None) -> float:
        """Multiply a value in `unit` by this to get it in `target`; raises UnitError."""
        key = (unit, target, molar_mass)
        try:
            return self._factor_cache[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable unit (not FHIR): fails as it would uncached
            return conversion_factor(self.ucum(unit), self.ucum(target), molar_mass)
        found = conversion_factor(self.ucum(unit), self.ucum(target), molar_mass)
        remember(self._factor_cache, key, found)  # only successes: errors are rare
        return found

    def warm_up(self) -> None:
        """Build the UCUM registry and parse every canonical unit now (about a second),
        instead of in the first request."""
        for info in self.valuesets.values():
            if info.canonical_unit:
                try:
                    conversion_factor(self.ucum(info.canonical_unit), "1")
                except UnitError:
                    continue  # not dimensionless: parsed all the same

    def ucum(self, unit: str) -> str:
        return normalize_unit(unit, self.unit_aliases, self._folded_aliases)

    # ------------------------------------------------------------------ results
    def qualitative_of_code(self, system: str, code: str) -> Reading | None:
        """A coded result value or an explicitly qualitative interpretation (POS, ND ...)."""
        return self._qualitative_codes.get((self.canonical_system(system), code))

    def qualitative_of_text(self, text: str) -> Reading | None:
        """Result text as labs write it (service/qualitative.py: "阴性 0.12", "(+)", "POS").
        A population repeats its texts: each is read once."""
        if type(text) is not str:
            return read_qualitative(text, self._qualitative_text)
        try:
            return self._qualitative_text_cache[text]
        except KeyError:
            found = read_qualitative(text, self._qualitative_text)
            remember(self._qualitative_text_cache, text, found)
            return found

    def interpretation_flag(self, system: str, code: str) -> Reading | None:
        """A reference-range flag (H, A, N ...) read as a qualitative result: only for value
        sets marked `interpretation_decides` (the caller checks)."""
        return self._interpretation_flags.get((self.canonical_system(system), code))

    def glucocorticoid_potency(self, codes: Iterable[Code]) -> GlucocorticoidPotency | None:
        for code in codes:
            potency = self._glucocorticoids.get((self.canonical_system(code.system), code.code))
            if potency is not None:
                return potency
        return None


def _rolled_up_potency(
    potency_rows: list[dict[str, str]], drugs: list[dict[str, str]]
) -> dict[tuple[str, str], GlucocorticoidPotency]:
    """Potency of the glucocorticoid value set's RxNorm drugs that the equivalents table does
    not list (an expansion adds every clinical and branded drug), rolled up to their
    ingredient by their RxNorm name ("methylprednisolone sodium succinate 125 MG Injection"
    -> methylprednisolone): the one ingredient named, longest name first, on word boundaries.
    The strength is kept only for a tablet or capsule of one strength (a dose counted in
    tablets); a drug naming two ingredients, or none, is left out (its dose stays unread)."""
    factors = {
        row["display"].casefold(): float(row["prednisone_mg_per_mg"])
        for row in potency_rows
        if row["system"] == RXNORM and not row.get("strength_mg")
    }
    if not factors:
        return {}
    names = "|".join(re.escape(n) for n in sorted(factors, key=len, reverse=True))
    ingredient = re.compile(rf"(?<![a-z])({names})(?![a-z])")
    found: dict[tuple[str, str], GlucocorticoidPotency] = {}
    for row in drugs:
        if row["system"] != RXNORM:
            continue
        display = row["display"].casefold()
        named = set(ingredient.findall(display))
        if len(named) != 1:
            continue
        strengths = set(ORAL_UNIT_STRENGTH.findall(display))
        strength = float(strengths.pop()) if len(strengths) == 1 else None
        found[(RXNORM, row["code"])] = GlucocorticoidPotency(factors[named.pop()], strength)
    return found


def remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Store in a per-instance cache, starting it over when it reaches CACHE_LIMIT keys."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TerminologyError(f"{path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise TerminologyError(f"{path}: expected a mapping")
    return loaded


def normalize_text(text: str) -> str:
    """Full-width forms to ASCII, case folded, runs of white space to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _review_terms(raw: Any, where: Path) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(
        isinstance(terms, list) and all(isinstance(t, str) and t.strip() for t in terms)
        for terms in raw.values()
    ):
        raise TerminologyError(f"{where}: review_terms must map a language to a list of terms")
    return tuple(normalize_text(term) for terms in raw.values() for term in terms)


def _review_patterns(
    valuesets: dict[str, ValueSetInfo],
) -> list[tuple[str, re.Pattern[str], re.Pattern[str] | None]]:
    """Per value set with review terms: the pattern of its terms and of its exclusions."""
    patterns = []
    for name, info in sorted(valuesets.items()):
        if not info.review_terms:
            continue
        excluded = _terms_pattern(info.review_exclude_terms) if info.review_exclude_terms else None
        patterns.append((name, _terms_pattern(info.review_terms), excluded))
    return patterns


def _terms_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    """Terms in Latin script as whole words, others (Chinese) as substrings."""
    parts = [
        rf"(?<!\w){re.escape(term)}(?!\w)" if term.isascii() else re.escape(term) for term in terms
    ]
    return re.compile("|".join(parts))


def _uln_interval(raw: Any, where: Path) -> UlnInterval | None:
    if raw is None:
        return None
    try:
        interval = UlnInterval(
            low=float(raw["low"]),
            high=float(raw["high"]),
            unit=str(raw["unit"]),
            source=str(raw["source"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TerminologyError(
            f"{where}: uln_interval needs numeric low and high, a unit and a source"
        ) from exc
    if interval.low > interval.high:
        raise TerminologyError(f"{where}: uln_interval low is above high")
    return interval


def _rows_under(
    members: dict[tuple[str, str], frozenset[str]],
) -> dict[tuple[str, str], frozenset[str]]:
    """Every proper prefix (a real hierarchy level) of each ICD/ATC row -> the row's sets."""
    under: dict[tuple[str, str], set[str]] = {}
    for (system, code), names in members.items():
        shortest = HIERARCHICAL.get(system)
        if shortest is None:
            continue
        for level in _levels_above(code, shortest):
            if len(level) >= shortest:
                under.setdefault((system, level), set()).update(names)
    return {key: frozenset(names) for key, names in under.items()}


def _levels_above(code: str, shortest: int) -> list[str]:
    """The shorter prefixes of a normalised ICD/ATC code, longest first, down to `shortest`
    characters, without a trailing dot (`M32.14` -> `M32.1`, `M32`)."""
    return [code[:end].rstrip(".") for end in range(len(code) - 1, shortest - 1, -1)]


def _definition(raw: Any, where: Path) -> ValueSetDefinition | None:
    try:
        return parse_definition(raw, str(where))
    except DefinitionError as exc:
        raise TerminologyError(str(exc)) from None


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TerminologyError(f"expected a whole number of days, got {value!r}")
    return value


def _qualitative(result: str, row: dict[str, str]) -> Reading:
    if result == "positive":
        return "positive"
    if result == "negative":
        return "negative"
    if result == "indeterminate":
        return "indeterminate"
    raise TerminologyError(
        f"result must be positive, negative or indeterminate, got {result!r} in {row}"
    )


def _flag(meta: dict[str, Any], key: str, where: Path) -> bool:
    value = meta.get(key, False)
    if not isinstance(value, bool):
        raise TerminologyError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _optional_float(value: Any, where: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TerminologyError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


@lru_cache(maxsize=4)
def load_default(root: Path, site_code_map: Path | None = None) -> Terminology:
    """One shared Terminology per (root, site map) per process."""
    return Terminology.load(root, site_code_map)
