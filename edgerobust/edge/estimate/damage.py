"""Is a calibration file's ``_data`` one an estimate can use? The field checks behind
:func:`edgerobust.edge.estimate.calibrate.from_json`: a damaged file is one message naming its field, never a
traceback or a NaN estimate. Torch-free.
"""
from __future__ import annotations

import math

from edgerobust.edge.estimate import fit as F
from edgerobust.edge.estimate.composed import is_key


def _finite(v, none: bool = False) -> bool:
    if v is None:
        return none
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _texts(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


STATS = ("median_abs", "within10", "within20", "low", "high")  # a fit's held-out errors (fit.holdout_stats)


def _fit_ok(f) -> bool:
    """A fit an estimate can use: known features, one finite coefficient per feature and the constant, and
    held-out errors that are numbers (all of them where any point was held out)."""
    names = {n for kind in F.FEATURES.values() for n in kind}
    if not isinstance(f, dict) or not _texts(f.get("features")) or not set(f["features"]) <= names:
        return False
    coef, h = f.get("coef"), f.get("holdout", {})
    return (isinstance(coef, list) and len(coef) == len(f["features"]) + 1 and all(map(_finite, coef))
            and isinstance(f.get("n_fit"), int) and isinstance(h, dict) and _finite(h.get("n", 0))
            and all(_finite(h[s]) for s in STATS if s in h) and (not h.get("n") or all(s in h for s in STATS)))


def damage(d: dict) -> tuple[str, object] | None:
    """(the first field of a calibration's ``_data`` that an estimate cannot use, its value), or None. A
    missing field is left to the dataclass (its TypeError names it)."""
    text, count = (lambda v: isinstance(v, str)), (lambda v: _finite(v) and v >= 0)
    checks = {"created": text, "edgerobust_version": text, "profile": text, "profile_source": text,
              "graph_optimization": text, "timing": text, "providers": _texts, "dtypes": _texts,
              "intra_op_threads": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "fuses_add": lambda v: isinstance(v, bool),
              "nchwc_block": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1024,
              "composed": lambda v: isinstance(v, dict) and all(map(is_key, v)) and all(
                  isinstance(p, list) and all(isinstance(x, list) and len(x) == 2 and all(_finite(y) and y > 0 for y in x)
                                              for x in p) for p in v.values()),
              "run_us": count, "node_us": count, "profiler_us": count,
              "seconds": count, "other_load": lambda v: _finite(v, none=True),
              "host": lambda v: isinstance(v, dict) and (v.get("isa") is None or _texts(v["isa"])),
              "samples": lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
              "fits": lambda v: isinstance(v, dict) and all(map(_fit_ok, v.values())),
              "cache": lambda v: isinstance(v, list) and all(isinstance(c, list) and len(c) == 2
                                                             and all(map(_finite, c)) for c in v),
              "fixed_rounds": lambda v: isinstance(v, list) and all(isinstance(r, list) and len(r) == 3
                                                                    and all(map(count, r)) for r in v)}
    return next(((k, d[k]) for k, ok in checks.items() if k in d and not ok(d[k])), None)
