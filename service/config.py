"""Settings: the only place the environment is read (variables prefixed COHORT_MATCH_).

Unsafe combinations are refused here, before anything starts: turning API authentication off
is allowed only when the service binds to a loopback address (the local demo).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.paths import data_root

__all__ = ["CommaList", "Settings", "get_settings", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_commas(value: object) -> object:
    """`a, b,,c` -> ("a", "b", "c"); a list or tuple (from code) passes through to validation."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _without_trailing_slash(urls: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(url.rstrip("/") for url in urls)


# A setting the environment gives as one comma-separated string, parsed once here. NoDecode:
# pydantic-settings would otherwise read a tuple-typed variable as JSON.
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COHORT_MATCH_", extra="ignore")

    # --- trials and code tables
    trials_dir: Path = Field(default_factory=lambda: data_root() / "trials")
    terminology_dir: Path = Field(default_factory=lambda: data_root() / "terminology")
    # A hospital's own local-code map, added to terminology/site_code_map.csv.
    site_code_map: Path | None = None
    demo_dir: Path = Field(default_factory=lambda: data_root() / "demo")
    # Optional FHIR terminology server (e.g. https://tx.example.org/fhir): a SNOMED CT or
    # RxNorm code the tables do not list is asked about once per patient fetch (ValueSet/
    # $validate-code against the value sets' definitions) and the answer cached. When it
    # fails, the records concerned make their criteria `unknown`. Unset: the tables alone.
    terminology_url: str | None = None
    terminology_timeout_s: float = Field(5.0, gt=0)
    log_level: str = "WARNING"
    # The Patient.identifier type code (HL7 v2 table 0203) shown as the patient's `mrn` in
    # results, CSV, the CLI table and the pages: MR (medical record number) unless the site
    # files its chart numbers under another type (PI, PT, a local code).
    mrn_type: str = Field("MR", min_length=1)

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
            "MedicationAdministration",
            "MedicationDispense",
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
    # A Bundle body (or the CDS prefetch bundles together) with more entries: 413.
    max_bundle_entries: int = Field(20_000, ge=1)
    # Threads that parse, map and screen request bodies off the event loop: one keeps /healthz
    # quickest (more add no throughput under the GIL; scripts/bench_loop.py).
    cpu_threads: int = Field(1, ge=1, le=64)
    database_url: str = "sqlite:///cohort-match.db"

    # --- sweeps
    # Runs are stored in COHORT_MATCH_DATABASE_URL (tables sweep_runs, sweep_results).
    # API and scheduled sweeps read this directory of Bundles / NDJSON when set; otherwise the
    # FHIR server (COHORT_MATCH_FHIR_BASE_URL) by Bulk Data $export. The CLI's --data/--source
    # override both.
    sweep_data_dir: Path | None = None
    # $export level. "system" is the default because some servers (sekmet-fhir) keep
    # ResearchSubject outside the Patient compartment, so Patient/Group exports miss it.
    sweep_export_level: Literal["system", "patient", "group"] = "system"
    sweep_export_group: str | None = None  # the Group id for level "group"
    # Per trial, a 5-field cron expression or an interval "every 30m|6h|1d":
    # COHORT_MATCH_SWEEP_SCHEDULE='{"NCT06946485": "0 2 * * *"}'
    sweep_schedule: dict[str, str] = Field(default_factory=dict)
    sweep_timezone: str | None = None  # IANA zone for cron times and "today"; default the host's
    sweep_workers: int | None = Field(None, ge=1)  # worker processes; default by input size
    # Where screens and sweeps spool per-patient data (owner-only; see service/spool.py).
    spool_dir: Path | None = None  # None: the system temp directory
    sweep_batch_size: int = Field(500, ge=1, le=100_000)  # results written per transaction
    # A running sweep writes a heartbeat this often; one silent for sweep_stale_after_s (or
    # whose process is gone, on the same host) is marked failed by the next sweep.
    sweep_heartbeat_s: float = Field(5.0, gt=0)
    sweep_stale_after_s: float = Field(120.0, gt=0)
    sweep_keep_results: int = Field(30, ge=2)  # completed runs per trial that keep results
    # After a completed run, PUT the candidates Group and ResearchSubjects to the FHIR server.
    sweep_write_back: bool = False
    # Incremental FHIR sweeps: keep a snapshot of what the trial reads and ask the server only
    # for what changed since the last run (`_since`, deletions from the export's `deleted`
    # files and type history); everyone is screened again at the new as_of. A full export at
    # least every sweep_full_after_days bounds the life of a change a server fails to report.
    sweep_incremental: bool = True
    sweep_full_after_days: float = Field(7.0, gt=0)
    # Where snapshots live; default: beside a SQLite database file (<file>.snapshots/), else
    # ./cohort-match-snapshots. About the size of the export's relevant part.
    sweep_snapshot_dir: Path | None = None

    def snapshot_root(self) -> Path:
        if self.sweep_snapshot_dir is not None:
            return self.sweep_snapshot_dir
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and ":memory:" not in self.database_url:
            database = Path(self.database_url.removeprefix(prefix).split("?")[0])
            return database.with_name(database.name + ".snapshots")
        return Path("cohort-match-snapshots")

    @model_validator(mode="after")
    def _sweeps_safe(self) -> Settings:
        if self.sweep_export_level == "group" and not self.sweep_export_group:
            raise ValueError(
                "COHORT_MATCH_SWEEP_EXPORT_LEVEL=group needs COHORT_MATCH_SWEEP_EXPORT_GROUP"
            )
        if self.sweep_stale_after_s < 3 * self.sweep_heartbeat_s:
            raise ValueError(
                "COHORT_MATCH_SWEEP_STALE_AFTER_S must be at least 3 heartbeats "
                f"(3 x {self.sweep_heartbeat_s} s) so a live sweep is never taken for dead"
            )
        if self.sweep_write_back and not self.fhir_base_url:
            raise ValueError("COHORT_MATCH_SWEEP_WRITE_BACK=true needs COHORT_MATCH_FHIR_BASE_URL")
        return self

    # --- CDS Hooks
    # JWKS (JSON) with the public keys of the CDS clients (EHRs) trusted to call /cds-services.
    # With API auth on and no JWKS, every CDS Hooks call is refused (401).
    cds_jwks_file: Path | None = None
    # Allowed `iss` of CDS client JWTs, comma-separated; empty: any issuer whose key is in the JWKS.
    cds_client_issuers: CommaList = ()
    # This service's public base URL as CDS clients call it. A CDS client JWT's `aud` must be
    # {cds_public_base_url}/cds-services[/{id}[/feedback]] (CDS Hooks 2.0, Trusting CDS Clients).
    cds_public_base_url: str | None = None
    # SMART app launch URL put on cards (link type "smart"); default {cds_public_base_url}/launch.
    cds_smart_launch_url: str | None = None
    # `fhirServer` values a CDS client may send besides COHORT_MATCH_FHIR_BASE_URL, comma-separated;
    # any other fhirServer is refused (400) before a request is sent to it.
    cds_fhir_servers: CommaList = ()
    # From receiving a hook call to answering it. Fetches still running then are abandoned and
    # the answer is no card (the EHR would drop a late answer anyway).
    cds_time_budget_s: float = Field(4.0, gt=0, le=60)
    # A prefetch key sent as null means "the CDS client has no data" (CDS Hooks 2.0). "refetch"
    # treats null as not prefetched, for clients that send null when they did not run the query.
    cds_null_prefetch: Literal["no-data", "refetch"] = "no-data"

    @model_validator(mode="after")
    def _cds_safe(self) -> Settings:
        urls = [self.cds_public_base_url, self.cds_smart_launch_url, *self.cds_fhir_servers]
        for url in urls:
            if url is not None and not url.lower().startswith(("http://", "https://")):
                raise ValueError(f"CDS Hooks URLs must be http(s) URLs (got {url!r})")
        if self.cds_jwks_file is not None and not self.cds_public_base_url:
            raise ValueError(
                "COHORT_MATCH_CDS_JWKS_FILE needs COHORT_MATCH_CDS_PUBLIC_BASE_URL: a CDS client "
                "JWT's audience is this service's public endpoint URL"
            )
        return self

    # --- SMART App Launch and pages
    # FHIR base URLs (the `iss` of a launch) the app may connect to, comma-separated. A launch
    # from any other iss is refused before a single request is sent to it. Each is kept
    # without a trailing slash.
    smart_issuers: Annotated[CommaList, AfterValidator(_without_trailing_slash)] = ()
    smart_client_id: str = "cohort-match"
    # Set for a confidential client (client_secret_basic); unset, the app is a public client.
    smart_client_secret: SecretStr | None = None
    # The redirect URI registered with the EHR (https://cohort.example.org/callback). Unset, it
    # is derived from the request: fine on loopback, wrong behind a proxy, so set it there.
    smart_redirect_uri: str | None = None
    # `launch` (EHR launch) or `launch/patient` (standalone) is added to the patient scope.
    smart_patient_scope: str = "openid fhirUser patient/*.rs online_access"
    smart_cohort_scope: str = "openid fhirUser user/*.rs online_access"
    smart_trial: str | None = None  # the trial the pages open with; unset, the first served
    smart_session_ttl_s: int = 8 * 3600  # a page session, however often its token is refreshed
    smart_launch_ttl_s: int = 600  # from /launch to /callback
    # The patient's record in the EHR, linked from the pages: a URL where `{id}` stands for
    # the FHIR Patient id (https://ehr.example.org/chart?patient={id}). Unset: no link.
    ehr_patient_url: str | None = None

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if self.auth_disabled and not is_loopback(self.host):
            raise ValueError(
                "COHORT_MATCH_AUTH_DISABLED=true is refused unless COHORT_MATCH_HOST is a "
                f"loopback address (got {self.host!r})"
            )
        if self.terminology_url is not None and not self.terminology_url.lower().startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                "COHORT_MATCH_TERMINOLOGY_URL must be an http(s) URL "
                f"(got {self.terminology_url!r})"
            )
        if self.ehr_patient_url is not None and not (
            self.ehr_patient_url.lower().startswith(("http://", "https://"))
            and "{id}" in self.ehr_patient_url
        ):
            raise ValueError(
                "COHORT_MATCH_EHR_PATIENT_URL must be an http(s) URL with {id} in it "
                f"(got {self.ehr_patient_url!r})"
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
