"""Instructions executed by an in-process screen, for two or more checkouts: a CPU measure that
other load on the machine does not move.

    python scripts/bench_instructions.py --checkout /work/wt/before --checkout . --patients 400

On a shared machine wall and CPU seconds vary by tens of percent from run to run (other work
evicts caches and steals cycles); the number of instructions a process executes does not.
Each checkout runs `service.screening.screen(..., workers=1)` under `valgrind --tool=callgrind`
with its own code (`PYTHONPATH=<checkout>`), trial file and code tables, on one population;
the screen runs twice in the process and only the second is counted, so imports, loading the
code tables, building the UCUM registry and first-call caches are left out: what is counted is
reading, routing, mapping, evaluating and writing the results of every patient (the ranked
read-back afterwards is not). PYTHONHASHSEED is fixed, so set iteration (and the count) is the
same each run: three runs of one checkout differed by about 1,000 of 4.3 billion instructions.
`--part evaluate` or `--part write` count one stage alone, for where a difference comes from.

The population is generated with this checkout's scripts/make_population.py from the code
tables of `--population-from` (default: this checkout), so that an older checkout is screened on
records holding the codes the newer one reads (the complement, anti-dsDNA and urinalysis codes
of the computed lupus scores). It is cached under --data-root while its manifest matches.

Prints each checkout's commit, instruction count and ratio to the first checkout. Needs
valgrind with its headers and a C compiler (see MARKER_C); a 400-patient run takes about two
minutes per checkout.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TRIAL = Path("trials") / "NCT06946485.yaml"  # relative to each checkout
# Valgrind's client requests are C macros, which Python cannot issue: a two-function library
# built with the system's C compiler (valgrind's headers are part of its package) brackets the
# counted region. Outside it callgrind does not even instrument, which keeps a run to minutes.
MARKER_C = """
#include <valgrind/callgrind.h>
void bench_on(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void bench_off(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_STOP_INSTRUMENTATION; }
"""


# ---------------------------------------------------------------- inside valgrind
def counted(work: Callable[[], None], marker: Path) -> None:
    """Run `work` with callgrind counting (started with --instr-atstart=no
    --collect-atstart=no): only its instructions are in the totals."""
    lib = ctypes.CDLL(str(marker))
    lib.bench_on()
    try:
        work()
    finally:
        lib.bench_off()


def scores_off() -> None:
    """The verdict paths of the computed scores (issue 12) bypassed: I1 and I2 decide as the
    diagnosis and the recorded total say, nothing is computed and no breakdown is written.
    For what the scores themselves cost in a checkout that has them; not a valid screen."""
    from service.criteria import diagnoses, measurement

    if not hasattr(diagnoses, "classification_verdict"):
        raise SystemExit("--scores-off: this checkout computes no scores")
    diagnoses.classification_verdict = lambda verdict, *_: verdict  # type: ignore[attr-defined]
    measurement.activity_verdict = lambda recorded, *_: recorded  # type: ignore[attr-defined]


def inner(args: argparse.Namespace) -> int:
    """One checkout's screen (or part), run twice: the second is the counted one."""
    from service import screening  # the checkout's own, from PYTHONPATH

    if args.off:
        scores_off()

    def screen_once() -> None:
        params = inspect.signature(screening.screen).parameters
        extra: dict[str, Any] = {}
        if "options" in params:  # later versions take a ScreenOptions
            extra["options"] = screening.ScreenOptions(workers=1)
        else:
            extra["workers"] = 1
        run = screening.screen(args.data, TRIAL, Path("terminology"), args.as_of, **extra)
        run.close()

    work = screen_once if args.part == "screen" else part(args)
    work()  # imports, code tables, UCUM registry, caches
    counted(work, args.marker)
    return 0


def part(args: argparse.Namespace) -> Callable[[], None]:
    """--part evaluate: `evaluate()` of every patient's facts, mapped beforehand (not
    counted); --part write: serialising every patient's result as the screen writes it."""
    import orjson

    try:
        from service.criteria.engine import evaluate
        from service.facts import PatientFacts
        from service.mappers import subject_of
        from service.patient_screen import add_records, load_screening_context
    except ImportError:
        raise SystemExit("--part needs service.patient_screen (issue 13 on)") from None
    context = load_screening_context(TRIAL, Path("terminology"), args.as_of)
    records: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(args.data.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            patient = subject_of(resource)
            if patient is not None:
                records.setdefault(patient, []).append(resource)
    patients = []
    for reference in sorted(records):
        facts = PatientFacts(reference)
        add_records(facts, records[reference], context.terms)
        patients.append(facts)

    def evaluate_all() -> None:
        for facts in patients:
            evaluate(context.trial, facts, args.as_of, context.terms)

    results = [evaluate(context.trial, f, args.as_of, context.terms) for f in patients]

    def write_all() -> None:
        for result in results:
            orjson.dumps(result)

    return evaluate_all if args.part == "evaluate" else write_all


# ---------------------------------------------------------------- driver
def population(args: argparse.Namespace) -> Path:
    """The population, generated from the --population-from checkout's code tables."""
    import make_population  # a sibling module; not needed inside valgrind

    source = args.population_from or REPO
    mix = f"sle{args.sle_share:g}-f{args.filler_share:g}"
    out = args.data_root / f"{args.patients}-{args.seed}-{mix}"
    wanted = {
        "patients": args.patients,
        "seed": args.seed,
        "as_of": args.as_of.isoformat(),
        "sle_share": args.sle_share,
        "filler_share": args.filler_share,
        "terminology_digest": make_population.tables_digest(source / "terminology"),
    }
    manifest = out / make_population.MANIFEST
    if not manifest.exists() or any(
        json.loads(manifest.read_text()).get(key) != value for key, value in wanted.items()
    ):
        shutil.rmtree(out, ignore_errors=True)
        print(f"generating {args.patients} patients into {out} ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "scripts/make_population.py",
                f"--patients={args.patients}",
                f"--out={out}",
                f"--seed={args.seed}",
                f"--as-of={args.as_of.isoformat()}",
                f"--terminology={source / 'terminology'}",
                f"--sle-share={args.sle_share}",
                f"--filler-share={args.filler_share}",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return out


def build_marker(tmp: Path) -> Path:
    source, marker = tmp / "marker.c", tmp / "marker.so"
    source.write_text(MARKER_C)
    compiler = os.environ.get("CC", "cc")
    command = [compiler, "-O1", "-shared", "-fPIC", "-o", str(marker), str(source)]
    subprocess.run(command, check=True)
    return marker


def instructions(
    checkout: Path, args: argparse.Namespace, data: Path, marker: Path, off: bool
) -> int:
    """Instructions of the counted screen of `checkout`, from callgrind's totals."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--inner",
            f"--data={data}",
            f"--as-of={args.as_of.isoformat()}",
            f"--marker={marker}",
            f"--part={args.part}",
            *(["--off"] if off else []),
        ]
        env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"{checkout}: the screen under callgrind failed")
        totals = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise SystemExit(f"{checkout}: no totals in callgrind's output")
        return int(totals.group(1))


def commit(checkout: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return head + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkout",
        type=lambda p: Path(p).resolve(),
        action="append",
        default=[],
        help="a checkout to measure (repeat; the first is the baseline of the ratios)",
    )
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 11, 27))
    # make_population's defaults (a general hospital); --sle-share 1 --filler-share 0.25 is
    # bench_screen's SLE-heavy population, where the lupus scores do the most work
    parser.add_argument("--sle-share", type=float, default=0.12)
    parser.add_argument("--filler-share", type=float, default=1.0)
    parser.add_argument("--population-from", type=lambda p: Path(p).resolve())
    parser.add_argument("--data-root", type=Path, default=REPO / "bench-data" / "instructions")
    parser.add_argument(
        "--scores-off",
        type=lambda p: Path(p).resolve(),
        action="append",
        default=[],
        metavar="CHECKOUT",
        help="also measure this checkout with the computed scores bypassed (what they cost)",
    )
    parser.add_argument(
        "--part",
        choices=["screen", "evaluate", "write"],
        default="screen",
        help="what is counted: the whole screen (default), evaluate() of every patient's "
        "facts, or serialising every result (both: checkouts with service.patient_screen)",
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--marker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--off", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        return inner(args)
    if not args.checkout and not args.scores_off:
        args.checkout = [REPO]
    data = population(args).resolve()
    print(
        f"population: {data} ({args.patients} patients, seed {args.seed}, as of {args.as_of}); "
        f"counted: {args.part}"
    )
    print(f"{'checkout':<40} {'commit':<16} {'instructions':>16} {'ratio':>7}")
    first = None
    with tempfile.TemporaryDirectory(prefix="bench-marker-") as tmp:
        marker = build_marker(Path(tmp))
        runs = [(c, False) for c in args.checkout] + [(c, True) for c in args.scores_off]
        for checkout, off in runs:
            count = instructions(checkout, args, data, marker, off)
            first = first or count
            name = f"{checkout}{' (scores off)' if off else ''}"
            print(f"{name:<40} {commit(checkout):<16} {count:>16,} {count / first:>7.3f}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
