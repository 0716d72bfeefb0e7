"""HTML responses with the headers every page carries.

- `Cache-Control: no-store`: pages hold patient data; no shared or back-button cache.
- `Referrer-Policy: no-referrer`: the first page's URL carries a one-time ticket, and source
  links lead to the EHR; neither should learn the other's URLs.
- CSP: own styles only, no scripts at all, forms post only to us, and framing only by the
  EHRs on the allowlist (`frame-ancestors`), which is what lets an EHR embed the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from fastapi.responses import HTMLResponse, StreamingResponse

__all__ = ["html", "page_headers", "stream"]


def page_headers(frame_ancestors: Sequence[str]) -> dict[str, str]:
    ancestors = " ".join(["'self'", *frame_ancestors])
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            f"base-uri 'none'; frame-ancestors {ancestors}"
        ),
    }


def html(body: str, frame_ancestors: Sequence[str], status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=page_headers(frame_ancestors))


def stream(chunks: AsyncIterator[str], frame_ancestors: Sequence[str]) -> StreamingResponse:
    headers = page_headers(frame_ancestors)
    # Proxies (nginx) buffer responses by default, which would hide the progress lines.
    headers["X-Accel-Buffering"] = "no"
    return StreamingResponse(chunks, media_type="text/html; charset=utf-8", headers=headers)
