"""The FHIR client factory: every FhirClient the API uses is made here, from Settings.

    configured          the pooled client of COHORT_MATCH_FHIR_BASE_URL, with the configured
                        credentials (None when no server is configured): /match, /candidates,
                        /readyz, CDS Hooks calls for that server
    ehr(iss)            one pooled client per EHR FHIR server a SMART session reads (the
                        session's access token is passed per call)
    transient(url, s)   a client of its own for one request: a CDS call carrying the EHR user's
                        token, so that nothing read with one user's token is cached for another

Clients share one `transport` when one is given: tests hand in an `httpx.MockTransport` (or
anything else that answers) instead of patching the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from service.config import Settings
from service.fhir import FhirClient
from service.upstream import auth_from_settings

__all__ = ["FhirClients"]


class FhirClients:
    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.configured: FhirClient | None = None
        if settings.fhir_base_url:
            self.configured = FhirClient(
                settings.fhir_base_url,
                auth=auth_from_settings(settings),
                timeout_s=settings.fhir_timeout_s,
                page_size=settings.fhir_page_size,
                transport=transport,
            )
        self._ehrs: dict[str, FhirClient] = {}

    def ehr(self, iss: str) -> FhirClient:
        """The pooled client of an EHR's FHIR server (no credentials of ours)."""
        client = self._ehrs.get(iss)
        if client is None:
            client = FhirClient(
                iss,
                timeout_s=self.settings.fhir_timeout_s,
                page_size=self.settings.fhir_page_size,
                transport=self.transport,
            )
            self._ehrs[iss] = client
        return client

    @asynccontextmanager
    async def transient(self, base_url: str, timeout_s: float) -> AsyncIterator[FhirClient]:
        """A client for one request, closed after it."""
        async with FhirClient(
            base_url,
            timeout_s=timeout_s,
            page_size=self.settings.fhir_page_size,
            transport=self.transport,
        ) as client:
            yield client

    async def aclose(self) -> None:
        if self.configured is not None:
            await self.configured.aclose()
        for client in self._ehrs.values():
            await client.aclose()
        self._ehrs.clear()
