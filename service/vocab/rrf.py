"""RxNorm from a monthly RRF release (`rrf/RXNCONSO.RRF`, `rrf/RXNREL.RRF`).

An `ingredients` entry expands to the ingredient and every SCD, SBD, GPCK and BPCK that
contains it, walking RxNorm's standard relationships (RxNorm Technical Documentation, "RxNorm
relationships"), typed so the walk never climbs back to another ingredient:

    IN  -has_form-> PIN -precise_ingredient_of-> SCDC      IN -ingredient_of-> SCDC
    IN  -part_of-> MIN -ingredients_of-> SCD               SCDC -constitutes-> SCD
    SCD -has_tradename-> SBD     SCD -contained_in-> GPCK  SBD -contained_in-> BPCK
    GPCK -has_tradename-> BPCK

The given ingredient may be an IN, PIN or MIN. A row of RXNREL reads "RXCUI2 RELA RXCUI1"
(e.g. RXCUI2 = the ingredient, RELA = ingredient_of, RXCUI1 = the SCDC). Only SAB=RXNORM
rows count, and atoms that are suppressed (SUPPRESS O, Y, E) do not give names. Files are
`|`-separated with a trailing `|`, no header (column order as documented). The release is
the 8-digit date in the release folder's name (`RxNorm_full_01062025` -> `rrf:01062025`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from service.vocab.definition import RXNORM, Entry

__all__ = ["RrfReader"]

# RXNCONSO.RRF and RXNREL.RRF columns (RxNorm Technical Documentation, section 12)
CONSO = (
    "RXCUI LAT TS LUI STT SUI ISPREF RXAUI SAUI SCUI SDUI SAB TTY CODE STR SRL SUPPRESS CVF"
).split()
REL = (
    "RXCUI1 RXAUI1 STYPE1 REL RXCUI2 RXAUI2 STYPE2 RELA RUI SRUI SAB SL DIR RG SUPPRESS CVF"
).split()
STEPS = {
    ("IN", "has_form"): "PIN",
    ("IN", "ingredient_of"): "SCDC",
    ("PIN", "precise_ingredient_of"): "SCDC",
    ("IN", "part_of"): "MIN",
    ("MIN", "ingredients_of"): "SCD",
    ("SCDC", "constitutes"): "SCD",
    ("SCD", "has_tradename"): "SBD",
    ("SCD", "contained_in"): "GPCK",
    ("SBD", "contained_in"): "BPCK",
    ("GPCK", "has_tradename"): "BPCK",
}
RELAS = frozenset(rela for _, rela in STEPS)
INGREDIENTS = frozenset({"IN", "PIN", "MIN"})
DRUGS = frozenset({"SCD", "SBD", "GPCK", "BPCK"})
# Which name to show when a concept has several RXNORM atoms: its own term type first.
PREFERRED = ("IN", "PIN", "MIN", "SCD", "SBD", "GPCK", "BPCK", "SCDC", "PSN", "SY")
RELEASE = re.compile(r"(\d{8})")


def _find(root: Path, name: str) -> Path:
    found = sorted(p for p in root.rglob(name) if p.is_file())
    if not found:
        raise ValueError(f"{root}: no {name} (an RxNorm RRF release)")
    return found[0]


def _rows(path: Path, columns: list[str]) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\r\n").split("|")
            if len(fields) != len(columns) + 1:  # the trailing `|` gives one empty field
                raise ValueError(
                    f"{path}:{number}: {len(fields) - 1} fields, expected {len(columns)}"
                )
            yield dict(zip(columns, fields, strict=False))


class RrfReader:
    """RxNorm ingredient entries, expanded from an RRF release."""

    name = "rrf"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._conso = _find(root, "RXNCONSO.RRF")
        self._rel = _find(root, "RXNREL.RRF")
        match = next(
            (m for part in reversed(self._conso.resolve().parts) if (m := RELEASE.search(part))),
            None,
        )
        self.release = match.group(1) if match else "unknown"

    @property
    def source(self) -> str:
        return f"{self.name}:{self.release}"

    @cached_property
    def _concepts(self) -> dict[str, tuple[str, str]]:
        """RXCUI -> (term type, name), from its RXNORM atoms."""
        atoms: dict[str, list[tuple[int, str, str]]] = {}
        for row in _rows(self._conso, CONSO):
            if row["SAB"] != "RXNORM" or row["SUPPRESS"] in ("O", "Y", "E"):
                continue
            tty = row["TTY"]
            rank = PREFERRED.index(tty) if tty in PREFERRED else len(PREFERRED)
            atoms.setdefault(row["RXCUI"], []).append((rank, tty, row["STR"]))
        return {cui: min(found)[1:] for cui, found in atoms.items()}

    @cached_property
    def _edges(self) -> dict[tuple[str, str], set[str]]:
        """(RXCUI2, RELA) -> RXCUI1s, for the relationships of the walk."""
        edges: dict[tuple[str, str], set[str]] = {}
        for row in _rows(self._rel, REL):
            if row["SAB"] == "RXNORM" and row["RELA"] in RELAS:
                edges.setdefault((row["RXCUI2"], row["RELA"]), set()).add(row["RXCUI1"])
        return edges

    def _drugs(self, ingredient: str) -> set[str]:
        found: set[str] = set()
        stack = [ingredient]
        seen = {ingredient}
        while stack:
            cui = stack.pop()
            tty = self._concepts[cui][0]
            for (source_tty, rela), target_tty in STEPS.items():
                if source_tty != tty:
                    continue
                for target in self._edges.get((cui, rela), ()):
                    if target in seen or self._concepts.get(target, ("",))[0] != target_tty:
                        continue
                    seen.add(target)
                    stack.append(target)
                    if target_tty in DRUGS:
                        found.add(target)
        return found

    def expand(self, entry: Entry) -> dict[tuple[str, str], str] | None:
        if entry.ingredients is None:
            return None
        found: dict[tuple[str, str], str] = {}
        for code in entry.ingredients:
            concept = self._concepts.get(code)
            if concept is None or concept[0] not in INGREDIENTS:
                what = "not in this release" if concept is None else f"a {concept[0]}"
                raise ValueError(f"RxNorm {code} is {what}, not an ingredient (IN/PIN/MIN)")
            found[(RXNORM, code)] = concept[1]
            for cui in self._drugs(code):
                found[(RXNORM, cui)] = self._concepts[cui][1]
        return found

    def display(self, system: str, code: str) -> str | None:
        concept = self._concepts.get(code) if system == RXNORM else None
        return concept[1] if concept else None
