"""The UCUM registry (service/ucum.py): one pint registry that converts exactly as ucumvert's
own did, and the per-user cache of its parsed definitions: fresh, warm, and every way a
cache can be wrong falling back to a build that does not read it."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from ucumvert import PintUcumRegistry

from service.paths import data_root
from service.terminology import Terminology
from service.ucum import COMPLETE, UcumRegistry, build_registry, cache_dir
from service.units import normalize_unit

# Units the code tables name, and a few more of each kind labs send.
EXTRA = ["g/dL", "mg/dL", "umol/L", "mmol/L", "10*9/L", "/uL", "/mm3", "%", "1", "U/L"]


def table_units() -> list[str]:
    terms = Terminology.load(data_root() / "terminology")
    units = {info.canonical_unit for info in terms.valuesets.values() if info.canonical_unit}
    units |= set(terms.unit_aliases.values())
    units |= {normalize_unit(u) for u in EXTRA}
    return sorted(units)


def factor(registry: UcumRegistry | PintUcumRegistry, source: str, target: str) -> float:
    return float((1.0 * registry.from_ucum(source)).to(registry.from_ucum(target)).magnitude)


def factors(registry: UcumRegistry | PintUcumRegistry, units: list[str]) -> dict[str, object]:
    """Every pair's factor, or the kind of error converting raises (what is compared)."""
    parsed: dict[str, Any] = {}
    for unit in units:
        try:
            parsed[unit] = 1.0 * registry.from_ucum(unit)
        except Exception as exc:  # the kind of failure is what is compared
            parsed[unit] = type(exc).__name__
    found: dict[str, object] = {}
    for a, b in itertools.permutations(units, 2):
        source, target = parsed[a], parsed[b]
        if isinstance(source, str) or isinstance(target, str):
            found[f"{a} -> {b}"] = "not parsed"
            continue
        try:
            found[f"{a} -> {b}"] = float(source.to(target).magnitude)
        except Exception as exc:
            found[f"{a} -> {b}"] = type(exc).__name__
    return found


@pytest.fixture(scope="module")
def units() -> list[str]:
    return table_units()


@pytest.fixture(scope="module")
def expected(units: list[str]) -> dict[str, object]:
    """What ucumvert's own registry (the one the service used before) gives."""
    return factors(PintUcumRegistry(), units)


def test_one_registry_converts_every_pair_of_the_tables_units_as_ucumverts_did(
    units: list[str], expected: dict[str, object]
) -> None:
    assert len(units) > 20
    assert sum(isinstance(v, float) for v in expected.values()) > 100
    assert factors(UcumRegistry(), units) == expected


def test_a_fresh_cache_is_filled_whole_and_a_warm_one_is_read(
    tmp_path: Path, units: list[str], expected: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    fresh = build_registry(root)
    folder = cache_dir(root)
    assert (folder / COMPLETE).is_file()
    pickles = sorted(folder.glob("*.pickle"))
    assert pickles, "pint's parsed definitions are cached"
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert [p.name for p in root.iterdir()] == [folder.name], "no staging folder is left"
    assert factors(fresh, units) == expected

    written = {p: p.stat().st_mtime_ns for p in pickles}
    with caplog.at_level(logging.WARNING, logger="service.ucum"):
        warm = build_registry(root)
    assert warm.pint.cache_folder == folder  # read from the cache...
    assert {p: p.stat().st_mtime_ns for p in pickles} == written  # ...not written again
    assert not caplog.records
    assert factors(warm, units) == expected


@pytest.mark.parametrize("damage", ["truncated", "foreign", "incomplete"])
def test_a_damaged_cache_is_built_again(
    tmp_path: Path,
    damage: str,
    units: list[str],
    expected: dict[str, object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "cache"
    build_registry(root)
    folder = cache_dir(root)
    biggest = max(folder.glob("*.pickle"), key=lambda p: p.stat().st_size)
    if damage == "truncated":  # a half-written file
        biggest.write_bytes(biggest.read_bytes()[:1000])
    elif damage == "foreign":  # a valid pickle of something else
        biggest.write_bytes(b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00\x8c\x02hi\x94.")
    else:  # a folder never completed
        (folder / COMPLETE).unlink()
        biggest.unlink()

    with caplog.at_level(logging.WARNING, logger="service.ucum"):
        rebuilt = build_registry(root)
    assert factors(rebuilt, units) == expected
    if damage != "incomplete":
        assert "unreadable" in caplog.text
    # the folder was filled anew: the next build reads it without complaint
    assert (folder / COMPLETE).is_file()
    assert biggest.is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.ucum"):
        again = build_registry(root)
    assert not caplog.records
    assert again.pint.cache_folder == folder


def test_a_cache_others_may_write_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="service.ucum"):
        registry = build_registry(root)
    assert "writable by others" in caplog.text
    assert list(root.iterdir()) == []
    assert registry.pint.cache_folder is None
    assert factor(registry, "g/dL", "g/L") == 10.0


def test_a_symlinked_cache_folder_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cache_dir(root).symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="service.ucum"):
        registry = build_registry(root)
    assert "not a private folder" in caplog.text
    assert registry.pint.cache_folder is None
    assert list(elsewhere.iterdir()) == []


def test_no_cache_where_none_can_be_made(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    registry = build_registry(blocked / "cache")  # a folder inside a file: OSError
    assert registry.pint.cache_folder is None
    assert factor(registry, "g/dL", "g/L") == 10.0
    assert build_registry(None).pint.cache_folder is None
