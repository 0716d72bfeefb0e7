"""Benchmark an incremental FHIR sweep against a full one, on the real FHIR server.

    python scripts/bench_incremental.py [--patients 100] [--added 100] [--json-out FILE]

Everything runs on 127.0.0.1 and stops by itself:
1. Two populations from scripts/make_population.py (seeds --seed and --seed + 1, so no id is
   shared): `--patients` to start with and `--added` to add later, loaded into sekmet-fhir
   (scripts/fhir-server, a free port) as transaction Bundles of PUTs.
2. `first`: a sweep of the trial from that server (Bulk export; the run keeps a snapshot).
3. `3 changed`: one hemoglobin's value changes, one hemoglobin is recoded out of every value
   set and one Condition is deleted (the three kinds of change an incremental run must carry
   into its snapshot, in three patients), then the next sweep: incremental (`_since`, history
   for deletions); `3 changed, full`: a full export of the same data.
4. `+N patients`: the added population is loaded, then the next sweep: incremental, or a full
   export where the history holds more changes than the snapshot has records
   (service/sweeps/population.py); `+N, full`: a full export of the same data.
The full runs to compare with (`..., full`) are kept in a store of their own, so the chain of
runs 2-4 never starts from one; each comes after the chain's run, and a full warm-up run
(not shown) comes before both: the first export after a write is the slowest on sekmet-fhir,
which would favour whichever run came second. Each incremental run must equal its full run:
every patient's verdicts are compared, and a difference fails the benchmark (exit 1).

Per run: wall time, this process's CPU, the FHIR server's CPU, the CPU other processes used
meanwhile (`others' cores`: the machine is shared; compare runs where it is low), and where
the wall time went, from the run's progress stages: `export` (the Bulk export or searches),
`history` (what the run still waited for after the export: the type-level
`_history?_since=` pages are read while the export runs), `snapshot` (merging
into the new snapshot), `screen` (reading and evaluating) and `store` (results into the
database). History requests are counted from the server's access log (the one-entry pages
that count the history's changes included), entries read from the FHIR client's log.
Printed as a Markdown table; --json-out writes everything as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import make_population  # a sibling module: `python scripts/x.py` puts scripts/ on sys.path
import orjson

from service.config import Settings
from service.sweeps import Source, SweepRunner, SweepStore
from service.sweeps.store import RunInfo

REPO = Path(__file__).resolve().parent.parent
FHIR_SERVER = REPO / "scripts" / "fhir-server"
TRIAL = "NCT06946485"
HOST = "127.0.0.1"
BUNDLE_ENTRIES = 500  # PUTs per transaction Bundle when loading
HGB_LOINC = "718-7"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The progress stages of a run, in order, and the name each is reported under.
STAGES = {
    "queued": "start",
    "export": "export",
    "history": "history",
    "snapshot": "snapshot",
    "read": "screen",
    "evaluate": "screen",
    "store": "store",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the FHIR server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def fhir_server(*args: str, timeout_s: float = 900) -> str:
    done = subprocess.run(
        [str(FHIR_SERVER), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        start_new_session=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/fhir-server {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout.strip()


@contextlib.contextmanager
def running_server() -> Iterator[tuple[str, int]]:
    """sekmet-fhir on a free port: (FHIR base URL, port), stopped on exit."""
    log(fhir_server("install"))
    port = free_port()
    try:
        log(fhir_server("start", "--port", str(port), timeout_s=120))
        yield f"http://{HOST}:{port}/fhir", port
    finally:
        try:
            log(fhir_server("stop", "--port", str(port), timeout_s=60))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"warning: could not stop the FHIR server on port {port}: {exc}")


def server_pid(port: int) -> int | None:
    try:
        return int((REPO / ".fhir-server" / "run" / str(port) / "server.pid").read_text())
    except (OSError, ValueError):
        return None


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of one process (sekmet serves from one), from /proc."""
    if pid is None:
        return float("nan")
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_s() -> float:
    """This process and its waited-for children (the screen's workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


# ---------------------------------------------------------------- loading
def bundles(population: Path) -> Iterator[dict[str, Any]]:
    """Transaction Bundles of PUTs for every resource of a make_population directory."""
    entries: list[dict[str, Any]] = []
    for path in sorted(population.glob("*.ndjson")):
        with path.open("rb") as lines:
            for line in lines:
                resource = orjson.loads(line)
                url = f"{resource['resourceType']}/{resource['id']}"
                entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
                if len(entries) == BUNDLE_ENTRIES:
                    yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}
                    entries = []
    if entries:
        yield {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def load(fhir: httpx.Client, population: Path) -> int:
    loaded = 0
    for bundle in bundles(population):
        answer = fhir.post("", content=orjson.dumps(bundle))
        answer.raise_for_status()
        loaded += len(bundle["entry"])
    return loaded


def first_of(population: Path, kind: str, test: Any) -> dict[str, Any]:
    with (population / f"{kind}.ndjson").open("rb") as lines:
        for line in lines:
            resource = orjson.loads(line)
            if test(resource):
                return resource  # type: ignore[no-any-return]
    raise SystemExit(f"no {kind} to change in {population}")


def hemoglobins(population: Path) -> Iterator[dict[str, Any]]:
    with (population / "Observation.ndjson").open("rb") as lines:
        for line in lines:
            resource = orjson.loads(line)
            codings = (resource.get("code") or {}).get("coding") or ()
            if any(c.get("code") == HGB_LOINC for c in codings) and "valueQuantity" in resource:
                yield resource


def change(fhir: httpx.Client, population: Path) -> list[str]:
    """One value changed, one hemoglobin recoded out of every value set, one Condition
    deleted, each in a different patient of `population`; returns what was done."""
    found = hemoglobins(population)
    changed, recoded = next(found), next(found)
    while recoded["subject"] == changed["subject"]:
        recoded = next(found)
    subjects = {changed["subject"]["reference"], recoded["subject"]["reference"]}
    condition = first_of(
        population, "Condition", lambda r: r["subject"]["reference"] not in subjects
    )
    changed["valueQuantity"]["value"] = 50.0
    changed["valueQuantity"]["unit"] = changed["valueQuantity"]["code"] = "g/L"
    fhir.put(f"Observation/{changed['id']}", content=orjson.dumps(changed)).raise_for_status()
    recoded["code"] = {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}
    fhir.put(f"Observation/{recoded['id']}", content=orjson.dumps(recoded)).raise_for_status()
    fhir.delete(f"Condition/{condition['id']}").raise_for_status()
    return [
        f"Observation/{changed['id']} value -> 50 g/L",
        f"Observation/{recoded['id']} recoded out of the value sets",
        f"Condition/{condition['id']} deleted",
    ]


# ---------------------------------------------------------------- one sweep
class HistoryCounter(logging.Handler):
    """Counts the history entries read, from the `service.fhir.history` log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.entries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if match := re.search(r"history of \w+ since \S+: (\d+) entr", record.getMessage()):
            self.entries += int(match[1])


def history_requests(port: int) -> int:
    """`_history` requests the server has answered so far (its access log)."""
    server_log = REPO / ".fhir-server" / "run" / str(port) / "server.log"
    try:
        return server_log.read_text(errors="replace").count("/_history")
    except OSError:
        return 0


@dataclass
class Measured:
    name: str
    run: RunInfo
    wall_s: float = 0.0
    own_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    others_cores: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    history_requests: int = 0
    history_entries: int = 0


def sweep(
    runner: SweepRunner, source: Source, as_of: dt.date, name: str, port: int, *, full: bool
) -> Measured:
    pid = server_pid(port)
    requests = history_requests(port)
    marks: list[tuple[str, float]] = []

    def progress(stage: str, _done: int, _total: int) -> None:
        label = STAGES.get(stage, stage)
        if not marks or marks[-1][0] != label:
            marks.append((label, time.perf_counter()))

    counter = HistoryCounter()
    history_log = logging.getLogger("service.fhir.history")
    history_log.addHandler(counter)
    history_log.setLevel(logging.DEBUG)
    busy, server, own = machine_busy_s(), process_cpu_s(pid), own_cpu_s()
    started = time.perf_counter()
    try:
        run = runner.sweep(TRIAL, as_of, source, "bench", full=full, progress=progress)
    finally:
        history_log.removeHandler(counter)
    ended = time.perf_counter()
    measured = Measured(name, run)
    measured.wall_s = ended - started
    measured.own_cpu_s = own_cpu_s() - own
    measured.server_cpu_s = process_cpu_s(pid) - server
    others = machine_busy_s() - busy - measured.own_cpu_s - measured.server_cpu_s
    measured.others_cores = max(0.0, others) / measured.wall_s
    bounds = [*marks, ("end", ended)]
    measured.stages = {"start": bounds[0][1] - started if marks else measured.wall_s}
    for (label, at), (_, until) in itertools.pairwise(bounds):
        measured.stages[label] = measured.stages.get(label, 0.0) + until - at
    measured.history_requests = history_requests(port) - requests
    measured.history_entries = counter.entries
    if run.status != "completed":
        raise SystemExit(f"{name} sweep ended {run.status}: {run.error}")
    return measured


def verdicts(store: SweepStore, run: RunInfo) -> dict[str, dict[str, str]]:
    return {s.patient: s.verdicts for s in store.summaries(run.id)}


# ---------------------------------------------------------------- report
COLUMNS = ("export", "history", "snapshot", "screen", "store")


def table(rows: Sequence[Measured]) -> str:
    head = (
        "| run | mode | patients | wall s | "
        + " | ".join(f"{c} s" for c in COLUMNS)
        + " | history requests (entries) | CPU s ours / server | others' cores |"
    )
    lines = [head, "| --- | --- |" + " --: |" * (len(COLUMNS) + 5)]
    for m in rows:
        stages = " | ".join(f"{m.stages.get(c, 0.0):.2f}" for c in COLUMNS)
        lines.append(
            f"| {m.name} | {m.run.mode} | {m.run.counts.get('patients', 0)} | {m.wall_s:.2f} | "
            f"{stages} | "
            f"{m.history_requests} ({m.history_entries}) | "
            f"{m.own_cpu_s:.2f} / {m.server_cpu_s:.2f} | {m.others_cores:.2f} |"
        )
    return "\n".join(lines)


def report(m: Measured) -> dict[str, Any]:
    return {
        "run": m.run.id,
        "mode": m.run.mode,
        "changes": m.run.changes,
        "patients": m.run.counts.get("patients"),
        "wall_s": round(m.wall_s, 3),
        "stages_s": {k: round(v, 3) for k, v in m.stages.items()},
        "own_cpu_s": round(m.own_cpu_s, 3),
        "server_cpu_s": round(m.server_cpu_s, 3),
        "others_cores": round(m.others_cores, 2),
        "history_requests": m.history_requests,
        "history_entries": m.history_entries,
    }


# ---------------------------------------------------------------- main
def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-incremental-", dir=args.tmp) as work:
        return bench_in(Path(work), args)


def bench_in(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    terminology = REPO / "terminology"
    log(f"generating {args.patients} + {args.added} patients in {tmp} ...")
    base, added = tmp / "base", tmp / "added"
    make_population.generate(args.patients, base, args.seed, args.as_of, terminology)
    make_population.generate(args.added, added, args.seed + 1, args.as_of, terminology)
    with (
        running_server() as (url, port),
        httpx.Client(
            base_url=url + "/",
            headers={"Content-Type": "application/fhir+json"},
            timeout=600,
            trust_env=False,
        ) as fhir,
    ):
        started = time.perf_counter()
        resources = load(fhir, base)
        log(f"loaded {resources} resources in {time.perf_counter() - started:.1f} s")

        def settings_for(name: str) -> Settings:
            return Settings.model_validate(
                {
                    "database_url": f"sqlite:///{tmp / name}.db",
                    "sweep_snapshot_dir": tmp / f"{name}-snapshots",
                    "spool_dir": tmp / "spool",
                    "fhir_base_url": url,
                    "sweep_workers": args.workers,
                }
            )

        # The incremental chain, and the full runs to compare with in a store of their own
        # (so they never become the chain's base).
        store, fulls = SweepStore(settings_for("chain").database_url), None
        try:
            fulls = SweepStore(settings_for("full").database_url)
            runner = SweepRunner(settings_for("chain"), store)
            compare = SweepRunner(settings_for("full"), fulls)
            source = Source.fhir(url)

            def after_change(name: str) -> tuple[Measured, Measured, bool]:
                """A warm-up full run (the first export after a write is the slowest, which
                would favour whichever run came second), the chain's next run, a full run."""
                log(f"{name}: warm-up, the chain's next run, a full run ...")
                sweep(compare, source, args.as_of, "warm-up", port, full=True)
                chained = sweep(runner, source, args.as_of, name, port, full=False)
                full = sweep(compare, source, args.as_of, f"{name}, full", port, full=True)
                same = verdicts(store, chained.run) == verdicts(fulls, full.run)
                return chained, full, same

            log("first full sweep ...")
            first = sweep(runner, source, args.as_of, "first", port, full=False)
            changes = change(fhir, base)
            small, small_full, small_same = after_change("3 changed")
            started = time.perf_counter()
            added_resources = load(fhir, added)
            log(f"added {added_resources} resources in {time.perf_counter() - started:.1f} s")
            big, big_full, big_same = after_change(f"+{args.added} patients")
            same = {small.name: small_same, big.name: big_same}
        finally:
            store.close()
            if fulls is not None:
                fulls.close()
    rows = [first, small, small_full, big, big_full]
    print(table(rows))
    print()
    for run, against in ((small, small_full), (big, big_full)):
        reason = (run.run.changes or {}).get("reason")
        how = f"{run.run.mode}" + (f" ({reason})" if reason else "")
        print(
            f"{run.name}: {how}; {run.wall_s / against.wall_s:.2f}x the full run's wall time; "
            f"verdicts {'identical' if same[run.name] else 'DIFFERENT'} for every patient"
        )
    return {
        "meta": {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "patients": args.patients,
            "added": args.added,
            "resources": resources,
            "added_resources": added_resources,
            "changed": changes,
            "as_of": args.as_of.isoformat(),
            "workers": args.workers,
        },
        "runs": {m.name: report(m) for m in rows},
        "verdicts_identical": all(same.values()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100, help="loaded first (default 100)")
    parser.add_argument("--added", type=int, default=100, help="added before the second run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 27))
    parser.add_argument("--workers", type=int, default=2, help="screen workers (default 2)")
    parser.add_argument("--tmp", type=Path, default=None, help="where the work directory goes")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.patients < 1 or args.added < 0:
        parser.error("--patients >= 1 and --added >= 0")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the history log's DEBUG lines are counted
        handler.setLevel(logging.WARNING)
    result = bench(args)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["verdicts_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
