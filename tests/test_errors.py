"""The one exception tree (service/errors.py): every exception class under service/ joins it,
and the drawing in its docstring names each one, where it is, and nothing else."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import service
from service import errors
from service.errors import CohortMatchError

# Alembic's env.py and revisions run migrations when imported: not modules of the service.
SKIPPED = ("service.sweeps.migrations",)


def service_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(service.__path__, "service."):
        if not info.name.startswith(SKIPPED):
            names.append(info.name)
    return names


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined (not just imported) in a module under service/."""
    found: dict[str, type[BaseException]] = {}
    for name in service_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def drawn() -> dict[str, str | None]:
    """Class name -> its parent's name, as the docstring draws the tree."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z_]\w*)\b", line)
        root = line.split() == ["CohortMatchError", "the", "root"]
        if not match or ("──" not in line and not root):
            continue
        depth = line.index(match.group(2))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(2)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(2)))
    return parents


def test_every_exception_class_joins_the_tree() -> None:
    outside = [
        where
        for where, cls in defined_exceptions().items()
        if not issubclass(cls, CohortMatchError)
    ]
    assert outside == []


def test_the_docstring_draws_every_class_under_its_real_parent() -> None:
    classes = {cls.__name__: cls for cls in defined_exceptions().values()}
    parents = drawn()
    assert sorted(parents) == sorted(classes), "drawn and defined differ"
    for name, parent in parents.items():
        if parent is None:
            assert name == "CohortMatchError"
            continue
        assert classes[parent] in classes[name].__bases__, f"{name} is not drawn under its base"


def test_the_modules_are_found() -> None:
    """The walk reaches nested packages (a test that reads nothing would pass vacuously)."""
    names = set(defined_exceptions())
    assert "service.fhir.bulk.download.Gone" in names
    assert "service.sweeps.heartbeat.Cancelled" in names
    assert "service.errors.ServiceError" in names
