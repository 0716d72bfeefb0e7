"""The OpenAPI document published in openapi/openapi.json."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.schemas import RankedListPublic

__all__ = ["build_openapi"]


def build_openapi() -> dict[str, Any]:
    schema = RankedListPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    components["RankedListPublic"] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cohort-match",
            "version": __version__,
            "description": (
                "Ranked clinical-trial candidates with the evidence behind every verdict. "
                "PatientResultPublic is one patient's result; RankedListPublic a ranked cohort."
            ),
        },
        "paths": {},
        "components": {"schemas": components},
    }
