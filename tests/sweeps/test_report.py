"""What coordinators get from a run: the funnel, and the JSON, CSV and FHIR exports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.group import Group
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings
from service.schemas import RankedListPublic
from service.sweeps import SweepRunner, SweepStore
from service.sweeps.report import (
    FunnelCounter,
    attrition,
    csv_lines,
    fhir_bundle,
    ranked_json,
    trial_ref,
)
from service.sweeps.schemas import AttritionPublic
from service.sweeps.store import RunInfo
from service.worklist.research_subject import subject_id
from tests.sweeps.conftest import sweep, sweep_settings

cli = CliRunner(env={"COLUMNS": "220"})


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SweepStore, RunInfo]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'sweeps.db'}"
    store = SweepStore(url)
    run = sweep(SweepRunner(sweep_settings(url), store))
    yield store, run
    store.close()


def _results(store: SweepStore, run: RunInfo) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(body) for body in store.results(run.id)]


def test_json_export_is_the_screen_commands_ranked_list(
    done: tuple[SweepStore, RunInfo],
) -> None:
    store, run = done
    body = orjson.loads(b"".join(ranked_json(store, run)))
    RankedListPublic.model_validate(body)
    get_settings.cache_clear()
    screened = cli.invoke(app, ["screen", "--as-of", "2026-11-20", "--format", "json"])
    assert screened.exit_code == 0, screened.stderr
    assert body == orjson.loads(screened.stdout)
    limited = orjson.loads(b"".join(ranked_json(store, run, limit=3)))
    assert [c["rank"] for c in limited["candidates"]] == [1, 2, 3]
    assert limited["counts"]["patients"] == 71


def test_csv_export_is_the_screen_commands_csv(done: tuple[SweepStore, RunInfo]) -> None:
    store, run = done
    get_settings.cache_clear()
    screened = cli.invoke(app, ["screen", "--as-of", "2026-11-20", "--format", "csv"])
    assert screened.exit_code == 0, screened.stderr
    exported = "".join(csv_lines(store, run))
    assert exported == screened.stdout
    header = exported.splitlines()[0].split(",")
    assert header[:11] == [
        "rank",
        "patient",
        "name",
        "mrn",
        "identifiers",
        "status",
        "status_reason",
        "score",
        "age",
        "sex",
        "next_step",
    ]
    assert header[11:] == run.criterion_ids  # one column per criterion verdict
    assert len(exported.splitlines()) == 72


def test_results_filtered_by_status_in_the_store_keep_their_ranks(
    done: tuple[SweepStore, RunInfo],
) -> None:
    store, run = done
    everyone = _results(store, run)
    for status in ("likely_eligible", "possibly_eligible", "ineligible"):
        kept = [orjson.loads(body) for body in store.results(run.id, status=status)]
        assert kept
        assert kept == [r for r in everyone if r["status"] == status]  # ranks of the whole run
    exported = "".join(csv_lines(store, run, status="ineligible")).splitlines()
    assert exported[0] == next(csv_lines(store, run)).rstrip("\n")
    assert [line.split(",")[0] for line in exported[1:]] == [
        str(r["rank"]) for r in everyone if r["status"] == "ineligible"
    ]


def test_fhir_export_is_a_valid_r4_bundle_of_the_candidates(
    done: tuple[SweepStore, RunInfo],
) -> None:
    store, run = done
    bundle = fhir_bundle(store, run, title="CHT101 in SLE")
    Bundle.model_validate(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    kinds = Counter(r["resourceType"] for r in resources)
    candidates = [
        r["patient"]["reference"]
        for r in _results(store, run)
        if r["status"] in ("likely_eligible", "possibly_eligible")
    ]
    assert len(candidates) == 35
    assert kinds == {"ResearchStudy": 1, "Group": 1, "ResearchSubject": 35}
    study = ResearchStudy.model_validate(resources[0])
    assert study.identifier[0].system == "https://clinicaltrials.gov"
    assert study.identifier[0].value == "NCT06946485"
    assert study.title == "CHT101 in SLE"
    group = Group.model_validate(resources[1])
    assert group.type == "person"
    assert group.actual is True
    assert group.quantity == len(candidates)
    assert [m.entity.reference for m in group.member] == candidates  # rank order
    assert group.characteristic[0].valueReference.reference == f"ResearchStudy/{study.id}"
    subjects = [ResearchSubject.model_validate(r) for r in resources[2:]]
    assert {s.status for s in subjects} == {"candidate"}
    assert [s.individual.reference for s in subjects] == candidates
    assert {s.study.reference for s in subjects} == {f"ResearchStudy/{study.id}"}
    for entry in bundle["entry"]:  # PUTs to the resource's own id: a write-back updates
        resource = entry["resource"]
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{resource['resourceType']}/{resource['id']}",
        }
    assert len({r["id"] for r in resources}) == len(resources)
    # the same run exports the same ids; a ResearchSubject id is per trial and patient
    assert fhir_bundle(store, run, title="CHT101 in SLE") == bundle


def test_write_back_bundle_marks_dropped_candidates_ineligible(
    done: tuple[SweepStore, RunInfo],
) -> None:
    store, run = done
    out = next(
        r["patient"]["reference"] for r in _results(store, run) if r["status"] == "ineligible"
    )
    bundle = fhir_bundle(store, run, dropped=[out])
    Bundle.model_validate(bundle)
    last = bundle["entry"][-1]["resource"]
    assert (last["individual"]["reference"], last["status"]) == (out, "ineligible")
    assert last["id"] == subject_id(run.trial_id, out)  # the id its candidate entry had
    # A resource appears once in a transaction (R4 http.html#trules: overlapping identities
    # fail it): a patient who is a candidate is not also written ineligible.
    twice = fhir_bundle(store, run, dropped=["Patient/p02"])
    p02 = [
        e for e in twice["entry"] if e["resource"].get("individual") == {"reference": "Patient/p02"}
    ]
    assert [e["resource"]["status"] for e in p02] == ["candidate"]


def test_write_back_bundle_writes_the_planned_statuses(
    done: tuple[SweepStore, RunInfo],
) -> None:
    store, run = done
    plan = {"Patient/p02": "on-study", "Patient/p01": "candidate"}
    bundle = fhir_bundle(store, run, subjects=plan)
    Bundle.model_validate(bundle)
    subjects = [e["resource"] for e in bundle["entry"][2:]]
    assert [(r["individual"]["reference"], r["status"]) for r in subjects] == list(plan.items())
    assert bundle["entry"][1]["resource"]["quantity"] == 35  # the Group is the engine's


def test_attrition_agrees_with_the_ranked_list(done: tuple[SweepStore, RunInfo]) -> None:
    store, run = done
    funnel = attrition(store, run)
    AttritionPublic.model_validate(funnel.model_dump(by_alias=True))
    results = _results(store, run)
    statuses = Counter(r["status"] for r in results)
    assert funnel.patients == len(results) == 71
    assert funnel.remaining == statuses["likely_eligible"] + statuses["possibly_eligible"]
    assert (funnel.likely_eligible, funnel.possibly_eligible) == (17, 18)
    # p63 is deceased: ineligible without a fail, excluded before the first criterion
    assert funnel.excluded == 1
    assert funnel.steps[0].remaining_before == funnel.patients - funnel.excluded
    assert sum(step.dropped for step in funnel.steps) + funnel.excluded == statuses["ineligible"]
    assert [step.id for step in funnel.steps] == run.criterion_ids  # protocol order
    remaining = [r for r in results if r["status_reason"] is None]  # not the deceased
    for step in funnel.steps:
        verdicts = Counter(
            next(c["verdict"] for c in r["criteria"] if c["id"] == step.id) for r in results
        )
        assert step.verdicts.model_dump(by_alias=True) == {
            v: verdicts[v] for v in ("pass", "fail", "unknown", "not_applicable")
        }
        here = [next(c for c in r["criteria"] if c["id"] == step.id) for r in remaining]
        assert step.remaining_before == len(remaining)
        assert step.dropped == sum(c["verdict"] == "fail" for c in here)
        assert step.unknown == sum(c["verdict"] == "unknown" for c in here)
        remaining = [r for r, c in zip(remaining, here, strict=True) if c["verdict"] != "fail"]
        assert step.remaining_after == len(remaining)
    # The stored funnel is the one computed from the stored results.
    assert run.attrition == funnel.model_dump(mode="json", by_alias=True)
    recomputed = FunnelCounter(run.criteria)
    for stored in store.summaries(run.id):
        recomputed.add(stored.verdicts, stored.status)
    assert recomputed.result(run) == funnel


def test_funnel_drops_on_fail_only_and_shows_the_unknown_share(
    done: tuple[SweepStore, RunInfo],
) -> None:
    _, run = done
    criteria = [
        {"id": "A", "kind": "inclusion", "assessment": "automatic", "text": "a"},
        {"id": "B", "kind": "exclusion", "assessment": "automatic", "text": "b"},
    ]
    counter = FunnelCounter(criteria)
    counter.add({"A": "fail", "B": "unknown"}, "ineligible")
    counter.add({"A": "unknown", "B": "fail"}, "ineligible")
    counter.add({"A": "unknown", "B": "pass"}, "possibly_eligible")
    counter.add({"A": "pass", "B": "not_applicable"}, "likely_eligible")
    first, second = counter.result(run).steps
    assert (first.remaining_before, first.dropped, first.remaining_after) == (4, 1, 3)
    assert (first.unknown, first.unknown_share) == (2, 0.5)
    # B's unknown belongs to a patient A already dropped: not among the remaining.
    assert (second.remaining_before, second.dropped, second.unknown) == (3, 1, 0)
    assert second.verdicts.model_dump(by_alias=True) == {
        "pass": 1,
        "fail": 1,
        "unknown": 1,
        "not_applicable": 1,
    }
    assert counter.result(run).remaining == 2
    assert trial_ref(run).id == "NCT06946485"


def test_a_deceased_patient_is_excluded_before_the_first_step(
    done: tuple[SweepStore, RunInfo],
) -> None:
    _, run = done
    criteria = [{"id": "A", "kind": "inclusion", "assessment": "automatic", "text": "a"}]
    counter = FunnelCounter(criteria)
    counter.add({"A": "pass"}, "ineligible")  # deceased: ineligible without a fail
    counter.add({"A": "fail"}, "ineligible")
    counter.add({"A": "unknown"}, "possibly_eligible")
    funnel = counter.result(run)
    (step,) = funnel.steps
    assert (funnel.patients, funnel.excluded, funnel.remaining) == (3, 1, 1)
    assert (step.remaining_before, step.dropped, step.unknown_share) == (2, 1, 0.5)
    assert step.verdicts.pass_ == 1  # their verdicts still count


def test_a_run_without_candidates_exports_a_group_without_members(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    store = SweepStore(url)
    try:
        data = tmp_path / "one"
        data.mkdir()
        source = Path(__file__).parents[2] / "demo" / "NCT06946485"
        (data / "p.json").write_bytes(next(source.glob("p05-*.json")).read_bytes())
        run = sweep(SweepRunner(sweep_settings(url), store), data)
        bundle = fhir_bundle(store, run)
        Bundle.model_validate(bundle)
        group = bundle["entry"][1]["resource"]
        assert group["quantity"] == 0
        assert "member" not in group
    finally:
        store.close()
