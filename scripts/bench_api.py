"""Load benchmark of POST /trials/{trial_id}/match against the real test FHIR server.

    python scripts/bench_api.py [--requests 400] [--concurrency 8] [--json-out bench-api.json]
    python scripts/bench_api.py --profile heavy.prof   # + cProfile of map/evaluate, in-process
    python scripts/bench_api.py --requests 200 --profile-api api.prof  # the API under cProfile

Everything runs on 127.0.0.1 and stops by itself:
1. sekmet-fhir on a free port (scripts/fhir-server install/start/load/stop), loaded with the
   demo Bundles (demo/NCT06946485/*.json) and one generated heavy patient
   (scripts/make_heavy_patient.py: ~500 resources, most of them Observations no criterion
   reads) as a transaction Bundle.
2. The API as production runs it: `cohort-match serve` (uvicorn, one process) in a
   subprocess on another free port, auth off (loopback only), audit in a throwaway SQLite;
   the benchmark waits for /healthz.
3. Warm-up, then three phases of POST /trials/NCT06946485/match with httpx (async):
   `demo-mix` (the demo patients in turn) and `heavy` (only the heavy patient) at
   --concurrency, then `heavy-serial` at concurrency 1 (no queueing: the service time of one
   request). Each phase stops after --requests (heavy-serial: --serial-requests) or
   --duration seconds, whichever comes first.
4. Per request: total latency (client side) and, from the Server-Timing header, `fhir` (wall
   time waiting for the FHIR server, all searches at once), `map` and `engine`;
   own = map + engine. Per phase also the CPU time the FHIR server, the API and this
   client used per request (from /proc), which says who is busy when the three share a
   machine, and the CPU the rest of the machine used meanwhile (`other load`: anything
   above ~0.2 cores means the figures are disturbed). Printed as a Markdown table, written
   as JSON to --json-out.
5. The API and the FHIR server are stopped on exit, Ctrl-C and errors alike.

Percentiles are nearest-rank over all requests of a phase. Errors (non-200, no
Server-Timing, transport errors) stop the run at the first one unless --keep-going; the exit
status is 1 whenever a phase had errors. The as-of date is the demo's (make_demo_data.AS_OF),
so every demo patient gets the verdict its scenario expects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import json
import math
import os
import platform
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import make_heavy_patient  # sibling module: `python scripts/x.py` puts scripts/ on sys.path
import orjson
from make_demo_data import AS_OF

from service.config import Settings
from service.criteria.engine import evaluate
from service.facts import PatientFacts
from service.fetching import add_resources, plan_for
from service.fhir.plan import PATIENT_PARAM
from service.mappers.common import codes_of
from service.terminology import Terminology
from service.trials import list_trials

REPO = Path(__file__).resolve().parent.parent
FHIR_SERVER = REPO / "scripts" / "fhir-server"
TRIAL = "NCT06946485"
DEMO = REPO / "demo" / TRIAL
HOST = "127.0.0.1"  # every socket this benchmark opens or asks for is on loopback
OWN_P95_TARGET_MS = 5.0
API_START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
ERROR_SAMPLES = 5
NOISY_CORES = 0.2  # other processes' CPU during a phase above which the report warns
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes
def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def run(args: Sequence[str], timeout_s: float) -> str:
    """Run one of our scripts in its own session (so Ctrl-C reaches only us and cleanup
    stops things in order); returns stdout, raises with its output when it fails."""
    done = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        start_new_session=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}".rstrip()
        )
    return done.stdout.strip()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sekmet_pid(port: int) -> int | None:
    pidfile = REPO / ".fhir-server" / "run" / str(port) / "server.pid"
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_seconds(root: int | None) -> float:
    """User + system CPU of a process and all its descendants, from /proc (Linux)."""
    if root is None:
        return math.nan
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces
        # fields[1] is ppid; [11] utime and [12] stime (proc(5) fields 4, 14, 15)
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])))
    if root not in stats:
        return math.nan
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(stats[pid][1] for pid in tree) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def api_env(fhir_base: str, database: Path) -> dict[str, str]:
    """The environment of the API: ours without any COHORT_MATCH_* or proxy setting (so
    nothing leaks in from the shell and every request stays on loopback), plus the few the
    benchmark needs."""
    dropped = ("COHORT_MATCH_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(dropped)}
    env.update(
        COHORT_MATCH_FHIR_BASE_URL=fhir_base,
        COHORT_MATCH_AUTH_DISABLED="true",
        COHORT_MATCH_HOST=HOST,
        COHORT_MATCH_DATABASE_URL=f"sqlite:///{database}",
        NO_PROXY="*",
    )
    return env


def api_command(port: int, profile: Path | None = None) -> list[str]:
    """`cohort-match serve` from the same environment as this Python; with `profile`, the
    same under cProfile (`python -m cProfile -o FILE -m service.cli serve`), which writes
    its stats when uvicorn exits on SIGTERM."""
    serve = ["serve", "--host", HOST, "--port", str(port)]
    if profile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "service.cli", *serve]
    script = Path(sys.executable).parent / "cohort-match"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    return [*head, *serve]


def start_api(
    port: int, env: dict[str, str], log_path: Path, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as sink:
        return subprocess.Popen(
            api_command(port, profile),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )


def wait_healthy(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> float:
    """Seconds until GET /healthz answers 200; fails with the API's log if it exits or hangs."""
    started = time.perf_counter()
    deadline = started + API_START_TIMEOUT_S
    with httpx.Client(base_url=base, timeout=2.0, trust_env=False) as client:
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.1)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    state = f"exited {proc.returncode}" if proc.poll() is not None else "did not answer"
    raise RuntimeError(f"the API {state} within {API_START_TIMEOUT_S:.0f} s; its log:\n{tail}")


def stop_api(proc: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 10 s. Only ever our child.

    uvicorn re-raises the signal once it has shut down; under cProfile that must be SIGINT,
    which arrives as KeyboardInterrupt and still lets cProfile write its file."""
    if proc.poll() is not None:
        return
    proc.send_signal(how)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def raise_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C, through the same cleanup."""

    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class HeavyPatient:
    ident: str
    resources: list[dict[str, Any]]
    irrelevant: int  # codes in no value set
    fetched: list[dict[str, Any]]  # what the service's fetch plan asks the server for


def demo_patients(directory: Path) -> list[str]:
    """The Patient id of every demo Bundle, in file order."""
    ids = []
    for path in sorted(directory.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        ids += [
            e["resource"]["id"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        ]
    return ids


def heavy_patient(out: Path, resources: int, terms: Terminology) -> HeavyPatient:
    _, written = make_heavy_patient.write(out, resources)
    trial = list_trials(Settings(auth_disabled=True).trials_dir)[TRIAL][0]
    codes = set(plan_for(trial, terms).observation_codes)

    def fetched(resource: dict[str, Any]) -> bool:
        kind = resource["resourceType"]
        if kind == "Observation":
            return any(f"{c.system}|{c.code}" in codes for c in codes_of(resource.get("code")))
        return kind == "Patient" or kind in PATIENT_PARAM

    return HeavyPatient(
        make_heavy_patient.HEAVY_ID,
        written,
        make_heavy_patient.check_irrelevant(written, terms),
        [r for r in written if fetched(r)],
    )


# ---------------------------------------------------------------- load
@dataclass
class Sample:
    total_ms: float
    fhir_ms: float
    map_ms: float
    engine_ms: float

    @property
    def own_ms(self) -> float:
        return self.map_ms + self.engine_ms


@dataclass
class Phase:
    name: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)  # patient -> result status
    other_cpu_s: float = 0.0  # CPU the rest of the machine used meanwhile (noise)


def server_timing(header: str) -> dict[str, float]:
    """`fhir;dur=12.3, map;dur=0.4` -> {"fhir": 12.3, "map": 0.4} (milliseconds)."""
    found = {}
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                found[name.strip()] = float(value)
    return found


async def one_request(
    client: httpx.AsyncClient, patient: str, as_of: dt.date, phase: Phase, keep_status: bool
) -> str | None:
    """One match; records a Sample, or returns what went wrong."""
    body = {"patient": patient, "as_of": as_of.isoformat()}
    started = time.perf_counter()
    try:
        response = await client.post(f"/trials/{TRIAL}/match", json=body)
    except httpx.HTTPError as exc:
        return f"{patient}: {type(exc).__name__}: {exc}"
    total_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return f"{patient}: HTTP {response.status_code}: {response.text[:200]}"
    timing = server_timing(response.headers.get("server-timing", ""))
    if not {"fhir", "map", "engine"} <= timing.keys():
        return f"{patient}: Server-Timing lacks fhir/map/engine: {timing}"
    phase.samples.append(Sample(total_ms, timing["fhir"], timing["map"], timing["engine"]))
    if keep_status:
        phase.statuses[patient] = orjson.loads(response.content)["status"]
    return None


async def drive(
    client: httpx.AsyncClient,
    phase: Phase,
    patients: Sequence[str],
    requests: int,
    duration_s: float,
    as_of: dt.date,
    keep_going: bool,
    pids: dict[str, int | None],
) -> Phase:
    """`requests` matches over `patients` in turn, `phase.concurrency` at a time, stopping
    early at `duration_s` (or at the first error unless keep_going)."""
    issued = 0
    stop = False
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_cpu = time.process_time()
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        nonlocal issued, stop
        while not stop and issued < requests and time.perf_counter() < deadline:
            patient = patients[issued % len(patients)]
            issued += 1
            keep = phase.name == "warm-up"
            error = await one_request(client, patient, as_of, phase, keep)
            if error is not None:
                phase.errors += 1
                if len(phase.error_samples) < ERROR_SAMPLES:
                    phase.error_samples.append(error)
                stop = stop or not keep_going

    await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    phase.wall_s = time.perf_counter() - started
    phase.cpu_s = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    phase.cpu_s["bench client"] = time.process_time() - client_cpu
    ours = sum(v for v in phase.cpu_s.values() if not math.isnan(v))
    phase.other_cpu_s = max(0.0, machine_busy_seconds() - machine_before - ours)
    return phase


async def load(
    args: argparse.Namespace,
    api_base: str,
    demo: list[str],
    heavy: str,
    pids: dict[str, int | None],
) -> list[Phase]:
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=api_base, timeout=REQUEST_TIMEOUT_S, limits=limits, trust_env=False
    ) as client:
        warm = Phase("warm-up", args.concurrency)
        await drive(
            client,
            warm,
            [*demo, heavy],
            max(args.warmup, len(demo) + 1),
            args.duration,
            args.as_of,
            args.keep_going,
            pids,
        )
        if warm.errors and not args.keep_going:
            return [warm]
        phases = [warm]
        plan = (
            ("demo-mix", args.concurrency, demo, args.requests),
            ("heavy", args.concurrency, [heavy], args.requests),
            ("heavy-serial", 1, [heavy], args.serial_requests),
        )
        for name, concurrency, patients, requests in plan:
            if requests <= 0:
                continue
            log(f"phase {name}: {requests} requests, concurrency {concurrency} ...")
            phase = await drive(
                client,
                Phase(name, concurrency),
                patients,
                requests,
                args.duration,
                args.as_of,
                args.keep_going,
                pids,
            )
            phases.append(phase)
            if phase.errors and not args.keep_going:
                break
        return phases


# ---------------------------------------------------------------- statistics
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the smallest value with at least p% of values at or below)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(sum(values) / len(values), 3),
        "max": round(max(values), 3),
    }


METRICS: dict[str, Callable[[Sample], float]] = {
    "total": lambda s: s.total_ms,
    "fhir": lambda s: s.fhir_ms,
    "own": lambda s: s.own_ms,
    "map": lambda s: s.map_ms,
    "engine": lambda s: s.engine_ms,
    # the rest of the API's time: HTTP, routing, validation, audit, queueing for the loop
    "other": lambda s: s.total_ms - s.fhir_ms - s.own_ms,
}


def phase_report(phase: Phase) -> dict[str, Any]:
    done = len(phase.samples)
    total = sum(s.total_ms for s in phase.samples)
    return {
        "phase": phase.name,
        "concurrency": phase.concurrency,
        "requests": done + phase.errors,
        "ok": done,
        "errors": phase.errors,
        "error_samples": phase.error_samples,
        "wall_s": round(phase.wall_s, 3),
        "requests_per_s": round(done / phase.wall_s, 1) if phase.wall_s else None,
        "latency_ms": {
            name: summary([metric(s) for s in phase.samples]) for name, metric in METRICS.items()
        },
        # Share of the client-side latency spent waiting for the FHIR server (sum over sum).
        "fhir_share_of_total": round(sum(s.fhir_ms for s in phase.samples) / total, 3)
        if total
        else None,
        "cpu_ms_per_request": {
            name: round(seconds * 1000 / done, 2) if done and not math.isnan(seconds) else None
            for name, seconds in phase.cpu_s.items()
        },
        # Cores' worth of CPU that other processes on the machine used during the phase:
        # above ~0.2 the figures are disturbed by something else running.
        "other_load_cores": round(phase.other_cpu_s / phase.wall_s, 2) if phase.wall_s else None,
        "cpu_utilisation_of_machine": round(
            sum(v for v in phase.cpu_s.values() if not math.isnan(v))
            / (phase.wall_s * (os.cpu_count() or 1)),
            3,
        )
        if phase.wall_s
        else None,
    }


def bound_by(report: dict[str, Any]) -> str:
    """Who the heavy patient's latency waits on, from the FHIR share and the CPU split.

    `fhir` is wall time inside the API from sending the searches to having every page, so
    it holds the server's work and also the API's own HTTP-client work (URL building,
    connection pool, reading and parsing responses) and its event loop serving other
    requests. Which of the two dominates shows in the CPU each process burns per match.
    """
    share = report["fhir_share_of_total"] or 0.0
    cpu = report["cpu_ms_per_request"]
    server, api = cpu.get("fhir server") or 0.0, cpu.get("api") or 0.0
    if share < 0.5:
        return f"the API itself: only {share:.0%} of the latency is FHIR wait"
    if server >= api:
        return (
            f"the FHIR server: {share:.0%} of the latency is FHIR wait, and the server "
            f"burns {server:.1f} ms CPU per match against the API's {api:.1f} ms"
        )
    return (
        f"our side of the fetch: {share:.0%} of the latency is FHIR wait, but the API process "
        f"burns {api:.1f} ms CPU per match (of which own, map + engine, is a few ms) against "
        f"the server's {server:.1f} ms: the wait is mostly the API's HTTP client and event loop"
    )


def markdown(phases: list[dict[str, Any]]) -> str:
    def triple(stats: dict[str, float]) -> str:
        return " / ".join(f"{stats[p]:.1f}" for p in ("p50", "p95", "p99")) if stats else "-"

    def cpu(split: dict[str, float | None]) -> str:
        return " / ".join(
            "-" if split.get(k) is None else f"{split[k]:.1f}"
            for k in ("fhir server", "api", "bench client")
        )

    lines = [
        "| phase | conc. | requests | errors | req/s | total ms p50/p95/p99 "
        "| fhir ms p50/p95/p99 | own ms p50/p95/p99 | FHIR share | CPU ms/req server/API/client "
        "| other load (cores) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in phases:
        lat = r["latency_ms"]
        share = r["fhir_share_of_total"]
        lines.append(
            f"| {r['phase']} | {r['concurrency']} | {r['requests']} | {r['errors']} "
            f"| {r['requests_per_s'] or 0:.1f} | {triple(lat['total'])} | {triple(lat['fhir'])} "
            f"| {triple(lat['own'])} | {'-' if share is None else f'{share:.0%}'} "
            f"| {cpu(r['cpu_ms_per_request'])} | {r['other_load_cores']} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- profile
def profile_heavy(
    heavy: HeavyPatient, terms: Terminology, as_of: dt.date, repeats: int, out: Path
) -> dict[str, Any]:
    """map (add_resources) + evaluate + orjson.dumps of the heavy patient in this process,
    on the resources the fetch plan asks for: timed, then under cProfile (stats to `out`).
    Also times mapping all of them, as if the server ignored `code`."""
    trial = list_trials(Settings(auth_disabled=True).trials_dir)[TRIAL][0]
    reference = f"Patient/{heavy.ident}"

    def once(resources: list[dict[str, Any]]) -> tuple[float, float]:
        started = time.perf_counter()
        facts = PatientFacts(reference)
        add_resources(facts, resources, terms)
        mapped = time.perf_counter()
        orjson.dumps(evaluate(trial, facts, as_of, terms))
        return (mapped - started) * 1000, (time.perf_counter() - mapped) * 1000

    for _ in range(5):
        once(heavy.fetched)
    fetched = [once(heavy.fetched) for _ in range(repeats)]
    everything = [once(heavy.resources) for _ in range(repeats)]
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        once(heavy.fetched)
    profiler.disable()
    profiler.dump_stats(out)
    stream = pstats.Stats(profiler, stream=sys.stderr).strip_dirs()
    log(f"\ncProfile of {repeats} x (map + evaluate + dumps), heavy patient -> {out}")
    stream.sort_stats("tottime").print_stats(25)
    return {
        "repeats": repeats,
        "stats_file": str(out),
        "fetched_resources": len(heavy.fetched),
        "map_ms": summary([m for m, _ in fetched]),
        "engine_ms": summary([e for _, e in fetched]),
        "all_resources": len(heavy.resources),
        "map_all_ms": summary([m for m, _ in everything]),
    }


def show_api_profile(path: Path) -> dict[str, Any]:
    """Print the API process's profile (whole run, start-up included): own time and
    cumulative time, the top functions of each."""
    if not path.exists():
        log(f"warning: the API wrote no profile to {path}")
        return {"stats_file": str(path), "written": False}
    stats = pstats.Stats(str(path), stream=sys.stderr)
    log(f"\ncProfile of the API process -> {path}")
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return {"stats_file": str(path), "written": True}


# ---------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per phase (default 400)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--duration", type=float, default=120.0, help="cap per phase, seconds")
    parser.add_argument("--warmup", type=int, default=60, help="warm-up requests (default 60)")
    parser.add_argument(
        "--serial-requests", type=int, default=50, help="heavy-serial phase (0: skip it)"
    )
    parser.add_argument("--heavy-resources", type=int, default=500)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=AS_OF)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--keep-going", action="store_true", help="count errors and go on instead of stopping"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="also cProfile map+evaluate (pstats file)"
    )
    parser.add_argument("--profile-repeats", type=int, default=200)
    parser.add_argument(
        "--profile-api",
        type=Path,
        default=None,
        help="run the API under cProfile, stats to this file (slows it down: for where, "
        "not how fast)",
    )
    args = parser.parse_args(argv)
    if args.requests < 0 or args.concurrency < 1 or args.duration <= 0:
        parser.error("--requests >= 0, --concurrency >= 1 and --duration > 0")
    return args


def expected_statuses() -> dict[str, str]:
    path = REPO / "tests" / "data" / "demo_expected.json"
    if not path.exists():
        return {}
    expected = orjson.loads(path.read_bytes())
    return {v["patient"].removeprefix("Patient/"): v["status"] for v in expected.values()}


def stop_fhir(port: int) -> None:
    try:
        log(run([str(FHIR_SERVER), "stop", "--port", str(port)], timeout_s=60))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log(f"warning: could not stop the FHIR server on port {port}: {exc}")


def bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-api-")))
    settings = Settings(auth_disabled=True)
    terms = Terminology.load(settings.terminology_dir, settings.site_code_map)

    log(run([str(FHIR_SERVER), "install"], timeout_s=900))
    fhir_port = free_port()
    stack.callback(stop_fhir, fhir_port)
    log(run([str(FHIR_SERVER), "start", "--port", str(fhir_port)], timeout_s=120))
    heavy = heavy_patient(tmp / "heavy", args.heavy_resources, terms)
    started = time.perf_counter()
    log(run([str(FHIR_SERVER), "load", str(DEMO), "--port", str(fhir_port)], timeout_s=300))
    log(run([str(FHIR_SERVER), "load", str(tmp / "heavy"), "--port", str(fhir_port)], 300))
    load_s = time.perf_counter() - started

    api_port = free_port()
    api_log = tmp / "api.log"
    fhir_base = f"http://{HOST}:{fhir_port}/fhir"
    proc = start_api(api_port, api_env(fhir_base, tmp / "audit.db"), api_log, args.profile_api)
    stack.callback(stop_api, proc)
    api_base = f"http://{HOST}:{api_port}"
    up_s = wait_healthy(proc, api_base, api_log)
    log(f"cohort-match API on {api_base} (pid {proc.pid}), up in {up_s:.1f} s")

    pids = {"fhir server": sekmet_pid(fhir_port), "api": proc.pid}
    demo = demo_patients(DEMO)
    phases = asyncio.run(load(args, api_base, demo, heavy.ident, pids))
    warm = phases[0]
    expected = expected_statuses()
    mismatched = sorted(
        p for p, status in warm.statuses.items() if p in expected and expected[p] != status
    )
    reports = [phase_report(p) for p in phases]
    result: dict[str, Any] = {
        "meta": {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "trial": TRIAL,
            "as_of": args.as_of.isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "fhir_server": f"sekmet-fhir on {fhir_base} (scripts/fhir-server)",
            "api": " ".join(api_command(api_port, args.profile_api)).replace(
                sys.executable, "python"
            ),
            "load_bundles_s": round(load_s, 2),
            "warmup_requests": len(warm.samples) + warm.errors,
            "note": "server, API and load generator share this machine's CPUs",
        },
        "demo": {
            "patients": len(demo),
            "verdicts_checked": len([p for p in warm.statuses if p in expected]),
            "verdicts_unexpected": mismatched,
        },
        "heavy_patient": {
            "id": heavy.ident,
            "resources": len(heavy.resources),
            "in_no_value_set": heavy.irrelevant,
            "fetched_by_match": len(heavy.fetched),
            "status": warm.statuses.get(heavy.ident),
        },
        "phases": [r for r in reports if r["phase"] != "warm-up"],
        "warmup": reports[0],
    }
    measured = {r["phase"]: r for r in result["phases"]}
    if "heavy" in measured and measured["heavy"]["ok"]:
        own_p95 = measured["heavy"]["latency_ms"]["own"]["p95"]
        result["heavy_verdict"] = {
            "own_p95_ms": own_p95,
            "target_ms": OWN_P95_TARGET_MS,
            "target_met": own_p95 < OWN_P95_TARGET_MS,
            "concurrency": measured["heavy"]["concurrency"],
            "fhir_share_of_total": measured["heavy"]["fhir_share_of_total"],
            "fhir_share_serial": (measured.get("heavy-serial") or {}).get("fhir_share_of_total"),
            "bound_by": bound_by(measured["heavy"]),
        }
    if args.profile_api is not None:
        stop_api(proc, signal.SIGINT)  # uvicorn exits, and cProfile writes the file
        result["api_profile"] = show_api_profile(args.profile_api)
    if args.profile is not None:
        result["profile"] = profile_heavy(
            heavy, terms, args.as_of, args.profile_repeats, args.profile
        )
    return result


def print_report(result: dict[str, Any]) -> None:
    heavy = result["heavy_patient"]
    print(f"\n## POST /trials/{TRIAL}/match on {result['meta']['machine']['cpus']} CPUs\n")
    print(markdown(result["phases"]))
    print(
        f"\nHeavy patient `{heavy['id']}`: {heavy['resources']} resources loaded "
        f"({heavy['in_no_value_set']} with codes in no value set); one match fetches "
        f"{heavy['fetched_by_match']} of them; status {heavy['status']}."
    )
    demo = result["demo"]
    unexpected = ", ".join(demo["verdicts_unexpected"]) or "none"
    print(
        f"Demo: {demo['patients']} patients; {demo['verdicts_checked']} statuses checked against "
        f"tests/data/demo_expected.json, unexpected: {unexpected}."
    )
    for phase in [result["warmup"], *result["phases"]]:
        for sample in phase["error_samples"]:
            print(f"Error in {phase['phase']}: {sample}")
    busy = [p["phase"] for p in result["phases"] if (p["other_load_cores"] or 0) > NOISY_CORES]
    if busy:
        print(
            f"Warning: other processes kept the CPUs busy during {', '.join(busy)} "
            "(see `other load`): those figures are disturbed; rerun on a quiet machine."
        )
    verdict = result.get("heavy_verdict")
    if verdict:
        met = "met" if verdict["target_met"] else "NOT met"
        serial = verdict["fhir_share_serial"]
        print(
            f"Heavy own time (map + engine) p95 {verdict['own_p95_ms']:.2f} ms: target "
            f"< {verdict['target_ms']:.0f} ms {met}. FHIR wait is "
            f"{verdict['fhir_share_of_total']:.0%} of total latency at concurrency "
            f"{verdict['concurrency']}"
            + (f", {serial:.0%} at concurrency 1" if serial is not None else "")
            + f". Bound by {verdict['bound_by']}."
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    try:
        with contextlib.ExitStack() as stack:
            result = bench(args, stack)
    except KeyboardInterrupt:
        log("interrupted: the API and the FHIR server were stopped")
        return 130
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        log(f"bench_api: {exc} (the API and the FHIR server were stopped)")
        return 1
    print_report(result)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.json_out}")
    errors = sum(p["errors"] for p in [result["warmup"], *result["phases"]])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
