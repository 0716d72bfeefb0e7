"""Each offline reader on a small fixture in its real file format
(tests/data/terminology/<format>/): real headers and column order, a handful of rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.vocab.definition import RXNORM, SNOMED, Entry
from service.vocab.omop import OmopReader
from service.vocab.rf2 import Rf2Reader
from service.vocab.rrf import RrfReader

DATA = Path(__file__).resolve().parents[1] / "data" / "terminology"
SLE_BELOW = {"239887007", "68815009", "36402006", "52042003", "403487009"}


def ecl(expression: str) -> Entry:
    return Entry(system=SNOMED, ecl=expression)


def ingredients(*codes: str) -> Entry:
    return Entry(system=RXNORM, ingredients=list(codes))


# ---------------------------------------------------------------------------- RF2
@pytest.fixture(scope="module")
def rf2() -> Rf2Reader:
    return Rf2Reader(DATA / "rf2")


def test_rf2_release_from_file_name(rf2: Rf2Reader) -> None:
    assert rf2.source == "rf2:20250101"


def test_rf2_descendants_or_self_over_active_is_a(rf2: Rf2Reader) -> None:
    found = rf2.expand(ecl("<< 55464009 |Systemic lupus erythematosus|"))
    assert found is not None
    # the retired class II concept (inactive, inactive IS-A) and the kidney reached only by
    # a finding-site attribute are not descendants
    assert {code for _, code in found} == {"55464009", *SLE_BELOW}
    assert found[(SNOMED, "55464009")] == "Systemic lupus erythematosus (disorder)"  # active FSN


def test_rf2_descendants_only_and_minus(rf2: Rf2Reader) -> None:
    found = rf2.expand(ecl("< 55464009 MINUS << 68815009"))
    assert found is not None
    assert {code for _, code in found} == {"239887007", "403487009"}


def test_rf2_refuses_an_inactive_concept(rf2: Rf2Reader) -> None:
    with pytest.raises(ValueError, match="not active"):
        rf2.expand(ecl("4676006"))


def test_rf2_refuses_ecl_outside_its_subset(rf2: Rf2Reader) -> None:
    with pytest.raises(ValueError, match="outside the supported subset"):
        rf2.expand(ecl("<< 404684003 : 363698007 = << 64033007"))


def test_rf2_does_not_expand_rxnorm(rf2: Rf2Reader) -> None:
    assert rf2.expand(ingredients("3002")) is None
    assert rf2.display(SNOMED, "64033007") == "Kidney structure (body structure)"
    assert rf2.display(RXNORM, "3002") is None


def test_rf2_needs_the_snapshot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sct2_Concept_Snapshot"):
        Rf2Reader(tmp_path)


# ---------------------------------------------------------------------------- OMOP
@pytest.fixture(scope="module")
def omop() -> OmopReader:
    return OmopReader(DATA / "omop")


def test_omop_release_from_vocabulary(omop: OmopReader) -> None:
    assert omop.source == "omop:v5.0 31-AUG-25"


def test_omop_snomed_descendants_from_concept_ancestor(omop: OmopReader) -> None:
    found = omop.expand(ecl("<< 55464009"))
    assert found is not None
    # 4676006 is deleted in the export (invalid_reason D) and has no ancestor row
    assert {code for _, code in found} == {
        "55464009",
        "239887007",
        "68815009",
        "36402006",
        "403487009",
    }
    assert found[(SNOMED, "68815009")] == "Systemic lupus erythematosus glomerulonephritis syndrome"


def test_omop_ingredient_to_rxnorm_drugs(omop: OmopReader) -> None:
    found = omop.expand(ingredients("3002"))
    assert found is not None
    codes = {code for _, code in found}
    # clinical drugs through CONCEPT_ANCESTOR; 1734919 and the brand 1734920 only through
    # CONCEPT_RELATIONSHIP; not the drug form, the deleted tablet, RxNorm Extension, or
    # methotrexate's drug
    assert codes == {"3002", "1437968", "1437969", "1734919", "1734920"}
    assert found[(RXNORM, "1734920")] == "cyclophosphamide 500 MG Injection [Cytoxan]"


def test_omop_refuses_a_drug_as_ingredient_and_unknown_codes(omop: OmopReader) -> None:
    with pytest.raises(ValueError, match="not an ingredient"):
        omop.expand(ingredients("1437968"))
    with pytest.raises(ValueError, match="not a valid concept"):
        omop.expand(ecl("<< 73211009"))


# ---------------------------------------------------------------------------- RRF
@pytest.fixture(scope="module")
def rrf() -> RrfReader:
    return RrfReader(DATA / "rrf" / "RxNorm_full_01062025")


def test_rrf_release_from_folder(rrf: RrfReader) -> None:
    assert rrf.source == "rrf:01062025"


def test_rrf_ingredient_to_scd_sbd_and_packs(rrf: RrfReader) -> None:
    found = rrf.expand(ingredients("3002"))
    assert found is not None
    # SCDs through SCDC (and the precise ingredient's SCDC), the SBD by tradename, packs;
    # not the brand name, SCDCs, the obsolete tablet, methotrexate, nor an MTHSPL-only link
    assert set(found) == {
        (RXNORM, code)
        for code in ("3002", "1437968", "1437969", "1734917", "1734920", "1734923", "1734925")
    }
    assert found[(RXNORM, "3002")] == "cyclophosphamide"  # the IN atom, not the synonym
    assert found[(RXNORM, "1734925")].startswith("{4 (cyclophosphamide 500 MG")


def test_rrf_other_ingredient_stays_apart(rrf: RrfReader) -> None:
    found = rrf.expand(ingredients("6851"))
    assert found is not None
    assert {code for _, code in found} == {"6851", "105585"}


def test_rrf_refuses_a_clinical_drug_and_does_not_do_snomed(rrf: RrfReader) -> None:
    with pytest.raises(ValueError, match="a SCD, not an ingredient"):
        rrf.expand(ingredients("1437968"))
    assert rrf.expand(ecl("<< 55464009")) is None


def test_rf2_reads_every_language_english_first(tmp_path: Path) -> None:
    shutil.copytree(DATA / "rf2", tmp_path / "rf2")
    terminology = next((tmp_path / "rf2").rglob("Terminology"))
    header = (
        "id\teffectiveTime\tactive\tmoduleId\tconceptId\tlanguageCode\ttypeId\tterm"
        "\tcaseSignificanceId"
    )
    rows = [
        "9990011000005112\t20250101\t1\t554471000005108\t55464009\tda\t900000000000003001"
        "\tsystemisk lupus erythematosus (sygdom)\t900000000000448009",
    ]
    # a national edition's file that sorts before the English one
    (terminology / "sct2_Description_Snapshot-da_DK1000005_20250101.txt").write_text(
        "\r\n".join([header, *rows]) + "\r\n", encoding="utf-8"
    )
    reader = Rf2Reader(tmp_path / "rf2")
    assert reader.display(SNOMED, "55464009") == "Systemic lupus erythematosus (disorder)"
