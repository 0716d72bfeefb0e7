"""FHIR token search as the test servers answer it (FHIR R4 search, token parameters):
`system|code` matches that coding, `code` alone matches the code in any system, `|code` a
coding without a system. Several values, comma-separated, are ORed."""

from __future__ import annotations

from typing import Any


def token_matches(codings: list[dict[str, Any]], searched: str) -> bool:
    for value in searched.split(","):
        system, bar, code = value.rpartition("|")
        for coding in codings:
            if coding.get("code") != code:
                continue
            if not bar or coding.get("system", "") == system:
                return True
    return False
