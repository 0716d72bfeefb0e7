"""SNOMED CT from an RF2 release's Snapshot files (International Edition or a national one).

Reads, from anywhere under the directory given:
- `sct2_Concept_Snapshot*.txt`: active concepts;
- `sct2_Relationship_Snapshot*.txt`: active rows of type 116680003 |Is a| (source is a
  child of destination); other attributes are not read;
- `sct2_Description_Snapshot*.txt`: active fully specified names (type 900000000000003001),
  English first when an edition ships several languages.

RF2 files are tab-separated UTF-8 with a header line and no quoting (terms may hold quotes),
so lines are split on tabs rather than read as CSV. The release is the date in the Concept
file's name (`..._INT_20250101.txt` -> `rf2:20250101`). ECL: see `service/vocab/ecl.py` (the
subset `<<`, `<`, a concept, OR, MINUS); anything else is refused, not approximated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from service.vocab.definition import SNOMED, Entry
from service.vocab.ecl import evaluate

__all__ = ["Rf2Reader"]

IS_A = "116680003"
FSN = "900000000000003001"
RELEASE = re.compile(r"_(\d{8})\.txt$")


def _find(root: Path, prefix: str) -> Path:
    found = sorted(p for p in root.rglob(f"{prefix}*.txt") if p.is_file())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ValueError(f"{root}: {what} {prefix}*.txt files (expected one)")
    return found[0]


def _rows(path: Path, needed: tuple[str, ...]) -> Iterator[list[str]]:
    """The `needed` columns of each row, by header name."""
    with path.open(encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        missing = [name for name in needed if name not in header]
        if missing:
            raise ValueError(f"{path}: not an RF2 file (no columns {missing})")
        index = [header.index(name) for name in needed]
        for line in handle:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) == len(header):
                yield [fields[i] for i in index]


class Rf2Reader:
    """ECL entries of SNOMED CT, expanded from an RF2 snapshot."""

    name = "rf2"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._concept_file = _find(root, "sct2_Concept_Snapshot")
        match = RELEASE.search(self._concept_file.name)
        self.release = match.group(1) if match else "unknown"

    @property
    def source(self) -> str:
        return f"{self.name}:{self.release}"

    @cached_property
    def _active(self) -> frozenset[str]:
        rows = _rows(self._concept_file, ("id", "active"))
        return frozenset(cid for cid, active in rows if active == "1")

    @cached_property
    def _children(self) -> dict[str, list[str]]:
        path = _find(self.root, "sct2_Relationship_Snapshot")
        children: dict[str, list[str]] = {}
        for source, target, kind, active in _rows(
            path, ("sourceId", "destinationId", "typeId", "active")
        ):
            if active == "1" and kind == IS_A:
                children.setdefault(target, []).append(source)
        return children

    @cached_property
    def _names(self) -> dict[str, str]:
        """Active FSNs; a national edition ships one Description file per language: the
        English one is read first, the others fill in."""
        paths = sorted(
            (p for p in self.root.rglob("sct2_Description_Snapshot*.txt") if p.is_file()),
            key=lambda p: ("-en_" not in p.name, p.name),
        )
        if not paths:
            raise ValueError(f"{self.root}: no sct2_Description_Snapshot*.txt file")
        names: dict[str, str] = {}
        for path in paths:
            rows = _rows(path, ("conceptId", "typeId", "active", "term"))
            for cid, kind, active, term in rows:
                if active == "1" and kind == FSN:
                    names.setdefault(cid, term)
        return names

    def descendants(self, concept: str) -> set[str]:
        """Proper descendants over active IS-A relationships, active concepts only."""
        found: set[str] = set()
        stack = list(self._children.get(concept, ()))
        while stack:
            child = stack.pop()
            if child not in found:
                found.add(child)
                stack.extend(self._children.get(child, ()))
        return found & self._active

    def expand(self, entry: Entry) -> dict[tuple[str, str], str] | None:
        if entry.ecl is None:
            return None
        codes = evaluate(entry.ecl, self.descendants)
        inactive = sorted(code for code in codes if code not in self._active)
        if inactive:
            raise ValueError(f"ECL {entry.ecl!r}: {inactive} not active in {self.source}")
        return {(SNOMED, code): self._names.get(code, code) for code in codes}

    def display(self, system: str, code: str) -> str | None:
        return self._names.get(code) if system == SNOMED else None
