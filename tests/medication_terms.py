"""A copy of terminology/ with a few value-set keys changed, for tests of policies whose data
other value sets do not carry yet (`default_course_days`, `review_terms`) or carry differently.

    terms = terms_with(tmp_path, {"anti_infectives_systemic": {"default_course_days": 14}})
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from service.paths import parse_yaml
from service.terminology import Terminology
from tests.conftest import ROOT


def terms_with(
    tmp: Path,
    keys: dict[str, dict[str, Any]],
    rows: dict[str, list[tuple[str, str, str]]] | None = None,
) -> Terminology:
    """Terminology from a copy of terminology/ where each named value set's yaml has `keys`
    set (replacing any value it had) and its csv gains `rows` (system, code, display)."""
    root = tmp / "terminology"
    shutil.copytree(ROOT / "terminology", root)
    for name, changes in keys.items():
        path = root / "valuesets" / f"{name}.yaml"
        meta = parse_yaml(path.read_text(encoding="utf-8"))
        meta.update(changes)
        path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    for name, extra in (rows or {}).items():
        path = root / "valuesets" / f"{name}.csv"
        with path.open("a", encoding="utf-8") as handle:
            for system, code, display in extra:
                handle.write(f"{system},{code},{display},test\n")
    return Terminology.load(root)
