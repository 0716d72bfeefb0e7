"""CDS Hooks 2.0: discovery, the patient-view service (prefetch, FHIR fallback, cards), client
JWTs, feedback and the audit trail, against a respx FHIR server holding the demo data."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey

from service.app_state import state_of
from service.audit import AuditUnavailable
from service.cds.cards import markdown_text
from service.cds.prefetch import MAX_TEMPLATE_CHARS, template_length
from service.config import Settings
from service.fhir.client import RetryPolicy
from tests.api.conftest import AUDIENCE, FHIR, ISSUER, FakeFhir
from tests.conftest import app_for
from tests.fhir_tokens import token_matches

BASE = "https://cohort-match.hospital.test"
SERVICE = "cohort-match-nct06946485"
URL = f"/cds-services/{SERVICE}"
EHR = "https://ehr.hospital.test"
OTHER_FHIR = "http://ehr-fhir.test/fhir"
GOLDEN = Path(__file__).parents[1] / "data" / "cds" / "p01-likely-eligible-card.json"
AS_OF = {"org.cohort-match.as-of": "2026-11-20"}
SMART_LAUNCH = f"{BASE}/launch"


class RecordingFhir(FakeFhir):
    """The demo FHIR server, remembering every request it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> Any:
        self.requests.append(request)
        return super().handle(request)

    def kinds(self) -> list[str]:
        """What was asked for: 'Patient/p01' for a read, the type for a search."""
        seen = []
        for request in self.requests:
            path = request.url.path.removeprefix("/fhir/")
            seen.append(path if "/" in path else path.split("?")[0])
        return sorted(seen)


@pytest.fixture(autouse=True)
def _no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, retry_after: 0.0)


@pytest.fixture
def fhir() -> Iterator[RecordingFhir]:
    fake = RecordingFhir()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="fhir.test").mock(side_effect=fake.handle)
        mock.route(host="ehr-fhir.test").mock(side_effect=fake.handle)
        yield fake


@pytest.fixture(scope="session")
def ehr_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "ehr-1"})


@pytest.fixture
def cds_settings(tmp_path: Path, jwks_file: Path, ehr_key: ECKey) -> Settings:
    cds_jwks = tmp_path / "cds-clients.json"
    cds_jwks.write_text(json.dumps(KeySet([ehr_key]).as_dict(private=False)))
    return Settings(
        fhir_base_url=FHIR,
        auth_jwks_file=jwks_file,
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        fhir_timeout_s=2,
        cds_jwks_file=cds_jwks,
        cds_public_base_url=BASE,
        cds_fhir_servers=OTHER_FHIR,
    )


def _client(settings: Settings) -> TestClient:
    return TestClient(app_for(settings))


@pytest.fixture
def cds(cds_settings: Settings, fhir: RecordingFhir) -> Iterator[TestClient]:
    with _client(cds_settings) as client:
        yield client


@pytest.fixture
def ehr_token(ehr_key: ECKey) -> Callable[..., str]:
    """A CDS client JWT for `path` (aud = BASE + path); claims override or (None) drop."""

    def make(path: str = URL, header: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": EHR,
            "aud": BASE + path,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "tenant": "hospital-1",
        }
        body.update(claims)
        head = {"alg": "ES384", "typ": "JWT", "kid": "ehr-1", **(header or {})}
        return jwt.encode(
            {k: v for k, v in head.items() if v is not None},
            {k: v for k, v in body.items() if v is not None},
            ehr_key,
            algorithms=["ES384"],  # CDS Hooks 2.0 recommends ES384 or RS384
        )

    return make


@pytest.fixture
def call(cds: TestClient, ehr_token: Callable[..., str]) -> Callable[..., httpx.Response]:
    """POST a hook call with a fresh, valid JWT."""

    def post(body: Any, path: str = URL) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ehr_token(path)}"}
        if isinstance(body, bytes):
            return cds.post(
                path, content=body, headers={**headers, "content-type": "application/json"}
            )
        return cds.post(path, json=body, headers=headers)

    return post


def templates(
    cds: TestClient, ehr_token: Callable[..., str], service: str = SERVICE
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {ehr_token('/cds-services')}"}
    services = cds.get("/cds-services", headers=headers).json()["services"]
    prefetch: dict[str, str] = next(s for s in services if s["id"] == service)["prefetch"]
    return prefetch


def _refers_to(resource: dict[str, Any], reference: str) -> bool:
    return any(
        (resource.get(f) or {}).get("reference") == reference
        for f in ("subject", "patient", "individual")
    )


def prefetch_for(
    fake: FakeFhir, prefetch: dict[str, str], patient: str, keys: list[str] | None = None
) -> dict[str, Any]:
    """What an EHR would prefetch: each template run against the demo data, one page."""
    found: dict[str, Any] = {}
    for key, template in prefetch.items():
        if keys is not None and key not in keys:
            continue
        query = template.replace("{{context.patientId}}", patient)
        if "?" not in query:
            kind, ident = query.split("/")
            found[key] = next(
                r for r in fake.resources if r["resourceType"] == kind and r["id"] == ident
            )
            continue
        kind, _, text = query.partition("?")
        params = {k: v[0] for k, v in parse_qs(text).items()}
        matches = [
            r
            for r in fake.resources
            if r["resourceType"] == kind and _refers_to(r, f"Patient/{params['patient']}")
        ]
        if "code" in params:
            matches = [r for r in matches if token_matches(r["code"]["coding"], params["code"])]
        found[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in matches],
        }
    return found


def hook(patient: str, prefetch: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-lee", "patientId": patient},
        "extension": AS_OF,
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def golden_card() -> dict[str, Any]:
    """The reviewed card; its `detail` is stored as a list of lines, for reading."""
    golden: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    golden["detail"] = "\n".join(golden["detail"])
    return golden


def only_card(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1, cards
    card: dict[str, Any] = cards[0]
    return card


# ---------------------------------------------------------------------------- discovery
def test_discovery_lists_a_patient_view_service_per_trial_with_prefetch_templates(
    cds: TestClient, ehr_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {ehr_token('/cds-services')}"}
    response = cds.get("/cds-services", headers=headers)
    assert response.status_code == 200, response.text
    services = {s["id"]: s for s in response.json()["services"]}
    assert {SERVICE, "cohort-match-nct06421701"} <= set(services)
    service = services[SERVICE]
    assert service["hook"] == "patient-view"
    assert "NCT06946485" in service["title"]
    assert "org.cohort-match.as-of" in service["description"]
    assert service["extension"] == {
        "org.cohort-match.trial": {"id": "NCT06946485", "version": "2026-12-03.1"}
    }
    prefetch = service["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    assert prefetch["conditions"] == "Condition?patient={{context.patientId}}"
    for key, kind in [
        ("medication-statements", "MedicationStatement"),
        ("medication-requests", "MedicationRequest"),
        ("medication-administrations", "MedicationAdministration"),
        ("medication-dispenses", "MedicationDispense"),
        ("allergy-intolerances", "AllergyIntolerance"),
        ("procedures", "Procedure"),
        ("research-subjects", "ResearchSubject"),
    ]:
        assert prefetch[key] == f"{kind}?patient={{{{context.patientId}}}}"
    observations = [k for k in prefetch if k.startswith("observations-")]
    assert len(observations) >= 2  # the trial's codes do not fit one short URL
    codes: list[str] = []
    for key in observations:
        assert prefetch[key].startswith("Observation?patient={{context.patientId}}&code=")
        assert template_length(prefetch[key]) <= MAX_TEMPLATE_CHARS
        codes += prefetch[key].split("&code=")[1].split(",")
    plan = state_of(cds.app).plans["NCT06946485"]
    assert sorted(codes) == sorted(plan.observation_codes)  # every code, exactly once


def test_discovery_needs_a_client_jwt_for_the_discovery_url(
    cds: TestClient, ehr_token: Callable[..., str]
) -> None:
    assert cds.get("/cds-services").status_code == 401
    wrong = {"Authorization": f"Bearer {ehr_token(URL)}"}  # aud of the service, not discovery
    assert cds.get("/cds-services", headers=wrong).status_code == 401


# ---------------------------------------------------------------------------- prefetch
def test_full_prefetch_makes_no_fhir_request_and_returns_the_card(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p01")
    card = only_card(call(hook("p01", prefetch)))
    assert fhir.requests == []
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("Likely eligible for trial NCT06946485")
    (link,) = card["links"]
    assert link["type"] == "smart"
    assert link["url"] == SMART_LAUNCH
    assert json.loads(link["appContext"]) == {"trial": "NCT06946485", "as_of": "2026-11-20"}


def test_the_card_matches_the_golden_file_field_by_field(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p01")
    card = only_card(call(hook("p01", prefetch)))
    golden = golden_card()
    assert uuid.UUID(card.pop("uuid"))
    assert set(card) == set(golden)
    for name, expected in golden.items():
        assert card[name] == expected, name
    assert len(card["summary"]) < 140


def test_partial_prefetch_searches_only_what_is_missing(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch_templates = templates(cds, ehr_token)
    given = ["patient", "observations-1", "conditions", "procedures"]
    prefetch = prefetch_for(fhir, prefetch_templates, "p01", keys=given)
    card = only_card(call(hook("p01", prefetch)))
    missing = [k for k in prefetch_templates if k.startswith("observations-") and k not in given]
    assert fhir.kinds() == sorted(
        [
            "AllergyIntolerance",
            "MedicationAdministration",
            "MedicationDispense",
            "MedicationRequest",
            "MedicationStatement",
            "ResearchSubject",
        ]
        + ["Observation"] * len(missing)
    )
    searched = sorted(r.url.params["code"] for r in fhir.requests if "code" in r.url.params)
    assert searched == sorted(prefetch_templates[k].split("&code=")[1] for k in missing)
    assert card["summary"].startswith("Likely eligible")


def test_without_prefetch_everything_is_fetched(
    call: Callable[..., httpx.Response], fhir: RecordingFhir
) -> None:
    card = only_card(call(hook("p01")))
    kinds = fhir.kinds()
    assert "Patient/p01" in kinds
    for kind in (
        "Condition",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
        "AllergyIntolerance",
    ):
        assert kind in kinds
    assert {"Procedure", "ResearchSubject", "Observation"} <= set(kinds)
    assert card["summary"].startswith("Likely eligible")
    # The same answer as with everything prefetched.
    assert card["detail"] == golden_card()["detail"]


P71_MEDICATION = "Medication/p71-med33"  # demo p71's G-CSF order names it by reference


def test_a_medication_named_by_reference_is_read_from_the_fhir_server(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    """Everything prefetched but the Medication p71's order names (it has no prefetch key):
    one read, and the G-CSF is known (I6.anc unknown for it, E4 not unknown)."""
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p71")
    card = only_card(call(hook("p71", prefetch)))
    assert fhir.kinds() == [P71_MEDICATION, "metadata"]  # metadata: whether batch is taken
    assert "I6.anc" in card["detail"]
    assert (
        "Colony-stimulating factors (G-CSF and GM-CSF) (MedicationRequest/p71-m34)"
        in (card["detail"])
    )
    assert "E4" not in card["detail"]


def test_a_medication_included_in_the_prefetch_needs_no_request(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    """A client whose medication-requests prefetch carries `_include`d Medications (search
    mode include) spares the read."""
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p71")
    medication = next(r for r in fhir.resources if f"Medication/{r['id']}" == P71_MEDICATION)
    prefetch["medication-requests"]["entry"].append(
        {"resource": medication, "search": {"mode": "include"}}
    )
    with_include = only_card(call(hook("p71", prefetch)))
    assert fhir.requests == []
    fhir.faults["Medication"] = lambda request: httpx.Response(404)
    without = only_card(call(hook("p71", prefetch_for(fhir, templates(cds, ehr_token), "p71"))))
    assert with_include["detail"] != without["detail"]
    assert "an unknown drug" in without["detail"]  # unmapped is not absent
    assert "an unknown drug" not in with_include["detail"]


def test_null_prefetch_means_no_data_and_is_not_searched(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p01")
    prefetch["conditions"] = None  # CDS Hooks 2.0: "no data to populate" the key
    response = call(hook("p01", prefetch))
    assert fhir.requests == []
    # No Condition at all: no SLE diagnosis (inclusion I1), so ineligible and no card.
    assert response.json() == {"cards": []}
    row = state_of(cds.app).audit.recent(1)[0]
    assert row.outcome == "ineligible: no card"


def test_an_empty_bundle_is_no_results_too(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p01")
    prefetch["conditions"] = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    response = call(hook("p01", prefetch))
    assert fhir.requests == []
    assert response.json() == {"cards": []}


def test_null_is_searched_when_the_client_is_known_to_send_null_for_queries_not_run(
    cds_settings: Settings, ehr_token: Callable[..., str], fhir: RecordingFhir
) -> None:
    settings = cds_settings.model_copy(update={"cds_null_prefetch": "refetch"})
    with _client(settings) as client:
        prefetch = prefetch_for(fhir, templates(client, ehr_token), "p01")
        prefetch["conditions"] = None
        response = client.post(
            URL, json=hook("p01", prefetch), headers={"Authorization": f"Bearer {ehr_token()}"}
        )
    assert fhir.kinds() == ["Condition"]
    assert only_card(response)["summary"].startswith("Likely eligible")


def test_a_prefetched_bundle_with_a_next_link_is_incomplete_and_searched(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p01")
    prefetch["conditions"]["link"] = [{"relation": "next", "url": f"{FHIR}/Condition?page=2"}]
    prefetch["conditions"]["entry"] = []
    card = only_card(call(hook("p01", prefetch)))
    assert fhir.kinds() == ["Condition"]
    assert card["summary"].startswith("Likely eligible")


# ---------------------------------------------------------------------------- cards
def test_an_ineligible_patient_gets_no_card(
    cds: TestClient, call: Callable[..., httpx.Response]
) -> None:
    response = call(hook("p05"))
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}
    row = state_of(cds.app).audit.recent(1)[0]
    assert (row.action, row.outcome) == ("cds-hook", "ineligible: no card")


def test_a_possibly_eligible_patient_gets_an_info_card_listing_the_unknowns(
    call: Callable[..., httpx.Response],
) -> None:
    card = only_card(call(hook("p19")))
    assert card["indicator"] == "info"
    assert card["summary"] == "Possibly eligible for trial NCT06946485: 11 criteria still unknown"
    detail = card["detail"]
    to_check = detail.split("**To check (11)**")[1].split("**Inclusion criteria met")[0]
    listed = [line for line in to_check.splitlines() if line.startswith("- ")]
    assert [line.split(":")[0] for line in listed[:5]] == [
        "- I3",
        "- I4",
        "- E10.hbv",
        "- E10.hcv",
        "- E10.hiv",
    ]
    assert listed[5] == "- and 6 more in the full result"
    assert "Order HBsAg" in to_check
    assert card["links"][0]["type"] == "smart"


def test_as_of_defaults_to_today(call: Callable[..., httpx.Response]) -> None:
    card = only_card(call(hook("p01", extension=None)))
    context = json.loads(card["links"][0]["appContext"])
    assert context["as_of"] == dt.date.today().isoformat()


def test_a_failed_search_makes_its_criteria_unknown_not_pass(
    call: Callable[..., httpx.Response], fhir: RecordingFhir
) -> None:
    fhir.faults["Condition"] = lambda request: httpx.Response(500)
    card = only_card(call(hook("p01")))
    assert card["summary"].startswith("Possibly eligible")
    assert "could not be read" in card["detail"]


def test_a_patient_the_server_does_not_know_is_412(call: Callable[..., httpx.Response]) -> None:
    response = call(hook("nobody"))
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "incomplete"
    assert "Patient/nobody" in response.json()["issue"][0]["diagnostics"]


def test_no_prefetch_and_no_fhir_server_is_412(
    cds_settings: Settings, ehr_token: Callable[..., str], fhir: RecordingFhir
) -> None:
    settings = cds_settings.model_copy(update={"fhir_base_url": None, "cds_fhir_servers": ()})
    with _client(settings) as client:
        prefetch = prefetch_for(fhir, templates(client, ehr_token), "p01")
        del prefetch["conditions"]
        response = client.post(
            URL, json=hook("p01", prefetch), headers={"Authorization": f"Bearer {ehr_token()}"}
        )
    assert response.status_code == 412
    assert "conditions" in response.json()["issue"][0]["diagnostics"]
    assert fhir.requests == []


def test_past_the_time_budget_the_answer_is_no_card(
    cds_settings: Settings, ehr_token: Callable[..., str], fhir: RecordingFhir
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})

    fhir.faults["Condition"] = slow
    settings = cds_settings.model_copy(update={"cds_time_budget_s": 0.3})
    with _client(settings) as client:
        started = time.monotonic()
        response = client.post(
            URL, json=hook("p01"), headers={"Authorization": f"Bearer {ehr_token()}"}
        )
        elapsed = time.monotonic() - started
        row = state_of(client.app).audit.recent(1)[0]
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert elapsed < 2.5
    assert row.outcome == "timeout: no card"


# ---------------------------------------------------------------------------- fhirServer
def test_fhir_authorization_token_is_used_against_an_allowed_fhir_server(
    call: Callable[..., httpx.Response], fhir: RecordingFhir
) -> None:
    body = hook(
        "p01",
        fhirServer=OTHER_FHIR + "/",
        fhirAuthorization={
            "access_token": "ehr-user-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cohort-match",
        },
    )
    card = only_card(call(body))
    assert card["summary"].startswith("Likely eligible")
    assert fhir.requests
    assert {r.url.host for r in fhir.requests} == {"ehr-fhir.test"}
    assert {r.headers["Authorization"] for r in fhir.requests} == {"Bearer ehr-user-token"}


def test_the_configured_server_without_a_token_uses_the_service_client(
    call: Callable[..., httpx.Response], fhir: RecordingFhir
) -> None:
    only_card(call(hook("p01", fhirServer=FHIR)))
    assert {r.url.host for r in fhir.requests} == {"fhir.test"}
    assert all("Authorization" not in r.headers for r in fhir.requests)


@pytest.mark.parametrize(
    ("fhir_server", "message"),
    [
        ("https://attacker.test/fhir", "not a FHIR server this service may call"),
        ("file:///etc/passwd", "fhirServer must be an http(s) URL"),
    ],
    ids=["not-allowed", "not-http"],
)
def test_an_untrusted_fhir_server_is_refused_before_any_request(
    call: Callable[..., httpx.Response], fhir: RecordingFhir, fhir_server: str, message: str
) -> None:
    response = call(hook("p01", fhirServer=fhir_server))
    assert response.status_code == 400
    assert message in response.json()["issue"][0]["diagnostics"]
    assert fhir.requests == []


# ---------------------------------------------------------------------------- malformed
def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    target = body
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_without(hook("p01"), "hookInstance"), "hookInstance: Field required"),
        (_without(hook("p01"), "context", "patientId"), "context.patientId: Field required"),
        (_without(hook("p01"), "context", "userId"), "context.userId: Field required"),
        (hook("p01", hook="order-sign"), "answers the patient-view hook, not 'order-sign'"),
        (hook("../p01"), "context.patientId: String should match pattern"),
        (hook(".."), "context.patientId: Value error, patientId must be a FHIR id"),
        (hook("p01\n"), "context.patientId: String should match pattern"),
        (
            hook(
                "p01",
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 60,
                    "scope": "s",
                    "subject": "c",
                },
            ),
            "fhirAuthorization is given without fhirServer",
        ),
        (
            hook(
                "p01",
                fhirServer=FHIR,
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "MAC",
                    "expires_in": 60,
                    "scope": "s",
                    "subject": "c",
                },
            ),
            'token_type must be "Bearer"',
        ),
        (
            hook("p01", {"patient": {"resourceType": "Patient", "id": "p02"}}),
            "Patient with id 'p01'",
        ),
        (hook("p01", {"conditions": {"resourceType": "Condition"}}), "must be a searchset Bundle"),
        (hook("p01", {"conditions": [1, 2]}), "must be a FHIR resource (JSON object) or null"),
        (
            hook("p01", {"conditions": {"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}}),
            "entry[0] has no resource",
        ),
        (hook("p01", extension={"org.cohort-match.as-of": "20/11/2026"}), "org.cohort-match.as-of"),
        (b'{"hook": ', "JSON decode error"),
        ([1, 2, 3], "valid dictionary"),
    ],
    ids=[
        "no-hookInstance",
        "no-patientId",
        "no-userId",
        "wrong-hook",
        "bad-patient-id",
        "dot-segment-patient-id",
        "patient-id-with-newline",
        "token-without-server",
        "not-bearer",
        "other-patient-prefetched",
        "prefetch-not-a-bundle",
        "prefetch-not-an-object",
        "entry-without-resource",
        "bad-as-of",
        "not-json",
        "not-an-object",
    ],
)
def test_malformed_requests_are_400_with_a_message(
    call: Callable[..., httpx.Response], fhir: RecordingFhir, body: Any, message: str
) -> None:
    response = call(body)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "invalid"
    assert message in outcome["issue"][0]["diagnostics"]
    assert fhir.requests == []


def test_an_unknown_service_is_404(cds: TestClient, ehr_token: Callable[..., str]) -> None:
    path = "/cds-services/cohort-match-nct00000000"
    response = cds.post(
        path, json=hook("p01"), headers={"Authorization": f"Bearer {ehr_token(path)}"}
    )
    assert response.status_code == 404


# ---------------------------------------------------------------------------- client JWTs
@pytest.mark.parametrize(
    ("claims", "header", "fragment"),
    [
        ({"aud": f"{BASE}/cds-services/another-service"}, None, "aud"),
        ({"aud": f"https://evil.test{URL}"}, None, "aud"),
        ({"exp": int(time.time()) - 120}, None, "expired"),
        ({"jti": None}, None, "jti"),
        ({"iat": None}, None, "iat"),
        ({}, {"kid": None}, "no kid"),
        ({}, {"typ": "at+jwt"}, "typ"),
    ],
    ids=["wrong-aud", "other-host-aud", "expired", "no-jti", "no-iat", "no-kid", "wrong-typ"],
)
def test_invalid_client_jwts_are_401(
    cds: TestClient,
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
    claims: dict[str, Any],
    header: dict[str, Any] | None,
    fragment: str,
) -> None:
    token = ehr_token(URL, header=header, **claims)
    response = cds.post(URL, json=hook("p01"), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert fragment in response.json()["issue"][0]["diagnostics"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert fhir.requests == []


def test_a_valid_jwt_is_accepted_once_and_its_replay_refused(
    cds: TestClient, ehr_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {ehr_token(URL, aud=[BASE + URL, 'https://other'])}"}
    assert cds.post(URL, json=hook("p05"), headers=headers).status_code == 200
    replay = cds.post(URL, json=hook("p05"), headers=headers)
    assert replay.status_code == 401
    assert "replay" in replay.json()["issue"][0]["diagnostics"]


def test_symmetric_and_unknown_keys_are_refused(cds: TestClient) -> None:
    now = int(time.time())
    claims = {"iss": EHR, "aud": BASE + URL, "exp": now + 60, "iat": now, "jti": "j1"}
    hmac = jwt.encode({"alg": "HS256", "kid": "ehr-1"}, claims, OctKey.generate_key(256))
    stranger = ECKey.generate_key("P-384", parameters={"kid": "ehr-1"})
    forged = jwt.encode(
        {"alg": "ES384", "kid": "ehr-1", "typ": "JWT"}, claims, stranger, algorithms=["ES384"]
    )
    for token in (hmac, forged, "not-a-jwt"):
        response = cds.post(URL, json=hook("p01"), headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
    assert cds.post(URL, json=hook("p01")).status_code == 401


def test_an_issuer_outside_the_allowlist_is_refused(
    cds_settings: Settings, ehr_token: Callable[..., str], fhir: RecordingFhir
) -> None:
    settings = cds_settings.model_copy(update={"cds_client_issuers": ("https://other-ehr.test",)})
    with _client(settings) as client:
        response = client.post(
            URL, json=hook("p05"), headers={"Authorization": f"Bearer {ehr_token()}"}
        )
    assert response.status_code == 401
    assert "iss" in response.json()["issue"][0]["diagnostics"]


def test_without_a_cds_jwks_every_call_is_refused(settings: Settings, fhir: RecordingFhir) -> None:
    with _client(settings) as client:  # the API's own auth settings only
        response = client.post(URL, json=hook("p01"))
        assert client.get("/cds-services").status_code == 401
    assert response.status_code == 401
    assert "COHORT_MATCH_CDS_JWKS_FILE" in response.json()["issue"][0]["diagnostics"]


def test_auth_disabled_on_loopback_needs_no_jwt(tmp_path: Path, fhir: RecordingFhir) -> None:
    settings = Settings(
        auth_disabled=True,
        fhir_base_url=FHIR,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
    )
    with _client(settings) as client:
        assert client.get("/cds-services").status_code == 200
        card = only_card(client.post(URL, json=hook("p01")))
    assert "links" not in card  # no public base URL, so no launch URL to link to


def test_cds_settings_refuse_unsafe_combinations(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="COHORT_MATCH_CDS_PUBLIC_BASE_URL"):
        Settings(cds_jwks_file=tmp_path / "x.json")
    with pytest.raises(ValueError, match="http"):
        Settings(cds_fhir_servers="https://ok.test, ftp://not-ok.test")


# ---------------------------------------------------------------------------- audit
def test_every_hook_call_is_audited_with_user_client_patient_and_outcome(
    cds: TestClient, call: Callable[..., httpx.Response]
) -> None:
    only_card(call(hook("p01")))
    call(_without(hook("p02"), "hookInstance"))
    cds.post(URL, json=hook("p03"))  # no JWT
    rows = state_of(cds.app).audit.recent(3)
    unauthenticated, malformed, card = rows
    assert card.action == "cds-hook"
    assert (card.subject, card.client_id) == ("Practitioner/dr-lee", EHR)
    assert json.loads(card.patients) == ["Patient/p01"]
    assert card.trial_id == "NCT06946485"
    assert card.outcome == "likely_eligible: card"
    assert (malformed.outcome, malformed.client_id) == ("error 400", EHR)
    assert (unauthenticated.outcome, unauthenticated.subject) == ("error 401", "unauthenticated")


# ---------------------------------------------------------------------------- feedback
def test_feedback_is_stored_and_linked_to_the_card(
    cds: TestClient, call: Callable[..., httpx.Response], ehr_token: Callable[..., str]
) -> None:
    card = only_card(call(hook("p01")))
    path = f"{URL}/feedback"
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "system": "http://example.org/reasons",
                        "code": "referred",
                        "display": "Already referred",
                    },
                    "userComment": "seen by the trial team last week",
                },
                "outcomeTimestamp": "2026-11-20T09:30:00+08:00",
            },
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "s1"}],
                "outcomeTimestamp": "2026-11-20T01:31:00Z",
            },
        ]
    }
    response = cds.post(path, json=body, headers={"Authorization": f"Bearer {ehr_token(path)}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": 2}
    store = state_of(cds.app).cds.store
    overridden, accepted = store.feedback(card["uuid"])
    assert (overridden.outcome, overridden.reason_code, overridden.client) == (
        "overridden",
        "referred",
        EHR,
    )
    assert overridden.user_comment == "seen by the trial team last week"
    assert overridden.outcome_at.hour == 1  # 09:30 at +08:00, stored in UTC
    assert json.loads(accepted.accepted_suggestions) == ["s1"]
    (issued,) = store.cards()
    assert (issued.uuid, issued.patient, issued.status) == (
        card["uuid"],
        "Patient/p01",
        "likely_eligible",
    )
    row = state_of(cds.app).audit.recent(1)[0]
    assert (row.action, row.outcome, json.loads(row.patients)) == (
        "cds-feedback",
        "2 stored",
        ["Patient/p01"],
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"feedback": []}, "feedback: List should have at least 1 item"),
        ({"feedback": [{"card": "c", "outcomeTimestamp": "2026-11-20T00:00:00Z"}]}, "outcome"),
        (
            {
                "feedback": [
                    {"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-11-20T00:00:00Z"}
                ]
            },
            "outcome",
        ),
        (
            {
                "feedback": [
                    {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-11-20T00:00:00Z"}
                ]
            },
            "an accepted outcome needs acceptedSuggestions",
        ),
        ({"feedback": [{"card": "c", "outcome": "overridden"}]}, "outcomeTimestamp"),
        ({"cards": []}, "feedback: Field required"),
    ],
    ids=["empty", "no-outcome", "bad-outcome", "accepted-without-suggestions", "no-time", "shape"],
)
def test_malformed_feedback_is_400(
    cds: TestClient, ehr_token: Callable[..., str], body: dict[str, Any], message: str
) -> None:
    path = f"{URL}/feedback"
    response = cds.post(path, json=body, headers={"Authorization": f"Bearer {ehr_token(path)}"})
    assert response.status_code == 400, response.text
    assert message in response.json()["issue"][0]["diagnostics"]
    assert state_of(cds.app).cds.store.feedback() == []


def test_feedback_needs_a_jwt_for_the_feedback_or_service_url(
    cds: TestClient, ehr_token: Callable[..., str]
) -> None:
    path = f"{URL}/feedback"
    body = {
        "feedback": [
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-20T00:00:00Z"}
        ]
    }
    for aud_path, status in [(path, 200), (URL, 200), ("/cds-services", 401)]:
        response = cds.post(
            path, json=body, headers={"Authorization": f"Bearer {ehr_token(aud_path)}"}
        )
        assert response.status_code == status, aud_path


# ---------------------------------------------------------------------------- card text
def test_markdown_text_escapes_what_would_format_and_cuts_long_lines() -> None:
    assert markdown_text("5.2 10*9/L >= 3 10*9/L") == r"5.2 10\*9/L >= 3 10\*9/L"
    assert markdown_text("<script>a_b</script> [x](y)") == r"\<script>a\_b\</script> \[x\](y)"
    assert markdown_text("two\nlines") == "two lines"
    assert markdown_text("x" * 20, 10) == "x" * 9 + "\u2026"


def test_a_deceased_patient_gets_no_card(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    """p01 is likely eligible (a card above); recorded deceased, she is no candidate."""
    prefetch = prefetch_for(fhir, templates(cds, ehr_token), "p01")
    key = next(k for k, v in prefetch.items() if v.get("resourceType") == "Patient")
    prefetch[key] = {**prefetch[key], "deceasedDateTime": "2026-11-01T08:00:00+08:00"}
    response = call(hook("p01", prefetch))
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}


# ---------------------------------------------------------------------------- failed calls
def _overridden(card: str, **reason: Any) -> dict[str, Any]:
    return {
        "feedback": [
            {
                "card": card,
                "outcome": "overridden",
                "overrideReason": reason,
                "outcomeTimestamp": "2026-11-20T00:00:00Z",
            }
        ]
    }


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ({"userComment": "seen\x00 by the team"}, "NUL"),
        ({"reason": {"system": "http://x.org/r", "code": "c\x00"}}, "NUL"),
        ({"reason": {"system": "http://x.org/" + "r" * 300, "code": "c"}}, "system"),
        ({"reason": {"system": "http://x.org/r", "code": "c" * 200}}, "code"),
        ({"reason": {"system": "http://x.org/r", "code": "c", "display": "d" * 300}}, "display"),
        ({"userComment": "x" * 2001}, "userComment"),
    ],
    ids=["nul-comment", "nul-code", "long-system", "long-code", "long-display", "long-comment"],
)
def test_feedback_fields_too_long_or_with_nul_are_400_and_nothing_stored(
    cds: TestClient, ehr_token: Callable[..., str], reason: dict[str, Any], message: str
) -> None:
    path = f"{URL}/feedback"
    response = cds.post(
        path,
        json=_overridden("c1", **reason),
        headers={"Authorization": f"Bearer {ehr_token(path)}"},
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["issue"][0]["diagnostics"]
    assert state_of(cds.app).cds.store.feedback() == []


def _audit_fails(cds: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(record: object) -> None:
        raise AuditUnavailable("the access could not be audited; try again later")

    monkeypatch.setattr(state_of(cds.app).audit, "record", refuse)


def test_a_hook_call_whose_audit_fails_is_503_and_stores_no_card(
    cds: TestClient, call: Callable[..., httpx.Response], monkeypatch: pytest.MonkeyPatch
) -> None:
    _audit_fails(cds, monkeypatch)
    response = call(hook("p01"))
    assert response.status_code == 503, response.text
    assert "cards" not in response.json()
    assert state_of(cds.app).cds.store.cards() == []


def test_feedback_whose_audit_fails_is_503_and_stores_nothing(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = only_card(call(hook("p01")))
    _audit_fails(cds, monkeypatch)
    path = f"{URL}/feedback"
    response = cds.post(
        path,
        json=_overridden(card["uuid"], userComment="already referred"),
        headers={"Authorization": f"Bearer {ehr_token(path)}"},
    )
    assert response.status_code == 503, response.text
    assert state_of(cds.app).cds.store.feedback() == []


def test_a_prefetch_over_the_entry_cap_is_413_and_searches_nothing(
    cds_settings: Settings, fhir: RecordingFhir, ehr_token: Callable[..., str]
) -> None:
    with _client(cds_settings) as client:
        prefetch = prefetch_for(fhir, templates(client, ehr_token), "p01")
    entries = sum(
        len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1
        for v in prefetch.values()
    )
    capped = cds_settings.model_copy(update={"max_bundle_entries": entries - 1})
    with _client(capped) as client:
        response = client.post(
            URL, json=hook("p01", prefetch), headers={"Authorization": f"Bearer {ehr_token(URL)}"}
        )
    assert response.status_code == 413, response.text
    assert "at most" in response.json()["issue"][0]["diagnostics"]
    assert fhir.requests == []


# ---------------------------------------------------------------------------- every trial
ALL = "cohort-match-all-trials"
ALL_URL = f"/cds-services/{ALL}"


def test_the_all_trials_service_is_discovered_with_every_trials_prefetch(
    cds: TestClient, ehr_token: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {ehr_token('/cds-services')}"}
    services = {s["id"]: s for s in cds.get("/cds-services", headers=headers).json()["services"]}
    every = services[ALL]
    assert every["hook"] == "patient-view"
    assert "NCT06421701, NCT06946485" in every["description"]
    codes = set()
    for key, template in every["prefetch"].items():
        if key.startswith("observations-"):
            assert len(template) <= MAX_TEMPLATE_CHARS
            codes |= set(template.split("&code=")[1].split(","))
    one = templates(cds, ehr_token)  # NCT06946485's own
    own = set()
    for key, template in one.items():
        if key.startswith("observations-"):
            own |= set(template.split("&code=")[1].split(","))
    assert own <= codes  # every code either trial reads


def test_one_card_lists_the_trials_the_patient_may_fit_best_first(
    cds: TestClient,
    call: Callable[..., httpx.Response],
    ehr_token: Callable[..., str],
    fhir: RecordingFhir,
) -> None:
    prefetch = prefetch_for(fhir, templates(cds, ehr_token, ALL), "p01")
    card = only_card(call(hook("p01", prefetch), ALL_URL))
    assert fhir.requests == []  # the union prefetch is enough for every trial
    assert card["indicator"] == "warning"
    assert card["summary"] == "May fit 2 clinical trials; best: NCT06946485 (likely eligible)"
    lines = card["detail"].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("1. "))
    assert "[NCT06946485](https://clinicaltrials.gov/study/NCT06946485)" in lines[first]
    assert "**likely eligible** (score 1.00)" in lines[first]
    assert lines[first + 1].startswith("2. [NCT06421701]")
    assert "**possibly eligible**" in lines[first + 1]
    assert "Next: I7.plt: Order a complete blood count." in lines[first + 1]
    assert [json.loads(link["appContext"])["trial"] for link in card["links"]] == [
        "NCT06946485",
        "NCT06421701",
    ]
    row = state_of(cds.app).audit.recent(1)[0]
    assert (row.action, row.trial_id, json.loads(row.patients)) == (
        "cds-hook",
        "*",
        ["Patient/p01"],
    )
    assert row.outcome == "NCT06946485 likely_eligible, NCT06421701 possibly_eligible: card"
    (issued,) = state_of(cds.app).cds.store.cards()
    assert (issued.service_id, issued.trial_id, issued.status) == (ALL, "*", "likely_eligible")


def test_no_card_when_every_trial_rules_the_patient_out(
    call: Callable[..., httpx.Response],
) -> None:
    response = call(hook("p05"), ALL_URL)  # haemoglobin 58 g/L: out of both
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}


def test_feedback_on_the_all_trials_card_is_stored(
    cds: TestClient, call: Callable[..., httpx.Response], ehr_token: Callable[..., str]
) -> None:
    card = only_card(call(hook("p01"), ALL_URL))
    path = f"{ALL_URL}/feedback"
    body = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "s1"}],
                "outcomeTimestamp": "2026-11-20T01:31:00Z",
            }
        ]
    }
    response = cds.post(path, json=body, headers={"Authorization": f"Bearer {ehr_token(path)}"})
    assert response.status_code == 200, response.text
    (stored,) = state_of(cds.app).cds.store.feedback(card["uuid"])
    assert stored.outcome == "accepted"
