"""Why a SMART launch or a page session was refused, as plain sentences for a clinician.

    ServiceError (service.errors)
     └── SmartError                 400  the launch cannot go on
          ├── LaunchRefused         400  iss not on the allowlist, a bad `next`
          ├── StateInvalid          400  unknown, expired or replayed `state` or ticket
          ├── AuthorizationDenied   400  the EHR said no (an OAuth error from /authorize or /token)
          └── EhrUnavailable        502  discovery or the token endpoint failed or answered nonsense

The pages render these as HTML (service/api/pages.py), never as a stack trace.
"""

from __future__ import annotations

from service.errors import ServiceError

__all__ = ["AuthorizationDenied", "EhrUnavailable", "LaunchRefused", "SmartError", "StateInvalid"]


class SmartError(ServiceError):
    status = 400
    code = "security"


class LaunchRefused(SmartError):
    pass


class StateInvalid(SmartError):
    pass


class AuthorizationDenied(SmartError):
    pass


class EhrUnavailable(SmartError):
    status = 502
    code = "transient"
