"""Calibrate a device once: time the kernel grid on a profile's runtime, fit a latency model per kernel type.

``calibrate(CalibrateConfig(profile="raspberry-pi-5", out="pi5.json")) -> Calibration`` runs on the
device, torch-free, in a few minutes: it draws the grid (:mod:`edgerobust.edge.estimate.grid`), builds
each point as a tiny ONNX model, splits it into kernels as the device's runtime runs it
(:mod:`edgerobust.edge.estimate.kernels`, so the fit sees the same features prediction will), times
every node with the profile's sessions (:mod:`edgerobust.edge.estimate.timing`: kernels with weights
both with warm caches and after a flush) in ``passes`` passes in shuffled order, keeping each node's
fastest pass (a neighbour's burst only ever slows a node down). Every timed node is a sample of its own
kind: the point's own kernel and the layout changes and quantize nodes the runtime runs around it. It
also measures the cost of a run, of a node and of the profiler (before, between and after the passes, the
median of each kept: they move with the host's state), and the cache curve (how cold a model runs by the
size of its weights). A share ``holdout`` of the points (the same shapes in every precision)
is kept out of the fit (:mod:`edgerobust.edge.estimate.fit`). Last it times small networks of its own
whole and predicts them (:mod:`edgerobust.edge.estimate.composed`): their errors are the band every
estimate carries. It records whether the device fuses a residual add into the convolution before it,
its NCHWc block, and the host: CPU model, instruction sets, cores, onnxruntime.

The file is JSON (``{"_type", "_version", "_data"}``, under 1 MB) and goes with the user to any host,
where ``audit``/``profile`` with the ``estimate`` field predict a bundle from it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust import __version__
from edgerobust.edge.estimate import fit as F
from edgerobust.edge.estimate.grid import Point, draw, micro_model, residual_model
from edgerobust.edge.estimate.composed import time_composed
from edgerobust.edge.estimate.damage import damage
from edgerobust.edge.estimate.graph import nchwc_block, optimized
from edgerobust.edge.estimate.kernels import DTYPES, WEIGHTED, extract
from edgerobust.edge.files.atomic import atomic_file
from edgerobust.edge.estimate.sumup import kernel_sum
from edgerobust.edge.estimate.timing import (TIMINGS, Flush, cache_curve, default_timing, overheads, profiler_cost,
                                               time_nodes, wall_us)
from edgerobust.edge.runtime.host import OtherLoad, host_info
from edgerobust.edge.runtime.profile_schema import GPU_PROVIDERS, DeviceProfile
from edgerobust.edge.runtime.profiles import best_match_profile, load_profile
from edgerobust.edge.runtime.sessions import plan_providers
from edgerobust.errors import UsageError

TYPE = "edgerobust.edge.estimate.calibration"
VERSION = 5  # 2: every node's kernel of its own kind (data movement, layout changes), the NCHWc block;
# 3: points at a batch of 8 and a cost per image, linear layers over many rows; 4: grouped convolutions,
# windowed average pools, concatenations of up to 48 inputs requantized; 5: the int8 networks on integer kernels
# (their errors are the int8 band), DenseNet's normalizations in them, a kind with few points fitted on few features


@dataclass(frozen=True)
class CalibrateConfig:
    """What to calibrate and how.

    profile: a shipped profile name, a path to a ``.toml``, a DeviceProfile, or None for the host's best
        match. out: the calibration file to write (None: none written).
    dtypes: precisions to time (fp32, fp16, int8); None: fp32 and int8, and fp16 where the first
        provider is CUDA or TensorRT.
    scale: the grid's size relative to the full one (``grid.POINTS``, about 380 points per precision);
        0.2 for a quick look. holdout: share of the points kept out of the fit to measure its error.
    passes: times each point is timed (shuffled order); the fastest kept. seconds: timed runs per
        point and pass. timing: "nodes" or "wall" (see timing.py); None: nodes on the CPU.
    seed: the grid's draw and the hold-out split. overwrite: replace an existing ``out``.
    """

    profile: object = None
    out: Path | None = None
    dtypes: tuple[str, ...] | None = None
    scale: float = 1.0
    holdout: float = 0.2
    passes: int = 2
    seconds: float = 0.08
    timing: str | None = None
    seed: int = 0
    allow_fallback: bool = False
    show_progress: bool = True
    overwrite: bool = False

    def __post_init__(self):
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.dtypes is not None:
            dtypes = tuple(str(d).strip().lower() for d in self.dtypes)
            bad = [d for d in dtypes if d not in DTYPES]
            if bad or not dtypes:
                raise UsageError(f"`dtypes` must name some of {', '.join(DTYPES)}; got {', '.join(self.dtypes) or 'none'}.")
            object.__setattr__(self, "dtypes", tuple(dict.fromkeys(dtypes)))
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 0 < self.scale <= 4:
            raise UsageError(f"`scale` must be a number in (0, 4]; got {self.scale!r}.")
        if not isinstance(self.holdout, (int, float)) or not 0 < self.holdout < 0.5:
            raise UsageError(f"`holdout` must be a share in (0, 0.5); got {self.holdout!r}.")
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise UsageError(f"`passes` must be an integer >= 1; got {self.passes!r}.")
        if self.timing is not None and self.timing not in TIMINGS:
            raise UsageError(f"timing must be one of {', '.join(TIMINGS)}; got {self.timing!r}.")


@dataclass(frozen=True)
class Sample:
    """One grid point at one precision: its kernel's features, its time (µs, the fastest pass) with warm
    caches, and after a flush (``cold_us``, kernels with weights), and whether the fit saw it (``split``:
    fit or holdout)."""

    kind: str
    dtype: str
    split: str
    point: dict
    kernel: dict
    us: float
    passes_us: tuple[float, ...] = ()
    cold_us: float | None = None
    cold_passes_us: tuple[float, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """A device's kernel timings and the fit made from them; everything an estimate needs.

    ``run_us``/``node_us``: the cost of a run and of each node beyond the kernels' own times;
    ``fuses_add``: the device runs a float residual add inside the convolution before it; ``nchwc_block``: the
    channel block of the device's NCHWc layout (0: none; :func:`edgerobust.edge.estimate.graph.nchwc_block`);
    ``composed``: {precision: [[predicted ms, measured ms], ...]} of the calibration's own small networks
    (:mod:`edgerobust.edge.estimate.composed`): the model-level error an estimate's band is drawn from;
    ``cache``: ((weight bytes, cold share), ...), how cold a model's kernels run by the size of its weights
    (timing.cache_curve); ``profiler_us``: what onnxruntime's profiler added to each node it timed, taken off
    every kernel time (timing.profiler_cost); ``other_load``: the share of the cores other processes used while the grid was timed;
    ``fixed_rounds``: ((run, node, profiler µs), ...) each time they were measured (before, between and after the
    grid's passes): ``run_us``, ``node_us`` and ``profiler_us`` are their medians.
    """

    created: str
    edgerobust_version: str
    profile: str
    profile_source: str
    providers: tuple[str, ...]
    graph_optimization: str
    intra_op_threads: int
    host: dict
    timing: str
    fuses_add: bool
    run_us: float
    node_us: float
    dtypes: tuple[str, ...]
    samples: tuple[Sample, ...]
    fits: dict = field(default_factory=dict)
    cache: tuple = ()
    profiler_us: float = 0.0
    other_load: float | None = None
    seconds: float = 0.0
    nchwc_block: int = 0
    composed: dict = field(default_factory=dict)
    fixed_rounds: tuple = ()

    def describe(self) -> str:
        """``raspberry-pi-5 on Cortex-A76, 4 cores, aarch64 (asimd, asimddp), onnxruntime 1.20.1``."""
        h = self.host
        isa = ", ".join(h.get("isa") or ()) or "no ISA flags read"
        return (f"{self.profile} on {h.get('cpu')}, {h.get('cores')} cores, {h.get('machine')} ({isa}), "
                f"onnxruntime {h.get('onnxruntime')}")


def to_json(c: Calibration) -> dict:
    return {"_type": TYPE, "_version": VERSION, "_data": dataclasses.asdict(c)}


def from_json(data: dict, source: str = "the calibration") -> Calibration:
    """A Calibration from its JSON; an error naming ``source`` when the file is not one."""
    if not isinstance(data, dict) or data.get("_type") != TYPE:
        raise UsageError(f"`estimate` '{source}' is not an edgerobust calibration file.",
                         fix="Make one on the device with `edgerobust calibrate`.")
    if data.get("_version") != VERSION:
        raise UsageError(f"`estimate` '{source}' is calibration version {data.get('_version')}; this edgerobust "
                         f"reads version {VERSION}.", fix="Calibrate the device again with this edgerobust.")
    d = data.get("_data")
    bad = damage(d) if isinstance(d, dict) else ("_data", d)
    if bad is not None:
        raise UsageError(f"`estimate` '{source}' is a damaged calibration file.",
                         why=f"Its field '{bad[0]}' is {repr(bad[1])[:80]}, which no calibration holds.",
                         fix="Calibrate the device again.")
    d = dict(d)
    try:
        d["samples"] = tuple(Sample(**{**s, "passes_us": tuple(s.get("passes_us", ())),
                                       "cold_passes_us": tuple(s.get("cold_passes_us", ()))}) for s in d["samples"])
        d["cache"] = tuple(tuple(c) for c in d.get("cache", ()))
        d["fixed_rounds"] = tuple(tuple(r) for r in d.get("fixed_rounds", ()))
        for key in ("providers", "dtypes"):
            d[key] = tuple(d[key])
        return Calibration(**d)
    except (KeyError, TypeError) as exc:
        raise UsageError(f"`estimate` '{source}' is a damaged calibration file.", why=str(exc),
                         fix="Calibrate the device again.") from exc


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Read a calibration file written by :func:`calibrate`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"The calibration file `estimate` '{path}' does not exist.",
                         fix="Make one on the device with `edgerobust calibrate`.") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"`estimate` '{path}' cannot be read as JSON.", why=str(exc)) from exc
    return from_json(data, str(path))


# =============================================================================================


def resolve(profile) -> DeviceProfile:
    """A DeviceProfile from a name, a path, a profile, or None (the host's best match)."""
    if isinstance(profile, DeviceProfile):
        return profile
    return load_profile(best_match_profile().name if profile is None else profile)


def _dtypes(config: CalibrateConfig, profile: DeviceProfile) -> tuple[str, ...]:
    if config.dtypes is not None:
        return config.dtypes
    gpu = profile.provider_names[0] in GPU_PROVIDERS
    return ("fp32", "fp16", "int8") if gpu else ("fp32", "int8")


def _split(points: list[Point], share: float, seed: int) -> list[str]:
    """fit / holdout per point: a share of each kind held out (at least one when a kind has 4 or more)."""
    rng = np.random.default_rng(seed + 1)
    split = ["fit"] * len(points)
    kinds: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        kinds.setdefault(p.kind, []).append(i)
    for idx in kinds.values():
        n = int(round(len(idx) * share)) if len(idx) >= 4 else 0
        for i in rng.choice(idx, size=max(n, 1 if len(idx) >= 4 else 0), replace=False):
            split[int(i)] = "holdout"
    return split


def fuses_residual_add(profile: DeviceProfile) -> bool:
    """Does the profile's graph level fuse conv -> add -> relu into one node (no Add left)?"""
    if profile.session.graph_optimization != "all":
        return False
    return not any(n.op_type == "Add" for n in optimized(residual_model(), "all").graph.node)


def _main(kind: str, point: Point) -> bool:
    """Is a kernel of ``kind`` the point's own (a plain "-nchw" convolution counts as its point's kind, and the
    element-by-element transpose a "gather" transpose point times)?"""
    return kind.removesuffix("-nchw") == point.kind or (kind == "transpose-gather" and point.op == "gather")


def _samples(point: Point, split: str, kernels, warm: list[dict], cold: list[dict], profiler_us: float = 0.0
             ) -> list[Sample]:
    """One sample per timed node of a point's tiny model: the point's own kernel, and the nodes around it that
    the runtime runs as it would in a model (NCHWc reorders, int8 transposes, quantize nodes), each of its own
    kind. ``warm``/``cold``: each pass's node times (:func:`time_nodes`), less ``profiler_us`` each; a wall time
    ("") is the point's own kernel's."""
    out = []
    for k in kernels:
        own = _main(k.kind, point)
        key = "" if "" in (warm[0] if warm else {}) and own else k.name
        passes = [max(t[key] - profiler_us, 0.0) for t in warm if key in t]
        if not passes or (key == "" and out):
            continue
        cold_passes = ([max(t[key] - profiler_us, 0.0) for t in cold if key in t]
                       if own and k.kind in WEIGHTED else [])
        out.append(Sample(kind=k.kind, dtype=k.dtype, split=split, point=point.to_dict(),
                          kernel=dataclasses.replace(k, name="").to_dict(), us=min(passes), passes_us=_round(passes),
                          cold_us=min(cold_passes) if cold_passes else None, cold_passes_us=_round(cold_passes)))
    return out


def _time_grid(jobs, models, points, profile, plan, timing, config, run_us, advance, between) -> dict:
    """Every job (point, precision, "warm" or "cold") timed ``config.passes`` times in shuffled order: a list of
    node-time dicts per job, the profiler's cost still in; ``between()`` after each pass but the last."""
    rng, flush = np.random.default_rng(config.seed + 2), Flush()
    times: dict[tuple, list[dict]] = {j: [] for j in jobs}
    for pass_ in range(config.passes):
        if pass_:
            between()
        for n in rng.permutation(len(jobs)):
            i, d, cond = jobs[int(n)]
            times[jobs[int(n)]].append(time_nodes(models[(i, d)], profile, plan, timing, config.seconds, run_us,
                                                  flush if cond == "cold" else None, batch=points[i].n))
            advance(1, f"pass {pass_ + 1}: {points[i].kind} {d} {cond}")
    return times


def fixed_costs(profile: DeviceProfile, plan, seconds: float, timing: str) -> tuple[float, float, float]:
    """(µs per run, µs per node, µs the profiler adds to each node it times: 0 for wall timing), measured once
    (:func:`edgerobust.edge.estimate.timing.overheads`, :func:`~edgerobust.edge.estimate.timing.profiler_cost`)."""
    run_us, node_us = overheads(profile, plan, seconds)
    return run_us, node_us, profiler_cost(profile, plan, seconds, run_us, node_us) if timing == "nodes" else 0.0


def calibrate(config: CalibrateConfig) -> Calibration:
    """Time the grid on the profile and fit it; write ``config.out`` when given. See the module docstring."""
    from edgerobust.edge.runtime.measure import maybe_task

    if config.out is not None and config.out.exists() and not config.overwrite:
        raise UsageError(f"`out` '{config.out}' already exists.", why="edgerobust never overwrites a calibration.",
                         fix="Choose another `out`, or pass `overwrite`.")
    profile = resolve(config.profile)
    plan = plan_providers(profile, allow_fallback=config.allow_fallback)
    timing = config.timing or default_timing(plan)
    dtypes = _dtypes(config, profile)
    points = draw(config.seed, config.scale)
    split = _split(points, config.holdout, config.seed)
    signed = profile.provider_names[0] == "TensorrtExecutionProvider"
    models = {(i, d): micro_model(points[i], d, signed) for i in range(len(points)) for d in dtypes}
    cold = timing == "nodes"  # a flush reaches the CPU's caches only
    jobs = [(i, d, c) for (i, d) in models for c in ("warm", "cold")
            if c == "warm" or (cold and points[i].kind in WEIGHTED)]
    t0, meter = time.perf_counter(), OtherLoad().start()
    with maybe_task(f"Calibrating {profile.name}", config.passes * len(jobs) + 4, config.show_progress) as advance:
        # the fixed costs move with the host's state: measured before, between and after the grid's passes, and
        # the median of each kept (a burst during one measurement does not move them)
        rounds = [fixed_costs(profile, plan, max(config.seconds, 0.1), timing)]
        fuses, block = fuses_residual_add(profile), nchwc_block(profile.session.graph_optimization)
        advance(1, "run, node and profiler overhead")
        curve = cache_curve(profile, plan, config.seconds, Flush(), rounds[0][2]) if cold else ()
        advance(1, "cache")
        kernels = {j: extract(m, profile.session.graph_optimization, batch=points[j[0]].n) for j, m in models.items()}
        advance(1, "kernels split")
        again = lambda: rounds.append(fixed_costs(profile, plan, max(config.seconds, 0.1), timing))  # noqa: E731
        times = _time_grid(jobs, models, points, profile, plan, timing, config, rounds[0][0], advance, again)
        again()
        run_us, node_us, prof_us = (float(np.median(v)) for v in zip(*rounds))
        samples = tuple(x for (i, d) in models for x in _samples(points[i], split[i], kernels[(i, d)],
                                                                  times[(i, d, "warm")], times.get((i, d, "cold"), []),
                                                                  prof_us))
        s = profile.session
        cal = Calibration(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                          edgerobust_version=__version__, profile=profile.name, profile_source=profile.source,
                          providers=tuple(p for p, _ in plan.use), graph_optimization=s.graph_optimization,
                          intra_op_threads=s.intra_op_threads, host=dataclasses.asdict(host_info()), timing=timing,
                          fuses_add=fuses, nchwc_block=block, run_us=run_us, node_us=node_us, profiler_us=prof_us,
                          dtypes=dtypes, samples=samples, cache=curve, fits=F.fit_all(samples),
                          fixed_rounds=tuple(tuple(round(v, 3) for v in r) for r in rounds))
        composed = time_composed(dtypes, lambda m: _predict_ms(cal, m),
                                 lambda m: wall_us(m, profile, plan, max(config.seconds, 0.1)) / 1e3, signed,
                                 config.scale)
        advance(1, "networks")
    cal = dataclasses.replace(cal, composed=composed, other_load=meter.stop(), seconds=time.perf_counter() - t0)
    if config.out is not None:
        save(cal, config.out)
    return cal


def _predict_ms(cal: Calibration, model: bytes) -> float | None:
    """One of the calibration's own networks predicted from its fits, as an estimate predicts a model (ms)."""
    ks = extract(model, cal.graph_optimization, cal.fuses_add, cal.nchwc_block)
    s = kernel_sum(cal.fits, cal.cache, ks)
    return None if s.missing else (s.us + cal.run_us + cal.node_us * len(ks)) / 1e3


def _round(values) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in values)


def save(cal: Calibration, path: str | os.PathLike) -> Path:
    """Write the calibration as compact JSON (about 1 MB for the full grid), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(to_json(cal), separators=(",", ":")) + "\n", encoding="utf-8")
    return path

