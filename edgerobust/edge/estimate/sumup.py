"""A model's kernels summed under a calibration's fits: what every estimate and the calibration's own networks share.

:func:`kernel_sum` predicts each kernel from its kind's fit (:mod:`edgerobust.edge.estimate.fit`), its warm and
cold fits mixed by how cold the model's weights run (the calibration's cache curve,
:func:`edgerobust.edge.estimate.timing.cold_share`), and groups the time by fit and by kind. A kernel whose
own fit the calibration lacks takes a stand-in where one is sound (:func:`fit_key`), and is named. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgerobust.edge.estimate import fit as F
from edgerobust.edge.estimate.kernels import DTYPES, MOVES
from edgerobust.edge.estimate.timing import cold_share


# The grid's linear kernels multiply one row per image (a classifier's head) or up to this many (a MatMul over
# every pixel of a 64×64 feature map: ConvNeXt's first stage at 256 px). Beyond that it extrapolates, and says so.
LINEAR_ROWS = 4096
# A kernel kind a small grid (a low `scale`) may not have drawn takes the nearest kind's fit, a faster one: said.
STAND_INS = {"grouped": "conv", "avgpool": "pool", "transpose-gather": "transpose"}  # before gather points: too fast
# Fused forms of an op the grid times unfused: the runtime fuses a Linear layer's bias add into the GELU after it
# (ConvNeXt's BiasGelu); the grid's GELU has no bias. The same kernel with one more read.
OP_SAME = {"BiasGelu": "Gelu", "FastGelu": "Gelu"}


@dataclass
class KernelSum:
    """``per_key``: predicted µs by fit ("kind/dtype", "kind/dtype/cold"); ``by_kind``: ms by kernel kind;
    ``missing``: precisions with compute kernels no fit covers; ``stand_ins``: kinds costed by another fit, in
    words; ``cold``: the share of cold-cache time mixed in; ``rows``: see :data:`LINEAR_ROWS`."""

    per_key: dict = field(default_factory=dict)
    by_kind: dict = field(default_factory=dict)
    missing: set = field(default_factory=set)
    stand_ins: set = field(default_factory=set)
    cold: float = 0.0
    rows: int = 0  # the most rows per image of a linear kernel beyond the grid's (LINEAR_ROWS): extrapolated, said

    @property
    def us(self) -> float:
        return sum(self.per_key.values())


def fit_key(fits: dict, kind: str, dtype: str, op: str = "") -> tuple[str | None, str | None]:
    """(the fit a kernel takes, or None; what stood in, in words, or None when its own fit exists): an op with a
    fit of its own (:data:`edgerobust.edge.estimate.fit.PER_OP`) takes it, else its kind's; a kind
    that only moves data takes its kind's fit at another precision (its time is its bytes); a plain "-nchw"
    convolution the calibration never met takes the blocked kind's fit, and a kind in STAND_INS its stand-in's."""
    for name in (op, OP_SAME.get(op)):
        if name and F.op_key(kind, name, dtype) in fits:
            return F.op_key(kind, name, dtype), None
    key = f"{kind}/{dtype}"
    if key in fits:
        return key, None
    moves = kind in MOVES + ("scalar", "view")
    other = next((f"{kind}/{d}" for d in DTYPES if f"{kind}/{d}" in fits), None) if moves else None
    if other:  # its own kind at another precision before any stand-in: its time is its bytes
        return other, f"{kind} {dtype} as {other.split('/')[1]}"
    base = kind.removesuffix("-nchw")
    for other in (base, STAND_INS.get(base)):
        if other and other != kind and f"{other}/{dtype}" in fits:
            return f"{other}/{dtype}", f"{kind} as {other}"
    return None, (f"{kind} {dtype} (uncosted)" if moves else None)


def kernel_sum(fits: dict, cache, kernels) -> KernelSum:
    """The kernels' predicted times under ``fits`` (see the module docstring)."""
    s = KernelSum(cold=cold_share(cache, sum(k.bytes_w for k in kernels)))
    for k in kernels:
        key, stand_in = fit_key(fits, k.kind, k.dtype, k.op)
        if stand_in:
            s.stand_ins.add(stand_in)
        if key is None:
            if stand_in is None:
                s.missing.add(k.dtype)
            continue
        if k.kind == "linear" and k.pixels > LINEAR_ROWS * k.batch:
            s.rows = max(s.rows, k.pixels // k.batch)
        parts = {key: max(F.predict_us(fits[key], k.to_dict()), 0.0)}
        if f"{key}/cold" in fits and s.cold > 0:
            parts = {key: (1 - s.cold) * parts[key],
                     f"{key}/cold": s.cold * max(F.predict_us(fits[f"{key}/cold"], k.to_dict()), 0.0)}
        for name, us in parts.items():
            s.per_key[name] = s.per_key.get(name, 0.0) + us
            s.by_kind[k.kind] = s.by_kind.get(k.kind, 0.0) + us / 1e3
    return s
