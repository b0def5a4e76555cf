"""onnxruntime sessions built from a device profile, and the record of how each was built.

* Providers: the profile's in preference order with their options. A provider the profile
  asks for but this host lacks is an error unless ``allow_fallback``; the providers a session
  really uses (``get_providers()``) are recorded either way.
* Session settings (threads, optimization level, spinning, thread affinity, memory arena and
  pattern) come from the profile's ``[session]`` table and are recorded in
  :class:`SessionInfo`, with every config entry handed to onnxruntime, so a report says what
  the numbers were measured with.
* Isolation (``measure.isolation``) when several sessions are timed in turn: "pool" times
  them in a fresh process sharing one thread pool (``edgerobust.edge.runtime._latencyprobe``); "park"
  builds each with ``session.force_spinning_stop = 1`` (threads spin inside a run, stop when
  it returns); "none" leaves the idle session's threads spinning into the other's turn.

Torch-free: imports numpy and onnxruntime only.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edgerobust.errors import ModelLoadError, ProfileError, require
from edgerobust.edge.runtime.profile_schema import DeviceProfile, SessionSettings
from edgerobust.edge.runtime.providers import device_fix, device_gap, install_hint

ORT_LEVEL = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
# Provider options that name a folder: "~" expanded and the folder created (TensorRT's engine and
# timing caches, OpenVINO's compiled-blob cache, CoreML's compiled-model cache).
PATH_OPTIONS = ("trt_engine_cache_path", "trt_timing_cache_path", "cache_dir", "ModelCacheDirectory")
_ORT_DTYPE = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def ort():
    """onnxruntime, or a DependencyError that says how to install it."""
    return require("onnxruntime", extra="cpu")


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
    """Match the profile's providers with this host's; raise ProfileError on a gap unless allowed.

    A gap is a provider this onnxruntime build lacks, or one it has whose device is not here (the
    OpenVINO provider asked for a GPU on a host without one: onnxruntime would run the CPU instead).
    """
    available = tuple(ort().get_available_providers() if available is None else available)
    requested = tuple(profile.provider_names)
    missing = tuple(p for p in requested if p not in available)
    if missing and not allow_fallback:
        raise ProfileError(
            f"The profile '{profile.name}' asks for {', '.join(missing)}, which this onnxruntime does not offer.",
            why=f"Available here: {', '.join(available) or 'none'}. Measuring on other providers would "
                f"not be the device the profile describes.",
            fix=f"{install_hint(missing)}. Or pass `allow_fallback` to measure with what is available (the "
                "report says so), or choose a profile for this host, e.g. `profile` laptop-cpu.")
    use, absent = [], []
    for spec in profile.providers:
        if spec.name not in available:
            continue
        gap = device_gap(spec.name, dict(spec.options))
        if gap is not None:
            if not allow_fallback:
                raise ProfileError(f"The profile '{profile.name}' asks {spec.name} for a device this host lacks.",
                                   why=f"{gap}; onnxruntime would quietly run the next provider instead.",
                                   fix=device_fix(spec.name, dict(spec.options)))
            absent.append(spec.name)
            continue
        use.append((spec.name, _provider_options(spec.name, dict(spec.options))))
    if not use:
        use.append(("CPUExecutionProvider", {}))
    return ProviderPlan(requested=requested, available=available, missing=missing + tuple(absent), use=tuple(use))


def _provider_options(name: str, options: dict) -> dict:
    """Expand ``~`` in cache paths and create the folders, so TensorRT can write its engines."""
    out = dict(options)
    for key in PATH_OPTIONS:
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
    """How one model's session was built and what it really runs on.

    ``config_entries`` are the ``SessionOptions.add_session_config_entry`` pairs handed to
    onnxruntime, exactly; the named fields above them are the profile's settings they came from.
    ``isolation``: how its latency was timed: "alone" (the only model), "pool" (a fresh process,
    one thread pool shared with the other models), "park" or "none" (see MeasureSettings).
    """

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
    allow_spinning: bool = True
    thread_affinity: str | None = None
    cpu_arena: bool = True
    memory_pattern: bool = True
    isolation: str = "alone"
    config_entries: tuple[tuple[str, str], ...] = ()


@dataclass
class OpenSession:
    """A live onnxruntime session with its record."""

    session: object
    info: SessionInfo
    input: ModelInput
    output_name: str
    plan: ProviderPlan = field(repr=False)


def config_entries(settings: SessionSettings, park_between_runs: bool = False) -> tuple[tuple[str, str], ...]:
    """The onnxruntime session config entries that carry the profile's session settings."""
    spin = "1" if settings.allow_spinning else "0"
    out = [("session.intra_op.allow_spinning", spin), ("session.inter_op.allow_spinning", spin)]
    if settings.thread_affinity:
        out.append(("session.intra_op_thread_affinities", settings.thread_affinity))
    if park_between_runs and settings.allow_spinning:
        out.append(("session.force_spinning_stop", "1"))
    return tuple(out)


def session_options(profile: DeviceProfile, park_between_runs: bool = False):
    """onnxruntime.SessionOptions for the profile's ``[session]`` table."""
    s = profile.session
    o = ort().SessionOptions()
    o.intra_op_num_threads = s.intra_op_threads
    o.inter_op_num_threads = s.inter_op_threads
    o.graph_optimization_level = getattr(ort().GraphOptimizationLevel, ORT_LEVEL[s.graph_optimization])
    o.enable_cpu_mem_arena = s.cpu_arena
    o.enable_mem_pattern = s.memory_pattern
    o.log_severity_level = 3
    for key, value in config_entries(s, park_between_runs):
        o.add_session_config_entry(key, value)
    return o


def open_session(path: str | os.PathLike, role: str, profile: DeviceProfile, allow_fallback: bool = False,
                 plan: ProviderPlan | None = None, isolation: str = "alone") -> OpenSession:
    """Build an onnxruntime session for one model as the profile says."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"The {role} model '{path}' does not exist.", fix="Check the path.")
    plan = plan or plan_providers(profile, allow_fallback=allow_fallback)
    t0 = time.perf_counter()
    try:
        sess = ort().InferenceSession(str(path), sess_options=session_options(profile, isolation == "park"),
                                      providers=[p for p, _ in plan.use],
                                      provider_options=[o for _, o in plan.use])
    except Exception as exc:  # onnxruntime raises its own zoo (Fail, InvalidGraph, NoSuchFile...)
        raise _load_error(exc, path, role, plan) from exc
    creation = time.perf_counter() - t0
    used = tuple(sess.get_providers())
    dropped = tuple(p for p, _ in plan.use if p not in used)
    if dropped and not allow_fallback:
        raise ProfileError(
            f"onnxruntime could not start {', '.join(dropped)} for the {role} model and fell back to {', '.join(used)}.",
            why="The provider is in this onnxruntime build but failed to start: its libraries (CUDA, TensorRT, "
                "OpenVINO's plugins, the QNN SDK) or its device are missing, or it refused an option.",
            fix="Fix the provider's installation, or pass `allow_fallback` to measure with what runs (the report says so).")
    missing = tuple(dict.fromkeys(plan.missing + dropped))
    s = profile.session
    info = SessionInfo(role=role, model=str(path), requested_providers=plan.requested, providers=used,
                       fallback=bool(missing), missing_providers=missing, creation_s=creation,
                       intra_op_threads=s.intra_op_threads, inter_op_threads=s.inter_op_threads,
                       graph_optimization=s.graph_optimization, allow_spinning=s.allow_spinning,
                       thread_affinity=s.thread_affinity, cpu_arena=s.cpu_arena, memory_pattern=s.memory_pattern,
                       isolation=isolation, config_entries=config_entries(s, isolation == "park"))
    return OpenSession(session=sess, info=info, input=_model_input(sess, path), output_name=sess.get_outputs()[0].name,
                       plan=plan)


def open_sessions(models: dict[str, str | os.PathLike], profile: DeviceProfile,
                  allow_fallback: bool = False) -> dict[str, OpenSession]:
    """One session per role (e.g. {'base': ..., 'deployed': ...}), sharing one provider plan.

    With more than one model they are timed in turn, isolated as ``measure.isolation`` says. One model
    is timed alone in this process, unless ``measure.processes`` > 1 with "pool": then in the probe
    processes like several (one session can run slow for its whole life on a shared host).
    """
    plan = plan_providers(profile, allow_fallback=allow_fallback)
    how = isolation_for(profile)
    if len(models) == 1 and not (how == "pool" and profile.measure.processes > 1):
        how = "alone"  # one model in this process; with measure.processes > 1 it goes to the probe processes too
    return {role: open_session(path, role, profile, allow_fallback, plan, how) for role, path in models.items()}


def isolation_for(profile: DeviceProfile) -> str:
    """The isolation used for sessions timed in turn: "pool" needs onnxruntime's global pool,
    which Python can give neither an affinity nor a spinning choice, so those profiles "park"."""
    s, how = profile.session, profile.measure.isolation
    if how == "pool" and (not s.allow_spinning or s.thread_affinity):
        return "park"
    return how


def _load_error(exc: Exception, path: Path, role: str, plan: ProviderPlan) -> ModelLoadError:
    the = "the model" if role == "model" else f"the {role} model"
    msg = str(exc).strip()
    if any(s in msg for s in ("is not a registered function/op", "No Op registered",
                              "Could not find an implementation")):
        return ModelLoadError(f"{the.capitalize()} '{path}' uses an operator this onnxruntime cannot run "
                              f"with {', '.join(p for p, _ in plan.use)}.",
                              why=f"{type(exc).__name__}: {msg[:500]}",
                              fix="Export the model with standard ONNX operators (opset 17 or lower), or "
                                  "install the onnxruntime build or provider that implements this one.")
    return ModelLoadError(f"onnxruntime cannot load {the} '{path}'.",
                          why=f"{type(exc).__name__}: {msg[:500]}",
                          fix="Check that the file is a complete ONNX model (copy it again) and that "
                              "this onnxruntime supports its opset.")


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
