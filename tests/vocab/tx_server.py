"""A small FHIR terminology server for tests, served on loopback (tests/smart/server.py).

It answers from a fixture hierarchy of real SNOMED CT concepts (a child -> parents table):
- `GET ValueSet/$validate-code?url=<implicit ECL value set>&system=&code=`;
- `GET ValueSet/$expand?url=&offset=&count=` for implicit ECL value sets and one named value
  set, at most `page_cap` codes per page (so a client has to page).
ECL is evaluated as a real server would for the forms cohort-match sends: `<<`, `<`, a
concept, OR and MINUS, and parentheses (the runtime composes a definition's includes and
exclusions as `((A) OR (B)) MINUS ((C))`). Other ECL is refused with 400, a value set it does
not hold (a VSAC URL) with 404, both as an OperationOutcome. `failure` makes every answer
that status (500, 503 ...); `requests` counts the operations answered or failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from service.vocab.ecl import EclUnsupported, evaluate, strip_terms

SNOMED = "http://snomed.info/sct"
ECL_PREFIX = f"{SNOMED}?fhir_vs=ecl/"
VERSION = f"{SNOMED}|{SNOMED}/900000000000207008/version/20250101"
# child -> parents (IS-A), with names; deeper codes than terminology/valuesets list
CONCEPTS = {
    "404684003": ((), "Clinical finding (finding)"),
    "64572001": (("404684003",), "Disease (disorder)"),
    "55464009": (("64572001",), "Systemic lupus erythematosus (disorder)"),
    "239887007": (("55464009",), "Systemic lupus erythematosus with organ/system involvement"),
    "68815009": (("239887007",), "Systemic lupus erythematosus glomerulonephritis syndrome"),
    "36402006": (("68815009",), "SLE glomerulonephritis syndrome, WHO class IV (disorder)"),
    "295101000119105": (
        ("68815009",),
        "Nephropathy co-occurrent and due to systemic lupus erythematosus (disorder)",
    ),
    "40733004": (("64572001",), "Infectious disease (disorder)"),
    "233604007": (("40733004",), "Pneumonia (disorder)"),
    "64479007": (("233604007",), "Pneumonia due to Klebsiella pneumoniae (disorder)"),
    "38341003": (("64572001",), "Hypertensive disorder, systemic arterial (disorder)"),
}
NAMED = {"http://example.org/fhir/ValueSet/lupus-nephritis": "<< 68815009"}


def descendants(concept: str) -> set[str]:
    found: set[str] = set()
    for child, (parents, _) in CONCEPTS.items():
        if concept in parents:
            found |= {child, *descendants(child)}
    return found


def _outcome(status: int, text: str) -> JSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": text}],
    }
    return JSONResponse(body, status_code=status, media_type="application/fhir+json")


TOKEN = re.compile(r"\s*(\(|\)|<<|<|\d{6,18}|OR\b|MINUS\b)", re.IGNORECASE)


def _tokens(ecl: str) -> list[str]:
    text, position, found = strip_terms(ecl), 0, []
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            if text[position:].strip():
                raise EclUnsupported(f"ECL {ecl!r}: cannot evaluate {text[position:]!r}")
            break
        found.append(match.group(1).upper())
        position = match.end()
    return found


def evaluate_ecl(ecl: str) -> set[str]:
    """`<<`, `<`, a concept, OR, MINUS (left to right) and parentheses; else EclUnsupported."""
    tokens = _tokens(ecl)

    def expression(i: int) -> tuple[set[str], int]:
        found, i = operand(i)
        while i < len(tokens) and tokens[i] in ("OR", "MINUS"):
            other, j = operand(i + 1)
            found = found | other if tokens[i] == "OR" else found - other
            i = j
        return found, i

    def operand(i: int) -> tuple[set[str], int]:
        if i < len(tokens) and tokens[i] == "(":
            found, i = expression(i + 1)
            if i >= len(tokens) or tokens[i] != ")":
                raise EclUnsupported(f"ECL {ecl!r}: unbalanced parentheses")
            return found, i + 1
        j = i + 1 if i < len(tokens) and tokens[i] in ("<<", "<") else i
        if j >= len(tokens) or not tokens[j].isdigit():
            raise EclUnsupported(f"ECL {ecl!r}: expected a concept")
        return evaluate(" ".join(tokens[i : j + 1]), descendants), j + 1

    found, end = expression(0)
    if end != len(tokens):
        raise EclUnsupported(f"ECL {ecl!r}: unexpected {tokens[end]!r}")
    return found


def _members(url: str) -> set[str] | None:
    """The value set's codes; None when it is not held; EclUnsupported for ECL it refuses."""
    if url in NAMED:
        return evaluate(NAMED[url], descendants)
    if url.startswith(ECL_PREFIX):
        return evaluate_ecl(unquote(url.removeprefix(ECL_PREFIX)))
    return None


def _lookup(url: str) -> set[str] | JSONResponse:
    try:
        members = _members(url)
    except EclUnsupported as exc:
        return _outcome(400, str(exc))
    return _outcome(404, f"unknown value set {url}") if members is None else members


@dataclass
class TxState:
    failure: int | None = None
    failing_url: str | None = None  # only questions about value-set URLs containing this fail
    page_cap: int = 2
    requests: int = 0
    asked: list[tuple[str, str]] = field(default_factory=list)  # (operation, code or url)
    validated: list[str] = field(default_factory=list)  # value-set URLs of $validate-code


def make_app(state: TxState) -> FastAPI:
    app = FastAPI()

    @app.get("/fhir/ValueSet/$validate-code")
    def validate_code(url: str, system: str, code: str) -> Any:
        state.requests += 1
        state.asked.append(("validate-code", code))
        state.validated.append(url)
        if state.failure:
            return _outcome(state.failure, "terminology backend unavailable")
        if state.failing_url is not None and state.failing_url in url:
            return _outcome(503, "terminology backend unavailable")
        members = _lookup(url)
        if isinstance(members, JSONResponse):
            return members
        result = system == SNOMED and code in members
        return JSONResponse(
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "result", "valueBoolean": result}],
            },
            media_type="application/fhir+json",
        )

    @app.get("/fhir/ValueSet/$expand")
    def expand(url: str, offset: int = 0, count: int = Query(1000)) -> Any:
        state.requests += 1
        state.asked.append(("expand", url))
        if state.failure:
            return _outcome(state.failure, "terminology backend unavailable")
        members = _lookup(url)
        if isinstance(members, JSONResponse):
            return members
        ordered = sorted(members)
        page = ordered[offset : offset + min(count, state.page_cap)]
        contains = [{"system": SNOMED, "code": c, "display": CONCEPTS[c][1]} for c in page]
        expansion = {
            "identifier": "urn:uuid:1e0f7b8c-8a4e-4c56-9d0a-3a5f0c2b7d11",
            "timestamp": "2025-06-01T10:00:00+08:00",
            "total": len(ordered),
            "offset": offset,
            "parameter": [{"name": "used-codesystem", "valueUri": VERSION}],
            "contains": contains,
        }
        body = {"resourceType": "ValueSet", "url": url, "status": "active", "expansion": expansion}
        return JSONResponse(body, media_type="application/fhir+json")

    return app
