"""The dates a screen may be evaluated as on: one rule for every channel.

An `as_of` before 1900 or after 2200 is a typo or a probe, not a clinical question: it is
refused at the edge (422 on the API, a one-line error in the CLI) instead of flowing into
date arithmetic that overflows deep in a rule. A patient born after `as_of` has no age on
that day: `/match` refuses it, and the age rules never compute a negative age.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["EARLIEST", "LATEST", "AsOf", "check_as_of"]

EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(2200, 12, 31)


def check_as_of(day: dt.date) -> dt.date:
    """`day` if it is between EARLIEST and LATEST; ValueError otherwise."""
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"as-of must be between {EARLIEST} and {LATEST}, not {day}")
    return day


AsOf = Annotated[dt.date, AfterValidator(check_as_of)]
