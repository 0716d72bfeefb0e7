"""Observation -> LabResult (labs, vital signs, scores and graded assessments).

Only results whose code belongs to a value set the trials use are kept; the rest of a
real EHR's Observations (most of them) are dropped after one dictionary lookup.

Results as labs send them:
- a panel's components (a CBC's WBC and neutrophil count, a hepatitis B panel's HBsAg) are
  results of their own, with the panel's status, time and reference;
- the status: a FHIR code in any case ("Final"); "unknown" or a status that is no FHIR code
  ("F", none) keeps the result with no reading (`LabResult.status_unread`), so an earlier one
  never decides in its place;
- the value: valueQuantity, valueInteger, valueString (a number written as text, "<20 IU/mL",
  becomes a Quantity with its comparator: below the limit of quantitation is a bound, not
  "not detected"), valueCodeableConcept, valueRatio (a titer 1:N);
- `qualitative`, first match wins: a coded value (qualitative_codes.csv); the text
  (qualitative_text.csv, read by service/qualitative.py: "阴性 0.12", "(+)", "Negative (0.05
  S/CO)"); a titer, for value sets whose yaml says `titer_reactive_at_any_dilution` (any
  dilution is positive, "<1:1" negative); an explicitly qualitative interpretation code (POS,
  NEG, DET, ND, RR, NR ...); and, for value sets whose yaml says `interpretation_decides` (the
  serology screens), a reference-range flag on a numeric value (H, HH, A, AA -> positive, N ->
  negative; interpretation_flags.csv). An "indeterminate" reading (equivocal, "±") stops the
  search: the result is neither. A flag never overrides a coded value or text;
- every reference range, its limits converted like the value; `ref_high` stays the first
  range's upper limit;
- a coding of Observation.code without `system` is read as LOINC when it is a valid LOINC code
  (pattern and check digit); other codings without a system stay unread;
- a fraction sent for a percentage (LVEF 0.61 as "%", "1" or no unit) is read as 61 % for
  value sets whose yaml gives `fraction_below` (values below it are fractions).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from service.facts import (
    COUNTED_RESULT_STATUSES,
    Code,
    LabResult,
    Qualitative,
    Quantity,
    RefRange,
    Sex,
)
from service.mappers.common import (
    MappingError,
    Resource,
    codes_of,
    parse_date_span,
    parse_timestamp,
    quantity_of,
)
from service.qualitative import Reading, Titer, parse_bounded_value, parse_titer
from service.terminology import Terminology, remember
from service.units import UnitError

LOINC = "http://loinc.org"
_LOINC_CODE = re.compile(r"(\d{1,7})-(\d)")
COUNTED_STATUSES = COUNTED_RESULT_STATUSES
# FHIR R4 ObservationStatus codes of results not final yet, or void: dropped. "unknown" (the
# source does not know which status applies: it may be final) is not one of them.
NOT_COUNTED_STATUSES = frozenset({"registered", "preliminary", "cancelled", "entered-in-error"})
GRADES = frozenset("ABCDE")
# referenceRange.appliesTo codes that name a sex (SNOMED CT; administrative-gender codes).
RANGE_SEXES: dict[str, Sex] = {
    "248152002": "female",
    "248153007": "male",
    "female": "female",
    "male": "male",
}
LIMITS_ONLY = frozenset({"low", "high"})
# Units a percentage may be sent in when `fraction_below` reads small values as fractions.
PERCENT_LIKE = frozenset({"%", "1", ""})


def map_observation(
    resource: Resource, terms: Terminology, source: str | None = None
) -> LabResult | tuple[LabResult, ...] | None:
    """The result, or None when the code is not one the trials use or it does not count.

    A panel's components (a CBC whose WBC and neutrophil count are components, a hepatitis
    panel's HBsAg) are results of their own: each with its own code, value, interpretation and
    reference ranges, and the panel's status and time. Then the panel's own result, if any, and
    its components' come as a tuple."""
    code = resource.get("code")
    if code is None:
        raise MappingError("has no code (Observation.code is required)")
    components = resource.get("component")
    own = _map_one(resource, resource, code, terms, source)
    if not components:
        return own  # most results
    if not isinstance(components, list):
        raise MappingError("component is not a list")
    found = [own] if own is not None else []
    for part in components:
        if not isinstance(part, dict):
            raise MappingError("component is not an object")
        part_code = part.get("code")
        if part_code is None:
            raise MappingError("has a component without a code (component.code is required)")
        result = _map_one(resource, part, part_code, terms, source)
        if result is not None:
            found.append(result)
    if not found:
        return None
    return found[0] if len(found) == 1 else tuple(found)


def _map_one(
    resource: Resource,
    holder: Resource,
    code: Any,
    terms: Terminology,
    source: str | None,
) -> LabResult | None:
    """The result `holder` (the Observation itself, or one of its components) records: its
    code, value, interpretation and ranges; the Observation's status, time and reference."""
    read = _read_code(code, terms)
    if read is None:
        return None  # most of a real EHR's Observations: dropped before any object is built
    codes, concepts = read
    status = _status(resource.get("status"))
    if status in NOT_COUNTED_STATUSES:
        return None  # preliminary, registered, cancelled, entered-in-error
    reference = f"Observation/{resource.get('id')}"
    when = observation_time(resource)
    effective, effective_latest = parse_date_span(when)
    quantity, text, coded, titer = _value(holder)
    interpretation = _interpretation(holder.get("interpretation"))
    if status not in COUNTED_STATUSES:
        # "unknown", or a status no FHIR code reads ("F", "Final result", none at all): the
        # result may be final or not. Kept, so an earlier result does not decide in its
        # place, but with no reading of its own; its value is shown as text.
        shown = text or (f"{quantity.value:g} {quantity.unit or ''}".strip() if quantity else None)
        return LabResult(
            reference=reference,
            codes=codes,
            concepts=concepts,
            effective=effective,
            status=status,
            text=shown,
            source=source,
            effective_at=parse_timestamp(when),
            effective_latest=effective_latest,
        )
    qualitative = (
        _qualitative(terms, concepts, text, coded, titer, quantity is not None, interpretation)
        if text or coded or titer or interpretation
        else None  # a bare number: most results
    )
    grade = _grade(text, coded)
    concept = terms.quantity_concept(concepts)
    if quantity is not None and concept is not None:
        quantity = _canonical(terms, concept, quantity)
    raw_ranges = holder.get("referenceRange")
    ranges = (
        _ref_ranges(terms, concept, raw_ranges, quantity.unit if quantity else None)
        if raw_ranges
        else ()
    )
    ref_high = None
    for found in ranges:
        if found.high is not None:
            ref_high = found.high
            break
    return LabResult(
        reference=reference,
        codes=codes,
        concepts=concepts,
        effective=effective,
        status=status,
        quantity=quantity,
        text=text,
        qualitative=qualitative,
        grade=grade,
        ref_high=ref_high,
        source=source,
        effective_at=parse_timestamp(when),
        ref_ranges=ranges,
        interpretation=tuple(c for codes_, _ in interpretation for c in codes_)
        if interpretation
        else (),
        titer=_titer_value(titer),
        effective_latest=effective_latest,
    )


def _read_code(code: Any, terms: Terminology) -> tuple[tuple[Code, ...], frozenset[str]] | None:
    """(codes, value sets) of an Observation's (or a component's) `code`, or None when no
    value set has it. A population repeats a few hundred codes: each is read once (a memo
    keyed by the code's JSON)."""
    key = _code_key(code)
    if key is None:
        return _read_code_uncached(code, terms)
    memo = terms.memo("observation.code")
    try:
        return memo[key]  # type: ignore[no-any-return]
    except KeyError:
        pass
    found = _read_code_uncached(code, terms)
    remember(memo, key, found)
    return found


def _code_key(code: Any) -> bytes | None:
    """`code` as JSON: every field the reading looks at, exactly as sent (a number is not
    read as the string of its digits), or None when it is not JSON and is read uncached."""
    try:
        return orjson.dumps(code)
    except TypeError:  # orjson.JSONEncodeError: a caller's own object
        return None


def _read_code_uncached(
    code: Any, terms: Terminology
) -> tuple[tuple[Code, ...], frozenset[str]] | None:
    if isinstance(code, dict) and any(
        isinstance(c, dict) and not c.get("system") for c in code.get("coding") or ()
    ):
        code = _loinc_without_system(code)
    if not terms.may_match(code):
        return None
    recorded = codes_of(code, terms)
    if not recorded:
        return None
    codes, concepts = terms.resolve(recorded)
    if not concepts:
        return None
    return codes, concepts


def _status(raw: Any) -> str:
    """Observation.status as a FHIR code: as sent, or written in another case or with spaces
    ("Final", " final"); anything else as sent ("" when none), which no criterion counts."""
    if raw in COUNTED_STATUSES:
        return str(raw)  # most results
    if not isinstance(raw, str):
        return ""
    folded = raw.strip().casefold()
    known = folded in COUNTED_STATUSES or folded in NOT_COUNTED_STATUSES or folded == "unknown"
    return folded if known else raw


def observation_time(resource: Resource) -> Any:
    """When the result was taken: effectiveDateTime, the start of effectivePeriod (its end when
    only that was sent), effectiveInstant, else when it was issued."""
    period = resource.get("effectivePeriod")
    return (
        resource.get("effectiveDateTime")
        or ((period.get("start") or period.get("end")) if isinstance(period, dict) else None)
        or resource.get("effectiveInstant")
        or resource.get("issued")
    )


def _value(
    resource: Resource,
) -> tuple[Quantity | None, str | None, list[Code], Titer | None]:
    """(quantity, text, coded value, titer) of the value[x] we read."""
    if "valueQuantity" in resource:
        return quantity_of(resource["valueQuantity"]), None, [], None
    if "valueInteger" in resource:
        number = resource["valueInteger"]
        if isinstance(number, bool) or not isinstance(number, int):
            raise MappingError(f"valueInteger is not an integer: {number!r}")
        return Quantity(float(number), None), None, [], None
    if "valueString" in resource:
        text = resource["valueString"]
        if not isinstance(text, str):
            raise MappingError("valueString is not a string")
        text = text.strip()
        bounded = parse_bounded_value(text)
        quantity = Quantity(bounded.value, bounded.unit, bounded.comparator) if bounded else None
        return quantity, text, [], parse_titer(text)
    if "valueCodeableConcept" in resource:
        concept = resource["valueCodeableConcept"]
        coded = codes_of(concept)
        text = concept.get("text") or (coded[0].display if coded else None)
        return None, text, coded, parse_titer(text)
    if "valueRatio" in resource:
        return _ratio(resource["valueRatio"])
    return None, None, [], None


def _ratio(ratio: Any) -> tuple[Quantity | None, str | None, list[Code], Titer | None]:
    """valueRatio: a titer when the numerator is 1 (1:16 is numerator 1, denominator 16)."""
    if not isinstance(ratio, dict):
        raise MappingError("valueRatio is not an object")
    numerator = quantity_of(ratio.get("numerator"))
    denominator = quantity_of(ratio.get("denominator"))
    if numerator is None or denominator is None:
        return None, None, [], None
    text = (
        f"{numerator.comparator or ''}{numerator.value:g}:"
        f"{denominator.comparator or ''}{denominator.value:g}"
    )
    if numerator.value != 1 or denominator.value < 1:
        return None, text, [], None
    comparator = denominator.comparator or numerator.comparator
    return None, text, [], Titer(denominator.value, comparator)


def _titer_value(titer: Titer | None) -> float | None:
    """The dilution N of a titer the lab found reactive; none for "<1:N" (below it)."""
    if titer is None or titer.comparator in ("<", "<="):
        return None
    return titer.dilution


def _interpretation(raw: Any) -> list[tuple[list[Code], str | None]]:
    """Each interpretation CodeableConcept: its codes and its text."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MappingError("interpretation is not a list")
    found = []
    for concept in raw:
        codes = codes_of(concept)
        text = concept.get("text") if isinstance(concept, dict) else None
        found.append((codes, text if isinstance(text, str) else None))
    return found


def _decided(reading: Reading | None) -> tuple[bool, Qualitative | None]:
    """(whether the search stops, the result): "indeterminate" stops it with no result."""
    if reading is None:
        return False, None
    if reading == "indeterminate":
        return True, None
    return True, reading


def _read_concept(
    terms: Terminology, codes: list[Code], text: str | None
) -> tuple[bool, Qualitative | None]:
    """A coded or text value (or one interpretation concept) read as qualitative: its codes
    first, then its text; (whether the search stops, the result) as `_decided`."""
    for code in codes:
        stop, found = _decided(terms.qualitative_of_code(code.system, code.code))
        if stop:
            return stop, found
    if text:
        return _decided(terms.qualitative_of_text(text))
    return False, None


def _qualitative(
    terms: Terminology,
    concepts: frozenset[str],
    text: str | None,
    coded: list[Code],
    titer: Titer | None,
    numeric: bool,
    interpretation: list[tuple[list[Code], str | None]],
) -> Qualitative | None:
    """Positive or negative, from the first source that says (module docstring)."""
    infos = [terms.valuesets[name] for name in concepts if name in terms.valuesets]
    stop, found = _read_concept(terms, coded, text)
    if stop:
        return found
    if titer is not None and any(info.titer_reactive_at_any_dilution for info in infos):
        if titer.comparator not in ("<", "<="):
            return "positive"  # reactive at any dilution, 1:1 included
        if titer.dilution <= 1:
            return "negative"  # not reactive even undiluted
        return None  # "<1:8": the lower dilutions are not reported
    for codes, concept_text in interpretation:
        stop, found = _read_concept(terms, codes, concept_text)
        if stop:
            return found
    if numeric and not coded and any(info.interpretation_decides for info in infos):
        for codes, _ in interpretation:
            for code in codes:
                stop, found = _decided(terms.interpretation_flag(code.system, code.code))
                if stop:
                    return found
    return None


def _grade(text: str | None, coded: list[Code]) -> str | None:
    if not coded and not text:
        return None  # a number: most results
    for candidate in [code.code for code in coded] + [text or ""]:
        letter = candidate.strip().upper().removeprefix("GRADE ").strip()
        if letter in GRADES:
            return letter
    return None


def _canonical(terms: Terminology, concept: str, quantity: Quantity) -> Quantity:
    info = terms.valuesets[concept]
    unit = quantity.unit if quantity.unit is not None else None
    if info.fraction_below is not None and (unit or "").strip() in PERCENT_LIKE:
        # LVEF 0.61 sent as "%" (or "1", or no unit) is a fraction: 61 %, never 0.61 %.
        value = quantity.value * 100 if quantity.value < info.fraction_below else quantity.value
        return Quantity(quantity.value, quantity.unit, quantity.comparator, value, "%")
    if unit is None and info.canonical_unit is not None and info.canonical_unit.startswith("{"):
        unit = info.canonical_unit  # scores and ratios are often sent without a unit
    converted = terms.canonical(concept, quantity.value, unit)
    if converted is None:
        return quantity
    # Built directly: dataclasses.replace costs several times more, once per result.
    return Quantity(quantity.value, quantity.unit, quantity.comparator, converted[0], converted[1])


def _ref_ranges(
    terms: Terminology, concept: str | None, ranges: Any, value_unit: str | None
) -> tuple[RefRange, ...]:
    """Every referenceRange: limits converted like the value (a limit without a unit takes
    the value's), type and appliesTo codes, the sex appliesTo names, the age in years."""
    if not ranges:
        return ()
    if not isinstance(ranges, list):
        raise MappingError("referenceRange is not a list")
    found = []
    for entry in ranges:
        if not isinstance(entry, dict):
            raise MappingError("referenceRange is not an object")
        low = _limit(terms, concept, entry.get("low"), value_unit)
        high = _limit(terms, concept, entry.get("high"), value_unit)
        if entry.keys() <= LIMITS_ONLY:
            found.append(RefRange(low, high))  # most ranges: limits only
            continue
        applies = [code for concept_ in entry.get("appliesTo") or () for code in codes_of(concept_)]
        sexes = {RANGE_SEXES[c.code] for c in applies if c.code in RANGE_SEXES}
        age_low, age_high = _age_years(terms, entry.get("age"))
        text = entry.get("text")
        type_codes = codes_of(entry.get("type"))
        found.append(
            RefRange(
                low=low,
                high=high,
                type=type_codes[0].code if type_codes else None,
                applies_to=tuple(c.code for c in applies),
                sex=sexes.pop() if len(sexes) == 1 else None,
                age_low_years=age_low,
                age_high_years=age_high,
                text=text if isinstance(text, str) else None,
            )
        )
    return tuple(found)


def _limit(
    terms: Terminology, concept: str | None, raw: Any, value_unit: str | None
) -> Quantity | None:
    if raw is None:
        return None
    limit = quantity_of(raw)
    if limit is None:
        return None
    if limit.unit is None:
        limit = Quantity(limit.value, value_unit, limit.comparator)
    return _canonical(terms, concept, limit) if concept else limit


def _age_years(terms: Terminology, age: Any) -> tuple[float | None, float | None]:
    """referenceRange.age (a Range) in years; a limit without a unit is in years."""
    if not isinstance(age, dict):
        return None, None
    limits: list[float | None] = []
    for key in ("low", "high"):
        limit = quantity_of(age.get(key))
        if limit is None:
            limits.append(None)
            continue
        try:
            factor = terms.factor(limit.unit, "a") if limit.unit else 1.0
        except UnitError:
            factor = None  # an age unit we cannot read: no limit rather than a wrong one
        limits.append(None if factor is None else round(limit.value * factor, 4))
    return limits[0], limits[1]


def _loinc_without_system(concept: dict[str, Any]) -> dict[str, Any]:
    """Observation.code with its codings that have no `system` but are valid LOINC codes (the
    pattern and the mod-10 check digit, LOINC Users' Guide) read as LOINC: some lab interfaces
    leave the system out, and a dropped positive hCG would let E13 pass. Other codings without
    a system stay unread."""
    codings = []
    for coding in concept.get("coding") or ():
        code = coding.get("code") if isinstance(coding, dict) else None
        if isinstance(code, str) and not coding.get("system") and _is_loinc(code.strip()):
            coding = {**coding, "system": LOINC, "code": code.strip()}
        codings.append(coding)
    return {**concept, "coding": codings}


def _is_loinc(code: str) -> bool:
    found = _LOINC_CODE.fullmatch(code)
    if found is None:
        return False
    from_right = found.group(1)[::-1]
    digits = from_right[1::2] + str(int(from_right[0::2]) * 2)
    return (10 - sum(int(d) for d in digits) % 10) % 10 == int(found.group(2))
