"""API authentication: OAuth 2.0 bearer JWTs validated against the issuer's JWKS.

Checks, in order: signature (a key from the configured JWKS, RS256/RS384/ES256/ES384 only),
issuer, audience, expiry and not-before (60 s leeway), then the scopes an endpoint needs.

Scopes are SMART v1 shaped, `<context>/<resource>.<read|write>`: `cohort-match/match.read`
for /match, `cohort-match/candidates.read` for /candidates, `cohort-match/sweeps.read` and
`cohort-match/sweeps.write` for sweeps. `grants` is the one wildcard rule, used by every
endpoint through the `scoped` dependency (service/api/deps.py): `*` stands for any resource of
the same context and the same action, so `cohort-match/*.read` grants every read scope and
`cohort-match/*.write` every write scope; reading never grants writing, nor writing reading.
Nothing else is a wildcard: `cohort-match/*.*`, `cohort-match/*` and scopes of another
context (`user/*.read`, `system/*.*`, which are about an EHR's FHIR resources) grant nothing
here.
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

__all__ = ["ANONYMOUS", "Principal", "TokenValidator", "grants", "require_scope"]

ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]
LEEWAY_S = 60


@dataclass(frozen=True)
class Principal:
    """Who called: for the audit trail. Never holds clinical data."""

    subject: str
    client_id: str | None
    scopes: frozenset[str]
    token: str | None = None  # kept only for passthrough to the FHIR server


# With COHORT_MATCH_AUTH_DISABLED (loopback only, enforced by Settings) every call is this
# caller, who may do everything the API offers.
ANONYMOUS = Principal(
    subject="anonymous (auth disabled)",
    client_id=None,
    scopes=frozenset({"cohort-match/*.read", "cohort-match/*.write"}),
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


def grants(held: frozenset[str], wanted: str) -> bool:
    """Whether scopes `held` grant `wanted` (`<context>/<resource>.<action>`): the scope
    itself, or `<context>/*.<action>` (see the module docstring)."""
    if wanted in held:
        return True
    context, slash, rest = wanted.partition("/")
    resource, dot, action = rest.rpartition(".")
    if not (slash and dot and resource and action) or "*" in wanted:
        return False
    return f"{context}/*.{action}" in held


def require_scope(principal: Principal, scope: str) -> None:
    """Raise Forbidden unless the principal's scopes grant `scope` (`grants`)."""
    if not grants(principal.scopes, scope):
        raise Forbidden(f"token lacks scope {scope}")
