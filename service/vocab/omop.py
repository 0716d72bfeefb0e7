"""An OMOP vocabulary export as Athena ships it: tab-separated CONCEPT.csv,
CONCEPT_ANCESTOR.csv, CONCEPT_RELATIONSHIP.csv (and VOCABULARY.csv for the release).

- SNOMED CT ECL (the subset of `service/vocab/ecl.py`): descendants come from CONCEPT_ANCESTOR,
  which OMOP builds over *standard* concepts only, so a SNOMED concept that OMOP made
  non-standard (mapped to another vocabulary, most substances and drugs) has no descendants
  here; an ECL over one is refused. `concept_code` is the SCTID.
- RxNorm `ingredients`: the ingredient plus every RxNorm Clinical/Branded Drug or Pack that
  CONCEPT_ANCESTOR puts below it, and those reached from it by the CONCEPT_RELATIONSHIP
  chain `RxNorm ing of` -> `Constitutes` -> `Has tradename` / `Contained in` (the drug
  hierarchy of a release whose ancestor table was trimmed). RxNorm Extension concepts are
  not RxNorm codes and are left out.
- Concepts with `invalid_reason` set (D deleted, U upgraded) are left out.
- The release: `vocabulary_version` of the `None` row of VOCABULARY.csv
  (`omop:v5.0 31-AUG-25`), else `omop:unknown`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from service.vocab.definition import RXNORM, SNOMED, Entry
from service.vocab.ecl import evaluate

__all__ = ["OmopReader"]

VOCABULARY = {SNOMED: "SNOMED", RXNORM: "RxNorm"}
DRUG_CLASSES = frozenset(
    {
        "Clinical Drug",
        "Branded Drug",
        "Quant Clinical Drug",
        "Quant Branded Drug",
        "Clinical Pack",
        "Branded Pack",
    }
)
INGREDIENT_CLASSES = frozenset({"Ingredient", "Precise Ingredient", "Multiple Ingredients"})
# concept_id_1 -[relationship_id]-> concept_id_2, from an ingredient down to drugs and packs
DRUG_CHAIN = frozenset({"RxNorm ing of", "Constitutes", "Has tradename", "Contained in"})


@dataclass(frozen=True, slots=True)
class Concept:
    concept_id: str
    name: str
    vocabulary: str
    concept_class: str
    code: str


def _rows(path: Path) -> Iterator[dict[str, str]]:
    # Athena's files are tab-separated without quoting; names may hold quotes.
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


class OmopReader:
    """SNOMED CT ECL and RxNorm ingredient entries, expanded from an OMOP vocabulary export."""

    name = "omop"

    def __init__(self, root: Path) -> None:
        self.root = root
        for needed in ("CONCEPT.csv", "CONCEPT_ANCESTOR.csv"):
            if not (root / needed).is_file():
                raise ValueError(f"{root}: no {needed} (an Athena vocabulary export)")
        self.release = self._release()

    @property
    def source(self) -> str:
        return f"{self.name}:{self.release}"

    def _release(self) -> str:
        path = self.root / "VOCABULARY.csv"
        if path.is_file():
            for row in _rows(path):
                if row.get("vocabulary_id") == "None" and row.get("vocabulary_version"):
                    return row["vocabulary_version"]
        return "unknown"

    @cached_property
    def _concepts(self) -> dict[str, Concept]:
        wanted = set(VOCABULARY.values())
        return {
            row["concept_id"]: Concept(
                row["concept_id"],
                row["concept_name"],
                row["vocabulary_id"],
                row["concept_class_id"],
                row["concept_code"],
            )
            for row in _rows(self.root / "CONCEPT.csv")
            if row["vocabulary_id"] in wanted and not row.get("invalid_reason")
        }

    @cached_property
    def _by_code(self) -> dict[tuple[str, str], Concept]:
        return {(c.vocabulary, c.code): c for c in self._concepts.values()}

    @cached_property
    def _descendants(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for row in _rows(self.root / "CONCEPT_ANCESTOR.csv"):
            ancestor, descendant = row["ancestor_concept_id"], row["descendant_concept_id"]
            if ancestor != descendant and ancestor in self._concepts:
                found.setdefault(ancestor, set()).add(descendant)
        return found

    @cached_property
    def _relations(self) -> dict[str, set[str]]:
        path = self.root / "CONCEPT_RELATIONSHIP.csv"
        found: dict[str, set[str]] = {}
        if not path.is_file():
            return found
        for row in _rows(path):
            if row["relationship_id"] in DRUG_CHAIN and not row.get("invalid_reason"):
                found.setdefault(row["concept_id_1"], set()).add(row["concept_id_2"])
        return found

    def _concept(self, system: str, code: str) -> Concept:
        concept = self._by_code.get((VOCABULARY[system], code))
        if concept is None:
            raise ValueError(f"{system}|{code} is not a valid concept in {self.source}")
        return concept

    def _snomed_descendants(self, code: str) -> set[str]:
        concept = self._concept(SNOMED, code)
        return {
            self._concepts[d].code
            for d in self._descendants.get(concept.concept_id, ())
            if d in self._concepts and self._concepts[d].vocabulary == "SNOMED"
        }

    def _drugs(self, ingredient: Concept) -> set[str]:
        """Concept ids of the RxNorm drugs and packs below an ingredient."""
        reached = set(self._descendants.get(ingredient.concept_id, ()))
        stack = [ingredient.concept_id]
        while stack:
            for target in self._relations.get(stack.pop(), ()):
                if target not in reached:
                    reached.add(target)
                    stack.append(target)
        return {
            cid
            for cid in reached
            if cid in self._concepts
            and self._concepts[cid].vocabulary == "RxNorm"
            and self._concepts[cid].concept_class in DRUG_CLASSES
        }

    def expand(self, entry: Entry) -> dict[tuple[str, str], str] | None:
        if entry.ecl is not None:
            codes = evaluate(entry.ecl, self._snomed_descendants)
            return {(SNOMED, code): self._concept(SNOMED, code).name for code in codes}
        if entry.ingredients is not None:
            found: dict[tuple[str, str], str] = {}
            for code in entry.ingredients:
                ingredient = self._concept(RXNORM, code)
                if ingredient.concept_class not in INGREDIENT_CLASSES:
                    raise ValueError(
                        f"RxNorm {code} is a {ingredient.concept_class}, not an ingredient"
                    )
                found[(RXNORM, code)] = ingredient.name
                for cid in self._drugs(ingredient):
                    drug = self._concepts[cid]
                    found[(RXNORM, drug.code)] = drug.name
            return found
        return None

    def display(self, system: str, code: str) -> str | None:
        vocabulary = VOCABULARY.get(system)
        concept = self._by_code.get((vocabulary, code)) if vocabulary else None
        return concept.name if concept else None
