"""Latency, memory and size of ONNX models on a device profile, measured the same way every time.

* Sessions are built from the profile (threads, optimization level, providers with options).
  A provider the profile asks for but this host lacks is an error unless ``allow_fallback``;
  the providers a session really uses (``get_providers()``) are recorded either way.
* Latency is measured per batch size in **interleaved rounds**: after warmup, round r runs
  model A k times then model B k times, and the next round starts with B, so clock drift,
  thermal throttling and background load hit both models alike.
* Peak memory is the peak resident set (VmHWM, else ru_maxrss) of a **fresh process** that
  loads the model and runs it (``python -m edgerobust._memprobe``), torch-free.

Torch-free: imports numpy and onnxruntime only.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import ui
from .errors import ModelLoadError, ProfileError, require
from .profiles import DeviceProfile, MeasureSettings

_ORT_LEVEL = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
_ORT_DTYPE = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
MIB = 1 << 20


def ort():
    """onnxruntime, or a DependencyError that says how to install it."""
    return require("onnxruntime", extra="cpu")


# ---------------------------------------------------------------------------------------------
# sessions


@dataclass(frozen=True)
class ProviderPlan:
    """Which providers a profile asked for, which this host has, and what will be used."""

    requested: tuple[str, ...]
    available: tuple[str, ...]
    missing: tuple[str, ...]
    use: tuple[tuple[str, dict], ...]

    @property
    def fallback(self) -> bool:
        return bool(self.missing)


def plan_providers(profile: DeviceProfile, available: Sequence[str] | None = None,
                   allow_fallback: bool = False) -> ProviderPlan:
    """Match the profile's providers with this host's; raise ProfileError on a gap unless allowed."""
    available = tuple(ort().get_available_providers() if available is None else available)
    requested = tuple(profile.provider_names)
    missing = tuple(p for p in requested if p not in available)
    if missing and not allow_fallback:
        raise ProfileError(
            f"The profile '{profile.name}' asks for {', '.join(missing)}, which this onnxruntime does not offer.",
            why=f"Available here: {', '.join(available) or 'none'}. Measuring on other providers would "
                f"not be the device the profile describes.",
            fix="Run on the device the profile is for (on a Jetson, install NVIDIA's onnxruntime-gpu), "
                "pass --allow-fallback to measure with what is available (the report says so), "
                "or choose a profile for this host, e.g. --profile laptop-cpu.")
    use = []
    for spec in profile.providers:
        if spec.name in available:
            use.append((spec.name, _provider_options(spec.name, dict(spec.options))))
    if not use:
        use.append(("CPUExecutionProvider", {}))
    return ProviderPlan(requested=requested, available=available, missing=missing, use=tuple(use))


def _provider_options(name: str, options: dict) -> dict:
    """Expand ``~`` in cache paths and create the folders, so TensorRT can write its engines."""
    out = dict(options)
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        if key in out and isinstance(out[key], str):
            path = Path(os.path.expanduser(out[key]))
            path.mkdir(parents=True, exist_ok=True)
            out[key] = str(path)
    return out


@dataclass(frozen=True)
class ModelInput:
    """The model's single input: name, shape (None for a dynamic axis) and numpy dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def concrete(self, batch_size: int) -> tuple[int, ...]:
        if any(d is None for d in self.shape[1:]):
            raise ModelLoadError(f"The model input '{self.name}' has dynamic non-batch dimensions {self.shape}.",
                                 fix="Export the model with a fixed C, H, W (only the batch axis dynamic).")
        return (batch_size, *self.shape[1:])


@dataclass(frozen=True)
class SessionInfo:
    """How one model's session was built and what it really runs on."""

    role: str
    model: str
    requested_providers: tuple[str, ...]
    providers: tuple[str, ...]
    fallback: bool
    missing_providers: tuple[str, ...]
    creation_s: float
    intra_op_threads: int
    inter_op_threads: int
    graph_optimization: str


@dataclass
class OpenSession:
    """A live onnxruntime session with its record."""

    session: object
    info: SessionInfo
    input: ModelInput
    output_name: str
    plan: ProviderPlan = field(repr=False)


def session_options(profile: DeviceProfile):
    o = ort().SessionOptions()
    o.intra_op_num_threads = profile.session.intra_op_threads
    o.inter_op_num_threads = profile.session.inter_op_threads
    o.graph_optimization_level = getattr(ort().GraphOptimizationLevel, _ORT_LEVEL[profile.session.graph_optimization])
    o.log_severity_level = 3
    return o


def open_session(path: str | os.PathLike, role: str, profile: DeviceProfile,
                 allow_fallback: bool = False, plan: ProviderPlan | None = None) -> OpenSession:
    """Build an onnxruntime session for one model as the profile says."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"The {role} model '{path}' does not exist.", fix="Check the path.")
    plan = plan or plan_providers(profile, allow_fallback=allow_fallback)
    rt = ort()
    t0 = time.perf_counter()
    try:
        sess = rt.InferenceSession(str(path), sess_options=session_options(profile),
                                   providers=[p for p, _ in plan.use],
                                   provider_options=[o for _, o in plan.use])
    except Exception as exc:  # onnxruntime raises its own zoo (Fail, InvalidGraph, NoSuchFile...)
        the = "the model" if role == "model" else f"the {role} model"
        msg = str(exc).strip()
        if any(s in msg for s in ("is not a registered function/op", "No Op registered",
                                  "Could not find an implementation")):
            raise ModelLoadError(f"{the.capitalize()} '{path}' uses an operator this onnxruntime cannot run "
                                 f"with {', '.join(p for p, _ in plan.use)}.",
                                 why=f"{type(exc).__name__}: {msg[:500]}",
                                 fix="Export the model with standard ONNX operators (opset 17 or lower), or "
                                     "install the onnxruntime build or provider that implements this one.") from exc
        raise ModelLoadError(f"onnxruntime cannot load {the} '{path}'.",
                             why=f"{type(exc).__name__}: {msg[:500]}",
                             fix="Check that the file is a complete ONNX model (copy it again) and that "
                                 "this onnxruntime supports its opset.") from exc
    creation = time.perf_counter() - t0
    used = tuple(sess.get_providers())
    dropped = tuple(p for p, _ in plan.use if p not in used)
    if dropped and not allow_fallback:
        raise ProfileError(
            f"onnxruntime could not start {', '.join(dropped)} for the {role} model and fell back to {', '.join(used)}.",
            why="The provider is installed but failed to initialise (missing CUDA/TensorRT libraries, or no GPU).",
            fix="Fix the provider's installation, or pass --allow-fallback to measure with what runs (the report says so).")
    missing = tuple(dict.fromkeys(plan.missing + dropped))
    info = SessionInfo(role=role, model=str(path), requested_providers=plan.requested, providers=used,
                       fallback=bool(missing), missing_providers=missing, creation_s=creation,
                       intra_op_threads=profile.session.intra_op_threads,
                       inter_op_threads=profile.session.inter_op_threads,
                       graph_optimization=profile.session.graph_optimization)
    return OpenSession(session=sess, info=info, input=_model_input(sess, path), output_name=sess.get_outputs()[0].name,
                       plan=plan)


def _model_input(sess, path: Path) -> ModelInput:
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"The model '{path}' has {len(inputs)} inputs; edgerobust audits single-input classifiers.")
    i = inputs[0]
    dtype = _ORT_DTYPE.get(i.type)
    if dtype is None:
        raise ModelLoadError(f"The model '{path}' takes {i.type} input; edgerobust feeds float pixels.",
                             fix="Export the model with a float32 image input.")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
    return ModelInput(name=i.name, shape=shape, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# latency


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model at one batch size, over every measured run."""

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    throughput_per_s: float


def summarize(times_s: np.ndarray, batch_size: int) -> LatencyStats:
    """Percentiles (linear interpolation), mean, std, coefficient of variation, samples/s."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timings to summarize")
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return LatencyStats(batch_size=batch_size, runs=int(ms.size), p50_ms=p50, p90_ms=p90, p99_ms=p99,
                        mean_ms=mean, std_ms=std, cv=std / mean if mean > 0 else 0.0,
                        throughput_per_s=batch_size * 1e3 / mean if mean > 0 else 0.0)


def interleaved_timings(runners: dict[str, Callable[[], object]], settings: MeasureSettings,
                        advance: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Warm up every runner, then time them in alternating-order rounds; seconds per run.

    Round r runs the runners in the given order when r is even and reversed when r is odd,
    ``runs_per_round`` times each. Rounds go on past ``rounds`` until ``min_seconds`` have
    been spent measuring, up to ``max_rounds``.
    """
    order = list(runners)
    for name in order:
        for _ in range(settings.warmup_runs):
            runners[name]()
    times: dict[str, list[float]] = {name: [] for name in order}
    t_start = time.perf_counter()
    r = 0
    while r < settings.rounds or (time.perf_counter() - t_start < settings.min_seconds and r < settings.max_rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            run, acc = runners[name], times[name]
            for _ in range(settings.runs_per_round):
                t0 = time.perf_counter()
                run()
                acc.append(time.perf_counter() - t0)
        r += 1
        if advance:
            advance(1)
    return {name: np.asarray(v) for name, v in times.items()}


def measure_latency(sessions: dict[str, OpenSession], settings: MeasureSettings,
                    show_progress: bool = True) -> tuple[dict[str, list[LatencyStats]], list[int]]:
    """Latency of every session per batch size, interleaved; also the batch sizes skipped.

    A batch size is skipped when a model's batch axis is fixed to another size.
    """
    rng = np.random.default_rng(0)
    results: dict[str, list[LatencyStats]] = {role: [] for role in sessions}
    skipped: list[int] = []
    total = len(settings.batch_sizes) * settings.rounds
    with _maybe_task(f"Measuring latency ({', '.join(sessions)})", total, show_progress) as advance:
        for bs in settings.batch_sizes:
            if any(s.input.shape[0] not in (None, bs) for s in sessions.values()):
                skipped.append(bs)
                advance(settings.rounds, f"batch {bs} skipped (fixed batch axis)")
                continue
            runners = {}
            for role, s in sessions.items():
                x = rng.random(s.input.concrete(bs), dtype=np.float32).astype(s.input.dtype)
                feed = {s.input.name: x}
                runners[role] = (lambda sess=s.session, f=feed: sess.run(None, f))
            done = [0]

            def step(n: int, bs=bs) -> None:
                done[0] += n
                advance(n if done[0] <= settings.rounds else 0, f"batch {bs}")

            timings = interleaved_timings(runners, settings, step)
            for role, t in timings.items():
                results[role].append(summarize(t, bs))
    return results, skipped


class _NoTask:
    def __call__(self, n: int = 1, status: str | None = None) -> None:
        pass


def _maybe_task(description: str, total: int, show: bool):
    import contextlib

    if show:
        return ui.task(description, total)
    return contextlib.nullcontext(_NoTask())


# ---------------------------------------------------------------------------------------------
# memory, size, host


@dataclass(frozen=True)
class MemoryResult:
    """Peak resident memory of a fresh process that loaded the model and ran it."""

    peak_mb: float
    before_model_mb: float | None
    batch_size: int
    runs: int
    method: str
    providers: tuple[str, ...]


def measure_memory(s: OpenSession, profile: DeviceProfile, batch_size: int, timeout_s: float = 600) -> MemoryResult:
    """Run ``python -m edgerobust._memprobe`` on the model and read its peak RSS."""
    spec = {
        "model": s.info.model, "providers": [[n, o] for n, o in s.plan.use],
        "intra_op_threads": profile.session.intra_op_threads,
        "inter_op_threads": profile.session.inter_op_threads,
        "graph_optimization": _ORT_LEVEL[profile.session.graph_optimization],
        "input_name": s.input.name, "input_shape": list(s.input.concrete(batch_size)),
        "input_dtype": s.input.dtype, "runs": profile.measure.memory_runs,
    }
    cmd = [sys.executable, "-m", "edgerobust._memprobe", json.dumps(spec)]
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
                        providers=tuple(res["providers"]))


@dataclass(frozen=True)
class HostInfo:
    """The machine the numbers were measured on."""

    cpu: str
    cores: int | None
    machine: str
    os: str
    python: str
    onnxruntime: str
    available_providers: tuple[str, ...]
    device_model: str | None
    l4t_release: str | None


def _first_line(path: str) -> str | None:
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return None
    return text.splitlines()[0] if text else None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def host_info() -> HostInfo:
    rt = ort()
    return HostInfo(cpu=_cpu_model(), cores=os.cpu_count(), machine=platform.machine(),
                    os=platform.platform(), python=platform.python_version(), onnxruntime=rt.__version__,
                    available_providers=tuple(rt.get_available_providers()),
                    device_model=_first_line("/proc/device-tree/model"),
                    l4t_release=_first_line("/etc/nv_tegra_release"))


# ---------------------------------------------------------------------------------------------
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

    def latency_at(self, batch_size: int) -> LatencyStats | None:
        return next((lat for lat in self.latency if lat.batch_size == batch_size), None)


@dataclass(frozen=True)
class Speedup:
    """Base latency / deployed latency at one batch size (same run, interleaved)."""

    batch_size: int
    p50: float
    mean: float


@dataclass(frozen=True)
class MeasureReport:
    """Latency, memory and size of one or two models on one profile."""

    profile: str
    profile_source: str
    host: HostInfo
    settings: MeasureSettings
    models: tuple[ModelMeasurement, ...]
    speedup: tuple[Speedup, ...]
    skipped_batch_sizes: tuple[int, ...]

    @property
    def fallback(self) -> bool:
        return any(m.session.fallback for m in self.models)

    def model(self, role: str) -> ModelMeasurement | None:
        return next((m for m in self.models if m.role == role), None)


def open_sessions(models: dict[str, str | os.PathLike], profile: DeviceProfile,
                  allow_fallback: bool = False) -> dict[str, OpenSession]:
    """One session per role (e.g. {'base': ..., 'deployed': ...}), sharing one provider plan."""
    plan = plan_providers(profile, allow_fallback=allow_fallback)
    return {role: open_session(path, role, profile, allow_fallback, plan) for role, path in models.items()}


def measure(sessions: dict[str, OpenSession], profile: DeviceProfile, memory: bool = True,
            show_progress: bool = True) -> MeasureReport:
    """Measure latency (interleaved), peak memory (fresh process) and file size of each session's model.

    With roles 'base' and 'deployed' the speedup base/deployed is computed per batch size.
    """
    latency, skipped = measure_latency(sessions, profile.measure, show_progress)
    measured = [b for b in profile.measure.batch_sizes if b not in skipped]
    mem_bs = max(measured) if measured else 1
    models = []
    with _maybe_task("Measuring peak memory (fresh process)", len(sessions) if memory else 0, show_progress and memory) as adv:
        for role, s in sessions.items():
            size = Path(s.info.model).stat().st_size
            mem = measure_memory(s, profile, mem_bs) if memory and measured else None
            if memory:
                adv(1, role)
            models.append(ModelMeasurement(role=role, path=s.info.model, size_bytes=size, size_mb=size / MIB,
                                           session=s.info, latency=tuple(latency[role]), memory=mem))
    speedup = []
    if "base" in sessions and "deployed" in sessions:
        for b, d in zip(latency["base"], latency["deployed"]):
            speedup.append(Speedup(batch_size=b.batch_size, p50=b.p50_ms / d.p50_ms, mean=b.mean_ms / d.mean_ms))
    return MeasureReport(profile=profile.name, profile_source=profile.source, host=host_info(),
                         settings=profile.measure, models=tuple(models), speedup=tuple(speedup),
                         skipped_batch_sizes=tuple(skipped))


def measure_models(models: dict[str, str | os.PathLike], profile: DeviceProfile, allow_fallback: bool = False,
                   memory: bool = True, show_progress: bool = True) -> MeasureReport:
    """Open sessions for the models and measure them; the entry point of `edgerobust profile`."""
    return measure(open_sessions(models, profile, allow_fallback), profile, memory, show_progress)
