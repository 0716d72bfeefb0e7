"""A value set's definition, expanded by one or more sources, merged into its CSV.

Policy (what `cohort-match terminology expand` does to `terminology/valuesets/<name>.csv`):

- Each `include` entry is expanded by the first reader given that can (`Reader.expand`
  returns None for entries it cannot: RF2 has no RxNorm, RRF no SNOMED CT, ...). An entry no
  reader can expand is reported as skipped, and the rows it gave before stay as they are.
- `codes` and `prefixes` entries copy through: the codes themselves are the expansion (ICD and
  ATC rows match by prefix at run time; LOINC codes are listed). Their display is the CSV's
  current one, else a reader's; a code with neither is reported and not written.
- Rows carry `source`: the reader and its release (`rf2:20250101`, `omop:v5.0 31-AUG-25`,
  `rrf:01062025`, `tx:<server>|<version>`), or `definition` for copied-through codes. A run
  replaces the rows of the readers it used (and of `definition`); rows from any other source
  (curated, vsac:..., a reader not used this time) are kept. A code already in the CSV keeps
  its row (one row per code), whatever expanded it again.
- Codes the `exclude` entries denote are removed, whatever their source.
- Rows are written sorted by (system, code) with the header `system,code,display,source`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from service.paths import parse_yaml
from service.vocab.definition import PREFIX_SYSTEMS, Entry, ValueSetDefinition, parse_definition

__all__ = [
    "HEADER",
    "Change",
    "Expanded",
    "Reader",
    "Row",
    "expand",
    "merge",
    "plan",
    "read_rows",
    "readers",
    "render",
    "write",
]

HEADER = ("system", "code", "display", "source")
COPIED = "definition"

Key = tuple[str, str]


@dataclass(frozen=True, slots=True, order=True)
class Row:
    system: str
    code: str
    display: str
    source: str

    @property
    def key(self) -> Key:
        return (self.system, self.code)


class Reader(Protocol):
    """One terminology source. `name` prefixes its rows' source (`rf2`), `source` adds the
    release (`rf2:20250101`)."""

    name: str

    @property
    def source(self) -> str: ...

    def expand(self, entry: Entry) -> dict[Key, str] | None:
        """(system, code) -> display for an ecl / ingredients / valueset entry, or None when
        this reader cannot expand such an entry. Raises ValueError for one it refuses (an ECL
        outside its subset, a concept it does not have)."""
        ...

    def display(self, system: str, code: str) -> str | None:
        """The code's preferred name in this source, if it has the code."""
        ...


@dataclass
class Expanded:
    """What the definition gives: rows by key, excluded keys, and what could not be done."""

    rows: dict[Key, Row] = field(default_factory=dict)
    excluded: set[Key] = field(default_factory=set)
    exclude_prefixes: list[Key] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries no reader could expand
    problems: list[str] = field(default_factory=list)
    readers_used: set[str] = field(default_factory=set)

    def excludes(self, key: Key) -> bool:
        return key in self.excluded or any(
            key[0] == system and key[1].startswith(prefix)
            for system, prefix in self.exclude_prefixes
        )


@dataclass(frozen=True)
class Change:
    name: str
    added: list[Row]
    removed: list[Row]
    rows: list[Row]
    skipped: list[str]
    problems: list[str]


def expand(
    definition: ValueSetDefinition, readers: Sequence[Reader], current: Iterable[Row] = ()
) -> Expanded:
    """Expand every entry with the first reader that can (see the module docstring)."""
    known = {row.key: row.display for row in current}
    result = Expanded()
    for entry in definition.include:
        for key, display, source in _entry_rows(entry, readers, known, result):
            result.rows.setdefault(key, Row(key[0], key[1], display, source))
    for entry in definition.exclude:
        if entry.prefixes is not None and entry.system in PREFIX_SYSTEMS:
            result.exclude_prefixes += [(entry.system, p) for p in entry.prefixes]
        elif entry.codes is not None and entry.system is not None:
            result.excluded |= {(entry.system, code) for code in entry.codes}
        else:
            result.excluded |= {key for key, _, _ in _entry_rows(entry, readers, known, result)}
    return result


def _entry_rows(
    entry: Entry, readers: Sequence[Reader], known: dict[Key, str], result: Expanded
) -> list[tuple[Key, str, str]]:
    if entry.codes is not None or entry.prefixes is not None:
        assert entry.system is not None
        found = []
        for code in entry.roots():
            key = (entry.system, code)
            display = known.get(key) or _display(readers, entry.system, code)
            if display is None:
                result.problems.append(f"{entry.system}|{code}: no display in the CSV or sources")
                continue
            found.append((key, display, COPIED))
        result.readers_used.add(COPIED)
        return found
    for reader in readers:
        try:
            codes = reader.expand(entry)
        except ValueError as exc:
            result.problems.append(f"{reader.name}: {exc}")
            return []
        if codes is None:
            continue
        result.readers_used.add(reader.name)
        return [(key, display, reader.source) for key, display in codes.items()]
    result.skipped.append(entry.label())
    return []


def _display(readers: Sequence[Reader], system: str, code: str) -> str | None:
    for reader in readers:
        found = reader.display(system, code)
        if found:
            return found
    return None


def merge(name: str, current: Sequence[Row], expanded: Expanded) -> Change:
    """The CSV after the expansion (see the module docstring), and what changed."""
    replaced = expanded.readers_used

    def replaceable(row: Row) -> bool:
        return row.source == COPIED or row.source.split(":", 1)[0] in replaced

    kept = {row.key: row for row in current if not replaceable(row)}
    previous = {row.key: row for row in current}
    rows = dict(kept)
    for key, row in expanded.rows.items():
        rows.setdefault(key, previous.get(key, row))
    if expanded.problems:
        # An entry that failed must not take its old rows with it: nothing is removed but
        # the exclusions when anything went wrong.
        for key, row in previous.items():
            rows.setdefault(key, row)
    final = sorted(row for key, row in rows.items() if not expanded.excludes(key))
    final_keys = {row.key for row in final}
    return Change(
        name=name,
        added=sorted(row for row in final if row.key not in previous),
        removed=sorted(row for key, row in previous.items() if key not in final_keys),
        rows=final,
        skipped=expanded.skipped,
        problems=expanded.problems,
    )


def read_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Row(r["system"], r["code"], r["display"], r.get("source") or "")
            for r in csv.DictReader(handle)
        ]


def render(rows: Iterable[Row]) -> str:
    """The CSV text: header, then rows sorted by (system, code)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for row in sorted(rows):
        writer.writerow((row.system, row.code, row.display, row.source))
    return buffer.getvalue()


def plan(valuesets_dir: Path, names: Sequence[str], readers: Sequence[Reader]) -> list[Change]:
    """The change each named value set (all with a definition, when none is named) would get.

    A named value set without a definition is an error; unnamed ones are passed over.
    """
    chosen = list(names) or sorted(p.stem for p in valuesets_dir.glob("*.yaml"))
    changes = []
    for name in chosen:
        meta_path = valuesets_dir / f"{name}.yaml"
        if not meta_path.is_file():
            raise ValueError(f"no value set {name!r} ({meta_path} does not exist)")
        meta = parse_yaml(meta_path.read_text(encoding="utf-8"))
        raw = meta.get("definition") if isinstance(meta, dict) else None
        definition = parse_definition(raw, str(meta_path))
        if definition is None:
            if names:
                raise ValueError(f"{meta_path}: no `definition:` to expand")
            continue
        current = read_rows(valuesets_dir / f"{name}.csv")
        changes.append(merge(name, current, expand(definition, readers, current)))
    return changes


def write(valuesets_dir: Path, change: Change) -> None:
    (valuesets_dir / f"{change.name}.csv").write_text(render(change.rows), encoding="utf-8")


def readers(
    *,
    rf2: Path | None = None,
    omop: Path | None = None,
    rxnorm: Path | None = None,
    tx: str | None = None,
) -> list[Reader]:
    """The readers for the sources a site has, in this order of preference: local release
    files first (RF2, RRF, OMOP), then a terminology server. Raises ValueError without one."""
    from service.vocab.fhir_tx import TxReader
    from service.vocab.omop import OmopReader
    from service.vocab.rf2 import Rf2Reader
    from service.vocab.rrf import RrfReader

    found: list[Reader] = []
    if rf2 is not None:
        found.append(Rf2Reader(rf2))
    if rxnorm is not None:
        found.append(RrfReader(rxnorm))
    if omop is not None:
        found.append(OmopReader(omop))
    if tx is not None:
        found.append(TxReader(tx))
    if not found:
        raise ValueError("give at least one source: --rf2, --omop, --rxnorm or --tx")
    return found
