"""Request-scoped dependencies: the caller (validated bearer token) and the request id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.state import State
from service.errors import Unauthorized
from service.security import ANONYMOUS, Principal

__all__ = ["Caller", "RequestId"]


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
    principal = state.validator.validate(token)
    request.state.principal = principal
    return principal


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


Caller = Annotated[Principal, Depends(_caller)]
RequestId = Annotated[str, Depends(_request_id)]
