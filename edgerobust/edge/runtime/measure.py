"""Latency, memory and size of ONNX models on a device profile, measured the same way every time.

* Sessions come from :mod:`edgerobust.edge.runtime.sessions` (providers, threads, spinning, affinity, arena
  as the profile says; each session's record says what was used).
* Latency comes from :mod:`edgerobust.edge.runtime.latency`: interleaved rounds without cross-talk between
  the sessions, long enough for the p50's 95% interval to be within the profile's target.
* Peak memory is the peak resident set (VmHWM, else ru_maxrss) of a **fresh process** that
  loads the model and runs it (``python -m edgerobust.edge.runtime._memprobe``), torch-free.

Torch-free: imports numpy and onnxruntime only.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust import events
from edgerobust.errors import ModelLoadError
from edgerobust.edge.runtime import resident
from edgerobust.edge.runtime.energy import EnergyReport, measure_energy
from edgerobust.edge.runtime.host import HostInfo, OtherLoad, host_info
from edgerobust.edge.runtime.latency import LatencyStats, interleaved_timings, summarize
from edgerobust.edge.runtime.profile_schema import DeviceProfile, MeasureSettings
from edgerobust.edge.runtime.precision import ran_precision
from edgerobust.edge.runtime.sessions import ORT_LEVEL, OpenSession, SessionInfo, config_entries, open_sessions, ort

MIB = 1 << 20


def measure_latency(sessions: dict[str, OpenSession], settings: MeasureSettings,
                    show_progress: bool = True) -> tuple[dict[str, list[LatencyStats]], list[int]]:
    """Latency of every session per batch size, interleaved; also the batch sizes skipped.

    A batch size is skipped when a model's batch axis is fixed to another size. Sessions
    opened with isolation "pool" are timed in a fresh process sharing one thread pool. With
    ``settings.device_resident`` each model also has a device-resident series (IO binding, see
    :mod:`edgerobust.edge.runtime.resident`) under ``resident_key(role)``, timed in the same rounds.
    """
    results: dict[str, list[LatencyStats]] = {role: [] for role in sessions}
    sizes = [bs for bs in settings.batch_sizes if all(s.input.shape[0] in (None, bs) for s in sessions.values())]
    skipped = [bs for bs in settings.batch_sizes if bs not in sizes]
    pooled = any(s.info.isolation == "pool" for s in sessions.values())
    with maybe_task(f"Measuring latency ({', '.join(sessions)})", len(settings.batch_sizes) * settings.rounds,
                     show_progress) as advance:
        for bs in skipped:
            advance(settings.rounds, f"batch {bs} skipped (fixed batch axis)")
        rounds = {bs: 0 for bs in sizes}

        def step(bs: int) -> None:
            rounds[bs] += 1
            advance(1 if rounds[bs] <= settings.rounds else 0, f"batch {bs}, round {rounds[bs]}")

        per_process: dict = {}
        if pooled:
            timed, per_process = _pooled_timings(sessions, settings, sizes, step)
        else:
            timed = _local_timings(sessions, settings, sizes, step)
        for bs in sizes:
            for role, t in timed[bs].items():
                results.setdefault(role, []).append(summarize(t, bs, rounds=rounds[bs],
                                                              process_p50_ms=per_process.get(bs, {}).get(role, ())))
    return results, skipped


def _runners(sessions: dict[str, OpenSession], bs: int, rng, settings: MeasureSettings | None = None) -> dict:
    """One runner per model from host memory, and one per model device-resident when the settings say so."""
    runners, feeds = {}, {}
    for role, s in sessions.items():
        feed = {s.input.name: rng.random(s.input.concrete(bs), dtype=np.float32).astype(s.input.dtype)}
        feeds[role] = next(iter(feed.items()))
        runners[role] = (lambda sess=s.session, f=feed: sess.run(None, f))
    if settings is not None and settings.device_resident:
        first = next(iter(sessions.values()))
        device, device_id = resident.binding_device(first.info.providers, first.plan.use)

        def graph(role: str, s=sessions):
            opts = resident.session_options(ort(), resident.session_spec(s[role].info))
            return resident.open_graph_session(ort(), s[role].info.model, role, opts, s[role].plan.use)

        runners.update(resident.resident_runners(ort(), {r: s.session for r, s in sessions.items()}, feeds, device,
                                                 device_id, graph if settings.cuda_graph else None))
    return runners


def _local_timings(sessions, settings: MeasureSettings, sizes: list[int], step) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {bs: interleaved_timings(_runners(sessions, bs, rng, settings), settings, lambda n, bs=bs: step(bs))
            for bs in sizes}


def _share(settings: MeasureSettings, n: int) -> MeasureSettings:
    """One probe process's part of the measurement when it is split over ``n`` processes."""
    if n <= 1:
        return settings
    return dataclasses.replace(settings, rounds=max(1, math.ceil(settings.rounds / n)),
                               max_rounds=max(1, math.ceil(settings.max_rounds / n)),
                               min_seconds=settings.min_seconds / n, max_seconds=settings.max_seconds / n)


def _pooled_timings(sessions, settings: MeasureSettings, sizes: list[int], step):
    """Run ``python -m edgerobust.edge.runtime._latencyprobe`` (the same loop, one shared thread pool) in
    ``settings.processes`` fresh processes in turn; every run pooled, and each process's p50 (ms)
    by batch size and role."""
    first = next(iter(sessions.values()))
    info = first.info
    spec = {"models": {role: s.info.model for role, s in sessions.items()},
            "providers": [[n, o] for n, o in first.plan.use], "intra_op_threads": info.intra_op_threads,
            "inter_op_threads": info.inter_op_threads, "graph_optimization": ORT_LEVEL[info.graph_optimization],
            "cpu_arena": info.cpu_arena, "memory_pattern": info.memory_pattern,
            "session_config": [list(e) for e in info.config_entries],
            "settings": dataclasses.asdict(_share(settings, settings.processes)),
            "inputs": {str(bs): {role: [s.input.name, list(s.input.concrete(bs)), s.input.dtype]
                                 for role, s in sessions.items()} for bs in sizes}}
    if settings.device_resident:
        device, device_id = resident.binding_device(info.providers, first.plan.use)
        spec["resident"] = {"device": device, "device_id": device_id, "cuda_graph": settings.cuda_graph}
    parts = [_probe(spec, step) for _ in range(max(1, settings.processes))]
    timings = {bs: {role: np.concatenate([np.asarray(p[str(bs)][role]) for p in parts]) for role in parts[0][str(bs)]}
               for bs in sizes}
    per_process = {bs: {role: tuple(1e3 * float(np.median(p[str(bs)][role])) for p in parts)
                        for role in parts[0][str(bs)]} for bs in sizes} if len(parts) > 1 else {}
    return timings, per_process


def _probe(spec: dict, step) -> dict:
    """One latency probe process: its timings by batch size (as text) and role."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "edgerobust.edge.runtime._latencyprobe"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errors, text=True)
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        result = None
        for line in proc.stdout:
            msg = json.loads(line) if line.startswith("{") else {}
            if "round" in msg:
                step(int(msg["round"]))
            elif "timings" in msg:
                result = msg["timings"]
        proc.wait()
        errors.seek(0)
        err = errors.read()
    if proc.returncode != 0 or result is None:
        raise ModelLoadError(f"The latency probe process failed (exit code {proc.returncode}).",
                             why=" | ".join(err.strip().splitlines()[-5:]) or "no output",
                             fix="Set measure.isolation = \"park\" in the profile to time the models in this process.")
    return result


class _NoTask:
    def __call__(self, n: int = 1, status: str | None = None) -> None:
        pass


def maybe_task(description: str, total: int, show: bool):
    """:func:`edgerobust.events.task` when ``show``; otherwise a context whose ``advance`` does nothing."""
    import contextlib

    if show:
        return events.task(description, total)
    return contextlib.nullcontext(_NoTask())


# =============================================================================================
# memory


@dataclass(frozen=True)
class MemoryResult:
    """Peak resident memory of a fresh process that loaded the model and ran it.

    ``gpu_peak_mb``: the process's peak device memory on CUDA/TensorRT, read through NVML
    (None when not measured); ``gpu_method`` says how it was read, or why it was not.
    """

    peak_mb: float
    before_model_mb: float | None
    batch_size: int
    runs: int
    method: str
    providers: tuple[str, ...]
    gpu_peak_mb: float | None = None
    gpu_method: str | None = None


def measure_memory(s: OpenSession, profile: DeviceProfile, batch_size: int, timeout_s: float = 600) -> MemoryResult:
    """Run ``python -m edgerobust.edge.runtime._memprobe`` on the model and read its peak RSS (and, on
    CUDA/TensorRT, its peak device memory through NVML)."""
    device, device_id = resident.binding_device(s.info.providers, s.plan.use)
    spec = {
        "model": s.info.model, "providers": [[n, o] for n, o in s.plan.use],
        "intra_op_threads": profile.session.intra_op_threads,
        "inter_op_threads": profile.session.inter_op_threads,
        "graph_optimization": ORT_LEVEL[profile.session.graph_optimization],
        "cpu_arena": profile.session.cpu_arena, "memory_pattern": profile.session.memory_pattern,
        "session_config": dict(config_entries(profile.session)),
        "input_name": s.input.name, "input_shape": list(s.input.concrete(batch_size)),
        "input_dtype": s.input.dtype, "runs": profile.measure.memory_runs,
        "gpu_memory": device == "cuda", "device_id": device_id,
    }
    cmd = [sys.executable, "-m", "edgerobust.edge.runtime._memprobe", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"Measuring the memory of the {s.info.role} model took over {timeout_s:.0f} s.",
                             fix="Check that the device is not swapping.") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ModelLoadError(f"The memory probe for the {s.info.role} model failed (exit code {proc.returncode}).",
                             why=" | ".join(tail) or "no output",
                             fix="A negative exit code or -9 usually means the process ran out of memory.")
    res = json.loads(lines[-1])
    before = res.get("before_model_kib")
    return MemoryResult(peak_mb=res["peak_kib"] / 1024, before_model_mb=None if before is None else before / 1024,
                        batch_size=batch_size, runs=profile.measure.memory_runs, method=res["method"],
                        providers=tuple(res["providers"]), gpu_peak_mb=res.get("gpu_peak_mb"),
                        gpu_method=res.get("gpu_method"))


# =============================================================================================
# one entry point


@dataclass(frozen=True)
class ModelMeasurement:
    """Everything measured about one model."""

    role: str
    path: str
    size_bytes: int
    size_mb: float
    session: SessionInfo
    latency: tuple[LatencyStats, ...]
    memory: MemoryResult | None
    resident_latency: tuple[LatencyStats, ...] = ()
    # the precision it ran in (edgerobust.edge.runtime.precision.ran_precision)
    precision: dict | None = None

    def latency_at(self, batch_size: int) -> LatencyStats | None:
        return next((lat for lat in self.latency if lat.batch_size == batch_size), None)


@dataclass(frozen=True)
class Speedup:
    """Base latency / deployed latency at one batch size (same run, interleaved).

    ``p50_low``/``p50_high``: the ratio's bounds from the two p50 intervals (base low / deployed
    high, base high / deployed low), so at least as wide as the ratio's own interval.
    """

    batch_size: int
    p50: float
    mean: float
    p50_low: float = float("nan")
    p50_high: float = float("nan")


@dataclass(frozen=True)
class MeasureReport:
    """Latency, memory and size of one or two models on one profile.

    ``other_load``: the share of all cores other processes used while latency was measured
    (Linux; None elsewhere). Above about 0.1 the figures include someone else's work.
    """

    profile: str
    profile_source: str
    host: HostInfo
    settings: MeasureSettings
    models: tuple[ModelMeasurement, ...]
    speedup: tuple[Speedup, ...]
    skipped_batch_sizes: tuple[int, ...]
    other_load: float | None = None
    resident_speedup: dict[str, tuple[Speedup, ...]] = field(default_factory=dict)
    energy: EnergyReport | None = None  # joules per inference, or why absent (edgerobust.edge.runtime.energy)

    @property
    def fallback(self) -> bool:
        return any(m.session.fallback for m in self.models)

    def model(self, role: str) -> ModelMeasurement | None:
        return next((m for m in self.models if m.role == role), None)


def speedup_of(base: LatencyStats, other: LatencyStats) -> Speedup:
    """base / other at one batch size, with the bounds from the two p50 intervals."""
    return Speedup(batch_size=base.batch_size, p50=base.p50_ms / other.p50_ms, mean=base.mean_ms / other.mean_ms,
                   p50_low=base.p50_ci_low_ms / other.p50_ci_high_ms, p50_high=base.p50_ci_high_ms / other.p50_ci_low_ms)


def speedups(m: MeasureReport, role: str) -> tuple[Speedup, ...]:
    """Every batch size's speedup of the model ``role`` over the base model measured in the same run."""
    base, model = m.model("base"), m.model(role)
    if base is None or model is None:
        return ()
    return tuple(speedup_of(b, o) for b, o in zip(base.latency, model.latency))


def resident_speedups(models) -> dict[str, tuple[Speedup, ...]]:
    """Device-resident speedup of every model over the base model's device-resident path, per batch size."""
    base = next((m for m in models if m.role == "base"), None)
    if base is None or not base.resident_latency:
        return {}
    return {m.role: tuple(Speedup(batch_size=b.batch_size, p50=b.p50_ms / o.p50_ms, mean=b.mean_ms / o.mean_ms,
                                  p50_low=b.p50_ci_low_ms / o.p50_ci_high_ms, p50_high=b.p50_ci_high_ms / o.p50_ci_low_ms)
                          for b, o in zip(base.resident_latency, m.resident_latency))
            for m in models if m.role != "base" and m.resident_latency}


PROCESS_SPREAD = 1.15  # per-process figures further apart than this are said (report warnings, headline)


def process_speedups(m: MeasureReport, batch_size: int) -> tuple[float, ...]:
    """The deployed model's speedup in each fresh probe process (measure.processes > 1), else ()."""
    base, dep = m.model("base"), m.model("deployed")
    if base is None or dep is None:
        return ()
    b, d = base.latency_at(batch_size), dep.latency_at(batch_size)
    if b is None or d is None or len(b.process_p50_ms) != len(d.process_p50_ms) or len(b.process_p50_ms) < 2:
        return ()
    return tuple(x / y for x, y in zip(b.process_p50_ms, d.process_p50_ms) if y > 0)


def measure(sessions: dict[str, OpenSession], profile: DeviceProfile, memory: bool = True,
            show_progress: bool = True) -> MeasureReport:
    """Measure latency (interleaved), peak memory (fresh process) and file size of each session's model.

    With roles 'base' and 'deployed' the speedup base/deployed is computed per batch size.
    """
    precision = ran_precision(sessions)
    meter = OtherLoad().start()
    latency, skipped = measure_latency(sessions, profile.measure, show_progress)
    other_load = meter.stop()
    measured = [b for b in profile.measure.batch_sizes if b not in skipped]
    mem_bs = max(measured) if measured else 1
    models = []
    with maybe_task("Measuring peak memory (fresh process)", len(sessions) if memory else 0, show_progress and memory) as adv:
        for role, s in sessions.items():
            size = Path(s.info.model).stat().st_size
            mem = measure_memory(s, profile, mem_bs) if memory and measured else None
            if memory:
                adv(1, role)
            models.append(ModelMeasurement(role=role, path=s.info.model, size_bytes=size, size_mb=size / MIB,
                                           session=s.info, latency=tuple(latency[role]), memory=mem,
                                           resident_latency=tuple(latency.get(resident.resident_key(role), ())),
                                           precision=precision.get(role)))
    speedup = []
    if "base" in sessions and "deployed" in sessions:
        speedup = [speedup_of(b, d) for b, d in zip(latency["base"], latency["deployed"])]
    # a separate pass after the timed runs, each model back to back at the first batch size measured
    energy = (measure_energy(_runners(sessions, measured[0], np.random.default_rng(1)), measured[0]) if measured else
              EnergyReport(available=False, reason="no batch size was measured"))
    return MeasureReport(profile=profile.name, profile_source=profile.source, host=host_info(),
                         settings=profile.measure, models=tuple(models), speedup=tuple(speedup),
                         skipped_batch_sizes=tuple(skipped), other_load=other_load,
                         resident_speedup=resident_speedups(models), energy=energy)


def measure_models(models: dict[str, str | os.PathLike], profile: DeviceProfile, allow_fallback: bool = False,
                   memory: bool = True, show_progress: bool = True) -> MeasureReport:
    """Open sessions for the models and measure them; the entry point of `edgerobust profile`."""
    return measure(open_sessions(models, profile, allow_fallback), profile, memory, show_progress)
