"""The application state as routers see it: the `State` dependency, and the route class
that parses large JSON bodies off the event loop. The state itself is service/app_state.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from service.app_state import AppState, state_of

__all__ = ["OffLoopJsonRoute", "State"]


def _state(request: Request) -> AppState:
    return state_of(request.app)


State = Annotated[AppState, Depends(_state)]


class _OffLoopJsonRequest(Request):
    """A request whose JSON body is parsed on the CPU threads (orjson: a 16 MB Bundle parses
    in a fraction of the time `json` takes, and a C parser holds the GIL while it runs)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await state_of(self.app).off_loop(_parse_json, body)
        return self._json


def _parse_json(body: bytes) -> Any:
    """orjson, falling back to `json` for what only it reads (NaN, integers past 64 bits), so
    what a body means does not change; the fallback's error is the one FastAPI reports."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


class OffLoopJsonRoute(APIRoute):
    """Routes that take large JSON bodies: the body is parsed off the event loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OffLoopJsonRequest(request.scope, request.receive))

        return route
