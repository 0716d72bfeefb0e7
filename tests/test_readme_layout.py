"""The README's Layout names every module and package of service/, one line each.

The Layout is a tree in a fenced block: an entry is a line whose first word ends in `.py` or
`/`, indented two spaces under its folder; anything else (a wrapped description, a `#` group
heading) is text. What must be there: every folder of service/ that holds Python, and every
`.py` file in it except `__init__.py` and `__main__.py` (their package's line speaks for them)
and the Alembic revisions under `db/migrations/versions/` (one per schema change, named by
their revision; the `versions/` line stands for them). An entry under service/ that names
nothing on disk fails too, so a rename or a removal updates the Layout in the same change.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVICE = ROOT / "service"
README = ROOT / "README.md"
ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.-]+(?:\.py|/))(?:\s|$)")
# covered by their package's (or their folder's) line
COVERED_BY_PARENT = {"__init__.py", "__main__.py"}
REVISIONS = Path("service/db/migrations/versions")


def layout_block(text: str) -> list[str]:
    """The lines of the first fenced block after the `## Layout` heading."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1].splitlines()


def layout_entries(lines: list[str]) -> set[str]:
    """Each entry's path from the checkout's top (`service/fhir/client.py`, `service/api/`)."""
    entries: set[str] = set()
    # (indent, path) of the folders above the current line
    folders: list[tuple[int, str]] = []
    for line in lines:
        match = ENTRY.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while folders and folders[-1][0] >= indent:
            folders.pop()
        expected = folders[-1][0] + 2 if folders else 0
        if indent != expected:
            continue  # a wrapped description that happens to start with a path
        path = (folders[-1][1] if folders else "") + match["name"]
        entries.add(path)
        if path.endswith("/"):
            folders.append((indent, path))
    return entries


def required_entries() -> set[str]:
    required: set[str] = set()
    for module in SERVICE.rglob("*.py"):
        relative = module.relative_to(ROOT)
        if "__pycache__" in relative.parts:
            continue
        folder = relative.parent
        for depth in range(1, len(folder.parts) + 1):
            required.add("/".join(folder.parts[:depth]) + "/")
        if module.name in COVERED_BY_PARENT or folder == REVISIONS:
            continue
        required.add(relative.as_posix())
    return required


def test_the_layout_parser_reads_a_tree() -> None:
    lines = [
        "service/          the application",
        "  # a group heading",
        "  fhir/           HTTP only",
        "    client.py     the client",
        "                  wrapped.py text, not an entry",
        "  main.py         create_app",
        "scripts/          check",
    ]
    assert layout_entries(lines) == {
        "service/",
        "service/fhir/",
        "service/fhir/client.py",
        "service/main.py",
        "scripts/",
    }


def test_every_module_and_package_is_in_the_layout() -> None:
    entries = layout_entries(layout_block(README.read_text(encoding="utf-8")))
    missing = sorted(required_entries() - entries)
    assert not missing, "README Layout does not name: " + ", ".join(missing)


def test_every_service_entry_of_the_layout_exists() -> None:
    entries = layout_entries(layout_block(README.read_text(encoding="utf-8")))
    stale = sorted(
        entry
        for entry in entries
        if entry.startswith("service/") and not (ROOT / entry.rstrip("/")).exists()
    )
    assert not stale, "README Layout names what is not in service/: " + ", ".join(stale)
