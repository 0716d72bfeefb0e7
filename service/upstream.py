"""The FHIR server this deployment is configured for, as the FHIR layer needs it: the
credentials Settings name, built here so that service/fhir/ never reads Settings.

    auth_from_settings(settings)        the configured credentials
    fhir_auth(settings, base_url)       those credentials for the configured server only
"""

from __future__ import annotations

from service.config import Settings
from service.fhir.auth import Auth, NoAuth, SmartBackendAuth, StaticBearer

__all__ = ["auth_from_settings", "fhir_auth"]


def auth_from_settings(settings: Settings) -> Auth:
    """The FHIR credentials the settings configure ("passthrough" sends none of its own:
    the caller's token is given per request)."""
    if settings.fhir_auth == "bearer" and settings.fhir_token is not None:
        return StaticBearer(settings.fhir_token.get_secret_value())
    if settings.fhir_auth == "smart-backend":
        assert settings.fhir_token_url and settings.fhir_client_id and settings.fhir_private_key
        return SmartBackendAuth(
            settings.fhir_token_url,
            settings.fhir_client_id,
            settings.fhir_private_key.read_bytes(),
            key_id=settings.fhir_key_id,
            algorithm=settings.fhir_algorithm,
            scope=settings.fhir_scope,
        )
    return NoAuth()


def fhir_auth(settings: Settings, base_url: str) -> Auth:
    """The configured FHIR credentials, but only for the configured server: a sweep of
    another URL (`--source`) gets no credentials, so our token never reaches it.
    """
    configured = (settings.fhir_base_url or "").rstrip("/")
    if base_url.rstrip("/") != configured:
        return NoAuth()
    if settings.fhir_auth == "passthrough":
        return NoAuth()  # a sweep has no caller whose token could be passed on
    return auth_from_settings(settings)
