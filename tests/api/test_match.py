"""POST /trials/{id}/match and /candidates against a respx FHIR server holding the demo data."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.fhir.client import RetryPolicy
from tests.api.conftest import DEMO, FakeFhir
from tests.conftest import app_for

MATCH = "/trials/NCT06946485/match"
CANDIDATES = "/trials/NCT06946485/candidates"


@pytest.fixture(autouse=True)
def _no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)


def verdicts(body: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {c["id"]: c["verdict"] for c in body["criteria"]}


def test_match_fetches_and_screens_one_patient(api: TestClient, auth: dict[str, str]) -> None:
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient"] == {
        "reference": "Patient/p01",
        "age": 35,
        "sex": "female",
        "identifiers": [
            {
                "value": "NJ0000001",
                "system": "http://hospital.example.org/fhir/NamingSystem/mrn",
                "type": "MR",
                "label": "Medical record number",
            }
        ],
        "mrn": "NJ0000001",
        "deceased": False,
        "deceased_date": None,
        "name": None,
    }
    assert body["status"] == "likely_eligible"
    hgb = next(c for c in body["criteria"] if c["id"] == "I6.hgb")
    assert hgb["evidence"][0]["reference"].startswith("Observation/p01-")
    assert response.headers["x-request-id"]
    timing = dict(
        part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
    )
    assert set(timing) == {"fhir", "map", "engine"}
    assert all(float(v) >= 0 for v in timing.values())


def test_match_accepts_a_patient_reference_and_as_of_in_the_query(
    api: TestClient, auth: dict[str, str]
) -> None:
    response = api.post(f"{MATCH}?as_of=2026-11-20", json={"patient": "Patient/p05"}, headers=auth)
    assert response.status_code == 200
    assert verdicts(response.json())["I6.hgb"] == "fail"
    assert response.json()["as_of"] == "2026-11-20"


def test_match_screens_a_bundle_body_without_fetching(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    fake_fhir.faults["Patient"] = lambda request: httpx.Response(500)  # would fail if fetched
    bundle = json.loads((DEMO / "p24-hbsag-positive.json").read_text(encoding="utf-8"))
    response = api.post(f"{MATCH}?as_of=2026-11-20", json=bundle, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["patient"]["reference"] == "Patient/p24"
    assert verdicts(response.json())["E10.hbv"] == "fail"


def test_a_bundle_with_two_patients_is_refused(api: TestClient, auth: dict[str, str]) -> None:
    entries = []
    for name in ("p01-likely-eligible-si-units.json", "p05-hemoglobin-58-g-per-l.json"):
        entries += json.loads((DEMO / name).read_text(encoding="utf-8"))["entry"]
    response = api.post(
        MATCH, json={"resourceType": "Bundle", "type": "collection", "entry": entries}, headers=auth
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "exactly one patient" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/trials/NCT00000000/match", {"patient": "p01"}, 404, "not-found"),
        (MATCH, {"patient": "nobody"}, 404, "not-found"),
        (MATCH, {"patient": "p01", "as_of": "yesterday"}, 422, "invalid"),
        (MATCH, {"patient": "Observation/x/y"}, 400, "invalid"),
        (MATCH, {"patients": ["p01"]}, 422, "invalid"),
    ],
    ids=["unknown-trial", "unknown-patient", "bad-date", "bad-reference", "wrong-body"],
)
def test_errors_are_operation_outcomes(
    api: TestClient, auth: dict[str, str], path: str, body: dict, status: int, code: str
) -> None:  # type: ignore[type-arg]
    response = api.post(path, json=body, headers=auth)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert response.headers["content-type"].startswith("application/fhir+json")


def test_an_oversized_body_is_refused(api: TestClient, auth: dict[str, str], settings) -> None:  # type: ignore[no-untyped-def]
    big = {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "Basic", "id": "x" * 1000}}] * 25000,
    }
    response = api.post(MATCH, json=big, headers=auth)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_an_oversized_chunked_body_is_refused_like_a_declared_one(
    api: TestClient,
    auth: dict[str, str],
    settings,  # type: ignore[no-untyped-def]
) -> None:
    chunk = b'{"resourceType": "Bundle", "entry": [' + b" " * 65536

    def chunks():  # type: ignore[no-untyped-def]
        yield chunk
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536
        yield b"]}"

    headers = {**auth, "content-type": "application/json"}
    response = api.post(MATCH, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413, response.text
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert response.headers["x-request-id"]


def test_an_unhandled_error_is_a_500_outcome_with_a_request_id(
    api: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.api.match as match_module

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    monkeypatch.setattr(match_module, "evaluate", broken)
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (lambda r: httpx.Response(503), "Condition"),
        (lambda r: (_ for _ in ()).throw(httpx.ReadTimeout("slow")), "Condition"),
        (
            lambda r: httpx.Response(
                200, content=b'{"resourceType":"Bundle","type":"searchset","entry":['
            ),
            "Condition",
        ),
        (
            lambda r: httpx.Response(
                500,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "exception", "diagnostics": "db down"}],
                },
            ),
            "Condition",
        ),
        (
            lambda r: httpx.Response(
                200,
                json={
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "link": [{"relation": "next", "url": str(r.url)}],
                },
            ),
            "Condition",
        ),
    ],
    ids=["503", "timeout", "truncated-page", "operation-outcome", "next-link-loop"],
)
def test_a_failed_condition_fetch_never_becomes_pass_or_fail(
    api: TestClient,
    auth: dict[str, str],
    fake_fhir: FakeFhir,
    fault: Callable,
    kind: str,  # type: ignore[type-arg]
) -> None:
    fake_fhir.faults[kind] = fault
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    result = verdicts(body)
    # Every criterion read from diagnoses is unknown, with the failure as its reason.
    for criterion in ("I1", "E2", "E5", "E6", "E7", "E8", "E11"):
        assert result[criterion] == "unknown", criterion
    reason = next(c for c in body["criteria"] if c["id"] == "E2")["reason"]
    assert "the Condition search failed (" in reason
    assert body["status"] == "possibly_eligible"
    assert any("Condition" in p and "fetch failed" in p for p in body["problems"])
    # Criteria read from other resources are still decided.
    assert result["I6.hgb"] == "pass"


def test_429_with_retry_after_then_success(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    calls = {"n": 0}
    original = fake_fhir.handle

    def once_busy(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429, headers={"Retry-After": "1"})
        del fake_fhir.faults["Condition"]
        return original(request)

    fake_fhir.faults["Condition"] = once_busy
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 200
    assert verdicts(response.json())["I1"] == "pass"
    assert calls["n"] == 2


def test_candidates_ranks_a_list(api: TestClient, auth: dict[str, str]) -> None:
    body = {"patients": ["p05", "Patient/p01", "p19", "p01"], "as_of": "2026-11-20"}
    response = api.post(CANDIDATES, json=body, headers=auth)
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert [c["patient"]["reference"] for c in ranked["candidates"]] == [
        "Patient/p01",
        "Patient/p19",
        "Patient/p05",
    ]
    assert [c["rank"] for c in ranked["candidates"]] == [1, 2, 3]
    assert ranked["counts"] == {
        "patients": 3,
        "likely_eligible": 1,
        "possibly_eligible": 1,
        "ineligible": 1,
        "resources": ranked["counts"]["resources"],
        "errors": 0,
    }


def test_candidates_from_a_group_and_from_everyone(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    fake_fhir.resources.append(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p02"}},
                {"entity": {"reference": "Patient/p07"}},
            ],
        }
    )
    group = api.post(
        CANDIDATES, json={"group": "Group/g1", "as_of": "2026-11-20"}, headers=auth
    ).json()
    assert [c["patient"]["reference"] for c in group["candidates"]] == [
        "Patient/p02",
        "Patient/p07",
    ]
    everyone = api.post(CANDIDATES, json={"as_of": "2026-11-20", "limit": 5}, headers=auth).json()
    assert everyone["counts"]["patients"] == len(list(DEMO.glob("*.json")))
    assert len(everyone["candidates"]) == 5
    assert all(c["status"] == "likely_eligible" for c in everyone["candidates"])


def test_a_failed_patient_read_is_a_gateway_error_not_a_result(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    fake_fhir.faults["Patient"] = lambda request: httpx.Response(503)
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 504
    assert response.json()["resourceType"] == "OperationOutcome"
    ranked = api.post(CANDIDATES, json={"patients": ["p01"], "as_of": "2026-11-20"}, headers=auth)
    assert ranked.status_code == 200
    assert ranked.json()["candidates"] == []
    assert ranked.json()["unscreened"][0]["patient"] == "Patient/p01"
    assert "503" in ranked.json()["unscreened"][0]["reason"]


def test_unknown_candidate_is_counted_not_fatal(api: TestClient, auth: dict[str, str]) -> None:
    response = api.post(
        CANDIDATES, json={"patients": ["p01", "ghost"], "as_of": "2026-11-20"}, headers=auth
    )
    assert response.status_code == 200
    assert response.json()["counts"]["patients"] == 1
    assert response.json()["counts"]["errors"] == 1
    assert response.json()["unscreened"][0]["patient"] == "Patient/ghost"


# ---------------------------------------------------------------- the FHIR id rule (issue 10)
NOT_FHIR_IDS = ["p01#x", "p01?x=1", "p01\tx", "p01\n", ".", "..", "p" * 65, "p01/x", "p 01", "é"]


@pytest.mark.parametrize("ident", NOT_FHIR_IDS)
def test_a_patient_id_that_is_not_a_fhir_id_is_refused_before_any_fetch(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir, ident: str
) -> None:
    fake_fhir.faults["Patient"] = lambda request: httpx.Response(500)  # must not be reached
    for sent in (ident, f"Patient/{ident}"):
        response = api.post(MATCH, json={"patient": sent, "as_of": "2026-11-20"}, headers=auth)
        assert response.status_code == 400, (sent, response.text)
        assert response.json()["issue"][0]["code"] == "invalid"
        listed = api.post(CANDIDATES, json={"patients": ["p01", sent]}, headers=auth)
        assert listed.status_code == 400, (sent, listed.text)


@pytest.mark.parametrize("ident", [".", "..", "g1#x", "g1?_id=p01"])
def test_a_group_id_that_is_not_a_fhir_id_is_refused(
    api: TestClient, auth: dict[str, str], ident: str
) -> None:
    response = api.post(CANDIDATES, json={"group": f"Group/{ident}"}, headers=auth)
    assert response.status_code == 400, response.text


def test_a_group_member_that_is_not_a_fhir_id_is_skipped_not_screened(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    fake_fhir.resources.append(
        {
            "resourceType": "Group",
            "id": "g2",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": "Patient/p02"}},
                {"entity": {"reference": "Patient/p07#x"}},
                {"entity": {"reference": "Patient/.."}},
            ],
        }
    )
    ranked = api.post(CANDIDATES, json={"group": "g2", "as_of": "2026-11-20"}, headers=auth)
    assert ranked.status_code == 200, ranked.text
    assert [c["patient"]["reference"] for c in ranked.json()["candidates"]] == ["Patient/p02"]


def test_a_bundle_whose_patient_id_is_not_a_fhir_id_is_refused(
    api: TestClient, auth: dict[str, str]
) -> None:
    bundle = json.loads((DEMO / "p24-hbsag-positive.json").read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["id"] = "p24#x"
        elif "subject" in resource:
            resource["subject"] = {"reference": "Patient/p24#x"}
        elif "patient" in resource:
            resource["patient"] = {"reference": "Patient/p24#x"}
    response = api.post(f"{MATCH}?as_of=2026-11-20", json=bundle, headers=auth)
    assert response.status_code == 400, response.text
    assert "FHIR" in response.json()["issue"][0]["diagnostics"]


def test_a_patient_read_answered_with_another_patient_gives_no_verdict(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    other = next(
        r for r in fake_fhir.resources if r["resourceType"] == "Patient" and r["id"] == "p02"
    )
    fake_fhir.faults["Patient"] = lambda request: httpx.Response(200, json=other)
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 502, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "body",
    [
        {"patient": "p01", "as_of": "1899-12-31"},
        {"patient": "p01", "as_of": "2201-01-01"},
        {"patient": "p01", "as_of": "0001-01-01"},
        {"patient": "p01", "as_of": "9999-12-31"},
    ],
)
def test_an_as_of_outside_1900_2200_is_422(
    api: TestClient, auth: dict[str, str], body: dict[str, str]
) -> None:
    response = api.post(MATCH, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert "as_of" in response.json()["issue"][0]["diagnostics"]
    listed = api.post(CANDIDATES, json={"patients": ["p01"], "as_of": body["as_of"]}, headers=auth)
    assert listed.status_code == 422


def test_an_as_of_before_the_patients_birth_is_422_never_a_negative_age(
    api: TestClient, auth: dict[str, str]
) -> None:
    response = api.post(MATCH, json={"patient": "p01", "as_of": "1950-01-01"}, headers=auth)
    assert response.status_code == 422, response.text
    assert "before Patient/p01 was born" in response.json()["issue"][0]["diagnostics"]
    listed = api.post(CANDIDATES, json={"patients": ["p01"], "as_of": "1950-01-01"}, headers=auth)
    assert listed.status_code == 200
    (result,) = listed.json()["candidates"]
    assert result["patient"]["age"] is None
    age = next(c for c in result["criteria"] if c["id"] == "I5")
    assert age["verdict"] == "unknown"


def test_a_wrong_method_is_405_with_allow(api: TestClient, auth: dict[str, str]) -> None:
    response = api.get(MATCH, headers=auth)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["issue"][0]["code"] == "not-supported"


def test_a_malformed_bundle_gets_the_bundle_branchs_message(
    api: TestClient, auth: dict[str, str]
) -> None:
    response = api.post(MATCH, json={"resourceType": "Bundle", "entry": "x"}, headers=auth)
    assert response.status_code == 422
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert diagnostics.startswith("body.BundleInput.entry"), diagnostics
    assert "patient" not in diagnostics


def test_a_failed_observation_search_is_named_short_in_problems(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    fake_fhir.faults["Observation"] = lambda request: httpx.Response(503)
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 200, response.text
    problems = [p for p in response.json()["problems"] if "Observation" in p]
    assert problems
    assert all(len(p) < 400 and "code=" not in p for p in problems), problems
    assert all(p.startswith("Observation search: fetch failed") for p in problems), problems
    assert verdicts(response.json())["I6.hgb"] == "unknown"


def test_a_failed_observation_search_makes_lab_criteria_say_so_not_order_the_lab(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    fake_fhir.faults["Observation"] = lambda request: httpx.Response(503)
    response = api.post(MATCH, json={"patient": "p01", "as_of": "2026-11-20"}, headers=auth)
    assert response.status_code == 200, response.text
    criteria = {c["id"]: c for c in response.json()["criteria"]}
    # measurement, graded domains, creatinine clearance and test results alike
    for criterion in ("I2", "I3", "I6.wbc", "I6.hgb", "I6.crcl", "I7.hcg", "E10.hbv"):
        found = criteria[criterion]
        assert found["verdict"] == "unknown", criterion
        assert "Observation search failed" in found["reason"], (criterion, found["reason"])
        assert "503" in found["reason"], (criterion, found["reason"])
        assert not found["reason"].startswith("no "), (criterion, found["reason"])


def test_a_bundle_over_the_entry_cap_is_413_before_it_is_mapped(
    settings: Settings, fake_fhir: FakeFhir, auth: dict[str, str]
) -> None:
    bundle = json.loads((DEMO / "p24-hbsag-positive.json").read_text(encoding="utf-8"))
    cap = len(bundle["entry"])
    with TestClient(app_for(settings.model_copy(update={"max_bundle_entries": cap}))) as api:
        at_cap = api.post(f"{MATCH}?as_of=2026-11-20", json=bundle, headers=auth)
        assert at_cap.status_code == 200, at_cap.text
        bundle["entry"].append(bundle["entry"][-1])
        over = api.post(f"{MATCH}?as_of=2026-11-20", json=bundle, headers=auth)
    assert over.status_code == 413, over.text
    outcome = over.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert f"at most {cap}" in outcome["issue"][0]["diagnostics"]


def test_a_body_parsed_off_the_loop_reads_as_json_reads_it(
    api: TestClient, auth: dict[str, str]
) -> None:
    # orjson refuses NaN and integers past 64 bits; `json` reads them: the meaning stays.
    bundle = json.loads((DEMO / "p24-hbsag-positive.json").read_text(encoding="utf-8"))
    text = json.dumps(bundle)[:-2] + ', {"resource": {"resourceType": "Basic", "n": NaN, '
    text += '"big": 123456789012345678901234567890}}]}'
    response = api.post(
        f"{MATCH}?as_of=2026-11-20",
        content=text.encode(),
        headers={**auth, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert verdicts(response.json())["E10.hbv"] == "fail"


def test_without_a_fhir_server_match_by_id_is_503_not_500(settings, make_token) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import app_for

    bare = settings.model_copy(update={"fhir_base_url": None})
    headers = {"Authorization": f"Bearer {make_token()}"}
    with TestClient(app_for(bare)) as client:
        response = client.post(MATCH, json={"patient": "p01"}, headers=headers)
    assert response.status_code == 503, response.text
    assert "no FHIR server configured" in response.json()["issue"][0]["diagnostics"]
