"""HTTP API: thin routers over the engine; errors are OperationOutcomes.

Each router module has a `router` that service.main includes; `outcome` installs the error
handlers. The modules are imported by name (`from service.api import match`), none of them here.
"""

__all__ = [
    "cds_hooks",
    "health",
    "match",
    "outcome",
    "pages",
    "smart",
    "sweeps",
    "trials",
]
