"""The event loop stays free while large Bundle bodies are screened (issue 10): a real
uvicorn server on loopback, several large bodies at once, /healthz asked meanwhile.

The bound is generous (a shared CI machine); the figures of record come from
scripts/bench_loop.py, which runs the same measurement at full size."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_loop.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_loop", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = bench.free_port()
    proc = bench.start_api(port, tmp_path / "audit.db")
    try:
        base = f"http://{bench.HOST}:{port}"
        bench.wait_healthy(base, proc)
        yield base
    finally:
        bench.stop_api(proc)


def test_healthz_answers_while_large_bundles_are_screened(server: str) -> None:
    body = bench.large_bundle(entries=6000, pad=500)  # ~5 MB each
    report = asyncio.run(bench.healthz_under_load(server, body, bodies=3))
    assert report["statuses"] == [200, 200, 200]
    assert report["healthz_n"] >= 5, report  # asked throughout, not once after the screening
    assert report["healthz_p95_s"] < 0.5, report
