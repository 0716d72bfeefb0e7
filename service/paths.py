"""Where the bundled data lives: trials, code tables and the demo population; and how their
YAML is parsed.

In a source checkout they sit at the top of the repository, where reviewers find them; an
installed wheel carries a copy in `service/_data` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["data_root", "parse_yaml"]

# libyaml's safe loader when the build has it: about ten times faster than the pure-Python
# parser on the value-set files' long definition lists and on the trial file.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, with libyaml when available; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader either way)


def data_root() -> Path:
    packaged = Path(__file__).resolve().parent / "_data"
    if (packaged / "trials").is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent
