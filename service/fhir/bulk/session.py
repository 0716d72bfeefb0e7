"""One export's view of the FhirClient: its pool, host-bound credentials, host check and
retry helper, with the export's policy, sleep, clock and progress callback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from service.errors import FhirError, FhirTemporaryError
from service.fhir.bulk.results import BulkPolicy, ExportProgress
from service.fhir.client import FhirClient
from service.fhir.responses import outcome_text
from service.fhir.transport import Retry

__all__ = ["Clock", "Session", "Sleep", "suffix"]

log = logging.getLogger("service.fhir.bulk")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


def suffix(outcome: dict[str, Any] | None) -> str:
    """`: <the OperationOutcome's text>`, or "" when it says nothing."""
    text = outcome_text(outcome)
    return f": {text}" if text else ""


class Session:
    """One export's view of the client: its pool, auth and host rule, plus our timing."""

    def __init__(
        self,
        client: FhirClient,
        policy: BulkPolicy,
        allow_hosts: frozenset[str],
        sleep: Sleep,
        clock: Clock,
        progress: Callable[[ExportProgress], None] | None,
    ) -> None:
        self.client = client
        self.allow_hosts = allow_hosts
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self._progress = progress

    def report(self, stage: str, message: str, done: int = 0, total: int = 0) -> None:
        if self._progress is not None:
            self._progress(ExportProgress(stage, message, done, total))

    def auth(self, signed: bool = True) -> httpx.Auth | None:
        """The client's credentials, bound to its host and the admitted ones; or none."""
        return self.client.signed(allow_hosts=self.allow_hosts) if signed else None

    def trusted(self, url: str, what: str, where: str) -> str:
        return self.client.trusted(url, what, where, self.allow_hosts)

    def send(
        self,
        request: httpx.Request,
        classify: Callable[[httpx.Response], Awaitable[T | Retry]],
        *,
        signed: bool = True,
        stream: bool = False,
        what: str,
    ) -> Awaitable[T]:
        """`request` through the one retry helper with the export's transfer policy."""

        def network(exc: httpx.TransportError, request: httpx.Request) -> FhirError:
            return FhirTemporaryError(f"{what} failed: {exc!r}", url=str(request.url))

        return self.client.send(
            request,
            classify,
            auth=self.auth(signed),
            policy=self.policy.retry,
            stream=stream,
            sleep=self.sleep,
            on_network_error=network,
            on_retry=lambda error: self.report("retry", error.message),
        )

    async def cancel(self, job: str, why: str) -> None:
        """DELETE the job; never raises (it is clean-up, often on the way out of a failure)."""
        try:
            request = self.client.build("DELETE", job)
            response = await self.client.send_once(request, auth=self.auth())
        except (httpx.HTTPError, FhirError) as exc:
            log.warning("could not DELETE export job %s (%s): %s", job, why, exc)
            return
        if response.status_code in (200, 202, 204, 404):
            log.info("export job %s deleted (%s)", job, why)
        else:
            log.warning("DELETE of export job %s (%s) answered %d", job, why, response.status_code)
