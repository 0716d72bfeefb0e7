"""UCUM unit conversion.

Parsing UCUM is delegated to ucumvert (a UCUM grammar on top of pint) rather than a
hand-written table: it knows every prefix and unit atom, so `10*3/uL`, `/mm3` and
`ukat/L` need no special cases. The registry is built once per process by service/ucum.py
(from a per-user cache of pint's parsed definitions when there is one). Conversion factors
are computed once per (from, to, molar mass) and cached, so converting a sweep's millions of
results costs a dictionary lookup and a multiplication each.

Mass and substance concentrations (mg/dL vs umol/L) are only interconvertible for a known
analyte: the caller passes the analyte's molar mass from the value set's metadata.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from service.errors import DataError
from service.ucum import UcumRegistry, build_registry, user_cache_root

__all__ = [
    "UnitError",
    "conversion_factor",
    "fold_aliases",
    "lab_spelling",
    "normalize_unit",
    "superscripts_to_caret",
]

# A unit that is only an annotation ("{INR}", "{score}") is the unit 1 in UCUM (spec 2.5 §12).
_ONLY_ANNOTATION = re.compile(r"^\{[^{}]*\}$")
# A decimal number outside an annotation ("mL/min/1.73"): UCUM allows none, and its grammar
# reads the "." as multiplication (1.73 = 1 x 73), so such a unit is refused, never parsed.
_DECIMAL_OUTSIDE_ANNOTATION = re.compile(r"\d\.\d")
_ANNOTATION = re.compile(r"\{[^{}]*\}")


def _annotations(unit: str) -> list[str]:
    """Annotations inside a compound unit. UCUM gives them no meaning, but they carry one:
    `{copies}/mL` is not `[IU]/mL`, and `mL/min/{1.73_m2}` (per body surface) is not `mL/min`."""
    if _ONLY_ANNOTATION.match(unit):
        return []
    return sorted(_ANNOTATION.findall(unit))


class UnitError(DataError):
    """A unit that is not valid UCUM, or two units that cannot be converted into each other."""


@lru_cache(maxsize=1)
def _registry() -> UcumRegistry:
    return build_registry(user_cache_root())


_SUPERSCRIPT_RUN = re.compile("[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+")
_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
# "×10^9/L", "x10E3/uL", "10^9/L", "10E9/L", "10**9/L": the power of ten UCUM writes 10*9.
_POWER_OF_TEN = re.compile(r"^(?:[x×*]\s*)?10\s*(?:\^|\*\*?|e)\s*(\d+)", re.IGNORECASE)


def superscripts_to_caret(text: str) -> str:
    """`10⁹` -> `10^9`, before NFKC would make it `109`."""
    return _SUPERSCRIPT_RUN.sub(lambda m: "^" + m.group().translate(_SUPERSCRIPT_DIGITS), text)


def lab_spelling(unit: str) -> str:
    """A unit as labs spell it, brought closer to UCUM without changing what it means.

    Superscript exponents to `^`, NFKC (full-width forms; the micro sign to Greek mu), both
    mu characters to `u`, a power of ten written `×10^9`, `x10E3`, `10^9` or `10E9` to
    UCUM's `10*9`, and no white space. Case is kept: `G/L` (giga per litre) is not `g/L`.
    """
    text = unicodedata.normalize("NFKC", superscripts_to_caret(unit.strip()))
    text = text.replace("μ", "u")
    text = _POWER_OF_TEN.sub(r"10*\1", text)
    return "".join(text.split())


def fold_aliases(aliases: dict[str, str], exact: frozenset[str] = frozenset()) -> dict[str, str]:
    """The case-insensitive alias table: each text's lab spelling, case folded, except the
    texts in `exact` (their case carries the meaning, e.g. `G/L` giga vs `g/L` gram)."""
    return {
        lab_spelling(text).casefold(): ucum for text, ucum in aliases.items() if text not in exact
    }


def normalize_unit(
    unit: str, aliases: dict[str, str] | None = None, folded: dict[str, str] | None = None
) -> str:
    """The UCUM form of a unit as a lab sent it.

    In order: an alias as written; the lab spelling (`lab_spelling`) as an alias; the lab
    spelling case-insensitively in `folded` (see `fold_aliases`); else the lab spelling
    itself, which UCUM may know (`umol/l`, `10*3/uL`).
    """
    text = unit.strip()
    if aliases and text in aliases:
        return aliases[text]
    spelled = lab_spelling(text)
    if aliases:
        found = aliases.get(spelled)
        if found is None:
            found = (folded or {}).get(spelled.casefold(), aliases.get(spelled.lower()))
        if found is not None:
            return found
    return spelled


@lru_cache(maxsize=4096)
def _parse(unit: str) -> Any:
    ureg = _registry()
    if unit in ("", "1") or _ONLY_ANNOTATION.match(unit):
        return ureg.from_ucum("1")
    if _DECIMAL_OUTSIDE_ANNOTATION.search(_ANNOTATION.sub("", unit)):
        raise UnitError(f"not a UCUM unit (a decimal number): {unit!r}")
    try:
        return ureg.from_ucum(unit)
    except Exception as exc:  # ucumvert raises parser-specific errors
        raise UnitError(f"not a UCUM unit: {unit!r}") from exc


@lru_cache(maxsize=4096)
def conversion_factor(source: str, target: str, molar_mass: float | None = None) -> float:
    """Multiply a value in `source` by this to get it in `target`.

    With `molar_mass` (g/mol), substance and mass concentrations convert into each other.
    Raises UnitError when the units are not UCUM or not commensurable.
    """
    if source == target:
        return 1.0
    if _annotations(source) != _annotations(target):
        raise UnitError(f"cannot convert {source} to {target}: different annotations")
    ureg = _registry()
    quantity = 1.0 * _parse(source)
    goal = _parse(target)
    try:
        return float(quantity.to(goal).magnitude)
    except Exception as direct_error:
        if molar_mass is None:
            raise UnitError(f"cannot convert {source} to {target}") from direct_error
    grams_per_mole = molar_mass * ureg.from_ucum("g/mol")
    for candidate in (quantity * grams_per_mole, quantity / grams_per_mole):
        try:
            return float(candidate.to(goal).magnitude)
        except Exception:  # noqa: S112 - try the other direction, then give up below
            continue
    raise UnitError(f"cannot convert {source} to {target} (molar mass {molar_mass} g/mol)")
