"""cohort-match: finds patients for clinical trials in FHIR R4 data, with evidence."""

__version__ = "0.1.0"
