"""Log hygiene: secrets in URLs never reach a log line.

Uvicorn's access log prints each request's full path with its query string. SMART callbacks
carry `code` and `state`, page links a one-time `ticket`, and some clients put `access_token`
or `launch` in the query: their values are replaced by `REDACTED` before the line is written.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

__all__ = ["SECRET_PARAMETERS", "RedactSecrets", "install_log_redaction", "redact_query"]

SECRET_PARAMETERS = frozenset(
    {"code", "state", "ticket", "access_token", "id_token", "refresh_token", "launch"}
)
REDACTED = "REDACTED"


def redact_query(path: str) -> str:
    """`path` with the values of SECRET_PARAMETERS in its query string replaced."""
    base, sep, query = path.partition("?")
    if not sep or not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(key.lower() in SECRET_PARAMETERS for key, _ in pairs):
        return path
    cleaned = [(k, REDACTED if k.lower() in SECRET_PARAMETERS else v) for k, v in pairs]
    return f"{base}?{urlencode(cleaned, safe='/:')}"


class RedactSecrets(logging.Filter):
    """For uvicorn.access records, whose args are (client, method, path, http version,
    status): the path's secret query values are redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def install_log_redaction() -> None:
    """Attach RedactSecrets to uvicorn's access logger once."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in access.filters):
        access.addFilter(RedactSecrets())
