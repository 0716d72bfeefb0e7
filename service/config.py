"""Settings: the only place the environment is read (variables prefixed COHORT_MATCH_).

Unsafe combinations are refused here, before anything starts: turning API authentication off
is allowed only when the service binds to a loopback address (the local demo).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.paths import data_root

__all__ = ["Settings", "get_settings", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COHORT_MATCH_", extra="ignore")

    # --- trials and code tables
    trials_dir: Path = Field(default_factory=lambda: data_root() / "trials")
    terminology_dir: Path = Field(default_factory=lambda: data_root() / "terminology")
    # A hospital's own local-code map, added to terminology/site_code_map.csv.
    site_code_map: Path | None = None
    demo_dir: Path = Field(default_factory=lambda: data_root() / "demo")
    log_level: str = "WARNING"

    # --- the FHIR server we read from
    fhir_base_url: str | None = None
    fhir_auth: Literal["none", "bearer", "smart-backend", "passthrough"] = "none"
    fhir_token: SecretStr | None = None
    fhir_token_url: str | None = None
    fhir_client_id: str | None = None
    fhir_private_key: Path | None = None
    fhir_key_id: str | None = None
    fhir_algorithm: Literal["RS384", "ES384"] = "RS384"
    fhir_scope: str = " ".join(
        f"system/{kind}.rs"
        for kind in (
            "Patient",
            "Observation",
            "Condition",
            "MedicationStatement",
            "MedicationRequest",
            "AllergyIntolerance",
            "Procedure",
            "ResearchSubject",
            "Group",
        )
    )
    fhir_timeout_s: float = 20.0
    fhir_page_size: int = 200
    fhir_concurrency: int = 8  # patients fetched at once by /candidates

    # --- the HTTP API
    host: str = "127.0.0.1"
    port: int = 8000
    auth_disabled: bool = False
    auth_jwks_file: Path | None = None  # JWKS (JSON) with the token issuer's public keys
    auth_issuer: str | None = None
    auth_audience: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    database_url: str = "sqlite:///cohort-match.db"

    # --- sweeps (issue 4): add fields for sweeps below this line

    # --- CDS Hooks (issue 5): add fields for CDS Hooks below this line

    # --- SMART App Launch and pages (issue 5): add fields for SMART/pages below this line

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if self.auth_disabled and not is_loopback(self.host):
            raise ValueError(
                "COHORT_MATCH_AUTH_DISABLED=true is refused unless COHORT_MATCH_HOST is a "
                f"loopback address (got {self.host!r})"
            )
        if self.fhir_auth == "bearer" and self.fhir_token is None:
            raise ValueError("COHORT_MATCH_FHIR_AUTH=bearer needs COHORT_MATCH_FHIR_TOKEN")
        if self.fhir_auth == "smart-backend" and not (
            self.fhir_token_url and self.fhir_client_id and self.fhir_private_key
        ):
            raise ValueError(
                "COHORT_MATCH_FHIR_AUTH=smart-backend needs COHORT_MATCH_FHIR_TOKEN_URL, "
                "COHORT_MATCH_FHIR_CLIENT_ID and COHORT_MATCH_FHIR_PRIVATE_KEY"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
