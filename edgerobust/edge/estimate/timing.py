"""Timing one tiny model on a profile's runtime: the kernel's own time, without the run around it.

Two ways, recorded in the calibration as ``timing``:

* ``nodes`` (every provider the CPU's): onnxruntime's profiler (``SessionOptions.enable_profiling``)
  times every node of every run; the kernel's time is its node's ``kernel_time``, averaged over the runs
  between their 10th and 90th percentile (:func:`central_mean`). The layout and quantize nodes around it
  (which a whole model does once, not per kernel) and the run itself are left out. What the profiler adds
  to each node it times is measured on a chain of small convolutions and taken off (:func:`profiler_cost`:
  about 2 µs with one thread and 4-5 µs with two on a 2-core AMD EPYC); the cost of a run and of a node
  with the profiler off is measured on chains of do-nothing nodes (:func:`overheads`).
* ``wall`` (GPU providers, whose nodes run asynchronously): the run's median wall time less the cost of
  a run of a one-node model; the layout and quantize nodes around the kernel stay in.

Kernels with weights (convolutions, linear layers) are timed warm, back to back, and cold: after a flush
of the CPU caches before every run (a buffer twice the last-level cache, at least 16 MiB, is read), as in
a large model whose other layers push each layer's weights out (resnet18 pruned 0.5 at 128 px, fp32: its
256-channel convolutions ran 2x slower in the model than in a tiny model run back to back, and within
10% of a tiny model run after a flush). The kernel's input stays warm either way: the layout or quantize
node before it in the tiny model has just written it. :func:`cache_curve` measures where between warm and
cold a model sits by the size of its weights: chains of up to 32 convolutions (18 MiB), each convolution's
time in the chain placed between its time alone warm and cold. Kernels without weights (adds, pools,
memory ops) are timed warm only: in a model their inputs were just written.

Torch-free: numpy and onnxruntime.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgerobust.edge.estimate.grid import chain_model, feeds, overhead_model
from edgerobust.edge.estimate.graph import optimized
from edgerobust.edge.estimate.kernels import CONV_OPS
from edgerobust.edge.runtime.profile_schema import DeviceProfile
from edgerobust.edge.runtime.sessions import ProviderPlan, ort, session_options

TIMINGS = ("nodes", "wall")
# The cache curve's convolutions run on 4x4 pixels: reading their weights is then a large share of their time (at
# 8x8 a lone convolution ran as fast after a flush as back to back on a 2-core AMD EPYC, and the curve was noise).
CURVE_PX = 4


def default_timing(plan: ProviderPlan) -> str:
    """nodes when every provider used is the CPU's, else wall."""
    return "nodes" if all(p == "CPUExecutionProvider" for p, _ in plan.use) else "wall"


def _session(model: bytes, profile: DeviceProfile, plan: ProviderPlan, prefix: str | None):
    o = session_options(profile)
    if prefix:
        o.enable_profiling = True
        o.profile_file_prefix = prefix
    return ort().InferenceSession(model, sess_options=o, providers=[p for p, _ in plan.use],
                                  provider_options=[opts for _, opts in plan.use])


def last_level_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The largest CPU cache's size (Linux sysfs), or None where it cannot be read."""
    sizes = []
    for f in Path(root).glob("index*/size"):
        try:
            text = f.read_text(encoding="ascii").strip().upper()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * mult)
    return max(sizes) if sizes else None


class Flush:
    """Reads a buffer twice the last-level cache (16-256 MiB) to push every cache's contents out (a read, so
    no dirty lines are left to write back while the kernel runs)."""

    def __init__(self, nbytes: int | None = None):
        llc = last_level_cache_bytes() or (8 << 20)
        n = nbytes if nbytes is not None else min(max(2 * llc, 16 << 20), 256 << 20)
        self.buf = np.zeros(max(n // 8, 8), dtype=np.float64)

    def __call__(self) -> None:
        self.buf[::8].sum()  # one read per 64-byte line


def _runs(sess, feed: dict, seconds: float, flush: Flush | None = None, min_runs: int = 10, max_runs: int = 400,
          warmup: int = 3) -> np.ndarray:
    """Seconds per run, after ``warmup`` untimed runs, for at least ``seconds`` (flushes included) and
    ``min_runs`` runs; ``flush`` before each run, outside the time."""
    for _ in range(warmup):
        sess.run(None, feed)
    t, t0 = [], time.perf_counter()
    while len(t) < max_runs and (len(t) < min_runs or time.perf_counter() - t0 < seconds):
        if flush is not None:
            flush()
        a = time.perf_counter()
        sess.run(None, feed)
        t.append(time.perf_counter() - a)
    return np.asarray(t)


def central_mean(values) -> float:
    """The mean of the values between their 10th and 90th percentiles: robust to a neighbour's burst like
    the median, but finer than it when the values are whole microseconds (the profiler's unit)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    lo, hi = int(len(v) * 0.1), max(int(np.ceil(len(v) * 0.9)), int(len(v) * 0.1) + 1)
    return float(v[lo:hi].mean())


def node_times(events: list[dict], skip: int) -> dict[str, float]:
    """Kernel time (µs, :func:`central_mean` over runs) of every node in a profile, by node name, leaving out
    the first ``skip`` runs (warmup)."""
    per: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            per.setdefault(e["name"][: -len("_kernel_time")], []).append(float(e["dur"]))
    return {k: central_mean(v[skip:] if len(v) > skip else v) for k, v in per.items()}


def time_nodes(model: bytes, profile: DeviceProfile, plan: ProviderPlan, timing: str, seconds: float,
               run_us: float = 0.0, flush: Flush | None = None, profiler_us: float = 0.0, seed: int = 0,
               batch: int = 1) -> dict[str, float]:
    """Each node's time (µs) in one tiny model, by node name: the profiler's node times less its own cost per
    node ("nodes"), or {"": the run's wall time less ``run_us``} ("wall"); the caches flushed before each run
    when ``flush`` is given; a dynamic batch size fed ``batch`` images."""
    rng = np.random.default_rng(seed)
    if timing == "wall":
        sess = _session(model, profile, plan, None)
        t = _runs(sess, feeds(sess.get_inputs(), rng, batch), seconds, flush)
        return {"": max(float(np.median(t)) * 1e6 - run_us, 0.0)}
    with tempfile.TemporaryDirectory(prefix="edgerobust-calib-") as tmp:
        sess = _session(model, profile, plan, os.path.join(tmp, "p"))
        _runs(sess, feeds(sess.get_inputs(), rng, batch), seconds, flush)
        path = Path(sess.end_profiling())
        events = json.loads(path.read_text(encoding="utf-8"))
        del sess
    return {name: max(t - profiler_us, 0.0) for name, t in node_times(events, skip=3).items()}


def conv_us(model: bytes, profile: DeviceProfile, plan: ProviderPlan, timing: str, seconds: float,
            flush: Flush | None = None, profiler_us: float = 0.0) -> float:
    """The convolutions' time (µs) in a chain of them (:func:`chain_model`): the sum of its convolution nodes."""
    times = time_nodes(model, profile, plan, timing, seconds, flush=flush, profiler_us=profiler_us)
    if timing == "wall":
        return times[""]
    convs = {n.name for n in optimized(model, profile.session.graph_optimization).graph.node if n.op_type in CONV_OPS}
    return float(sum(t for name, t in times.items() if name in convs))


def wall_us(model: bytes, profile: DeviceProfile, plan: ProviderPlan, seconds: float) -> float:
    """Median wall time (µs) of one run of a model, profiler off."""
    sess = _session(model, profile, plan, None)
    return float(np.median(_runs(sess, feeds(sess.get_inputs(), np.random.default_rng(0)), seconds, min_runs=50))) * 1e6


def overheads(profile: DeviceProfile, plan: ProviderPlan, seconds: float, chain: int = 33) -> tuple[float, float]:
    """(µs per run, µs per node): a one-node model's wall time, and the slope from one node to ``chain``
    nodes that do nothing (Relu on 16 floats), less the first from the run."""
    one = wall_us(overhead_model(1), profile, plan, seconds)
    many = wall_us(overhead_model(chain), profile, plan, seconds)
    node = max((many - one) / (chain - 1), 0.0)
    return max(one - node, 0.0), node


def profiler_cost(profile: DeviceProfile, plan: ProviderPlan, seconds: float, run_us: float, node_us: float,
                  k: int = 32, repeats: int = 3) -> float:
    """µs the profiler adds to each node it times: a chain of ``k`` small convolutions (32 channels, 8x8, a
    few µs each) profiled, against its wall time with the profiler off less the run's and the nodes' cost;
    the median of ``repeats``. About 2 µs per node with one thread and 5 µs with two on a 2-core AMD EPYC:
    a tenth of a pruned mobilenet_v2's time if it were left in."""
    model, got = chain_model(k, 32, 8), []
    for _ in range(repeats):
        wall = wall_us(model, profile, plan, seconds)
        profiled = conv_us(model, profile, plan, "nodes", seconds)
        got.append((profiled - (wall - run_us - node_us * k)) / k)
    return max(float(np.median(got)), 0.0)


def cache_curve(profile: DeviceProfile, plan: ProviderPlan, seconds: float, flush: Flush, profiler_us: float = 0.0,
                chains: tuple[int, ...] = (2, 4, 8, 16, 32), repeats: int = 3) -> tuple[tuple[float, float], ...]:
    """((weight bytes, cold share), ...): for chains of k convolutions, how far each convolution's time in the
    chain lies from its time alone and warm (0) toward its time alone after a flush (1); the median of
    ``repeats`` rounds, each timing the lone convolution both ways and every chain."""
    per_conv, one = 128 * 128 * 9 * 4, chain_model(1, h=CURVE_PX)
    shares = []
    for _ in range(repeats):
        hot = conv_us(one, profile, plan, "nodes", seconds, profiler_us=profiler_us)
        cold = conv_us(one, profile, plan, "nodes", seconds, flush=flush, profiler_us=profiler_us)
        row = []
        for k in chains:
            t = conv_us(chain_model(k, h=CURVE_PX), profile, plan, "nodes", seconds, profiler_us=profiler_us) / k
            row.append(min(max((t - hot) / (cold - hot), 0.0), 1.0) if cold > hot * 1.02 else 1.0)
        shares.append(row)
    med = np.maximum.accumulate(np.median(np.asarray(shares), axis=0))  # never less cold with more weights
    return ((float(per_conv), 0.0),) + tuple((float(k * per_conv), round(float(f), 3)) for k, f in zip(chains, med))


def cold_share(curve, weight_bytes: float) -> float:
    """How cold a model with ``weight_bytes`` of weights runs, from a calibration's cache curve (log-size
    interpolation; 0 below the curve, its last share above it)."""
    if not curve:
        return 1.0
    xs = np.log([max(b, 1.0) for b, _ in curve])
    return float(np.interp(np.log(max(weight_bytes, 1.0)), xs, [f for _, f in curve]))
