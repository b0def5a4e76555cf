"""A bundle's latency on a device not at hand, predicted from that device's calibration, with its band.

``estimate(EstimateConfig(calibration="pi5.json", models={"base": ..., "deployed": ...}, batch=(1, 8))) ->
Estimate`` splits each model into kernels as the device's runtime runs them (its optimized graph at the
calibrated level, with the device's NCHWc layout where this host can rebuild it:
:mod:`edgerobust.edge.estimate.kernels`), predicts each kernel from its kind's fit (warm and cold fits
mixed by how cold the model's weights run: :mod:`edgerobust.edge.estimate.sumup`), and sums:

    p50 ≈ run_us + Σ_kernels (kernel_us + node_us)

with the run and per-node costs the calibration measured, at each batch size asked for (the kernels'
work, bytes and images at that batch size). The band is the spread of the errors of the calibration's own
networks in the model's precision at the batch size it timed nearest
(:mod:`edgerobust.edge.estimate.composed`), or, for a calibration with too few, its held-out kernels'
(:func:`edgerobust.edge.estimate.fit.band`). The predicted speedup is the
base's p50 over each model's; its band pairs the base's low with the model's high and the reverse. What
the estimate could not cost as the device runs it (a kind the calibration lacks, a layout this host
cannot rebuild) is named in a warning that calls the figure a lower bound. Every figure here is an
estimate and is labelled so wherever it is shown; it never enters the measured tables. Torch-free.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.edge.estimate import fit as F
from edgerobust.edge.estimate.calibrate import Calibration, load_calibration
from edgerobust.edge.estimate.composed import BAND, composed_key, key_parts, model_errors
from edgerobust.edge.estimate.kernels import KINDS, MOVES, WEIGHTED, extract_noting
from edgerobust.edge.estimate.sumup import LINEAR_ROWS, kernel_sum
from edgerobust.edge.runtime.host import cpu_isa, host_info
from edgerobust.errors import UsageError

TYPE = "edgerobust.edge.estimate.estimate"
VERSION = 1


@dataclass(frozen=True)
class EstimateConfig:
    """calibration: a calibration file (or a Calibration); models: role -> ONNX model to predict; batch: the
    batch size to predict at, or several (an audit's: each model is predicted at each)."""

    calibration: object
    models: dict = field(default_factory=dict)
    batch: object = 1

    def __post_init__(self):
        batches = tuple(self.batch) if isinstance(self.batch, (tuple, list)) else (self.batch,)
        if not batches or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 4096 for b in batches):
            raise UsageError(f"The estimate's batch size must be an integer from 1 to 4096; got {self.batch!r}.")
        object.__setattr__(self, "batch", tuple(dict.fromkeys(batches)))
        if not isinstance(self.calibration, Calibration):
            object.__setattr__(self, "calibration", Path(self.calibration))
        if not self.models:
            raise UsageError("`estimate` needs at least one model to predict.")
        object.__setattr__(self, "models", {r: Path(p) for r, p in self.models.items()})


@dataclass(frozen=True)
class ModelEstimate:
    """One model's predicted p50 (ms) at one batch size on the calibrated device, its band, and where the time goes.

    ``by_kind``: predicted ms per kernel kind; ``fixed_ms``: the run's and the nodes' own cost;
    ``missing``: precisions the calibration lacks (then no p50: an estimate never guesses);
    ``weights_mb``: the weights read per inference; ``cold``: how far its kernels were taken from their
    warm-cache time toward their time from memory (0-1, from the calibration's cache curve).
    """

    role: str
    path: str
    p50_ms: float | None
    low_ms: float | None
    high_ms: float | None
    kernels: int
    dtypes: tuple[str, ...]
    by_kind: dict = field(default_factory=dict)
    fixed_ms: float = 0.0
    missing: tuple[str, ...] = ()
    weights_mb: float = 0.0
    cold: float = 0.0
    moves: int = 0  # kernels that only move data: split, concat, transpose, reorder, reshape, ...
    uncosted: tuple[str, ...] = ()  # kinds costed by a stand-in fit (uncosted_warning)
    layout: str | None = None  # what of the device's layout this host could not rebuild
    batch_size: int = 1
    band_from: str = ""  # "networks <precision>": the calibration's own networks' errors; "kernels": held-out kernels
    linear_rows: int = 0  # the most rows of a linear layer beyond the grid's: its cost extrapolated (rows_warning)


@dataclass(frozen=True)
class Estimate:
    """Predicted latency of every model on one calibrated device; a report's ``estimate`` section.

    ``models``: every role at every batch size of ``batch_sizes`` (``batch_size``: the first, which ``speedup``
    is for; ``speedups`` has each); ``device``: the calibrated device in words; ``same_host``: whether this
    host is the calibrated one (CPU model, cores and instruction sets alike), so a reader knows an estimate
    stands in for a device not at hand; ``holdout``: each kind's held-out error (n, share within ±20%,
    median |error|).
    """

    calibration: str
    calibration_sha256: str
    calibrated: str
    device: str
    profile: str
    same_host: bool
    model_form: str
    band: str
    batch_size: int
    models: tuple[ModelEstimate, ...]
    speedup: dict = field(default_factory=dict)
    holdout: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    label: str = "estimated"
    batch_sizes: tuple[int, ...] = (1,)
    speedups: dict = field(default_factory=dict)  # str(batch) -> role -> {p50, low, high}

    def model(self, role: str, batch: int | None = None) -> ModelEstimate | None:
        """The role's estimate at ``batch`` (None: the first batch size, ``batch_size``)."""
        batch = self.batch_size if batch is None else batch
        return next((m for m in self.models if m.role == role and m.batch_size == batch), None)

    def to_dict(self) -> dict:
        return {"_type": TYPE, "_version": VERSION, "_data": dataclasses.asdict(self)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_host(cal: Calibration) -> bool:
    """Is this host the calibrated one: the same CPU model, core count and instruction sets?"""
    h = cal.host
    here = host_info()
    return (here.cpu == h.get("cpu") and here.cores == h.get("cores") and here.machine == h.get("machine")
            and tuple(cpu_isa()) == tuple(h.get("isa") or ()))


def model_band(cal: Calibration, dtypes: tuple[str, ...], p_us: float, per_key: dict,
               batch: int = 1) -> tuple[float, float, str]:
    """(low µs, high µs, how): from the errors of the calibration's own networks in the model's precision
    (int8 where it has int8 kernels) where it timed them, at the batch size it timed nearest to ``batch``, else
    from its held-out kernels (fit.band)."""
    dtype = "int8" if "int8" in dtypes else dtypes[0] if dtypes else "fp32"
    timed = [1] + [b for d, b in map(key_parts, cal.composed) if d == dtype and b != 1]
    near = min(timed, key=lambda b: (abs(math.log(b) - math.log(max(batch, 1))), b))
    e = model_errors(cal.composed.get(composed_key(dtype, near), ()))
    if e["n"] >= 5:
        # a prediction p with relative error e means truth = p / (1 + e); the band always holds p
        return (min(p_us / (1 + e["high"]), p_us), max(p_us / (1 + max(e["low"], F.LOW_FLOOR)), p_us),
                f"networks {composed_key(dtype, near)}")
    low, high = F.band(cal.fits, per_key)
    return low, high, "kernels"


def predict_model(cal: Calibration, role: str, path: str | os.PathLike | bytes, batch: int = 1) -> ModelEstimate:
    """One model's estimate at ``batch`` (see the module docstring)."""
    kernels, layout = extract_noting(path, cal.graph_optimization, cal.fuses_add, cal.nchwc_block, batch)
    dtypes = tuple(sorted({k.dtype for k in kernels if k.kind in WEIGHTED + ("add", "pool", "avgpool")}))
    weights = sum(k.bytes_w for k in kernels)
    s = kernel_sum(cal.fits, cal.cache, kernels)
    fixed_us = cal.run_us + cal.node_us * len(kernels)
    kinds = {k: round(v, 4) for k, v in sorted(s.by_kind.items())}
    moves = sum(k.kind in MOVES + ("scalar", "view") for k in kernels)
    where = "(in memory)" if isinstance(path, bytes) else str(path)
    extra = {"uncosted": tuple(sorted(s.stand_ins)), "layout": layout, "batch_size": batch, "linear_rows": s.rows}
    if s.missing:
        return ModelEstimate(role, where, None, None, None, len(kernels), dtypes, kinds, fixed_us / 1e3,
                             tuple(sorted(s.missing)), weights / 2**20, s.cold, moves, **extra)
    total = s.us + fixed_us
    low, high, how = model_band(cal, dtypes, total, s.per_key, batch)
    if how == "kernels":
        low, high = low + fixed_us, high + fixed_us
    return ModelEstimate(role, where, total / 1e3, low / 1e3, high / 1e3, len(kernels), dtypes, kinds, fixed_us / 1e3,
                         (), weights / 2**20, s.cold, moves, band_from=how, **extra)


def uncosted_warning(m: ModelEstimate) -> str | None:
    """Said where the method could not cost a kernel as the device runs it, naming it: a kind with no fit at all,
    a plain convolution costed as a blocked one, a kind costed as its stand-in (sumup.STAND_INS), a layout this host cannot rebuild. (A data-movement kind costed
    at another precision is not: its time is its bytes.)"""
    weak = [u for u in m.uncosted if u.endswith("(uncosted)") or u.split(" as ")[0] in KINDS]  # not "concat fp16 as"
    if m.p50_ms is None or not (weak or m.layout):
        return None
    what = [f"kernels the calibration cannot cost as the device runs them: {', '.join(weak)}"] if weak else []
    return f"{m.role}: " + "; ".join(what + ([m.layout] if m.layout else [])) + ": read this estimate as a lower bound"


def rows_warning(m: ModelEstimate) -> str | None:
    """Said where linear layers multiply more rows than the grid's ever did: their cost is extrapolated."""
    if m.p50_ms is None or not m.linear_rows:
        return None
    return (f"{m.role}: linear layers over up to {m.linear_rows} rows per image (a MatMul over every pixel, as in "
            f"ConvNeXt and transformer MLPs) lie outside the calibration's grid, whose linear layers have at most "
            f"{LINEAR_ROWS}: their cost is extrapolated: read this estimate as uncertain")


def _speedups(models: tuple[ModelEstimate, ...]) -> dict:
    base = next((m for m in models if m.role == "base"), None)
    if base is None or base.p50_ms is None:
        return {}
    return {m.role: {"p50": base.p50_ms / m.p50_ms, "low": base.low_ms / m.high_ms, "high": base.high_ms / m.low_ms}
            for m in models if m.role != "base" and m.p50_ms}


def estimate(config: EstimateConfig) -> Estimate:
    """Predict every model of ``config.models`` on the calibrated device at ``config.batch``."""
    cal = config.calibration
    if isinstance(cal, Calibration):
        source, sha = "(in memory)", ""
    else:
        source, sha = str(cal), _sha256(cal) if cal.is_file() else ""
        cal = load_calibration(cal)
    models = tuple(predict_model(cal, role, path, b) for b in config.batch for role, path in config.models.items())
    first = [m for m in models if m.batch_size == config.batch[0]]
    warnings = [f"{m.role}: no estimate, the calibration has no {', '.join(m.missing)} kernels (calibrate the device "
                f"with `dtypes` including {', '.join(m.missing)})" for m in first if m.missing]
    warnings += [w for m in first for w in (uncosted_warning(m), rows_warning(m)) if w]
    if cal.other_load is not None and cal.other_load > 0.1:
        warnings.append(f"the calibration was timed while other processes used {cal.other_load:.0%} of the device's "
                        "cores: its kernel times may be slow")
    holdout = {k: {n: v for n, v in f.get("holdout", {}).items() if n != "errors"} for k, f in cal.fits.items()}
    speedups = {str(b): _speedups(tuple(m for m in models if m.batch_size == b)) for b in config.batch}
    return Estimate(calibration=source, calibration_sha256=sha, calibrated=cal.created, device=cal.describe(),
                    profile=cal.profile, same_host=same_host(cal), model_form=F.MODEL,
                    band=f"the {BAND[0]}th-{BAND[1]}th percentile errors of the calibration's own networks in the "
                         f"model's precision; where it timed fewer than 5, its held-out kernels' {F.BAND[0]}th-"
                         f"{F.BAND[1]}th percentile errors, per kernel type", batch_size=config.batch[0],
                    models=models, speedup=speedups[str(config.batch[0])], holdout=holdout, warnings=tuple(warnings),
                    batch_sizes=config.batch, speedups=speedups)
