"""Property-based tests of the API against its own OpenAPI contract (schemathesis).

Every operation, bounded examples with a fixed seed (derandomized), auth disabled on loopback,
the FHIR server faked with respx (tests/api/conftest.py). Each response must be a documented
status with a body matching the contract (errors: OperationOutcome), never a 500."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.config import Settings
from service.main import create_app
from tests.api.conftest import FHIR, FakeFhir, fake_fhir  # noqa: F401 - the fixture

MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _schema(tmp: Path) -> schemathesis.BaseSchema:
    app = create_app(
        Settings(
            fhir_base_url=FHIR,
            auth_disabled=True,
            database_url=f"sqlite:///{tmp / 'audit.db'}",
            fhir_timeout_s=2,
            spool_dir=tmp / "spools",
        )
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _labels() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return [op.ok().label for op in _schema(Path(tmp)).get_all_operations()]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    return _schema(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("label", _labels())
def test_every_response_is_documented_and_never_a_500(
    api_schema: schemathesis.BaseSchema,
    fake_fhir: FakeFhir,  # noqa: F811 - the respx FHIR server
    label: str,
) -> None:
    operation = next(op.ok() for op in api_schema.get_all_operations() if op.ok().label == label)

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    check()
