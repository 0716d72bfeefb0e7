"""Populations for tests: the demo Bundles and a generated Bulk export, grouped by patient.

`generated(out, patients, seed)` runs scripts/make_population.py (synthetic, seeded: the same
arguments give the same files); `by_patient(dir)` reads any screen input and groups the lines
that reach stage 2 by patient, with the router the screen uses.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from service.paths import data_root
from service.routing import Router
from service.sources import LineReader, chunks
from service.terminology import Terminology

ROOT = data_root()
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
GENERATED_AS_OF = date(2026, 11, 27)


@lru_cache(maxsize=1)
def _make_population() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_population", SCRIPTS / "make_population.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_population", module)
    spec.loader.exec_module(module)
    return module


def generated(out: Path, patients: int, seed: int) -> Path:
    """A generated Bulk-style population of `patients` under `out` (as of GENERATED_AS_OF)."""
    _make_population().generate(patients, out, seed, GENERATED_AS_OF, ROOT / "terminology")
    return out


def by_patient(data: Path, terms: Terminology) -> dict[str, list[dict[str, Any]]]:
    """Every resource a screen keeps, grouped by its patient, in the order read."""
    router = Router(terms)
    patients: dict[str, list[dict[str, Any]]] = {}
    for chunk in chunks(data):
        for resource, _where, _error, _line in LineReader(chunk, router.skip):
            if resource is None:
                continue
            route = router.resource(resource)
            if route.kept and route.patient is not None:
                patients.setdefault(route.patient, []).append(resource)
    return patients
