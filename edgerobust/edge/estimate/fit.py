"""The latency model of each kernel type: a linear model of time on work and bytes, non-negative least squares.

Per kernel kind and precision, ``t_us = c0 + Σ c_j · f_j`` with every ``c ≥ 0``, fitted on the
calibration's "fit" points by least squares on the relative error (each point weighted by 1/t, so a
5 µs kernel counts as much as a 5 ms one). The features (:data:`FEATURES`):

* ``macs``: multiply-accumulates, the work;
* ``macs/cout``: the work per output channel (input channels × window × output pixels): a kernel with
  few output channels fills the vector lanes and register blocks worse, and pays for it per MAC;
* ``act``: activation bytes read and written; ``w``: weight bytes read;
* ``n``: the images in the batch: a kernel's cost per image (the runtime's CPU kernels loop over the batch,
  each image paying for its own setup, so a batch of 8 small images is not one image of 8 times the pixels);
* ``groups``: a grouped convolution's groups times the images: the runtime runs one small convolution per
  group, each with its own setup;
* ``inputs``: a concatenation's inputs times the images: each input is copied on its own for every image
  (int8's QLinearConcat requantizes, byte by byte through a table, an input whose scale is not the output's);
* ``c0``: the kernel's fixed cost, once per run.

Kernels with weights have two fits, with warm caches and after a flush ("kind/dtype/cold"); a prediction
mixes them by how cold the model runs (:func:`edgerobust.edge.estimate.timing.cold_share`).

The kinds of :data:`PER_OP` (``elementwise``, ``norm``) gather ops whose cost per byte differs fivefold
(a Relu and an Erf, a BatchNormalization and a LayerNormalization): each op met at :data:`OP_POINTS` points
or more gets a fit of its own as well ("kind:op/dtype"), which a kernel of that op takes before its kind's.

Linear rather than log-linear: the sum of kernel times is what is predicted, and a linear model stays
additive at both ends (a fixed cost for tiny kernels, a throughput for large ones), where a power law
bends. The fit is exact NNLS, by trying every subset of the few features. The points held out of the fit
give each kind's error; :func:`band` turns them into the band of an estimate. Torch-free: numpy only.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

MODEL = "per kernel type, t = c0 + Σ c_j·f_j (c ≥ 0), least squares on relative error"
_COMPUTE = {
    "conv": ("macs", "macs/cout", "act", "w", "n"),
    "pointwise": ("macs", "macs/cout", "act", "w", "n"),
    "depthwise": ("macs", "act", "n"),
    "grouped": ("macs", "macs/cout", "act", "w", "n", "groups", "group_rows"),
}
FEATURES = {
    **_COMPUTE,
    **{f"{k}-nchw": v for k, v in _COMPUTE.items()},  # the same kernels on the plain path of an NCHWc device
    "linear": ("macs", "act", "w", "n"),
    "add": ("act", "n"),
    "pool": ("macs", "act", "n"),
    "avgpool": ("macs", "act", "n"),
    "concat": ("act", "n", "inputs"),
    **{k: ("act", "n") for k in ("slice", "transpose", "transpose-gather", "reorder", "quantize", "norm", "elementwise",
                             "resize", "memory")},
    "scalar": (),
    "view": (),
}
BAND = (10, 90)  # percentiles of the held-out errors that bound an estimate
POINTS_PER_COEF = 2  # a fit has at most one nonzero coefficient per this many points (beyond the first)
LOW_FLOOR = -0.9  # a kind whose held-out kernels ran more than 10x their prediction is bounded at 10x
PER_OP = ("elementwise", "norm")  # kinds whose ops get fits of their own (their cost per byte differs by op)
OP_POINTS = 6  # an op's own fit needs this many points (fitted and held out together)


def feature(k: dict, name: str) -> float:
    """One feature of a kernel (its dict, as in a calibration file)."""
    if name == "macs":
        return float(k["macs"])
    if name == "macs/cout":
        return float(k["macs"]) / max(int(k["cout"]), 1)
    if name == "act":
        return float(k["bytes_in"]) + float(k["bytes_out"])
    if name == "w":
        return float(k["bytes_w"])
    if name == "n":
        return float(k.get("batch", 1))
    if name == "groups":
        return float(k.get("groups", 1)) * float(k.get("batch", 1))
    if name == "inputs":
        return float(k["k"]) * float(k.get("batch", 1))
    if name == "group_rows":
        return float(k.get("groups", 1)) * float(k.get("pixels", 0))
    raise KeyError(name)


def _row(k: dict, names: tuple[str, ...]) -> list[float]:
    return [1.0] + [feature(k, n) for n in names]


def nnls(a: np.ndarray, b: np.ndarray, most: int | None = None) -> np.ndarray:
    """min ||a x - b|| with x >= 0 and at most ``most`` nonzero coefficients (None: any), exactly, by least squares
    on every subset of columns (few columns)."""
    n = a.shape[1]
    best, best_err = np.zeros(n), float(np.sum(b * b))
    for r in range(1, min(n, most or n) + 1):
        for cols in itertools.combinations(range(n), r):
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x < 0):
                continue
            err = float(np.sum((a[:, cols] @ x - b) ** 2))
            if err < best_err:
                best_err, best = err, np.zeros(n)
                best[list(cols)] = x
    return best


def fit_kind(kernels: list[dict], us: list[float], names: tuple[str, ...]) -> list[float]:
    """The coefficients [c0, c_1..] for one kind and precision. A feature the same for every kernel (one batch
    size only) cannot be told from the fixed cost: it is left out (0), so the fixed cost stays fixed. At most one
    coefficient per :data:`POINTS_PER_COEF` points is nonzero: a kind with few points (a plain convolution, which
    a device with blocked layouts rarely runs) gets a fit of its strongest feature, not one that passes through
    every point and predicts nonsense between them (3 points and 6 coefficients predicted a 5 MMAC convolution at
    6x its time)."""
    x = np.array([_row(k, names) for k in kernels], dtype=np.float64)
    y = np.asarray(us, dtype=np.float64)
    w = 1.0 / np.maximum(y, 0.5)
    keep = [0] + [j for j in range(1, x.shape[1]) if np.ptp(x[:, j]) > 0]
    scale = np.abs(x[:, keep]).max(axis=0)
    scale[scale == 0] = 1.0
    c = np.zeros(x.shape[1])
    c[keep] = nnls(x[:, keep] / scale * w[:, None], y * w, most=max(1, (len(y) - 1) // POINTS_PER_COEF)) / scale
    return [float(v) for v in c]


def predict_us(fit: dict, k: dict) -> float:
    """A kernel's predicted time (µs) from its kind's fit."""
    return float(np.dot(fit["coef"], _row(k, tuple(fit["features"]))))


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w) - 0.5 * w
    return float(np.interp(q / 100 * w.sum(), cum, v))


def holdout_stats(errors: list[float], us: list[float]) -> dict:
    """Relative errors of the held-out points: their share within ±10/±20%, median |error|, and the BAND
    percentiles weighted by each point's time (a model's time is mostly its large kernels)."""
    e, w = np.asarray(errors, dtype=np.float64), np.asarray(us, dtype=np.float64)
    if e.size == 0:
        return {"n": 0}
    return {"n": int(e.size), "median_abs": float(np.median(np.abs(e))), "within10": float(np.mean(np.abs(e) <= 0.1)),
            "within20": float(np.mean(np.abs(e) <= 0.2)), "low": _weighted_percentile(e, w, BAND[0]),
            "high": _weighted_percentile(e, w, BAND[1]), "errors": [round(float(v), 4) for v in e]}


def _fit_group(group: list, names: tuple[str, ...], time_of) -> dict:
    train = [s for s in group if s.split == "fit"] or group
    coef = fit_kind([s.kernel for s in train], [time_of(s) for s in train], names)
    fit = {"features": list(names), "coef": coef, "n_fit": len(train)}
    held = [s for s in group if s.split == "holdout" and time_of(s) > 0]
    fit["holdout"] = holdout_stats([predict_us(fit, s.kernel) / time_of(s) - 1 for s in held], [time_of(s) for s in held])
    return fit


def op_key(kind: str, op: str, dtype: str) -> str:
    """The fit key of one op of a :data:`PER_OP` kind: "elementwise:Erf/fp32"."""
    return f"{kind}:{op}/{dtype}"


def fit_all(samples) -> dict:
    """Every kind and precision in the samples: {"kind/dtype": fit} with warm caches, and {"kind/dtype/cold": fit}
    after a flush from the samples that have cold times (at least 3); an op of a :data:`PER_OP` kind with
    :data:`OP_POINTS` samples or more also {"kind:op/dtype": fit}; a fit is {"features", "coef", "n_fit", "holdout"}."""
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(f"{s.kind}/{s.dtype}", []).append(s)
    by_op: dict[str, list] = {}
    for s in samples:
        if s.kind in PER_OP and s.kernel.get("op"):
            by_op.setdefault(op_key(s.kind, s.kernel["op"], s.dtype), []).append(s)
    groups.update({k: g for k, g in by_op.items() if len(g) >= OP_POINTS})
    out = {}
    for key, group in sorted(groups.items()):
        names = FEATURES[key.split("/")[0].split(":")[0]]
        out[key] = _fit_group(group, names, lambda s: s.us)
        cold = [s for s in group if s.cold_us is not None]  # the points' own kernels, not those timed beside them
        if len(cold) >= 3:
            out[f"{key}/cold"] = _fit_group(cold, names, lambda s: s.cold_us)
    for key in (k for k in out if ":" in k):  # an op's own fit without held-out points: its kind's error, its band
        kind_key = key.split(":")[0] + "/" + key.split("/")[1]
        if not out[key]["holdout"].get("n") and kind_key in out:
            out[key]["holdout"] = {**out[kind_key]["holdout"], "n": 0, "from": kind_key}
    return out


def band(fits: dict, per_key_us: dict[str, float]) -> tuple[float, float]:
    """(low, high) µs of a sum of kernel predictions grouped by fit ("kind/dtype", "kind/dtype/cold"): each kind's
    sum moved by its held-out BAND percentiles (all kernels of a kind off together, as a systematic error would
    be; its warm and cold parts together), the kinds' moves combined as independent errors (root of the sum of
    squares: one kind's fit being off says nothing of another's), the band always holding the prediction."""
    down: dict[str, float] = {}
    up: dict[str, float] = {}
    for key, us in per_key_us.items():
        h = fits.get(key, {}).get("holdout", {})
        lo_e, hi_e = h.get("low", 0.0), h.get("high", 0.0)
        kind = "/".join(key.split("/")[:2])
        # a prediction p with relative error e means truth = p / (1 + e)
        down[kind] = down.get(kind, 0.0) + us - min(us / (1 + hi_e), us)
        up[kind] = up.get(kind, 0.0) + max(us / (1 + max(lo_e, LOW_FLOOR)), us) - us
    total = sum(per_key_us.values())
    return total - math.sqrt(sum(v * v for v in down.values())), total + math.sqrt(sum(v * v for v in up.values()))
