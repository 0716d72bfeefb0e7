"""JSON parsed the strict way: a document with a duplicate key in any object is an error.

A parser that keeps the first of two keys (several do) and one that keeps the last read
different documents; the output contract has each key once (issue 13 section 4).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

__all__ = ["DuplicateKey", "strict_loads"]


class DuplicateKey(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    repeated = sorted(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
    if repeated:
        raise DuplicateKey(f"duplicate keys: {repeated}")
    return dict(pairs)


def strict_loads(text: str | bytes) -> Any:
    return json.loads(text, object_pairs_hook=_unique)
