"""Every JSON ranked list the API writes has each key once: parsed with duplicate keys
rejected (tests/strict_json.py), as a parser that keeps the first of two keys would read it.

POST /trials/{id}/candidates and GET /sweeps/{id}/candidates, including a sweep whose results
were stored before `rank` was written once (issue 13 section 4). The CLI's: tests/test_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.app_state import state_of
from service.config import Settings
from service.schemas import RankedListPublic
from service.sweeps.store import RESULTS, compress, decompress
from tests.api.conftest import FakeFhir
from tests.conftest import app_for
from tests.strict_json import DuplicateKey, strict_loads
from tests.sweeps.conftest import DEMO

SWEEPS = "cohort-match/sweeps.read cohort-match/sweeps.write"


def _ranked(content: bytes) -> dict[str, Any]:
    document: dict[str, Any] = strict_loads(content)
    RankedListPublic.model_validate(document)
    return document


def test_candidates_has_every_key_once(
    api: TestClient, auth: dict[str, str], fake_fhir: FakeFhir
) -> None:
    body = {"patients": ["p05", "p01", "p19", "p404"], "as_of": "2026-11-20"}
    response = api.post("/trials/NCT06946485/candidates", json=body, headers=auth)
    assert response.status_code == 200, response.text
    document = _ranked(response.content)
    assert [c["rank"] for c in document["candidates"]] == [1, 2, 3]
    assert list(document) == ["trial", "as_of", "candidates", "counts", "unscreened"]
    assert [u["patient"] for u in document["unscreened"]] == ["Patient/p404"]


def test_sweep_candidates_have_every_key_once_also_when_stored_before_the_fix(
    settings: Settings, make_token: Callable[..., str]
) -> None:
    swept = settings.model_copy(update={"sweep_data_dir": DEMO, "sweep_workers": 1})
    headers = {"Authorization": f"Bearer {make_token(SWEEPS)}"}
    with TestClient(app_for(swept)) as client:
        started = client.post(
            "/sweeps", json={"trial": "NCT06946485", "as_of": "2026-11-20"}, headers=headers
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        sweeps = state_of(client.app).sweeps
        sweeps.wait(run_id, timeout=60)
        url = f"/sweeps/{run_id}/candidates"
        document = _ranked(client.get(url, headers=headers).content)
        assert [c["rank"] for c in document["candidates"]] == list(range(1, 72))
        limited = _ranked(client.get(f"{url}?limit=3", headers=headers).content)
        assert limited["candidates"] == document["candidates"][:3]

        # Results as sweeps stored them before: `"rank":null` and then the rank.
        store = sweeps.store
        with store.engine.begin() as conn:
            for row in conn.execute(
                select(RESULTS.c.patient, RESULTS.c.result).where(RESULTS.c.run_id == run_id)
            ):
                body = decompress(row.result)
                cut = body.rfind(b',"rank":')
                legacy = body[:cut] + b',"rank":null' + body[cut:]
                conn.execute(
                    update(RESULTS)
                    .where(RESULTS.c.run_id == run_id, RESULTS.c.patient == row.patient)
                    .values(result=compress(legacy))
                )
        with pytest.raises(DuplicateKey, match="rank"):
            strict_loads(next(store.results(run_id)))
        assert _ranked(client.get(url, headers=headers).content) == document
