"""UCUM unit conversion.

Parsing UCUM is delegated to ucumvert (a UCUM grammar on top of pint) rather than a
hand-written table: it knows every prefix and unit atom, so `10*3/uL`, `/mm3` and
`ukat/L` need no special cases. Conversion factors are computed once per
(from, to, molar mass) and cached, so converting a sweep's millions of results costs a
dictionary lookup and a multiplication each.

Mass and substance concentrations (mg/dL vs umol/L) are only interconvertible for a known
analyte: the caller passes the analyte's molar mass from the value set's metadata.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ucumvert import PintUcumRegistry

__all__ = ["UnitError", "conversion_factor", "normalize_unit"]

# A unit that is only an annotation ("{INR}", "{score}") is the unit 1 in UCUM (spec 2.5 §12).
_ONLY_ANNOTATION = re.compile(r"^\{[^{}]*\}$")
_ANNOTATION = re.compile(r"\{[^{}]*\}")


def _annotations(unit: str) -> list[str]:
    """Annotations inside a compound unit. UCUM gives them no meaning, but they carry one:
    `{copies}/mL` is not `[IU]/mL`, and `mL/min/{1.73_m2}` (per body surface) is not `mL/min`."""
    if _ONLY_ANNOTATION.match(unit):
        return []
    return sorted(_ANNOTATION.findall(unit))


class UnitError(ValueError):
    """A unit that is not valid UCUM, or two units that cannot be converted into each other."""


@lru_cache(maxsize=1)
def _registry() -> Any:
    return PintUcumRegistry()


def normalize_unit(unit: str, aliases: dict[str, str] | None = None) -> str:
    """The UCUM form of a unit as a lab sent it: known aliases first, then as is."""
    text = unit.strip()
    if aliases:
        return aliases.get(text, aliases.get(text.lower(), text))
    return text


@lru_cache(maxsize=4096)
def _parse(unit: str) -> Any:
    ureg = _registry()
    if unit in ("", "1") or _ONLY_ANNOTATION.match(unit):
        return ureg.from_ucum("1")
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
