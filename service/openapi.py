"""The OpenAPI document published in openapi/openapi.json, generated from the app."""

from __future__ import annotations

from typing import Any

from service.config import Settings
from service.main import create_app

__all__ = ["build_openapi"]


def build_openapi() -> dict[str, Any]:
    # Settings only shape the runtime, not the contract; auth off avoids needing keys here.
    return create_app(Settings(auth_disabled=True, host="127.0.0.1")).openapi()
