"""create_app(settings): the FastAPI application.

Middleware, outermost first: request id (from `X-Request-ID` or new) and an access log line
with method, path, status and milliseconds, never bodies or patient data; then a request
body size limit (413 OperationOutcome).
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.api import cds_hooks, health, match, pages, smart, sweeps, trials
from service.api.outcome import install_error_handlers, operation_outcome
from service.api.state import AppState, build_state
from service.config import Settings
from service.errors import PayloadTooLarge

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
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, request_id)
            return
        received = 0
        status = 500
        started = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"request body larger than {self.max_body_bytes} bytes")
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(
                    (b"x-request-id", request_id.encode("latin-1"))
                )
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        finally:
            log.info(
                "%s %s %s %d %.1fms",
                request_id,
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )

    async def _too_large(self, send: Send, request_id: str) -> None:
        body = orjson.dumps(
            operation_outcome("too-costly", f"request body larger than {self.max_body_bytes} bytes")
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/fhir+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, state: AppState | None = None) -> FastAPI:
    """The API. `state` may be given (tests); otherwise it is built from `settings` at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.cohort = state or build_state(settings)
        # The code tables, trials and registry live as long as the process: keep them out of
        # the collector's full passes (about 50 ms each otherwise, a p99 latency tail).
        gc.freeze()
        try:
            async with sweeps.lifespan(app):  # the run store, background sweeps, the schedule
                yield
        finally:
            await app.state.cohort.aclose()

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
    app.include_router(sweeps.router)
    app.include_router(cds_hooks.router)
    app.include_router(smart.router)
    app.include_router(pages.router)
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The published contract (openapi/openapi.json), generated from the app itself."""
    app = create_app(settings or Settings(auth_disabled=True))
    return app.openapi()
