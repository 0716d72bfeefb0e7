"""Settings: the only place the environment is read (variables prefixed COHORT_MATCH_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.paths import data_root

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COHORT_MATCH_", extra="ignore")

    trials_dir: Path = Field(default_factory=lambda: data_root() / "trials")
    terminology_dir: Path = Field(default_factory=lambda: data_root() / "terminology")
    # A hospital's own local-code map, added to terminology/site_code_map.csv.
    site_code_map: Path | None = None
    demo_dir: Path = Field(default_factory=lambda: data_root() / "demo")
    log_level: str = "WARNING"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
