"""The subset of SNOMED CT Expression Constraint Language the offline readers evaluate.

Supported (ECL 2.x, "Brief syntax"):

    << 55464009 |Systemic lupus erythematosus|     descendants or self
    <  55464009                                    descendants only
       55464009                                    the concept itself
    A OR B, A MINUS B                              left to right, no parentheses

Not supported, and refused with `EclUnsupported` (use a FHIR terminology server for these):
ancestors (`>`, `>>`), children/parents only (`<!`, `>!`), member-of (`^`), refinements
(`:`), `AND`, parentheses, wildcards (`*`), dotted attributes, cardinality, concrete values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from service.errors import DataError

__all__ = ["EclUnsupported", "Focus", "evaluate", "parse", "strip_terms"]

Operator = Literal["<<", "<", "self"]
TERM = re.compile(r"\|[^|]*\|")
TOKEN = re.compile(r"\s*(<<|<|\d{6,18}|OR\b|MINUS\b)\s*", re.IGNORECASE)


class EclUnsupported(DataError):
    """An expression outside the supported subset; the message says what is not supported."""


@dataclass(frozen=True, slots=True)
class Focus:
    operator: Operator
    concept: str


def strip_terms(ecl: str) -> str:
    """The expression without its `|term|` labels (they are comments in ECL)."""
    return " ".join(TERM.sub(" ", ecl).split())


def parse(ecl: str) -> list[tuple[Literal["OR", "MINUS"], Focus]]:
    """(how it combines, focus) pairs, the first always OR; raises EclUnsupported."""
    text = strip_terms(ecl)
    position, parts = 0, []
    combine: Literal["OR", "MINUS"] = "OR"
    expecting = "focus"
    operator: Operator = "self"
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            raise EclUnsupported(
                f"ECL {ecl!r}: {text[position:]!r} is outside the supported subset "
                "(<<, <, a concept id, OR, MINUS); use a FHIR terminology server"
            )
        word = match.group(1).upper()
        position = match.end()
        if expecting == "focus" and word in ("<<", "<") and operator == "self":
            operator = "<<" if word == "<<" else "<"
        elif expecting == "focus" and word.isdigit():
            parts.append((combine, Focus(operator, word)))
            expecting, operator = "combine", "self"
        elif expecting == "combine" and word in ("OR", "MINUS"):
            combine = "OR" if word == "OR" else "MINUS"
            expecting = "focus"
        else:
            raise EclUnsupported(f"ECL {ecl!r}: unexpected {word!r}")
    if expecting != "combine":
        raise EclUnsupported(f"ECL {ecl!r}: incomplete expression")
    return parts


def evaluate(ecl: str, descendants: Callable[[str], Iterable[str]]) -> set[str]:
    """The concept ids the expression denotes; `descendants(id)` gives the proper
    descendants of a concept (transitively), not the concept itself."""
    found: set[str] = set()
    for combine, focus in parse(ecl):
        members = set() if focus.operator == "<" else {focus.concept}
        if focus.operator != "self":
            members |= set(descendants(focus.concept))
        found = found | members if combine == "OR" else found - members
    return found
