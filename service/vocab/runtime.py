"""The optional terminology server at run time (`COHORT_MATCH_TERMINOLOGY_URL`).

The code tables list every code that counts (SNOMED CT and RxNorm match exactly), but a
hospital records codes the tables do not list: a SNOMED CT concept one level deeper, a new
RxNorm clinical drug. With a terminology server configured, each such code is asked about
once, between fetching a patient's records and mapping them (`RuntimeTerminology.consult`,
called by `service.fhir.patient.map_records`):

- which codes: SNOMED CT and RxNorm codings of the records the tables do not know at all
  (no value set, no site-map entry), of records none of whose codings is known;
- what is asked: for each value set the trial reads that has a definition, one
  `ValueSet/$validate-code` against each include that a server can evaluate: the implicit
  ECL value set of its SNOMED CT `ecl` (minus its `ecl` exclusions), or a `valueset` URL.
  `ingredients` cannot be asked (FHIR has no portable "drugs containing" filter): RxNorm
  drugs are classified only through `valueset` entries, else by the expanded tables;
- the answer is cached per (code, value set), bounded (CACHE_LIMIT codes, then it starts
  over), and taught to the Terminology (`terms.learn`) so the mappers, which stay pure,
  see the code as a member;
- when the server fails (timeout, 5xx after the client's retries, refused connection, an
  answer that is not Parameters), nothing is cached, and each record carrying the code gets
  a `Problem` (concepts None): a criterion that would pass on the absence of such records
  becomes `unknown` with the reason, never `pass`.

Sweeps do not consult the server yet: a population run classifies by the tables alone
(expand them with `cohort-match terminology expand`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import FhirError
from service.facts import Problem
from service.terminology import CACHE_LIMIT, Terminology
from service.vocab.definition import RXNORM, SNOMED, ValueSetDefinition
from service.vocab.ecl import strip_terms
from service.vocab.fhir_tx import TerminologyServer, ecl_valueset, valueset_url
from service.vocab.unmapped import codings_of

__all__ = ["RuntimeTerminology", "definition_urls"]

log = logging.getLogger(__name__)
ASKED_SYSTEMS = frozenset({SNOMED, RXNORM})
CONCURRENCY = 8

Key = tuple[str, str]


def definition_urls(definition: ValueSetDefinition, system: str) -> tuple[str, ...]:
    """The value-set URLs a server can test a code of `system` against for this definition:
    the implicit ECL value set (its ECL exclusions subtracted) and any `valueset` URLs."""
    urls = []
    if system == SNOMED:
        included = [strip_terms(e.ecl) for e in definition.include if e.ecl is not None]
        excluded = [strip_terms(e.ecl) for e in definition.exclude if e.ecl is not None]
        if included:
            ecl = included[0] if len(included) == 1 else " OR ".join(f"({e})" for e in included)
            if excluded:
                ecl = f"({ecl}) MINUS ({' OR '.join(f'({e})' for e in excluded)})"
            urls.append(ecl_valueset(ecl))
    urls += [valueset_url(e.valueset) for e in definition.include if e.valueset is not None]
    return tuple(urls)


@dataclass
class _Failure:
    message: str


class RuntimeTerminology:
    """The server, the tables it teaches, and the cache of its answers."""

    def __init__(self, server: TerminologyServer, terms: Terminology) -> None:
        self.server = server
        self.terms = terms
        self.requests = 0  # answered or not: for tests and logs
        # (system, code) -> {value set: member?}
        self._answers: dict[Key, dict[str, bool]] = {}
        self._inflight: dict[tuple[Key, frozenset[str]], asyncio.Future[Any]] = {}

    async def aclose(self) -> None:
        await self.server.aclose()

    def _candidates(self, system: str, wanted: Iterable[str]) -> dict[str, tuple[str, ...]]:
        found = {}
        for name in sorted(wanted):
            info = self.terms.valuesets.get(name)
            if info is not None and info.definition is not None:
                urls = definition_urls(info.definition, system)
                if urls:
                    found[name] = urls
        return found

    async def classify(
        self, key: Key, wanted: frozenset[str], limit: asyncio.Semaphore
    ) -> frozenset[str] | _Failure:
        """The value sets among `wanted` the server puts the code in. Each (code, value set)
        is asked once: concurrent callers (a ranked list fetching several patients) share
        the questions in flight."""
        flight = (key, wanted)
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._classify(key, wanted, limit))
            self._inflight[flight] = task
            task.add_done_callback(lambda _: self._inflight.pop(flight, None))
        return await asyncio.shield(task)

    async def _classify(
        self, key: Key, wanted: frozenset[str], limit: asyncio.Semaphore
    ) -> frozenset[str] | _Failure:
        system, code = key
        answers = self._answers.get(key, {})
        missing = {
            name: urls
            for name, urls in self._candidates(system, wanted).items()
            if name not in answers
        }

        async def ask(url: str) -> bool:
            async with limit:
                self.requests += 1
                return await self.server.validate_code(url, system, code)

        names = list(missing)
        results = await asyncio.gather(
            *(self._any(ask, missing[name]) for name in names), return_exceptions=True
        )
        for result in results:
            if isinstance(result, FhirError | ValueError):
                message = getattr(result, "message", None) or str(result)
                log.warning("terminology server failed for %s codes: %s", system, message)
                return _Failure(message)
            if isinstance(result, BaseException):
                raise result
        answers = {**answers, **dict(zip(names, (r is True for r in results), strict=True))}
        if len(self._answers) >= CACHE_LIMIT:
            self._answers.clear()
        self._answers[key] = answers
        return frozenset(name for name, member in answers.items() if member)

    async def consult(
        self, resources: Iterable[dict[str, Any]], wanted: Iterable[str]
    ) -> list[tuple[dict[str, Any], Problem]]:
        """Ask about the unknown codes of these records and teach the answers to
        `self.terms`; call between fetching and mapping. Returns, for each record whose code
        could not be classified because the server failed, the record and its Problem."""
        return await _consult(self, resources, wanted)

    @staticmethod
    async def _any(ask: Any, urls: Sequence[str]) -> bool:
        for url in urls:
            if await ask(url):
                return True
        return False


def _unknown(terms: Terminology, codes: Sequence[tuple[str, str, str]]) -> list[Key]:
    """The record's codes to ask about: none of its codings is known, these are SNOMED CT or
    RxNorm and neither listed nor site-mapped."""
    for system, code, _ in codes:
        learned = terms.learned(system, code) or frozenset()
        if terms.concepts_of_code(system, code) - learned or terms.translate_pair(system, code):
            return []
    return [(system, code) for system, code, _ in codes if system in ASKED_SYSTEMS]


async def _consult(
    tx: RuntimeTerminology,
    resources: Iterable[dict[str, Any]],
    wanted: Iterable[str],
) -> list[tuple[dict[str, Any], Problem]]:
    wanted = frozenset(wanted)
    pending: dict[Key, list[dict[str, Any]]] = {}
    for resource in resources:
        for key in _unknown(tx.terms, codings_of(resource)[0]):
            pending.setdefault(key, []).append(resource)
    if not pending or not wanted:
        return []
    limit = asyncio.Semaphore(CONCURRENCY)
    keys = list(pending)
    outcomes = await asyncio.gather(*(tx.classify(key, wanted, limit) for key in keys))
    problems: list[tuple[dict[str, Any], Problem]] = []
    failed: set[int] = set()
    for key, outcome in zip(keys, outcomes, strict=True):
        if isinstance(outcome, _Failure):
            for resource in pending[key]:
                if id(resource) in failed:
                    continue
                failed.add(id(resource))
                kind = str(resource.get("resourceType"))
                where = f"{kind}/{resource.get('id')}"
                message = (
                    f"{key[0]}|{key[1]} is not in the code tables and the terminology server "
                    f"could not classify it ({outcome.message}): check the record"
                )
                problems.append((resource, Problem(kind, where, message)))
        elif outcome:
            tx.terms.learn(key[0], key[1], outcome)
    return problems
