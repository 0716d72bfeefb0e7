"""The `cohort-match` command line (typer for parsing and help, rich for tables).

    cohort-match screen  --trial NCT06946485 [--data PATH] [--as-of DATE] [--format table|json|csv]
    cohort-match explain --trial NCT06946485 [--data PATH] --patient ID [--as-of DATE]
    cohort-match trials
    cohort-match serve   [--host HOST] [--port PORT]
    cohort-match sweep   --trial NCT06946485 [--source FHIR_URL | --data PATH] [--as-of DATE]
    cohort-match runs    [--trial ID] [--format table|json]
    cohort-match diff    RUN_A RUN_B [--format table|json]
    cohort-match export  RUN [--format json|csv|fhir]
    cohort-match terminology expand   [NAME ...] (--rf2 DIR | --omop DIR | --rxnorm DIR | --tx URL)
                                      [--write]
    cohort-match terminology unmapped --trial ID [--data PATH] [--format table|json|csv]
                                      [--limit N] [--type RESOURCE_TYPE ...]

Without --data the bundled synthetic demo population is screened. Errors are one line on
stderr; a bad file or resource is named and skipped, and the run completes.

Parsing and dispatch are in `app.py` (the typer app and `main`), the shared options and the
one-line error exit in `options.py`, each command group in `commands/` and everything printed
in `render.py`. The screening engine, the sweep store (SQLAlchemy), the FHIR client and the
HTTP server are imported inside the commands that use them: `--help` loads none of them.
"""

from service.cli.app import app, main

__all__ = ["app", "main"]
