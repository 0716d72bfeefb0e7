"""The CLI's fixed start: `cohort-match screen` of the bundled demo from start to finish, and
the UCUM registry build alone, each in a fresh process.

    python scripts/bench_cli_start.py [--repeat 5] [--checkout DIR ...] [--json-out FILE]

Each `--checkout` (default: this one) is run with `PYTHONPATH=<checkout>` and this Python,
the checkouts interleaved run by run, so a base worktree (`git worktree add /tmp/base main`)
measures before against after. Per checkout and cache state:
- `screen`: `python -m service.cli screen --trial NCT06946485 --as-of 2026-11-20 --format
  json` (70 patients) whole: wall and CPU seconds (the process and its workers);
- `registry`: `import service.units` and the registry build (`service.units._registry()`),
  CPU seconds of each, in a process that does nothing else.
Cache states (service/ucum.py): `cold` runs with an empty `$XDG_CACHE_HOME` each time (the
first run for a user, or after an upgrade), `warm` with one a previous run filled. A checkout
without the cache measures the same in both. Medians of --repeat runs are printed as a
Markdown table; every screen's output must be byte-identical across runs, states and
checkouts, else the exit status is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCREEN = ["-m", "service.cli", "screen", "--trial", "NCT06946485", "--as-of", "2026-11-20"]
SCREEN += ["--format", "json"]
REGISTRY = """
import time
started = time.process_time()
import service.units as units
imported = time.process_time()
units._registry()
built = time.process_time()
print(imported - started, built - imported)
"""
STATES = ("cold", "warm")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(checkout: Path, cache: Path, args: list[str]) -> tuple[float, float, bytes]:
    """Wall and CPU seconds of `python args` (and its children), and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORT_MATCH_")}
    env.update(PYTHONPATH=str(checkout), XDG_CACHE_HOME=str(cache))
    cpu, started = children_cpu_s(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=checkout, capture_output=True, check=False
    )
    wall, cpu = time.perf_counter() - started, children_cpu_s() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{args} in {checkout} exited {done.returncode}:\n{done.stderr.decode()}")
    return wall, cpu, done.stdout


def cache_for(work: Path, checkout: Path, state: str) -> Path:
    """An empty cache home (cold), or the checkout's filled one (warm)."""
    cache = work / f"{checkout.name}-{state}"
    if state == "cold":
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(mode=0o700, exist_ok=True)
    return cache


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    samples: dict[tuple[str, str], dict[str, list[float]]] = {}
    outputs: dict[str, str] = {}
    checkouts = [c.resolve() for c in args.checkout]
    for checkout in checkouts:  # warm caches filled before the first measured run
        run(checkout, cache_for(work, checkout, "warm"), ["-c", REGISTRY])
    for index in range(args.repeat):
        for checkout in checkouts:
            for state in STATES:
                row = samples.setdefault((str(checkout), state), {})
                wall, cpu, out = run(checkout, cache_for(work, checkout, state), SCREEN)
                row.setdefault("screen wall s", []).append(wall)
                row.setdefault("screen CPU s", []).append(cpu)
                outputs[f"{checkout} {state} {index}"] = hashlib.sha256(out).hexdigest()
                _, _, printed = run(checkout, cache_for(work, checkout, state), ["-c", REGISTRY])
                imported, built = (float(x) for x in printed.split())
                row.setdefault("import CPU s", []).append(imported)
                row.setdefault("registry CPU s", []).append(built)
                print(f"run {index + 1}: {checkout.name} {state} done", file=sys.stderr)
    identical = len(set(outputs.values())) == 1
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "screen": " ".join(["python", *SCREEN]),
        "repeat": args.repeat,
        "medians": {
            f"{Path(c).name} {state}": {k: median(v) for k, v in row.items()}
            for (c, state), row in samples.items()
        },
        "checkouts": [str(c) for c in checkouts],
        "outputs_identical": identical,
        "output_sha256": sorted(set(outputs.values())),
    }


def table(result: dict[str, Any]) -> str:
    columns = ["screen wall s", "screen CPU s", "import CPU s", "registry CPU s"]
    lines = ["| checkout, cache | " + " | ".join(columns) + " |"]
    lines.append("| --- |" + " --: |" * len(columns))
    for name, row in result["medians"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--checkout", type=Path, action="append", default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.checkout = args.checkout or [REPO]
    if len({c.resolve().name for c in args.checkout}) != len(args.checkout):
        parser.error("checkouts must have distinct folder names (they name the rows)")
    with tempfile.TemporaryDirectory(prefix="bench-cli-start-") as work:
        result = bench(args, Path(work))
    print(table(result))
    same = "identical" if result["outputs_identical"] else "DIFFERENT"
    print(f"\nscreen output {same} across every run ({result['output_sha256'][0][:16]}...)")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["outputs_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
