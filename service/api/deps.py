"""Request-scoped dependencies: the caller, the request id, the scope check and the audit row.

- `Caller`: the validated bearer token (service/security.py); with auth disabled (loopback
  only) the anonymous caller, who holds every scope.
- `audited(action)`: the one way an endpoint writes its audit row. Declared on the route
  (`dependencies=[audited("match")]`) it opens the call's `AuditEntry` before anything else
  is resolved, the handler fills it in through `Audit`, and when the call ends - answered,
  refused (401, 403, 422) or failed - the row is written off the event loop, before the
  response leaves: a row that cannot be written turns the answer into a 503 with no patient
  data. `until_sent=True` writes it after a streamed body has been sent instead (the cohort
  page learns which patients it showed while it streams). A handler whose answer reports
  writes that must follow the row (a decision, then its write-back) writes it earlier, once,
  with `await audit.write_now()`.
- `scoped(scope)`: the one scope check (`security.grants`: `cohort-match/*.read` grants every
  read scope, never a write one); the caller and a refusal go into the audit row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam

from service.api.state import State
from service.audit import AuditEntry
from service.errors import ServiceError, Unauthorized
from service.security import ANONYMOUS, Principal, require_scope

__all__ = ["Audit", "Caller", "RequestId", "audited", "scoped"]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _caller(request: Request, state: State) -> Principal:
    token = _bearer(request)
    if state.validator is None:  # auth disabled (loopback only, enforced by Settings)
        return Principal(ANONYMOUS.subject, None, ANONYMOUS.scopes, token)
    if token is None:
        raise Unauthorized("a bearer token is required")
    return state.validator.validate(token)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


Caller = Annotated[Principal, Depends(_caller)]
RequestId = Annotated[str, Depends(_request_id)]


def audited(action: str, *, until_sent: bool = False) -> DependsParam:
    """The route dependency that writes the call's one audit row (see the module docstring).
    The trial named in the path (`trial_id`) is filled in at once."""

    async def entry(request: Request, state: State, request_id: RequestId) -> AsyncIterator[None]:
        audit = AuditEntry(action, trial_id=request.path_params.get("trial_id"))
        written = False

        async def write() -> None:
            nonlocal written
            if not written:
                await state.audit.arecord(audit.record(request_id))
                written = True

        audit.writer = write
        request.state.audit = audit
        try:
            yield
        except ServiceError as exc:
            audit.outcome = f"error {exc.status}"
            raise
        except RequestValidationError:
            audit.outcome = "error 422"
            raise
        finally:
            await write()  # unless the handler wrote it already (AuditEntry.write_now)
        for after in audit.after:  # only once the call succeeded and its row is in
            await asyncio.to_thread(after)

    # "function": the exit runs when the handler returns, before the response is sent.
    return DependsParam(entry, scope="request" if until_sent else "function")


async def _current(request: Request) -> AuditEntry:
    audit: AuditEntry | None = getattr(request.state, "audit", None)
    if audit is None:  # a route that checks scopes or audits must declare audited(...)
        raise RuntimeError(f"{request.url.path}: the route declares no audited(...) dependency")
    return audit


Audit = Annotated[AuditEntry, Depends(_current)]


def scoped(scope: str) -> Callable[..., Awaitable[Principal]]:
    """The dependency that lets a caller through only with `scope` (or its wildcard)."""

    async def check(caller: Caller, audit: Audit) -> Principal:
        audit.subject, audit.client_id = caller.subject, caller.client_id
        require_scope(caller, scope)
        return caller

    return check
