"""Trusting CDS clients (CDS Hooks 2.0): the signed JWT an EHR sends with every call.

Every call carries `Authorization: Bearer <JWT>`, signed with the client's private key. The
service checks, in order:

- the header: an asymmetric `alg` (RS256/RS384/ES256/ES384; `none` and HMAC are refused),
  a `kid`, and `typ` "JWT" when present;
- the signature, with the key of that `kid` in the configured JWKS of trusted clients
  (`COHORT_MATCH_CDS_JWKS_FILE`). A `jku` header is never fetched: keys are exchanged out of
  band, so a token cannot bring its own key;
- `iss` (in `COHORT_MATCH_CDS_CLIENT_ISSUERS` when that is set), `aud` = the URL of the
  endpoint called, `exp` and `iat` (60 s leeway), and a `jti`;
- `jti` not seen before (replay): remembered until the token expires. The memory is per
  process; several workers each keep their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from service.errors import Unauthorized

__all__ = ["CdsClient", "CdsClientValidator", "ReplayCache"]

ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]
LEEWAY_S = 60


@dataclass(frozen=True)
class CdsClient:
    """The authenticated caller, for the audit trail."""

    issuer: str
    key_id: str
    tenant: str | None = None


class ReplayCache:
    """`(iss, jti)` pairs seen, each kept until its token expires (plus leeway)."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record the pair; False when it was already recorded (a replay)."""
        now = self._clock()
        if len(self._seen) >= self.max_entries:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
            while len(self._seen) >= self.max_entries:  # still full: forget the oldest
                del self._seen[next(iter(self._seen))]
        key = (issuer, jti)
        known = self._seen.get(key)
        if known is not None and known > now:
            return False
        self._seen[key] = expires_at + LEEWAY_S
        return True


class CdsClientValidator:
    def __init__(
        self,
        keys: KeySet,
        *,
        issuers: frozenset[str] = frozenset(),
        replay: ReplayCache | None = None,
    ) -> None:
        self.keys = keys
        self.issuers = issuers
        self.replay = replay or ReplayCache()

    @classmethod
    def from_jwks_file(cls, path: Path, *, issuers: frozenset[str]) -> CdsClientValidator:
        return cls(
            KeySet.import_key_set(json.loads(path.read_text(encoding="utf-8"))), issuers=issuers
        )

    def validate(self, token: str, audiences: Sequence[str]) -> CdsClient:
        """The client that signed `token` for one of `audiences`, or Unauthorized."""
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise Unauthorized(f"invalid CDS client JWT: {exc}") from exc
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"invalid CDS client JWT: alg {alg!r} not accepted")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("invalid CDS client JWT: no kid in the header")
        if typ is not None and str(typ).upper() != "JWT":
            raise Unauthorized(f"invalid CDS client JWT: typ {typ!r} is not JWT")
        claims_options: dict[str, Any] = {
            "iss": {
                "essential": True,
                **({"values": sorted(self.issuers)} if self.issuers else {}),
            },
            "aud": {"essential": True, "values": list(audiences)},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "jti": {"essential": True},
        }
        try:
            decoded = jwt.decode(token, self.keys, algorithms=ALGORITHMS)
            claims: dict[str, Any] = decoded.claims
            jwt.JWTClaimsRegistry(leeway=LEEWAY_S, **claims_options).validate(claims)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"invalid CDS client JWT: {exc}") from exc
        issuer, jti = str(claims["iss"]), str(claims["jti"])
        if not self.replay.first_use(issuer, jti, float(claims["exp"])):
            raise Unauthorized("invalid CDS client JWT: jti already used (replay)")
        tenant = claims.get("tenant")
        return CdsClient(issuer, kid, str(tenant) if tenant is not None else None)
