"""A small FHIR terminology server for tests, served on loopback (tests/smart/server.py).

It answers from a fixture hierarchy of real SNOMED CT concepts (a child -> parents table):
- `GET ValueSet/$validate-code?url=<implicit ECL value set>&system=&code=`;
- `GET ValueSet/$expand?url=&offset=&count=` for implicit ECL value sets and one named value
  set, at most `page_cap` codes per page (so a client has to page).
ECL is evaluated with the offline subset (`service.vocab.ecl`). `failure` makes every answer
that status (500, 503 ...); `requests` counts the operations answered or failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from service.vocab.ecl import evaluate

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


def _members(url: str) -> set[str] | None:
    if url in NAMED:
        return evaluate(NAMED[url], descendants)
    if url.startswith(ECL_PREFIX):
        return evaluate(unquote(url.removeprefix(ECL_PREFIX)), descendants)
    return None


@dataclass
class TxState:
    failure: int | None = None
    page_cap: int = 2
    requests: int = 0
    asked: list[tuple[str, str]] = field(default_factory=list)  # (operation, code or url)


def make_app(state: TxState) -> FastAPI:
    app = FastAPI()

    @app.get("/fhir/ValueSet/$validate-code")
    def validate_code(url: str, system: str, code: str) -> Any:
        state.requests += 1
        state.asked.append(("validate-code", code))
        if state.failure:
            return _outcome(state.failure, "terminology backend unavailable")
        members = _members(url)
        if members is None:
            return _outcome(404, f"unknown value set {url}")
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
        members = _members(url)
        if members is None:
            return _outcome(404, f"unknown value set {url}")
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
