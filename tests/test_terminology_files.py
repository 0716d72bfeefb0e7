"""Every code table under terminology/ is well formed, and every value set a trial names exists.

The files are data that clinicians review, so the checks are about the shape a reviewer relies
on: exact headers, canonical system URIs, one row per key, rows in key order, no blank codes,
code syntax per system (no range strings such as `C00-C96`), the LOINC and SNOMED CT check
digits, the metadata next to each value set, and the local lupus-scores CodeSystem.
Every assertion message names the file and, where there is one, the row (line number).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.paths import parse_yaml
from service.vocab.definition import DefinitionError, parse_definition

ROOT = Path(__file__).resolve().parents[1]
TERMINOLOGY = ROOT / "terminology"
VALUESETS = TERMINOLOGY / "valuesets"
TRIALS = ROOT / "trials"
LUPUS_SCORES_JSON = TERMINOLOGY / "codesystems" / "lupus-scores.json"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
LUPUS = "http://cohort-match.org/fhir/CodeSystem/lupus-scores"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

STANDARD_SYSTEMS = frozenset({LOINC, SNOMED, ICD10CM, ICD10, RXNORM, ATC, UCUM, LUPUS})

# Code syntax per system. ICD and ATC codes are prefixes of a hierarchy, so a range string or a
# stray space would silently match nothing: the patterns reject them.
CODE_PATTERNS = {
    LOINC: re.compile(r"\d{1,7}-\d"),
    SNOMED: re.compile(r"\d{6,18}"),
    ICD10CM: re.compile(r"[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?"),
    ICD10: re.compile(r"[A-Z]\d\d(\.\d{1,2})?"),
    RXNORM: re.compile(r"\d{1,8}"),
    ATC: re.compile(r"[A-Z](\d\d([A-Z]([A-Z](\d\d)?)?)?)?"),
    UCUM: re.compile(r"\S+"),
    LUPUS: re.compile(r"[a-z0-9]+(-[a-z0-9]+)*"),
    V3_INTERPRETATION: re.compile(r"[A-Z]+"),
}

# The lead turns this on once every diagnosis/allergy/medication/procedure set has its
# `definition:` (issue 9): until then a set without one is allowed.
DEFINITION_REQUIRED = True
DEFINITION_KINDS = frozenset({"diagnosis", "allergen", "medication", "procedure"})
# Records of these kinds may arrive with codes no table knows: their text is read for review.
REVIEW_TERM_KINDS = frozenset({"diagnosis", "allergen", "medication"})

KINDS = frozenset(
    {"lab", "score", "grade", "diagnosis", "medication", "allergen", "procedure", "manifestation"}
)
RESULTS = frozenset({"positive", "negative", "indeterminate"})
BILAG_DOMAINS = (
    "constitutional",
    "mucocutaneous",
    "neuropsychiatric",
    "musculoskeletal",
    "cardiorespiratory",
    "gastrointestinal",
    "ophthalmic",
    "renal",
    "haematological",
)
LUPUS_CODES = frozenset({"sledai-2k", *(f"bilag-2004-{domain}" for domain in BILAG_DOMAINS)})

# Keys in trial files whose values name value sets (terminology/valuesets/<name>.csv).
VALUESET_KEYS = frozenset(
    {
        "valueset",
        "valuesets",
        "uncertain_valueset",
        "lab",
        "labs",
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
    }
)


@dataclass(frozen=True)
class Table:
    """The layout of one kind of CSV file."""

    header: tuple[str, ...]
    key: tuple[str, ...]
    required: tuple[str, ...]
    system_column: str | None = None
    systems: frozenset[str] = STANDARD_SYSTEMS


VALUESET_TABLE = Table(
    header=("system", "code", "display", "source"),
    key=("system", "code"),
    required=("system", "code", "display", "source"),
    system_column="system",
)
TABLES = {
    "glucocorticoid_equivalents.csv": Table(
        header=("system", "code", "display", "prednisone_mg_per_mg", "strength_mg"),
        key=("system", "code"),
        required=("system", "code", "display", "prednisone_mg_per_mg"),
        system_column="system",
    ),
    "results/qualitative_codes.csv": Table(
        header=("system", "code", "display", "result"),
        key=("system", "code"),
        required=("system", "code", "display", "result"),
        system_column="system",
        systems=STANDARD_SYSTEMS | {V3_INTERPRETATION},
    ),
    "results/interpretation_flags.csv": Table(
        header=("system", "code", "display", "result"),
        key=("system", "code"),
        required=("system", "code", "display", "result"),
        system_column="system",
        systems=frozenset({V3_INTERPRETATION}),
    ),
    "results/qualitative_text.csv": Table(
        header=("text", "result"), key=("text",), required=("text", "result")
    ),
    "units/aliases.csv": Table(
        header=("text", "ucum", "case"), key=("text",), required=("text", "ucum")
    ),
    "text_read_codes.csv": Table(
        header=("system", "code", "display", "note"),
        key=("system", "code"),
        required=("system", "code", "display", "note"),
        system_column="system",
    ),
    "code_systems.csv": Table(
        header=("sent", "system", "match", "note"),
        key=("sent",),
        required=("sent", "system", "match", "note"),
    ),
    "site_code_map.csv": Table(
        header=("local_system", "local_code", "system", "code", "note"),
        key=("local_system", "local_code"),
        required=("local_system", "local_code", "system", "code"),
        system_column="system",
    ),
}


# ---------------------------------------------------------------------------- helpers
def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def table_for(path: Path) -> Table | None:
    rel = path.relative_to(TERMINOLOGY).as_posix()
    if rel.startswith("valuesets/") and rel.count("/") == 1:
        return VALUESET_TABLE
    return TABLES.get(rel)


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs; line 1 is the header."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = []
        for line, values in enumerate(reader, start=2):
            rows.append((line, dict(zip(header, values, strict=False))))
            assert len(values) == len(header), (
                f"{relative(path)} line {line}: {len(values)} fields, header has {len(header)}"
            )
    return header, rows


def loinc_check_digit_ok(code: str) -> bool:
    """LOINC mod-10 check digit (LOINC Users' Guide, 'Calculating Mod 10 check digits')."""
    number, check = code.split("-")
    from_right = number[::-1]
    doubled = str(int(from_right[0::2]) * 2)
    digits = from_right[1::2] + doubled
    return (10 - sum(int(d) for d in digits) % 10) % 10 == int(check)


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def sctid_check_digit_ok(code: str) -> bool:
    """SNOMED CT identifiers end in a Verhoeff check digit (SNOMED CT TIG, 'SCTID')."""
    check = 0
    for position, digit in enumerate(reversed(code)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(digit)]]
    return check == 0


def check_code(where: str, system: str, code: str) -> None:
    pattern = CODE_PATTERNS.get(system)
    assert pattern is not None, f"{where}: no code syntax known for system {system!r}"
    assert pattern.fullmatch(code), f"{where}: {code!r} is not a valid {system} code"
    if system == LOINC:
        assert loinc_check_digit_ok(code), f"{where}: LOINC {code} fails its check digit"
    if system == SNOMED:
        assert sctid_check_digit_ok(code), f"{where}: SNOMED CT {code} fails its check digit"


def covers(system: str, row_code: str, code: str) -> bool:
    """Whether a value-set row matches a code: prefix for ICD and ATC, exact otherwise."""
    if system in (ICD10, ICD10CM, ATC):
        return code.startswith(row_code)
    return code == row_code


def load_yaml(path: Path) -> Any:
    return parse_yaml(path.read_text(encoding="utf-8"))


def valueset_rows(name: str) -> list[tuple[int, dict[str, str]]]:
    return read_rows(VALUESETS / f"{name}.csv")[1]


def walk(node: Any, found: list[tuple[str, Any]]) -> None:
    """Every (key, value) pair in a nested YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((str(key), value))
            walk(value, found)
    elif isinstance(node, list):
        for item in node:
            walk(item, found)


def names_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def trial_files() -> list[Path]:
    return sorted(TRIALS.glob("*.yaml"))


def quantity_valuesets(node: Any, found: set[str]) -> None:
    """Value sets whose results a trial compares as quantities, so they need a canonical unit."""
    if isinstance(node, dict):
        compares = any(
            key in node
            for key in ("op", "value", "uln_multiple", "positive_at_or_above", "negative_below")
        )
        if compares and isinstance(node.get("lab"), str):
            found.add(node["lab"])
        if "scale" in node:  # derive_product multiplies its labs
            found.update(names_in(node.get("labs")))
        for key in (
            "measured_lab",
            "creatinine_lab",
            "weight_lab",
            "reported_lab",
            "serum_creatinine_lab",
        ):
            found.update(names_in(node.get(key)))
        for value in node.values():
            quantity_valuesets(value, found)
    elif isinstance(node, list):
        for item in node:
            quantity_valuesets(item, found)


ALL_CSV = sorted(TERMINOLOGY.rglob("*.csv"))
VALUESET_NAMES = sorted(path.stem for path in VALUESETS.glob("*.csv"))


# ---------------------------------------------------------------------------- CSV files
def test_terminology_has_tables() -> None:
    assert VALUESET_NAMES, f"no value sets under {relative(VALUESETS)}"
    for rel in TABLES:
        assert (TERMINOLOGY / rel).is_file(), f"missing table terminology/{rel}"


@pytest.mark.parametrize("path", ALL_CSV, ids=relative)
def test_csv_file(path: Path) -> None:
    where = relative(path)
    table = table_for(path)
    assert table is not None, f"{where}: not a known terminology table (add it to TABLES)"
    header, rows = read_rows(path)
    assert tuple(header) == table.header, f"{where}: header {header}, expected {list(table.header)}"

    keys: dict[tuple[str, ...], int] = {}
    previous: tuple[str, ...] | None = None
    for line, row in rows:
        at = f"{where} line {line}"
        for column, value in row.items():
            assert value == value.strip(), f"{at}: {column} {value!r} has surrounding spaces"
        for column in table.required:
            assert row[column], f"{at}: {column} is blank"
        if table.system_column is not None:
            system = row[table.system_column]
            assert system in table.systems, f"{at}: system {system!r} is not an allowed URI"
            check_code(at, system, row["code"])
        key = tuple(row[column] for column in table.key)
        assert key not in keys, f"{at}: duplicate {key}, first on line {keys[key]}"
        keys[key] = line
        assert previous is None or previous < key, f"{at}: {key} is out of order after {previous}"
        previous = key


@pytest.mark.parametrize(
    "name",
    [
        "results/interpretation_flags.csv",
        "results/qualitative_codes.csv",
        "results/qualitative_text.csv",
    ],
)
def test_qualitative_results(name: str) -> None:
    path = TERMINOLOGY / name
    for line, row in read_rows(path)[1]:
        at = f"{relative(path)} line {line}"
        assert row["result"] in RESULTS, f"{at}: result {row['result']!r} not in {sorted(RESULTS)}"
        if "text" in row:
            assert row["text"] == row["text"].lower(), f"{at}: text must be lower-case"


def test_glucocorticoid_equivalents() -> None:
    path = TERMINOLOGY / "glucocorticoid_equivalents.csv"
    valueset = [row for _, row in valueset_rows("glucocorticoids")]
    listed = set()
    for line, row in read_rows(path)[1]:
        at = f"{relative(path)} line {line}"
        assert float(row["prednisone_mg_per_mg"]) > 0, f"{at}: factor must be positive"
        if row["strength_mg"]:
            assert float(row["strength_mg"]) > 0, f"{at}: strength_mg must be positive"
        assert any(
            member["system"] == row["system"] and covers(row["system"], member["code"], row["code"])
            for member in valueset
        ), f"{at}: {row['system']}|{row['code']} is not in valuesets/glucocorticoids.csv"
        listed.add((row["system"], row["code"]))
    for member in valueset:
        if member["system"] == RXNORM:
            assert (RXNORM, member["code"]) in listed, (
                f"valuesets/glucocorticoids.csv: RxNorm {member['code']} ({member['display']}) "
                f"has no row in {relative(path)}"
            )


# ---------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("name", VALUESET_NAMES)
def test_valueset_metadata(name: str) -> None:
    path = VALUESETS / f"{name}.yaml"
    where = relative(path)
    assert path.is_file(), f"{where}: missing metadata for valuesets/{name}.csv"
    meta = load_yaml(path)
    assert isinstance(meta, dict), f"{where}: expected a mapping"
    for key in ("title", "description", "kind", "sources"):
        assert key in meta, f"{where}: missing key {key!r}"
    for key in ("title", "description"):
        assert isinstance(meta[key], str), f"{where}: {key} must be text"
        assert meta[key].strip(), f"{where}: {key} is empty"
    assert meta["kind"] in KINDS, f"{where}: kind {meta['kind']!r} not in {sorted(KINDS)}"
    if "canonical_unit" in meta:
        unit = meta["canonical_unit"]
        assert isinstance(unit, str), f"{where}: canonical_unit must be text"
        assert unit.strip(), f"{where}: canonical_unit is empty"
    if "molar_mass_g_per_mol" in meta:
        molar = meta["molar_mass_g_per_mol"]
        assert isinstance(molar, int | float), f"{where}: molar mass {molar!r} is not a number"
        assert molar > 0, f"{where}: molar mass {molar!r} must be positive"
        assert "canonical_unit" in meta, f"{where}: molar mass without canonical_unit"

    sources = meta["sources"]
    assert isinstance(sources, list), f"{where}: sources must be a list"
    assert sources, f"{where}: sources is empty"
    for index, source in enumerate(sources):
        assert isinstance(source, dict), f"{where}: sources[{index}] must be a mapping"
        for key in ("system", "name", "version", "note"):
            value = source.get(key)
            assert isinstance(value, str), f"{where}: sources[{index}].{key} is missing"
            assert value.strip(), f"{where}: sources[{index}].{key} is empty"
    described = {source["system"] for source in sources}
    for line, row in valueset_rows(name):
        assert row["system"] in described, (
            f"valuesets/{name}.csv line {line}: system {row['system']} "
            f"has no entry in the sources of {where}"
        )


@pytest.mark.parametrize("name", VALUESET_NAMES)
def test_valueset_definition(name: str) -> None:
    """The definition parses, and the CSV holds its listed roots and none of its exclusions.

    `codes` are exact rows; `prefixes` are rows of their own (ICD/ATC match by prefix, so the
    prefix row is the expansion). ECL, ingredient and valueset entries are checked by the
    expand command, which needs a terminology source.
    """
    path = VALUESETS / f"{name}.yaml"
    where = relative(path)
    meta = load_yaml(path)
    if meta.get("kind") in REVIEW_TERM_KINDS:
        terms = meta.get("review_terms") or {}
        for language in ("en", "zh"):
            assert terms.get(language), (
                f"{where}: a {meta.get('kind')} value set needs review_terms in {language}"
            )
    if "definition" not in meta:
        assert not (DEFINITION_REQUIRED and meta.get("kind") in DEFINITION_KINDS), (
            f"{where}: a {meta.get('kind')} value set needs a `definition:` block"
        )
        return
    try:
        definition = parse_definition(meta["definition"], where)
    except DefinitionError as exc:
        pytest.fail(str(exc))
    assert definition is not None, f"{where}: definition is empty"
    rows = {(row["system"], row["code"]) for _, row in valueset_rows(name)}
    for index, entry in enumerate(definition.include):
        if entry.codes is None and entry.prefixes is None:
            continue
        missing = [code for code in entry.roots() if (entry.system, code) not in rows]
        assert not missing, (
            f"{where}: definition.include[{index}] lists {missing} ({entry.system}), "
            f"which valuesets/{name}.csv does not hold: run `cohort-match terminology expand`"
        )
    for index, entry in enumerate(definition.exclude):
        for system, code in sorted(rows):
            assert not (
                system == entry.system and any(covers(system, root, code) for root in entry.roots())
            ), f"valuesets/{name}.csv: {system}|{code} is excluded by definition.exclude[{index}]"


@pytest.mark.parametrize("name", VALUESET_NAMES)
def test_valueset_review_terms(name: str) -> None:
    """`review_terms` maps a language code to a list of non-empty terms."""
    path = VALUESETS / f"{name}.yaml"
    terms = load_yaml(path).get("review_terms")
    if terms is None:
        return
    where = f"{relative(path)}: review_terms"
    assert isinstance(terms, dict), f"{where} must map a language to a list of terms"
    assert terms, f"{where} is empty"
    for language, words in terms.items():
        assert isinstance(language, str), f"{where}: {language!r} is not a language code"
        assert re.fullmatch(r"[a-z]{2,3}(-[A-Za-z]+)?", language), (
            f"{where}: {language!r} is not a language code (en, zh ...)"
        )
        assert isinstance(words, list), f"{where}.{language} must be a list"
        assert words, f"{where}.{language} is empty"
        for word in words:
            assert isinstance(word, str), f"{where}.{language}: {word!r} is not text"
            assert word, f"{where}.{language}: an empty term"
            assert word.strip() == word, f"{where}.{language}: {word!r} has surrounding spaces"
        assert len(set(words)) == len(words), f"{where}.{language}: duplicate terms"


@pytest.mark.parametrize("trial", trial_files(), ids=lambda path: path.name)
def test_compared_quantities_have_canonical_unit(trial: Path) -> None:
    needed: set[str] = set()
    quantity_valuesets(load_yaml(trial), needed)
    for name in sorted(needed):
        path = VALUESETS / f"{name}.yaml"
        if not path.is_file():
            continue  # reported by test_trial_valuesets_exist
        meta = load_yaml(path)
        assert meta.get("canonical_unit"), (
            f"{relative(path)}: {trial.name} compares {name} as a quantity, "
            "so it needs canonical_unit"
        )


# ---------------------------------------------------------------------------- trial references
def test_there_are_trials() -> None:
    assert trial_files(), f"no trial files under {relative(TRIALS)}"


@pytest.mark.parametrize("trial", trial_files(), ids=lambda path: path.name)
def test_trial_valuesets_exist(trial: Path) -> None:
    pairs: list[tuple[str, Any]] = []
    walk(load_yaml(trial), pairs)
    referenced = {name for key, value in pairs if key in VALUESET_KEYS for name in names_in(value)}
    assert referenced, f"{relative(trial)}: names no value sets"
    missing = sorted(name for name in referenced if not (VALUESETS / f"{name}.csv").is_file())
    assert not missing, (
        f"{relative(trial)}: value sets without terminology/valuesets/<name>.csv: {missing}"
    )


# ---------------------------------------------------------------------------- lupus-scores
def test_lupus_scores_codesystem() -> None:
    where = relative(LUPUS_SCORES_JSON)
    resource = json.loads(LUPUS_SCORES_JSON.read_text(encoding="utf-8"))
    assert resource.get("resourceType") == "CodeSystem", f"{where}: not a CodeSystem"
    assert resource.get("url") == LUPUS, f"{where}: url must be {LUPUS}"
    assert resource.get("status") == "active", f"{where}: status must be active"
    assert resource.get("content") == "complete", f"{where}: content must be complete"
    assert resource.get("caseSensitive") is True, f"{where}: caseSensitive must be true"
    concepts = resource.get("concept", [])
    codes = [concept.get("code") for concept in concepts]
    assert len(codes) == len(set(codes)), f"{where}: duplicate concept codes"
    assert set(codes) == LUPUS_CODES, (
        f"{where}: codes {sorted(codes)}, expected {sorted(LUPUS_CODES)}"
    )
    assert resource.get("count", len(codes)) == len(codes), (
        f"{where}: count does not match concepts"
    )
    for concept in concepts:
        assert concept.get("display"), f"{where}: concept {concept.get('code')} has no display"

    used: set[str] = set()
    for name in VALUESET_NAMES:
        for line, row in valueset_rows(name):
            if row["system"] == LUPUS:
                assert row["code"] in codes, (
                    f"valuesets/{name}.csv line {line}: {row['code']} is not a code of {where}"
                )
                used.add(row["code"])
    site_map = TERMINOLOGY / "site_code_map.csv"
    for line, row in read_rows(site_map)[1]:
        if row["system"] == LUPUS:
            assert row["code"] in codes, (
                f"{relative(site_map)} line {line}: {row['code']} is not a code of {where}"
            )
    unused = sorted(set(codes) - used)
    assert not unused, f"{where}: codes used by no value set: {unused}"


# ---------------------------------------------------------------------------- cross-file rules
def test_malignancy_exceptions_are_malignancies() -> None:
    """E8 tests the exceptions only for a diagnosis that is a malignancy first."""
    malignancy = [row for _, row in valueset_rows("malignancy")]
    for line, row in valueset_rows("malignancy_exceptions"):
        assert any(
            member["system"] == row["system"] and covers(row["system"], member["code"], row["code"])
            for member in malignancy
        ), f"valuesets/malignancy_exceptions.csv line {line}: {row['code']} is not in malignancy"


def test_site_code_map_targets_are_in_a_valueset() -> None:
    """A mapped local code is only useful if its standard code belongs to some value set."""
    members = [(name, row) for name in VALUESET_NAMES for _, row in valueset_rows(name)]
    path = TERMINOLOGY / "site_code_map.csv"
    for line, row in read_rows(path)[1]:
        assert any(
            member["system"] == row["system"] and covers(row["system"], member["code"], row["code"])
            for _, member in members
        ), f"{relative(path)} line {line}: {row['system']}|{row['code']} is in no value set"
