"""A FHIR R4 terminology server: `ValueSet/$expand`, `ValueSet/$validate-code`,
`CodeSystem/$subsumes`, over the one FHIR client (`service.fhir.FhirClient`: its retries,
timeouts and typed errors).

- SNOMED CT ECL is asked as the implicit value set `http://snomed.info/sct?fhir_vs=ecl/<ECL>`
  (FHIR R4 "Using SNOMED CT with FHIR", implicit value sets), the ECL without its `|term|`
  labels and percent-encoded inside the URL.
- A `valueset` entry is expanded by its canonical URL; a bare OID is taken as the VSAC value
  set `http://cts.nlm.nih.gov/fhir/ValueSet/<OID>`.
- `$expand` is paged with `offset` / `count` until `expansion.total` codes were read (or a
  page comes back empty); nested `contains` are flattened, abstract or inactive entries left
  out.
- `ingredients` are not expanded here: FHIR defines no portable RxNorm filter for "drugs
  containing"; use an RRF release or an OMOP export for those.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from service.errors import FhirError
from service.fhir.client import FhirClient, RetryPolicy
from service.vocab.definition import OID, SNOMED, Entry
from service.vocab.ecl import strip_terms

__all__ = ["TerminologyServer", "TxReader", "ecl_valueset", "valueset_url"]

PAGE = 1000
VERSION_DATE = re.compile(r"/version/(\d{8})")


def ecl_valueset(ecl: str) -> str:
    """The implicit SNOMED CT value set of an ECL expression."""
    return f"{SNOMED}?fhir_vs=ecl/{quote(strip_terms(ecl), safe='')}"


def valueset_url(reference: str) -> str:
    if OID.fullmatch(reference):
        return f"http://cts.nlm.nih.gov/fhir/ValueSet/{reference.removeprefix('urn:oid:')}"
    return reference


@dataclass(frozen=True)
class Expansion:
    codes: dict[tuple[str, str], str]  # (system, code) -> display
    versions: tuple[str, ...]  # code system versions the server used


def _flatten(contains: Any) -> Iterator[dict[str, Any]]:
    for item in contains or ():
        if isinstance(item, dict):
            yield item
            yield from _flatten(item.get("contains"))


def _versions(expansion: dict[str, Any]) -> list[str]:
    found = []
    for parameter in expansion.get("parameter") or ():
        if isinstance(parameter, dict) and parameter.get("name") in ("version", "used-codesystem"):
            value = parameter.get("valueUri") or parameter.get("valueString") or ""
            found.append(str(value))
    return found


class TerminologyServer:
    """The operations cohort-match asks of a terminology server (async)."""

    def __init__(self, fhir: FhirClient) -> None:
        self.fhir = fhir
        self.base_url = fhir.base_url.rstrip("/")

    @classmethod
    def connect(
        cls, base_url: str, *, timeout_s: float = 10.0, attempts: int = 2
    ) -> TerminologyServer:
        # Terminology operations are not searches: `Prefer: handling=strict` is not sent.
        retry = RetryPolicy(attempts=attempts)
        return cls(FhirClient(base_url, timeout_s=timeout_s, retry=retry, strict=False))

    async def aclose(self) -> None:
        await self.fhir.aclose()

    def _url(self, operation: str) -> str:
        return f"{self.base_url}/{operation}"

    async def expand(self, url: str, page: int = PAGE) -> Expansion:
        codes: dict[tuple[str, str], str] = {}
        versions: list[str] = []
        offset = 0
        while True:
            params = {"url": url, "offset": str(offset), "count": str(page)}
            answer = await self.fhir.get_json(self._url("ValueSet/$expand"), params=params)
            expansion = (
                answer.get("expansion") if answer.get("resourceType") == "ValueSet" else None
            )
            if not isinstance(expansion, dict):
                raise ValueError(f"$expand of {url}: the answer is not an expanded ValueSet")
            versions += _versions(expansion)
            items = list(_flatten(expansion.get("contains")))
            for item in items:
                system, code = item.get("system"), item.get("code")
                if item.get("abstract") or item.get("inactive") or not system or not code:
                    continue
                codes[(str(system), str(code))] = str(item.get("display") or code)
            offset += len(items)
            total = expansion.get("total")
            if not items or not isinstance(total, int) or offset >= total:
                return Expansion(codes, tuple(dict.fromkeys(versions)))

    async def validate_code(self, url: str, system: str, code: str) -> bool:
        """`ValueSet/$validate-code`: whether the code is in the value set at `url`."""
        params = {"url": url, "system": system, "code": code}
        answer = await self.fhir.get_json(self._url("ValueSet/$validate-code"), params=params)
        for parameter in answer.get("parameter") or ():
            if isinstance(parameter, dict) and parameter.get("name") == "result":
                return parameter.get("valueBoolean") is True
        raise ValueError(f"$validate-code {system}|{code} in {url}: no result parameter")


class TxReader:
    """ECL and valueset entries, expanded by a FHIR terminology server."""

    name = "tx"

    def __init__(self, base_url: str, *, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.version = "unknown"

    @property
    def source(self) -> str:
        return f"{self.name}:{self.base_url}|{self.version}"

    def expand(self, entry: Entry) -> dict[tuple[str, str], str] | None:
        if entry.ecl is not None:
            url = ecl_valueset(entry.ecl)
        elif entry.valueset is not None:
            url = valueset_url(entry.valueset)
        else:
            return None
        expansion = asyncio.run(self._expand(url))
        self.version = _short_version(expansion.versions)
        return expansion.codes

    async def _expand(self, url: str) -> Expansion:
        server = TerminologyServer.connect(self.base_url, timeout_s=self.timeout_s)
        try:
            return await server.expand(url)
        except FhirError as exc:
            raise ValueError(f"$expand {url}: {exc.message}") from exc
        finally:
            await server.aclose()

    def display(self, system: str, code: str) -> str | None:
        return None


def _short_version(versions: tuple[str, ...]) -> str:
    """`http://snomed.info/sct|http://snomed.info/sct/900000000000207008/version/20250101`
    -> `20250101`; other versions as sent, joined."""
    short = []
    for version in versions:
        match = VERSION_DATE.search(version)
        short.append(match.group(1) if match else version.split("|")[-1])
    return ",".join(dict.fromkeys(short)) or "unknown"
