"""Spool directories: owner-only, named with the pid, stale ones removed (service/spool.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fastapi.testclient import TestClient

from service.config import Settings
from service.spool import new_spool, remove_stale, spool_root
from tests.conftest import app_for


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_spool_is_owner_only_and_named_with_our_pid(tmp_path: Path) -> None:
    root = spool_root(tmp_path / "spools")
    assert root.stat().st_mode & 0o777 == 0o700
    with new_spool(root, "sweep") as name:
        spool = Path(name)
        assert spool.parent == root
        assert spool.name.startswith(f"cohort-match-sweep-{os.getpid()}-")
        assert spool.stat().st_mode & 0o777 == 0o700
    assert not spool.exists()


def test_only_spools_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"cohort-match-sweep-{_dead_pid()}-abc"
    alive = tmp_path / f"cohort-match-screen-{os.getppid()}-abc"
    ours = tmp_path / f"cohort-match-sweep-{os.getpid()}-abc"
    other = tmp_path / "cohort-match-notes"
    for path in (dead, alive, ours, other):
        path.mkdir()
    (dead / "results-0.jsonl").write_text("{}")
    assert remove_stale(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (alive, ours, other)
    )


def test_the_default_root_is_the_temp_directory() -> None:
    assert spool_root(None) == Path(tempfile.gettempdir())


def test_serve_removes_stale_spools_at_start(tmp_path: Path) -> None:
    spools = tmp_path / "spools"
    stale = spools / f"cohort-match-sweep-{_dead_pid()}-abc"
    stale.mkdir(parents=True)
    settings = Settings(
        auth_disabled=True,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        spool_dir=spools,
    )
    with TestClient(app_for(settings)) as client:
        assert client.get("/healthz").status_code == 200
    assert not stale.exists()
