"""`cohort-match terminology expand`: dry run by default, --write writes, errors are one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from service.cli import app
from service.config import get_settings
from service.paths import parse_yaml
from service.vocab.definition import RXNORM, SNOMED
from service.vocab.expansion import read_rows

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "terminology"
runner = CliRunner(env={"COLUMNS": "250"})
# drugs of the fixture RxNorm release containing cyclophosphamide (3002) that the tests treat
# as new: taken out of the temporary tables whatever the shipped tables hold today
NEW_IN_RELEASE = ("1734920", "1734923", "1734925")


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "terminology"
    shutil.copytree(ROOT / "terminology", root)
    definitions = {
        "sle": {"include": [{"system": SNOMED, "ecl": "<< 55464009"}]},
        "cyclophosphamide": {"include": [{"system": RXNORM, "ingredients": ["3002"]}]},
    }
    for name, definition in definitions.items():
        path = root / "valuesets" / f"{name}.yaml"
        meta = parse_yaml(path.read_text(encoding="utf-8"))
        meta["definition"] = definition
        path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    csv = root / "valuesets" / "cyclophosphamide.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    csv.write_text(
        "".join(line for line in lines if not any(f",{c}," in line for c in NEW_IN_RELEASE)),
        encoding="utf-8",
    )
    monkeypatch.setenv("COHORT_MATCH_TERMINOLOGY_DIR", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def test_dry_run_prints_changes_and_writes_nothing(tables: Path) -> None:
    before = (tables / "valuesets" / "cyclophosphamide.csv").read_text(encoding="utf-8")
    result = runner.invoke(
        app, ["terminology", "expand", "cyclophosphamide", "--rxnorm", str(DATA / "rrf")]
    )
    assert result.exit_code == 0, result.output
    # the fixture's branded drug and packs are new; the curated rows are kept
    assert "cyclophosphamide: +3 -0" in result.stdout
    assert "1734925" in result.stdout
    assert "rrf:01062025" in result.stdout
    assert "dry run" in result.stderr
    assert (tables / "valuesets" / "cyclophosphamide.csv").read_text(encoding="utf-8") == before


def sources(path: Path) -> dict[str, str]:
    return {row.code: row.source for row in read_rows(path)}


def test_write_writes_sorted_rows_with_their_source(tables: Path) -> None:
    cyclophosphamide = tables / "valuesets" / "cyclophosphamide.csv"
    sle = tables / "valuesets" / "sle.csv"
    before = sources(cyclophosphamide), sources(sle)
    assert "3002" in before[0]
    assert "55464009" in before[1]
    # the shipped definitions reach further than the small fixture releases: name two sets
    args = ["terminology", "expand", "sle", "cyclophosphamide"]
    args += ["--rf2", str(DATA / "rf2"), "--rxnorm", str(DATA / "rrf")]
    result = runner.invoke(app, [*args, "--write"])
    assert result.exit_code == 0, result.output
    assert "sle: +" in result.stdout
    rows = read_rows(cyclophosphamide)
    assert rows == sorted(rows)
    after = sources(cyclophosphamide), sources(sle)
    assert {c: after[0][c] for c in NEW_IN_RELEASE} == dict.fromkeys(NEW_IN_RELEASE, "rrf:01062025")
    # rows already there keep their source (the release found them too)
    assert after[0]["3002"] == before[0]["3002"] != "rrf:01062025"
    assert after[1]["55464009"] == before[1]["55464009"]
    assert not after[1]["55464009"].startswith("rf2:")
    assert all(after[i][code] == source for i in (0, 1) for code, source in before[i].items())
    again = runner.invoke(app, args)
    assert "+0 -0" in again.stdout


def test_errors_are_one_line(tables: Path) -> None:
    result = runner.invoke(app, ["terminology", "expand", "sle"])
    assert result.exit_code == 2
    assert "give at least one source" in result.stderr
    result = runner.invoke(app, ["terminology", "expand", "hemoglobin", "--rf2", str(DATA / "rf2")])
    assert result.exit_code == 2
    assert "no `definition:`" in result.stderr


def test_a_refused_entry_exits_1_and_removes_nothing(tables: Path) -> None:
    path = tables / "valuesets" / "sle.yaml"
    meta = parse_yaml(path.read_text(encoding="utf-8"))
    meta["definition"]["include"].append({"system": SNOMED, "ecl": ">> 55464009"})
    path.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["terminology", "expand", "sle", "--rf2", str(DATA / "rf2")])
    assert result.exit_code == 1
    assert "outside the supported subset" in result.stderr
    assert " -0" in result.stdout
