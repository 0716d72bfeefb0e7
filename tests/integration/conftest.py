"""A real FHIR R4 server for integration tests: sekmet-fhir 0.1.1, loopback only.

`scripts/fhir-server` owns the server: it installs sekmet-fhir into its own venv (a per-user
cache outside the checkout, so none of its dependencies reach ours), starts it on 127.0.0.1, loads
transaction Bundles and stops it. These fixtures only call that script, once per session, on
a free port each, with the demo population (demo/NCT06946485, 71 patients) loaded:

- `fhir_server`: the open server; yields its FHIR base URL.
- `fhir_server_auth`: SMART Backend Services (client_credentials, private_key_jwt); yields a
  `SmartServer` with what a client needs to get a token.

Tests that use them are marked `@pytest.mark.integration`. The first run for a user installs
the server (15-40 s, from PyPI); afterwards, in any clone, each server starts in about a second.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fhir-server"
DEMO = ROOT / "demo" / "NCT06946485"
CONF = ROOT / "fhir-server"
# The test client registered in fhir-server/sekmet-auth.yaml; its key pair is test-only.
TEST_CLIENT_ID = "cohort-match-test"
TEST_CLIENT_KEY = CONF / "test-client-key.pem"
TEST_CLIENT_JWKS = CONF / "test-client-jwks.json"


@dataclass(frozen=True)
class SmartServer:
    """A SMART Backend Services protected server and the test client registered with it."""

    base_url: str
    token_url: str
    client_id: str
    private_key_path: Path
    key_id: str
    algorithm: str


def fhir_server_script(*args: str, timeout: float = 120) -> str:
    """Run scripts/fhir-server; on failure, fail with everything it printed."""
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/fhir-server {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def free_port() -> int:
    """A port nothing listens on now (the script refuses a taken one, so a race fails loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(*start_args: str) -> Iterator[int]:
    """Install if needed, start on a free port, load the demo; stop on the way out."""
    # pip may need several minutes on a slow mirror; everything else takes seconds.
    fhir_server_script("install", timeout=900)
    port = free_port()
    fhir_server_script("start", *start_args, "--port", str(port))
    try:
        fhir_server_script("load", str(DEMO), "--port", str(port))
        yield port
    finally:
        fhir_server_script("stop", "--port", str(port))


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[str]:
    """The FHIR base URL of an open sekmet-fhir server holding the demo population."""
    with running_server() as port:
        yield f"http://127.0.0.1:{port}/fhir"


@pytest.fixture(scope="session")
def fhir_server_auth() -> Iterator[SmartServer]:
    """A SMART Backend Services sekmet-fhir server holding the demo population."""
    (jwk,) = json.loads(TEST_CLIENT_JWKS.read_text())["keys"]
    with running_server("--auth") as port:
        yield SmartServer(
            base_url=f"http://127.0.0.1:{port}/fhir",
            token_url=f"http://127.0.0.1:{port}/auth/token",
            client_id=TEST_CLIENT_ID,
            private_key_path=TEST_CLIENT_KEY,
            key_id=jwk["kid"],
            algorithm=jwk["alg"],
        )


POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty schema on the real PostgreSQL (search_path in the URL), dropped after:
    every test gets the whole Alembic history from the start, whatever ran before."""
    schema = f"db_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
