"""Value-set definitions and their expansions (the `terminology` commands), the unmapped-codes
report, and the optional terminology server at run time.

    definition.py  the typed `definition:` block of a value set's yaml
    expansion.py   definition + one source -> rows; merge with the CSV, diff, write
    rf2.py         SNOMED CT RF2 snapshot reader (ECL subset)
    ecl.py         the subset of SNOMED CT ECL the offline readers evaluate
    omop.py        OMOP vocabulary export reader (Athena CSVs)
    rrf.py         RxNorm RRF release reader
    fhir_tx.py     FHIR terminology server reader (ValueSet/$expand)
    unmapped.py    codes in a population that no value set of a trial recognises
    runtime.py     codes the tables do not know, asked of a terminology server per patient

Kept import-free here: service/terminology.py imports `definition` and must not pull in the
readers.
"""

# The public API is the modules above, each imported by name (`from service.vocab import
# expansion`), none of them here.
__all__ = [
    "definition",
    "ecl",
    "expansion",
    "fhir_tx",
    "omop",
    "rf2",
    "rrf",
    "runtime",
    "unmapped",
]
