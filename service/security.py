"""API authentication: OAuth 2.0 bearer JWTs validated against the issuer's JWKS.

Checks, in order: signature (a key from the configured JWKS, RS256/RS384/ES256/ES384 only),
issuer, audience, expiry and not-before (60 s leeway), then the scopes an endpoint needs.
Scopes follow the SMART style: `cohort-match/match.read` for /match and
`cohort-match/candidates.read` for /candidates; `cohort-match/*.read` grants both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from service.errors import Forbidden, Unauthorized

__all__ = ["Principal", "TokenValidator", "require_scope"]

ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]
LEEWAY_S = 60


@dataclass(frozen=True)
class Principal:
    """Who called: for the audit trail. Never holds clinical data."""

    subject: str
    client_id: str | None
    scopes: frozenset[str]
    token: str | None = None  # kept only for passthrough to the FHIR server


ANONYMOUS = Principal(
    subject="anonymous (auth disabled)", client_id=None, scopes=frozenset({"cohort-match/*.read"})
)


class TokenValidator:
    def __init__(self, keys: KeySet, *, issuer: str, audience: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def from_jwks_file(cls, path: Path, *, issuer: str, audience: str) -> TokenValidator:
        return cls(
            KeySet.import_key_set(json.loads(path.read_text(encoding="utf-8"))),
            issuer=issuer,
            audience=audience,
        )

    def validate(self, token: str) -> Principal:
        try:
            decoded = jwt.decode(token, self.keys, algorithms=ALGORITHMS)
            claims: dict[str, Any] = decoded.claims
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(claims)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"invalid bearer token: {exc}") from exc
        client = claims.get("client_id") or claims.get("azp")
        return Principal(
            subject=_identity(claims["sub"], "sub"),
            client_id=_identity(client, "client_id") if client else None,
            scopes=_scopes(claims.get("scope", "")),
            token=token,
        )


# The audit table's columns for who called (service/audit.py): a longer or unprintable value is
# refused here, before any patient data is read, rather than failing the audit write after.
MAX_IDENTITY_CHARS = 256


def _identity(value: object, claim: str) -> str:
    if not isinstance(value, str) or not value:
        raise Unauthorized(f"invalid bearer token: {claim} must be a non-empty string")
    if len(value) > MAX_IDENTITY_CHARS or not value.isprintable():
        raise Unauthorized(
            f"invalid bearer token: {claim} must be at most {MAX_IDENTITY_CHARS} printable "
            "characters"
        )
    return value


def _scopes(value: object) -> frozenset[str]:
    """RFC 8693 / SMART: a space-separated string; some servers send a list of strings."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise Unauthorized("invalid bearer token: scope must be a string or a list of strings")


def require_scope(principal: Principal, scope: str) -> None:
    """Raise Forbidden unless the principal holds `scope` (or the matching wildcard)."""
    resource, _, action = scope.partition("/")
    # `cohort-match/*.read` grants every read scope, never a write one.
    if scope in principal.scopes or (
        action.endswith(".read") and f"{resource}/*.read" in principal.scopes
    ):
        return
    raise Forbidden(f"token lacks scope {scope}")
