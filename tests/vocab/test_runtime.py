"""The optional terminology server at run time, against a real server on loopback.

Records are coded as a hospital sends them: SNOMED CT codes one level (or more) below what
terminology/valuesets lists. The tables are a temporary copy with definitions on `sle` and
`infection` (the shipped yaml files get theirs from the data engineer).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from service.config import Settings
from service.criteria.engine import evaluate
from service.criteria.model import TrialDefinition, load_trial
from service.facts import PatientFacts
from service.fetching import map_records
from service.fhir.client import RetryPolicy
from service.main import create_app
from service.paths import parse_yaml
from service.terminology import Terminology
from service.vocab.definition import SNOMED, Entry
from service.vocab.fhir_tx import TerminologyServer, TxReader
from service.vocab.runtime import RuntimeTerminology, definition_urls
from tests.smart.server import serve
from tests.vocab.tx_server import TxState, make_app

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 11, 27)
SLE_DEEPER = "295101000119105"  # below 68815009 |SLE glomerulonephritis syndrome|
KLEBSIELLA_PNEUMONIA = "64479007"  # below 233604007 |Pneumonia|
NOT_IN_TABLES = (SLE_DEEPER, KLEBSIELLA_PNEUMONIA, "36402006")
NOT_HELD = "http://example.org/fhir/ValueSet/not-held"  # the test server answers 404
DEFINITIONS = {
    "sle": {"include": [{"system": SNOMED, "ecl": "<< 55464009 |Systemic lupus erythematosus|"}]},
    "infection": {"include": [{"system": SNOMED, "ecl": "<< 40733004 |Infectious disease|"}]},
}


@pytest.fixture(autouse=True)
def _no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)


@pytest.fixture(scope="module")
def tx_state() -> TxState:
    return TxState()


@pytest.fixture(scope="module")
def tx_base(tx_state: TxState) -> Iterator[str]:
    with serve(make_app(tx_state)) as base:
        yield f"{base}/fhir"


@pytest.fixture(autouse=True)
def _fresh_server(tx_state: TxState) -> None:
    tx_state.failure, tx_state.failing_url, tx_state.requests = None, None, 0
    tx_state.asked, tx_state.validated = [], []


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """terminology/ with definitions on sle and infection."""
    root = tmp_path_factory.mktemp("tx") / "terminology"
    shutil.copytree(ROOT / "terminology", root)
    for name, definition in DEFINITIONS.items():
        path = root / "valuesets" / f"{name}.yaml"
        meta = parse_yaml(path.read_text(encoding="utf-8"))
        meta["definition"] = definition
        path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    # The shipped tables are wide and already hold these deeper codes: take them out, so the
    # tables stand for a release that does not know them yet and the server is asked.
    for path in (root / "valuesets").glob("*.csv"):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not any(f",{c}," in line for c in NOT_IN_TABLES)]
        path.write_text("".join(kept), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def refusing_tables(tables: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tables` where infection is defined only by a value set the server does not hold, and
    sle by its ECL and such a value set."""
    root = tmp_path_factory.mktemp("refusing") / "terminology"
    shutil.copytree(tables, root)
    definitions = {
        "sle": {"include": [*DEFINITIONS["sle"]["include"], {"valueset": NOT_HELD}]},
        "infection": {"include": [{"valueset": NOT_HELD}]},
    }
    for name, definition in definitions.items():
        path = root / "valuesets" / f"{name}.yaml"
        meta = parse_yaml(path.read_text(encoding="utf-8"))
        meta["definition"] = definition
        path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    return root


@pytest.fixture
def terms(tables: Path) -> Terminology:
    return Terminology.load(tables)


@pytest.fixture(scope="module")
def trial() -> TrialDefinition:
    return load_trial(ROOT / "trials" / "NCT06946485.yaml")


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-05-01"}


def condition(pid: str, cid: str, code: str, display: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "onsetDateTime": onset,
    }


def lupus_nephropathy(pid: str) -> list[dict[str, Any]]:
    display = "Nephropathy co-occurrent and due to systemic lupus erythematosus"
    return [
        patient(pid),
        condition(pid, f"{pid}-ln", SLE_DEEPER, display, "2023-04-11T09:30:00+08:00"),
    ]


def pneumonia(pid: str) -> list[dict[str, Any]]:
    display = "Pneumonia due to Klebsiella pneumoniae"
    onset = "2026-11-02T22:15:00+08:00"
    return [patient(pid), condition(pid, f"{pid}-pn", KLEBSIELLA_PNEUMONIA, display, onset)]


def code_only(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with their codings' displays left out (some EHRs send the code alone), so
    no review term can flag them: only the code can classify them."""
    for resource in resources:
        for coding in resource.get("code", {}).get("coding", ()):
            coding.pop("display", None)
    return resources


async def screen(
    resources: list[dict[str, Any]],
    terms: Terminology,
    trial: TrialDefinition,
    tx: RuntimeTerminology | None,
) -> tuple[dict[str, Any], PatientFacts]:
    pid = resources[0]["id"]
    facts = PatientFacts(f"Patient/{pid}")
    wanted = frozenset({"sle", "lupus_non_sle", "infection", "malignancy"})
    await map_records(facts, resources, terms, tx=tx, wanted=wanted)
    result = evaluate(trial, facts, AS_OF, terms)
    return {c.id: c for c in result.criteria}, facts


def runtime(base: str, terms: Terminology) -> RuntimeTerminology:
    return RuntimeTerminology(TerminologyServer.connect(base, timeout_s=2), terms)


# ---------------------------------------------------------------------------- classification
def test_learn_is_an_overlay_the_membership_reads(terms: Terminology) -> None:
    assert terms.concepts_of_code(SNOMED, SLE_DEEPER) == frozenset()  # cached as unknown
    assert terms.learned(SNOMED, SLE_DEEPER) is None
    terms.learn(SNOMED, SLE_DEEPER, frozenset({"sle"}))
    assert terms.concepts_of_code(SNOMED, SLE_DEEPER) == {"sle"}  # the cache was dropped
    terms.learn(SNOMED, SLE_DEEPER, frozenset({"cns_disorder"}))
    assert terms.learned(SNOMED, SLE_DEEPER) == {"sle", "cns_disorder"}
    assert terms.concepts_of_code(SNOMED, "55464009") >= {"sle"}  # tables unchanged


def test_definition_urls_are_implicit_ecl_value_sets(terms: Terminology) -> None:
    definition = terms.valuesets["sle"].definition
    assert definition is not None
    assert definition_urls(definition, SNOMED) == (
        "http://snomed.info/sct?fhir_vs=ecl/%3C%3C%2055464009",
    )


async def test_a_deeper_snomed_code_is_classified_through_the_server(
    tx_base: str, tx_state: TxState, terms: Terminology, trial: TrialDefinition
) -> None:
    without, _ = await screen(lupus_nephropathy("a1"), terms, trial, None)
    assert without["I1"].verdict != "pass"  # the tables alone do not know the code

    tx = runtime(tx_base, terms)
    try:
        criteria, facts = await screen(lupus_nephropathy("a1"), terms, trial, tx)
    finally:
        await tx.aclose()
    assert criteria["I1"].verdict == "pass", criteria["I1"].reason
    assert any(SLE_DEEPER in str(e) for e in criteria["I1"].evidence)
    assert terms.concepts_of_code(SNOMED, SLE_DEEPER) >= {"sle"}
    assert not facts.problems
    assert ("validate-code", SLE_DEEPER) in tx_state.asked


async def test_answers_are_cached_members_and_non_members(
    tx_base: str, tx_state: TxState, terms: Terminology, trial: TrialDefinition
) -> None:
    tx = runtime(tx_base, terms)
    try:
        await screen(lupus_nephropathy("b1"), terms, trial, tx)
        other = [patient("b2"), condition("b2", "b2-htn", "38341003", "Hypertension", "2020-01-01")]
        await screen(other, terms, trial, tx)
        first = tx_state.requests
        assert first == tx.requests > 0
        # the same codes in other patients: no new question
        await screen(lupus_nephropathy("b3"), terms, trial, tx)
        criteria, _ = await screen(
            [patient("b4"), condition("b4", "b4-htn", "38341003", "Hypertension", "2020-01-01")],
            terms,
            trial,
            tx,
        )
    finally:
        await tx.aclose()
    assert tx_state.requests == first
    assert criteria["E4"].verdict == "pass"  # not an infection: the server said so, once
    assert terms.concepts_of_code(SNOMED, "38341003") == frozenset()


async def test_concurrent_patients_share_the_questions(
    tx_base: str, tx_state: TxState, tables: Path, trial: TrialDefinition
) -> None:
    one = Terminology.load(tables)
    tx = runtime(tx_base, one)
    try:
        await screen(lupus_nephropathy("g1"), one, trial, tx)
    finally:
        await tx.aclose()
    alone = tx_state.requests

    both = Terminology.load(tables)
    tx = runtime(tx_base, both)
    try:
        results = await asyncio.gather(
            screen(lupus_nephropathy("g2"), both, trial, tx),
            screen(lupus_nephropathy("g3"), both, trial, tx),
        )
    finally:
        await tx.aclose()
    assert tx_state.requests == 2 * alone  # the second patient asked nothing new
    assert all(criteria["I1"].verdict == "pass" for criteria, _ in results)


async def test_a_known_code_is_not_asked(
    tx_base: str, tx_state: TxState, terms: Terminology, trial: TrialDefinition
) -> None:
    tx = runtime(tx_base, terms)
    try:
        known = [patient("c1"), condition("c1", "c1-sle", "55464009", "SLE", "2019-02-01")]
        criteria, _ = await screen(known, terms, trial, tx)
    finally:
        await tx.aclose()
    assert criteria["I1"].verdict == "pass"
    assert tx_state.requests == 0


# ---------------------------------------------------------------------------- failures
@pytest.mark.parametrize("status", [500, 503])
async def test_a_failing_server_makes_the_criterion_unknown_never_pass(
    status: int, tx_base: str, tx_state: TxState, terms: Terminology, trial: TrialDefinition
) -> None:
    tx = runtime(tx_base, terms)
    try:
        tx_state.failure = status
        criteria, facts = await screen(code_only(pneumonia("d1")), terms, trial, tx)
        assert criteria["E4"].verdict == "unknown", criteria["E4"].reason
        assert "Condition/d1-pn" in criteria["E4"].reason
        [problem] = facts.problems
        assert problem.concepts is not None
        assert "infection" in problem.concepts
        assert f"{SNOMED}|{KLEBSIELLA_PNEUMONIA}" in problem.message
        assert "terminology server" in problem.message
        # a failure is not cached: once the server is back, the code is asked again
        tx_state.failure = None
        criteria, facts = await screen(pneumonia("d2"), terms, trial, tx)
    finally:
        await tx.aclose()
    assert criteria["E4"].verdict == "fail", criteria["E4"].reason
    assert not facts.problems


async def test_a_failed_question_keeps_the_other_value_sets_answers(
    tx_base: str, tx_state: TxState, terms: Terminology, trial: TrialDefinition
) -> None:
    tx_state.failing_url = "40733004"  # only the infection question fails
    tx = runtime(tx_base, terms)
    try:
        criteria, facts = await screen(code_only(lupus_nephropathy("h1")), terms, trial, tx)
    finally:
        await tx.aclose()
    assert criteria["I1"].verdict == "pass", criteria["I1"].reason  # sle was answered
    assert terms.learned(SNOMED, SLE_DEEPER) == {"sle"}
    [problem] = facts.problems
    assert problem.concepts == {"infection"}  # undecided only for the failed value set
    assert criteria["E4"].verdict == "unknown", criteria["E4"].reason
    assert "Condition/h1-ln" in criteria["E4"].reason


async def test_a_refused_value_set_keeps_the_others_and_is_not_a_no(
    tx_base: str, tx_state: TxState, refusing_tables: Path, trial: TrialDefinition
) -> None:
    terms = Terminology.load(refusing_tables)
    without, _ = await screen(code_only(pneumonia("i0")), terms, trial, None)
    tx = runtime(tx_base, terms)
    try:
        sle, sle_facts = await screen(code_only(lupus_nephropathy("i1")), terms, trial, tx)
        infected, facts = await screen(code_only(pneumonia("i2")), terms, trial, tx)
        asked = tx_state.requests
        again, _ = await screen(code_only(pneumonia("i3")), terms, trial, tx)
    finally:
        await tx.aclose()
    # sle's ECL answered although the value set next to it (and infection's) was refused
    assert sle["I1"].verdict == "pass", sle["I1"].reason
    assert not sle_facts.problems
    # infection falls back to the tables, as without a server: a refusal is neither a
    # failure (no Problem) nor a "not a member" (the verdict is the tables' one)
    assert not facts.problems
    assert terms.learned(SNOMED, KLEBSIELLA_PNEUMONIA) is None
    assert infected["E4"].verdict == again["E4"].verdict == without["E4"].verdict
    # the refusal holds for every code: the refused value set is asked once only
    assert tx_state.validated.count(NOT_HELD) == 1
    assert ("validate-code", KLEBSIELLA_PNEUMONIA) in tx_state.asked
    assert tx_state.requests == asked  # the same code again: every answer came from the cache


async def test_a_refused_connection_makes_the_criterion_unknown(
    terms: Terminology, trial: TrialDefinition
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tx = runtime(f"http://127.0.0.1:{port}/fhir", terms)
    try:
        criteria, facts = await screen(pneumonia("e1"), terms, trial, tx)
    finally:
        await tx.aclose()
    assert criteria["E4"].verdict == "unknown"
    assert "cannot reach" in facts.problems[0].message


# ---------------------------------------------------------------------------- the API path
def test_match_with_a_bundle_body_asks_the_server(
    tx_base: str, tx_state: TxState, tables: Path, tmp_path: Path
) -> None:
    settings = Settings(
        auth_disabled=True,
        terminology_dir=tables,
        terminology_url=tx_base,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
    )
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in lupus_nephropathy("f1")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    with TestClient(create_app(settings)) as api:
        response = api.post("/trials/NCT06946485/match?as_of=2026-11-27", json=bundle)
    assert response.status_code == 200, response.text
    verdicts = {c["id"]: c["verdict"] for c in response.json()["criteria"]}
    assert verdicts["I1"] == "pass"
    assert ("validate-code", SLE_DEEPER) in tx_state.asked


def test_the_setting_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="TERMINOLOGY_URL must be an http"):
        Settings(terminology_url="tx.example.org/fhir")


# ---------------------------------------------------------------------------- $expand
def test_tx_reader_pages_through_an_ecl_expansion(tx_base: str, tx_state: TxState) -> None:
    reader = TxReader(tx_base)
    found = reader.expand(Entry(system=SNOMED, ecl="<< 68815009 |SLE glomerulonephritis|"))
    assert found is not None
    assert set(found) == {(SNOMED, c) for c in ("68815009", "36402006", SLE_DEEPER)}
    assert tx_state.requests == 2  # two codes per page
    assert reader.source == f"tx:{tx_base}|20250101"
    assert found[(SNOMED, "36402006")].startswith("SLE glomerulonephritis syndrome, WHO class IV")


def test_tx_reader_expands_a_named_value_set_and_reports_failures(
    tx_base: str, tx_state: TxState
) -> None:
    reader = TxReader(tx_base)
    named = reader.expand(Entry(valueset="http://example.org/fhir/ValueSet/lupus-nephritis"))
    assert named is not None
    assert len(named) == 3
    assert (
        reader.expand(
            Entry(system="http://www.nlm.nih.gov/research/umls/rxnorm", ingredients=["3002"])
        )
        is None
    )
    with pytest.raises(ValueError, match=r"\$expand .*unknown value set"):
        reader.expand(Entry(valueset="http://example.org/fhir/ValueSet/nope"))
