"""Server-rendered pages: Jinja2 templates and one small stylesheet, no build step.

`render(name, **context)` renders a template from service/web/templates with autoescaping on
(every value from a FHIR server is untrusted text). The view models are in `views`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.web.views import number

__all__ = ["STATIC", "render", "stylesheet"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = number
    return env


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)


@lru_cache(maxsize=1)
def stylesheet() -> bytes:
    return (STATIC / "app.css").read_bytes()
