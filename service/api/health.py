"""/healthz (the process is up) and /readyz (trials loaded and the FHIR server answers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.outcome import operation_outcome
from service.api.state import State
from service.errors import FhirError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready (OperationOutcome)"}})
async def readyz(state: State) -> Any:
    if not state.trials:
        return JSONResponse(operation_outcome("not-found", "no trials loaded"), status_code=503)
    if state.fhir.configured is None:
        return JSONResponse(
            operation_outcome("not-supported", "no FHIR server configured"), status_code=503
        )
    try:
        statement = await state.fhir.configured.capability()
    except FhirError as exc:
        return JSONResponse(
            operation_outcome("transient", f"FHIR server not ready: {exc.message}"), status_code=503
        )
    return {"status": "ready", "trials": sorted(state.trials), "fhir": statement.get("fhirVersion")}
