"""Definition + readers -> rows, merged with the CSV: what is replaced, kept, removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.vocab.definition import ICD10CM, LOINC, RXNORM, SNOMED, Entry, ValueSetDefinition
from service.vocab.expansion import Row, expand, merge, plan, read_rows, render, write

Key = tuple[str, str]


@dataclass
class FakeReader:
    """Expands ECL entries from a table; refuses ECL containing 'bad'."""

    name: str = "rf2"
    release: str = "20250101"
    table: dict[str, dict[Key, str]] = field(default_factory=dict)
    names: dict[Key, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"{self.name}:{self.release}"

    def expand(self, entry: Entry) -> dict[Key, str] | None:
        if entry.ecl is None:
            return None
        if "bad" in entry.ecl:
            raise ValueError("refused")
        return self.table[entry.ecl]

    def display(self, system: str, code: str) -> str | None:
        return self.names.get((system, code))


def definition(*include: Entry, exclude: tuple[Entry, ...] = ()) -> ValueSetDefinition:
    return ValueSetDefinition(include=list(include), exclude=list(exclude))


SLE = Entry(system=SNOMED, ecl="<< 55464009")
READER = FakeReader(
    table={
        "<< 55464009": {
            (SNOMED, "55464009"): "Systemic lupus erythematosus (disorder)",
            (SNOMED, "68815009"): "SLE glomerulonephritis syndrome (disorder)",
        },
        "<< 68815009": {(SNOMED, "68815009"): "SLE glomerulonephritis syndrome (disorder)"},
    },
    names={(LOINC, "718-7"): "Hemoglobin [Mass/volume] in Blood"},
)


def test_new_rows_name_the_reader_and_release() -> None:
    change = merge("sle", [], expand(definition(SLE), [READER]))
    assert [(r.code, r.source) for r in change.rows] == [
        ("55464009", "rf2:20250101"),
        ("68815009", "rf2:20250101"),
    ]
    assert change.added == change.rows
    assert not change.removed


def test_rows_of_the_same_reader_are_replaced_others_kept() -> None:
    current = [
        Row(SNOMED, "11013005", "SLE GN class VI (disorder)", "curated: SNOMED CT 2025"),
        Row(SNOMED, "55464009", "Systemic lupus erythematosus (disorder)", "vsac:2.16.1"),
        Row(SNOMED, "73286009", "SLE GN class I (disorder)", "rf2:20240101"),  # gone now
    ]
    change = merge("sle", current, expand(definition(SLE), [READER], current))
    by_code = {r.code: r for r in change.rows}
    assert by_code["11013005"].source.startswith("curated")  # other source: kept
    assert by_code["55464009"].source == "vsac:2.16.1"  # already there: keeps its row
    assert by_code["68815009"].source == "rf2:20250101"
    assert "73286009" not in by_code
    assert [r.code for r in change.removed] == ["73286009"]
    assert [r.code for r in change.added] == ["68815009"]


def test_codes_and_prefixes_copy_through_with_a_display() -> None:
    current = [Row(ICD10CM, "M32.1", "SLE with organ involvement", "curated: ICD-10-CM FY2026")]
    result = expand(
        definition(
            Entry(system=ICD10CM, prefixes=["M32.1"]),
            Entry(system=LOINC, codes=["718-7", "4544-3"]),
        ),
        [READER],
        current,
    )
    change = merge("x", current, result)
    assert [(r.code, r.display, r.source) for r in change.rows] == [
        ("M32.1", "SLE with organ involvement", "curated: ICD-10-CM FY2026"),
        ("718-7", "Hemoglobin [Mass/volume] in Blood", "definition"),
    ]
    # no display anywhere: reported, not written with a blank display
    assert change.problems == [f"{LOINC}|4544-3: no display in the CSV or sources"]


def test_exclusions_remove_rows_whatever_their_source() -> None:
    current = [Row(SNOMED, "68815009", "SLE GN (disorder)", "curated: SNOMED CT 2025")]
    result = expand(
        definition(SLE, exclude=(Entry(system=SNOMED, ecl="<< 68815009"),)), [READER], current
    )
    change = merge("sle", current, result)
    assert [r.code for r in change.rows] == ["55464009"]
    assert [r.code for r in change.removed] == ["68815009"]


def test_code_exclusions_need_no_display() -> None:
    current = [Row(LOINC, "718-7", "Hemoglobin", "curated: LOINC 2.80")]
    result = expand(
        definition(SLE, exclude=(Entry(system=LOINC, codes=["718-7", "4544-3"]),)), [READER]
    )
    change = merge("x", current, result)
    assert not change.problems
    assert [r.code for r in change.removed] == ["718-7"]


def test_prefix_exclusions_remove_codes_below() -> None:
    current = [
        Row(ICD10CM, "M32.10", "a", "curated: x"),
        Row(ICD10CM, "M32.14", "b", "curated: x"),
    ]
    result = expand(
        definition(
            Entry(system=ICD10CM, codes=["M32.10"]),
            exclude=(Entry(system=ICD10CM, prefixes=["M32.14"]),),
        ),
        [READER],
        current,
    )
    assert [r.code for r in merge("x", current, result).rows] == ["M32.10"]


def test_an_entry_no_reader_can_expand_is_skipped_and_its_rows_kept() -> None:
    current = [Row(RXNORM, "1437968", "cyclophosphamide 25 MG Oral Capsule", "rrf:01062025")]
    result = expand(definition(Entry(system=RXNORM, ingredients=["3002"])), [READER], current)
    change = merge("cyc", current, result)
    assert change.skipped == [f"{RXNORM} ingredients 3002"]
    assert change.rows == current


def test_a_failed_entry_removes_nothing() -> None:
    current = [Row(SNOMED, "73286009", "SLE GN class I (disorder)", "rf2:20240101")]
    result = expand(definition(SLE, Entry(system=SNOMED, ecl="<< 1234567 bad")), [READER])
    change = merge("sle", current, result)
    assert change.problems == ["rf2: refused"]
    assert not change.removed
    assert {r.code for r in change.rows} == {"55464009", "68815009", "73286009"}


def test_first_reader_that_can_wins() -> None:
    other = FakeReader(name="tx", release="x", table={"<< 55464009": {(SNOMED, "1"): "one"}})
    rows = expand(definition(SLE), [other, READER]).rows
    assert {row.source for row in rows.values()} == {"tx:x"}


def test_render_sorts_and_quotes(tmp_path: Path) -> None:
    rows = [Row(SNOMED, "55464009", "b", "rf2:1"), Row(ICD10CM, "M32.9", "SLE, unspecified", "x")]
    text = render(rows)
    assert text.splitlines() == [
        "system,code,display,source",
        f'{ICD10CM},M32.9,"SLE, unspecified",x',
        f"{SNOMED},55464009,b,rf2:1",
    ]
    (tmp_path / "x.csv").write_text(text, encoding="utf-8")
    assert read_rows(tmp_path / "x.csv") == sorted(rows)


def test_plan_and_write(tmp_path: Path) -> None:
    (tmp_path / "sle.yaml").write_text(
        'title: SLE\nkind: diagnosis\ndefinition:\n  include:\n    - {system: "'
        + SNOMED
        + '", ecl: "<< 55464009"}\n',
        encoding="utf-8",
    )
    (tmp_path / "sle.csv").write_text("system,code,display,source\n", encoding="utf-8")
    (tmp_path / "hemoglobin.yaml").write_text("title: Hb\nkind: lab\n", encoding="utf-8")
    changes = plan(tmp_path, [], [READER])
    assert [c.name for c in changes] == ["sle"]  # no definition: passed over
    assert len(changes[0].added) == 2
    write(tmp_path, changes[0])
    assert len(read_rows(tmp_path / "sle.csv")) == 2
    assert plan(tmp_path, ["sle"], [READER])[0].added == []  # idempotent
    with pytest.raises(ValueError, match="no `definition:`"):
        plan(tmp_path, ["hemoglobin"], [READER])
    with pytest.raises(ValueError, match="no value set 'nope'"):
        plan(tmp_path, ["nope"], [READER])
