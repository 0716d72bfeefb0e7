"""Every API error is a FHIR OperationOutcome (R4), rendered here and nowhere else."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError

__all__ = ["install_error_handlers", "operation_outcome"]

FHIR_JSON = "application/fhir+json"


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def _respond(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        operation_outcome(code, message), status_code=status, media_type=FHIR_JSON, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _respond(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        body = getattr(exc, "body", None)
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            # A body that says it is a Bundle is judged as one: name what is wrong with it,
            # not that it lacks the other branch's `patient`.
            errors = [e for e in errors if "BundleInput" in e.get("loc", ())] or errors
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _respond(422, "invalid", f"{where}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "not-supported", 413: "too-costly"}.get(
            exc.status_code, "processing"
        )
        # Starlette's 405 names the allowed methods in `Allow` (RFC 9110 15.5.6): keep it.
        return _respond(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return _respond(500, "exception", "internal error; see the service log for the request id")
