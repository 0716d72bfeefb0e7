"""Where a sweep reads its population: a directory (or file), or a FHIR server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.config import Settings
from service.errors import BadRequest

__all__ = ["Source", "configured_source"]


@dataclass(frozen=True)
class Source:
    """Where a sweep reads the population: a directory (or file) or a FHIR server."""

    kind: Literal["files", "fhir"]
    location: str

    @classmethod
    def files(cls, path: Path) -> Source:
        if not path.exists():
            raise BadRequest(f"no such file or directory: {path}")
        return cls("files", str(path.resolve()))

    @classmethod
    def fhir(cls, url: str) -> Source:
        if not url.lower().startswith(("http://", "https://")):
            raise BadRequest(f"--source must be a FHIR base URL (http or https), got {url!r}")
        return cls("fhir", url.rstrip("/"))


def configured_source(settings: Settings) -> Source | None:
    """The source of API and scheduled sweeps: COHORT_MATCH_SWEEP_DATA_DIR, else the FHIR
    server; None when neither is configured."""
    if settings.sweep_data_dir is not None:
        return Source.files(settings.sweep_data_dir)
    if settings.fhir_base_url:
        return Source.fhir(settings.fhir_base_url)
    return None
