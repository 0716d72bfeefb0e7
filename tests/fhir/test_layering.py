"""service/fhir/ knows HTTP and FHIR only: it imports nothing of the service above it.

Trials, criteria, mappers, facts, code tables and settings are the business of the layers that
call the client (service/fetching.py plans and maps, service/upstream.py builds credentials
from Settings). Imports are read from the source (ast), so one inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import service

FHIR = Path(service.__file__).parent / "fhir"
# What a module under service/fhir may import from the service: itself and the error tree.
ALLOWED = ("service.fhir", "service.errors")
NAMED = ("service.trials", "service.criteria", "service.mappers", "service.config")


def imports_of(source: str, package: str) -> set[str]:
    """Every module `source` (a module of `package`) imports, at any depth, relative imports
    resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imported(path: Path) -> set[str]:
    package = ".".join(path.relative_to(FHIR.parent.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    return imports_of(path.read_text(encoding="utf-8"), package)


def forbidden(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        if (name == "service" or name.startswith("service."))
        and not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED)
    )


MODULES = sorted(FHIR.rglob("*.py"))


def test_every_module_is_read() -> None:
    names = {p.relative_to(FHIR).as_posix() for p in MODULES}
    assert {"client.py", "auth.py", "transport.py", "__init__.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(FHIR).as_posix())
def test_fhir_imports_nothing_above_it(path: Path) -> None:
    assert forbidden(imported(path)) == []


def test_the_check_catches_what_it_is_for() -> None:
    """The rule fails on the imports it exists to keep out (a check that cannot fail is none)."""
    for name in (*NAMED, "service.terminology", "service.facts"):
        assert forbidden({name}) == [name]
    assert forbidden({"service.fhir.client", "service.errors", "httpx"}) == []
    late = "def f():\n    from service.mappers import subject_of\n"
    assert forbidden(imports_of(late, "service.fhir")) == [
        "service.mappers",
        "service.mappers.subject_of",
    ]
    relative = "from ...config import Settings\n"
    assert forbidden(imports_of(relative, "service.fhir.bulk")) == [
        "service.config",
        "service.config.Settings",
    ]
