"""create_app(settings): the FastAPI application.

Middleware, outermost first: a request id the service generates for every request (a
client's `X-Request-ID` is logged beside it, never used as the key) and an access log line
with method, path, status and milliseconds, never bodies or patient data; then a request
body size limit (413 OperationOutcome, whether the size was declared or the body streamed in
chunks). Every response carries `X-Request-ID`, a 500 from an unhandled error included.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.api import (
    cds_hooks,
    decisions,
    health,
    match,
    pages,
    patient_trials,
    report,
    smart,
    sweeps,
    trials,
)
from service.api.outcome import install_error_handlers, operation_outcome
from service.app_state import AppState, build_state
from service.clock import Clock
from service.config import Settings
from service.criteria.model import TrialDefinition
from service.errors import PayloadTooLarge
from service.logs import install_log_redaction
from service.spool import remove_stale, spool_root
from service.sweeps.runner import Exporter
from service.terminology import Terminology

__all__ = ["create_app"]

log = logging.getLogger("service.access")


class RequestContext:
    """Pure ASGI middleware: request id, access log, body size limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._outcome(send, request_id, 413, "too-costly", self._too_large_text())
            return
        exchange = _Exchange(self, receive, send, request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except PayloadTooLarge:
            # A chunked body went past the limit while a handler read it.
            exchange.status = 413
            if not exchange.started_response:
                await self._outcome(send, request_id, 413, "too-costly", self._too_large_text())
        except Exception:
            log.exception("%s unhandled error", request_id)
            exchange.status = 500
            if not exchange.started_response:
                await self._outcome(send, request_id, 500, "exception", "internal error")
        finally:
            client_id = headers.get(b"x-request-id", b"")[:64].decode("latin-1")
            log.info(
                "%s %s %s %d %.1fms%s",
                request_id,
                scope["method"],
                scope["path"],
                exchange.status,
                (time.perf_counter() - started) * 1000,
                f" client-request-id={client_id!r}" if client_id else "",
            )

    def _too_large_text(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"

    @staticmethod
    async def _outcome(send: Send, request_id: str, status: int, code: str, text: str) -> None:
        body = orjson.dumps(operation_outcome(code, text))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/fhir+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Exchange:
    """One request through RequestContext: counts the body it receives, stamps the request id
    on the response, and keeps the status for the access log."""

    def __init__(
        self, context: RequestContext, receive: Receive, send: Send, request_id: str
    ) -> None:
        self.context = context
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.received = 0
        self.overflow = False
        self.status = 500
        self.started_response = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.context.max_body_bytes:
                self.overflow = True
                raise PayloadTooLarge(self.context._too_large_text())
        return message

    async def send(self, message: Message) -> None:
        if self.overflow:
            # The framework turned the aborted body read into its own error (FastAPI: 400
            # "error parsing the body"): the answer is the 413 a declared size would get.
            if message["type"] == "http.response.start" and not self.started_response:
                self.status, self.started_response = 413, True
                text = self.context._too_large_text()
                await self.context._outcome(self._send, self.request_id, 413, "too-costly", text)
            return
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started_response = True
            message.setdefault("headers", []).append(
                (b"x-request-id", self.request_id.encode("latin-1"))
            )
        await self._send(message)


def create_app(
    settings: Settings,
    state: AppState | None = None,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    exporter: Exporter | None = None,
    terms: Terminology | None = None,
    trial_definitions: dict[str, TrialDefinition] | None = None,
) -> FastAPI:
    """The API. Its state is built from `settings` at startup (service/app_state.py), with
    `clock`, `transport` (every FHIR client's) or `exporter` (sweeps') in place of the real
    ones when given (and `terms`/`trial_definitions`, the code tables and trial files of
    `settings` already loaded, for tests); a whole `state` may be given instead, and then its
    owner closes it."""
    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = state
        if current is None:
            current = await asyncio.to_thread(
                partial(
                    build_state,
                    settings,
                    clock=clock,
                    transport=transport,
                    exporter=exporter,
                    terms=terms,
                    trials=trial_definitions,
                )
            )
        app.state.cohort = current
        try:
            # Spools of sweeps killed with the last process (service/spool.py).
            await asyncio.to_thread(remove_stale, spool_root(settings.spool_dir))
            # The code tables, trials and registry live as long as the process: keep them out
            # of the collector's full passes (about 50 ms each otherwise, a p99 latency tail).
            gc.freeze()
            current.start()  # the sweep schedule
            yield
        finally:
            if state is None:
                await current.aclose()
            else:
                current.scheduler.shutdown()

    app = FastAPI(
        title="cohort-match",
        version=__version__,
        description=(
            "Finds patients for clinical trials in FHIR R4 data and returns ranked candidates "
            "with the evidence behind every verdict. Errors are FHIR OperationOutcomes."
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(trials.router)
    app.include_router(match.router)
    app.include_router(patient_trials.router)
    app.include_router(sweeps.router)
    app.include_router(decisions.router)
    app.include_router(report.router)
    app.include_router(cds_hooks.router)
    app.include_router(smart.router)
    app.include_router(pages.router)
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app
