"""The optional terminology server at run time (`COHORT_MATCH_TERMINOLOGY_URL`).

The code tables list every code that counts (SNOMED CT and RxNorm match exactly), but a
hospital records codes the tables do not list: a SNOMED CT concept one level deeper, a new
RxNorm clinical drug. With a terminology server configured, each such code is asked about
once, between fetching a patient's records and mapping them (`RuntimeTerminology.consult`,
called by `service.fetching.map_records`):

- which codes: SNOMED CT and RxNorm codings of the records the tables do not know at all
  (no value set, no site-map entry), of records none of whose codings is known;
- what is asked: for each value set the trial reads that has a definition, one
  `ValueSet/$validate-code` against each include that a server can evaluate: the implicit
  ECL value set of its SNOMED CT `ecl` (minus its `ecl` exclusions), or a `valueset` URL.
  `ingredients` cannot be asked (FHIR has no portable "drugs containing" filter): RxNorm
  drugs are classified only through `valueset` entries, else by the expanded tables;
- each value set is asked on its own: one value set's failed or refused question never
  discards another's answer. Answers are cached per (code, value-set URL), bounded
  (CACHE_LIMIT codes, then it starts over), and the memberships taught to the Terminology
  (`terms.learn`) so the mappers, which stay pure, see the code as a member;
- a value set the server refuses (400/404/410/422: it does not hold that value set or cannot
  evaluate that ECL) is remembered as refused for every code and not asked again; the
  refusal is never taken for "not a member": that value set falls back to the tables, as
  without a server (its other URLs still count);
- when a question fails (timeout, 5xx or 401/403 after the client's retries, refused
  connection, an answer that is not Parameters) and no other URL of that value set said
  "member", nothing is cached for it and each record carrying the code gets a `Problem`
  whose concepts are the value sets left undecided: a criterion on them that would pass
  on the absence of such records becomes `unknown` with the reason, never `pass`.

Sweeps do not consult the server yet: a population run classifies by the tables alone
(expand them with `cohort-match terminology expand`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import ControlFlow, FhirError
from service.facts import Problem
from service.mappers.medication_table import MedicationTable
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


# A server that cannot evaluate a value set says so per value set, not per code: 400 (an ECL
# it does not support), 404/410 (a value set it does not hold), 422 (cannot process).
REFUSALS = frozenset({400, 404, 410, 422})


@dataclass(frozen=True)
class _Outcome:
    """What the server said about one code: the value sets it is a member of, and those whose
    question failed (timeout, 5xx, refused connection, an answer that is not Parameters)."""

    members: frozenset[str]
    failed: frozenset[str] = frozenset()
    message: str = ""


class _Unanswered(ControlFlow):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RuntimeTerminology:
    """The server, the tables it teaches, and the cache of its answers."""

    def __init__(self, server: TerminologyServer, terms: Terminology) -> None:
        self.server = server
        self.terms = terms
        self.requests = 0  # answered or not: for tests and logs
        # (system, code) -> {value-set URL: member?}; only answers, never failures
        self._answers: dict[Key, dict[str, bool]] = {}
        # value-set URLs the server refused to evaluate (for any code) -> its reason
        self._refused: dict[str, str] = {}
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
    ) -> _Outcome:
        """The value sets among `wanted` the server puts the code in. Each (code, value set)
        is asked once: concurrent callers (a ranked list fetching several patients) share
        the questions in flight."""
        flight = (key, wanted)
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._classify(key, wanted, limit))
            self._inflight[flight] = task
            task.add_done_callback(lambda _: self._inflight.pop(flight, None))
        result: _Outcome = await asyncio.shield(task)
        return result

    async def _classify(
        self, key: Key, wanted: frozenset[str], limit: asyncio.Semaphore
    ) -> _Outcome:
        """Each value set is asked independently; the answer of one never depends on whether
        another's question failed or was refused.

        - member: one of the value set's URLs says so;
        - a refused URL (REFUSALS: the server does not hold or cannot evaluate that value
          set) is remembered for every code and skipped: the value set's membership is then
          what its other URLs say, else the tables' (as without a server). A refusal is
          never cached as "not a member";
        - a failed question (nothing else said "member") makes the value set `failed`:
          nothing cached for it, the caller reports the record as a Problem for it."""
        system, _ = key
        candidates = self._candidates(system, wanted)
        answers = self._answers_for(key)
        names = list(candidates)
        results = await asyncio.gather(
            *(self._member_of(key, candidates[name], answers, limit) for name in names)
        )
        members = frozenset(n for n, r in zip(names, results, strict=True) if r is True)
        failures = {n: r for n, r in zip(names, results, strict=True) if isinstance(r, Exception)}
        if not failures:
            return _Outcome(members)
        message = next(iter(failures.values())).message
        log.warning(
            "terminology server failed for %s codes (%d value sets): %s",
            system,
            len(failures),
            message,
        )
        return _Outcome(members, frozenset(failures), message)

    def _answers_for(self, key: Key) -> dict[str, bool]:
        """The cached answers about one code (all of them dropped at CACHE_LIMIT codes)."""
        answers = self._answers.get(key)
        if answers is None:
            if len(self._answers) >= CACHE_LIMIT:
                self._answers.clear()
            answers = self._answers[key] = {}
        return answers

    async def _member_of(
        self,
        key: Key,
        urls: Sequence[str],
        answers: dict[str, bool],
        limit: asyncio.Semaphore,
    ) -> bool | _Unanswered:
        """True when one of a value set's URLs says "member"; else the first failure, if any
        question failed; else False."""
        failure: _Unanswered | None = None
        for url in urls:
            try:
                if await self._ask(key, url, answers, limit):
                    return True
            except _Unanswered as exc:
                failure = failure or exc
        return failure if failure is not None else False

    async def _ask(
        self, key: Key, url: str, answers: dict[str, bool], limit: asyncio.Semaphore
    ) -> bool | None:
        """The server's answer; None when it refuses the value set; raises _Unanswered."""
        if url in self._refused:
            return None
        if url in answers:
            return answers[url]
        system, code = key
        try:
            async with limit:
                self.requests += 1
                member = await self.server.validate_code(url, system, code)
        except FhirError as exc:
            if exc.http_status in REFUSALS:
                if url not in self._refused:
                    log.warning("terminology server cannot evaluate %s: %s", url, exc.message)
                self._refused[url] = exc.message
                return None
            raise _Unanswered(exc.message) from exc
        except ValueError as exc:
            raise _Unanswered(str(exc)) from exc
        answers[url] = member
        return member

    async def consult(
        self, resources: Iterable[dict[str, Any]], wanted: Iterable[str]
    ) -> list[tuple[dict[str, Any], Problem]]:
        """Ask about the unknown codes of these records and teach the answers to
        `self.terms`; call between fetching and mapping. Returns, for each record whose code
        could not be classified because the server failed, the record and its Problem."""
        return await _consult(self, resources, wanted)


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
    resources = list(resources)
    # a medication record's codes are those of the Medication it names (sent with it)
    medications = MedicationTable(r for r in resources if r.get("resourceType") == "Medication")
    pending: dict[Key, list[dict[str, Any]]] = {}
    for resource in resources:
        for key in _unknown(tx.terms, codings_of(resource, medications)[0]):
            pending.setdefault(key, []).append(resource)
    if not pending or not wanted:
        return []
    limit = asyncio.Semaphore(CONCURRENCY)
    keys = list(pending)
    outcomes = await asyncio.gather(*(tx.classify(key, wanted, limit) for key in keys))
    # per record: the codes whose questions failed, the value sets concerned, the first reason
    failed: dict[int, tuple[dict[str, Any], list[str], set[str], str]] = {}
    for key, outcome in zip(keys, outcomes, strict=True):
        if outcome.members:
            tx.terms.learn(key[0], key[1], outcome.members)
        for resource in pending[key] if outcome.failed else ():
            entry = failed.setdefault(id(resource), (resource, [], set(), outcome.message))
            entry[1].append(f"{key[0]}|{key[1]}")
            entry[2].update(outcome.failed)
    problems: list[tuple[dict[str, Any], Problem]] = []
    for resource, codes, valuesets, reason in failed.values():
        kind = str(resource.get("resourceType"))
        where = f"{kind}/{resource.get('id')}"
        message = (
            f"{', '.join(codes)} not in the code tables and the terminology server could not "
            f"classify it for {', '.join(sorted(valuesets))} ({reason}): check the record"
        )
        problems.append((resource, Problem(kind, where, message, frozenset(valuesets))))
    return problems
