"""An eps as a user types it, one reading for every command and file: a decimal (``0.03``,
``1e-2``) or a fraction (``8/255``), >= 0 and finite. torch-free: the edge half, the workstation
and config files (edgerobust.configio) read eps, step sizes and fractions of pixels the same way.
"""
from __future__ import annotations

import math
import re

from edgerobust.errors import UsageError

# ASCII digits only (\d also takes '٣' and '３', which float() reads but a set's file name cannot tell apart)
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_EPS_RE = re.compile(rf"^({_NUM})(?:/({_NUM}))?$")


def parse_eps(token: str, what: str = "eps") -> float:
    """One eps as typed: a decimal (``0.03``, ``1e-2``) or a fraction (``8/255``); >= 0, finite.

    ``what`` names the value in error messages (``"alpha"`` parses a step size the same way).
    """
    t = token.strip().replace(" ", "")
    m = _EPS_RE.match(t)
    if not m:
        why = (f"{what} must be >= 0." if t.startswith("-") else
               f"{what} is a decimal number (0.03) or a fraction of two numbers (8/255).")
        raise UsageError(f"Cannot read the {what} value {token.strip()!r}.", why=why,
                         fix=f"Write e.g. `{what}` 8/255" + (" or `eps` 2/255,4/255,8/255." if what == "eps" else "."))
    if m.group(2) and float(m.group(2)) == 0:
        raise UsageError(f"The {what} value {token.strip()!r} divides by zero.", fix="Write e.g. 8/255.")
    value = float(m.group(1)) / float(m.group(2)) if m.group(2) else float(m.group(1))
    if not math.isfinite(value):
        raise UsageError(f"The {what} value {token.strip()!r} is not finite.", fix="Write e.g. 8/255.")
    return value


def as_float(value) -> float:
    """``float(value)``, or inf for a whole number beyond any float (JSON and TOML allow them): the
    callers' finite-number checks then refuse it instead of an OverflowError escaping."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
