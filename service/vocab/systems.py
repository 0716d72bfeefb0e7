"""Which code system a coding's `system` names, however it was sent.

Hospital feeds name a code system in more ways than its FHIR URI: by OID (`urn:oid:
2.16.840.1.113883.6.96` is SNOMED CT, as CDA-derived records send it), by an edition or version
URI (`http://snomed.info/sct/900000000000207008`), by a name (`LN`, `SNOMED CT`, HL7 v2 table
0396), with `https` or a trailing slash, or as a national modification of ICD-10
(`icd-10-cn`, `icd-10-gm`) whose codes extend WHO categories. A code the tables list, sent under
such a name, is the same concept: were it compared by the raw string it would count as no record
of it (a wrong `pass` on an exclusion, a wrong `fail` on an inclusion).

`terminology/code_systems.csv` lists them, one row per way of sending (`sent`), with the
canonical `system` and how `sent` matches:
- `exact`: the system as sent, compared without a `urn:oid:` prefix;
- `name`: compared ignoring case and spaces;
- `prefix`: any system that begins with it;
- `modification`: as `exact`, for a national modification of ICD-10 read by its WHO category
  (ICD-10 tables match by prefix, so `M32.100x001` falls under `M32.1`).
Whatever the table holds, `https://` and a trailing `/` are not part of a system's identity:
`https://loinc.org/` is `http://loinc.org` when that is a canonical system. Anything else is
returned as sent: a local system stays local (and may be mapped by the site code map).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from service.errors import DataError

__all__ = ["CodeSystems", "CodeSystemsError"]

MATCHES = frozenset({"exact", "name", "prefix", "modification"})


class CodeSystemsError(DataError):
    """terminology/code_systems.csv is malformed."""


def _bare(system: str) -> str:
    return system.strip().removeprefix("urn:oid:").rstrip("/")


def _name(system: str) -> str:
    return "".join(system.split()).casefold()


@dataclass(frozen=True, slots=True)
class CodeSystems:
    exact: Mapping[str, str]
    names: Mapping[str, str]
    prefixes: tuple[tuple[str, str], ...]
    canonical_systems: frozenset[str]
    # canonical systems some row names otherwise (an OID, a name, a URI variant)
    aliased: frozenset[str] = frozenset()

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], known: Iterable[str] = ()) -> CodeSystems:
        """From the table's rows; `known` adds canonical systems (those the value sets use)."""
        exact: dict[str, str] = {}
        names: dict[str, str] = {}
        prefixes: list[tuple[str, str]] = []
        canonical = set(known)
        for row in rows:
            sent, system, match = row["sent"].strip(), row["system"].strip(), row["match"].strip()
            if not sent or not system or match not in MATCHES:
                raise CodeSystemsError(f"code_systems.csv: bad row {dict(row)}")
            canonical.add(system)
            if match == "name":
                names[_name(sent)] = system
            elif match == "prefix":
                prefixes.append((sent, system))
            else:
                exact[_bare(sent)] = system
        prefixes.sort(key=lambda item: -len(item[0]))  # the most specific prefix first
        aliased = frozenset([*exact.values(), *names.values(), *(c for _, c in prefixes)])
        return cls(exact, names, tuple(prefixes), frozenset(canonical), aliased)

    def canonical(self, system: str) -> str:
        """The canonical URI of the code system `system` names, or `system` unchanged."""
        if system in self.canonical_systems:
            return system
        bare = _bare(system)
        if bare in self.canonical_systems:
            return bare
        if bare.startswith("https://") and f"http://{bare[8:]}" in self.canonical_systems:
            return f"http://{bare[8:]}"
        found = self.exact.get(bare) or self.names.get(_name(system))
        if found is not None:
            return found
        for prefix, canonical in self.prefixes:
            if system.strip().startswith(prefix):
                return canonical
        return system
