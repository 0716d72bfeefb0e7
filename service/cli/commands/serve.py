"""`serve`: the HTTP API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli.options import fail
from service.config import Settings, get_settings

__all__ = ["serve_command"]


def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default COHORT_MATCH_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default COHORT_MATCH_PORT).")] = None,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn
    from pydantic import ValidationError

    from service.main import create_app

    base = get_settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        settings = Settings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        raise fail(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )
