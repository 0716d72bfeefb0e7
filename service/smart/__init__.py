"""SMART App Launch 2.x for the clinician pages: EHR and standalone launch, PKCE, sessions.

The HTTP side is in service/api/smart.py (/launch, /callback) and service/api/pages.py.
"""

from service.smart.errors import (
    AuthorizationDenied,
    EhrUnavailable,
    LaunchRefused,
    SmartError,
    StateInvalid,
)
from service.smart.runtime import Completed, SmartRuntime, safe_target
from service.smart.store import PendingLaunch, SessionStore, SmartSession

__all__ = [
    "AuthorizationDenied",
    "Completed",
    "EhrUnavailable",
    "LaunchRefused",
    "PendingLaunch",
    "SessionStore",
    "SmartError",
    "SmartRuntime",
    "SmartSession",
    "StateInvalid",
    "safe_target",
]
