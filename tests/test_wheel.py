"""An installed wheel works outside the checkout: trials, code tables and demo ship inside it."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_wheel_screens_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    # --no-isolation: hatchling comes from the test environment (the `test` extra) instead of
    # a fresh build environment per run, which is most of the build's time
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--outdir",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    # No pip of its own (ensurepip is most of a venv's creation time): the test environment's
    # pip installs into it with --python.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # Borrow the dependencies from the test environment without its editable install: a
    # plain path in a .pth file is added to sys.path, but the .pth files inside it are not run.
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("cohort_match-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--force-reinstall",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [str(venv / "bin" / "cohort-match"), "screen", "--as-of", "2026-11-20", "--format", "csv"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    rows = done.stdout.splitlines()
    assert rows[0].startswith("rank,patient,name,mrn,identifiers,status,status_reason,score")
    assert len(rows) > 30
    assert (
        "site-packages"
        in subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import service.paths as p; print(p.data_root())"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    # The run store's Alembic migrations ship in the wheel too: a sweep of the bundled demo
    # from the installed package, outside the checkout, completes and lists its run.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "COHORT_MATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'runs.db'}",
    }
    swept = subprocess.run(
        [
            str(venv / "bin" / "cohort-match"),
            "sweep",
            "--trial",
            "NCT06946485",
            "--as-of",
            "2026-11-20",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert swept.returncode == 0, swept.stderr
    runs = subprocess.run(
        [str(venv / "bin" / "cohort-match"), "runs", "--format", "json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert '"completed"' in runs.stdout
