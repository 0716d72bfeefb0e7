"""Settings parse each comma-separated list once, from the environment or from code."""

from __future__ import annotations

import pytest

from service.config import Settings


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORT_MATCH_SMART_ISSUERS", "https://a.test/fhir/, https://b.test ,,")
    monkeypatch.setenv("COHORT_MATCH_CDS_FHIR_SERVERS", "https://x.test/fhir")
    monkeypatch.setenv("COHORT_MATCH_CDS_CLIENT_ISSUERS", " https://ehr.test ,https://ehr2.test")
    settings = Settings()
    assert settings.smart_issuers == ("https://a.test/fhir", "https://b.test")
    assert settings.cds_fhir_servers == ("https://x.test/fhir",)
    assert settings.cds_client_issuers == ("https://ehr.test", "https://ehr2.test")


def test_comma_lists_default_empty_and_accept_sequences() -> None:
    assert Settings().smart_issuers == ()
    assert Settings(cds_client_issuers="").cds_client_issuers == ()
    settings = Settings(smart_issuers=["https://a.test/fhir/"], cds_fhir_servers=("https://x",))
    assert settings.smart_issuers == ("https://a.test/fhir",)
    assert settings.cds_fhir_servers == ("https://x",)


def test_each_cds_server_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        Settings(cds_fhir_servers="https://ok.test, ftp://not-ok.test")


def test_the_ehr_patient_url_is_http_with_the_id() -> None:
    url = "https://ehr.test/chart?patient={id}"
    assert Settings(ehr_patient_url=url).ehr_patient_url == url
    assert Settings().ehr_patient_url is None
    for bad in ("https://ehr.test/chart", "javascript:alert({id})"):
        with pytest.raises(ValueError, match="COHORT_MATCH_EHR_PATIENT_URL"):
            Settings(ehr_patient_url=bad)
