"""The `definition:` block of a value set's yaml: what the CSV is the expansion of.

    definition:
      include:
        - {system: "http://snomed.info/sct", ecl: "<< 55464009 |Systemic lupus erythematosus|"}
        - {system: "http://hl7.org/fhir/sid/icd-10-cm", prefixes: [M32.1, M32.8]}
        - {system: "http://www.nlm.nih.gov/research/umls/rxnorm", ingredients: ["3002"]}
        - {system: "http://loinc.org", codes: ["718-7"]}
        - {valueset: "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.117.12.1010"}
      exclude:
        - {system: "http://snomed.info/sct", ecl: "<< 1234567 |...|"}

An entry names a `system` and exactly one of `ecl` (SNOMED CT only), `prefixes` (the
hierarchical systems ICD-10, ICD-10-CM, ATC), `codes` (any system) or `ingredients` (RxNorm:
the ingredient plus the clinical and branded drugs and packs that contain it); or it names a
published value set by canonical URL or OID in `valueset`, alone. Unknown keys are refused.
"""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import DataError

__all__ = [
    "ATC",
    "ICD10",
    "ICD10CM",
    "LOINC",
    "RXNORM",
    "SNOMED",
    "DefinitionError",
    "Entry",
    "ValueSetDefinition",
    "parse_definition",
]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
PREFIX_SYSTEMS = frozenset({ICD10, ICD10CM, ATC})
OID = re.compile(r"(urn:oid:)?[0-2](\.\d+)+")
SELECTORS = ("ecl", "prefixes", "codes", "ingredients")

Codes = list[str]


class DefinitionError(DataError):
    """A `definition:` block that does not follow the model; the message names the file."""


class Entry(BaseModel):
    """One include or exclude line."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    system: str | None = None
    ecl: str | None = None
    prefixes: Codes | None = None
    codes: Codes | None = None
    ingredients: Codes | None = None
    valueset: str | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> Self:
        chosen = [name for name in SELECTORS if getattr(self, name) is not None]
        if self.valueset is not None:
            if chosen or self.system is not None:
                raise ValueError("`valueset` stands alone (no system, ecl, prefixes, codes ...)")
            if not (
                self.valueset.startswith(("http://", "https://")) or OID.fullmatch(self.valueset)
            ):
                raise ValueError(f"valueset must be a URL or an OID, got {self.valueset!r}")
            return self
        if self.system is None:
            raise ValueError("an entry needs `system` (or `valueset` alone)")
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of {', '.join(SELECTORS)} (got {chosen or 'none'})")
        selector = chosen[0]
        if selector == "ecl" and self.system != SNOMED:
            raise ValueError("`ecl` is for SNOMED CT only")
        if selector == "prefixes" and self.system not in PREFIX_SYSTEMS:
            raise ValueError("`prefixes` is for ICD-10, ICD-10-CM and ATC only")
        if selector == "ingredients" and self.system != RXNORM:
            raise ValueError("`ingredients` is for RxNorm only")
        values = getattr(self, selector)
        if isinstance(values, list) and (
            not values or not all(v.strip() == v and v for v in values)
        ):
            raise ValueError(f"`{selector}` must be a non-empty list of codes without spaces")
        if selector == "ecl" and not str(self.ecl).strip():
            raise ValueError("`ecl` is empty")
        return self

    @property
    def selector(self) -> str:
        """Which of ecl / prefixes / codes / ingredients / valueset this entry uses."""
        for name in (*SELECTORS, "valueset"):
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated entries have a selector")

    def roots(self) -> tuple[str, ...]:
        """The codes an expansion must contain: listed codes, prefixes, ingredients."""
        return tuple(self.codes or self.prefixes or self.ingredients or ())

    def label(self) -> str:
        if self.valueset is not None:
            return f"valueset {self.valueset}"
        value = self.ecl if self.ecl is not None else ",".join(self.roots())
        return f"{self.system} {self.selector} {value}"


class ValueSetDefinition(BaseModel):
    """`include` entries (at least one), minus `exclude` entries."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    include: list[Entry] = Field(min_length=1)
    exclude: list[Entry] = Field(default_factory=list)


def parse_definition(raw: Any, where: str) -> ValueSetDefinition | None:
    """The definition block of one yaml file (None when it has none); raises
    DefinitionError naming `where` and the offending entry."""
    if raw is None:
        return None
    try:
        return ValueSetDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'definition'}: {error['msg']}"
            for error in exc.errors()
        )
        raise DefinitionError(f"{where}: definition: {problems}") from None
