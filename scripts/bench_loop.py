"""How responsive the API's event loop stays while large Bundle bodies are screened.

    python scripts/bench_loop.py [--bodies 4] [--entries 18000] [--pad 500] [--json-out loop.json]

Starts `cohort-match serve` (uvicorn, one process, auth off, loopback only, a throwaway
SQLite audit) on a free port, then POSTs --bodies large Bundles at once to
/trials/NCT06946485/match (one demo patient's resources plus --entries padded Observations,
~16 MB each with the defaults, under the 20 MB body limit and the 20,000-entry cap) while
GET /healthz is asked every 50 ms. Prints the /healthz latencies (p50, p95, max) and the
screening times as JSON. The API is stopped on exit.

tests/api/test_event_loop.py runs the same measurement, smaller, with a generous bound; the
figures of record come from here (issue 10: before the CPU work moved off the loop, four
16 MB bodies held /healthz for 2.7 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
TRIAL = "NCT06946485"
SEED = REPO / "demo" / TRIAL / "p01-likely-eligible-si-units.json"
HOST = "127.0.0.1"


def large_bundle(entries: int, pad: int) -> bytes:
    """The seed patient's Bundle plus `entries` copies of one of its Observations (new ids,
    a note of `pad` characters each), serialised."""
    bundle: dict[str, Any] = json.loads(SEED.read_text(encoding="utf-8"))
    model = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    for i in range(entries):
        resource = copy.deepcopy(model)
        resource["id"] = f"pad-{i}"
        resource["note"] = [{"text": "x" * pad}]
        bundle["entry"].append({"fullUrl": f"urn:uuid:pad-{i}", "resource": resource})
    return json.dumps(bundle).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_api(port: int, database: Path) -> subprocess.Popen[bytes]:
    """`cohort-match serve` with auth off on loopback; our environment minus COHORT_MATCH_*."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("COHORT_MATCH_")}
    # BENCH_COHORT_MATCH_X=... sets COHORT_MATCH_X for the API (e.g. _CPU_THREADS=1).
    env.update({k[6:]: v for k, v in os.environ.items() if k.startswith("BENCH_COHORT_MATCH_")})
    env.update(
        COHORT_MATCH_AUTH_DISABLED="true",
        COHORT_MATCH_DATABASE_URL=f"sqlite:///{database}",
        COHORT_MATCH_SPOOL_DIR=str(database.parent),
        NO_PROXY="*",
    )
    command = [sys.executable, "-m", "service.cli", "serve", "--host", HOST, "--port", str(port)]
    return subprocess.Popen(
        command,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"the API did not answer /healthz within {timeout_s:.0f} s")


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def healthz_under_load(base: str, body: bytes, bodies: int) -> dict[str, Any]:
    """POST `bodies` copies of `body` at once; meanwhile GET /healthz every 50 ms. Returns the
    /healthz latencies (s), the match statuses and how long the matches took."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=120.0, trust_env=False) as client:
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                response = await client.get("/healthz")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                await asyncio.sleep(0.05)

        async def screen() -> int:
            response = await client.post(
                f"/trials/{TRIAL}/match?as_of=2026-11-20",
                content=body,
                headers={"content-type": "application/json"},
            )
            return response.status_code

        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        statuses = await asyncio.gather(*(screen() for _ in range(bodies)))
        elapsed = time.perf_counter() - started
        done.set()
        await prober
    ordered = sorted(latencies)
    return {
        "statuses": statuses,
        "screen_s": round(elapsed, 3),
        "healthz_n": len(ordered),
        "healthz_p50_s": round(ordered[len(ordered) // 2], 4),
        "healthz_p95_s": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 4),
        "healthz_max_s": round(ordered[-1], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bodies", type=int, default=4)
    parser.add_argument("--entries", type=int, default=18_000)
    parser.add_argument("--pad", type=int, default=500)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    body = large_bundle(args.entries, args.pad)
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        port = free_port()
        proc = start_api(port, Path(tmp) / "audit.db")
        try:
            base = f"http://{HOST}:{port}"
            wait_healthy(base, proc)
            report = asyncio.run(healthz_under_load(base, body, args.bodies))
        finally:
            stop_api(proc)
    report.update(bodies=args.bodies, entries=args.entries, body_mb=round(len(body) / 2**20, 1))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0 if all(s == 200 for s in report["statuses"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
