"""Where the bundled data lives: trials, code tables and the demo population.

In a source checkout they sit at the top of the repository, where reviewers find them; an
installed wheel carries a copy in `service/_data` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_root"]


def data_root() -> Path:
    packaged = Path(__file__).resolve().parent / "_data"
    if (packaged / "trials").is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent
