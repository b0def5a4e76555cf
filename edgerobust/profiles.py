"""Device profiles: TOML files naming a target device, parsed and validated field by field.

A profile says how to run a model on one device (execution providers in preference order with
their options, threads, graph optimization level), how to measure it (batch sizes, warmup,
rounds) and what it must fit in (budgets), plus hardware facts for the record. Shipped
profiles live in ``device_profiles/*.toml`` (the package ``edgerobust.device_profiles``); a
user passes a shipped name or a path to their own ``.toml``.

Conventions a profile author needs:

* ``intra_op_threads`` / ``inter_op_threads``: 0 means "let ONNX Runtime decide" (its own
  default, usually one thread per physical core); a negative count is an error.
* ``MB`` in budgets means MiB (2**20 bytes), the unit of ``ru_maxrss``/``VmHWM``.
* ``latency_ms_p50`` is the deployed model's median latency at batch size 1, so a profile
  with that budget must measure batch size 1.

This module is torch-free and does not need onnxruntime (``profiles list`` works without it).
"""
from __future__ import annotations

import importlib.resources
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import ProfileError

PROFILE_PACKAGE = "edgerobust.device_profiles"

# Every execution provider name ONNX Runtime has shipped (onnxruntime.get_all_providers()),
# so a profile can be validated on a machine that lacks onnxruntime or the provider.
KNOWN_PROVIDERS = (
    "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider", "CUDAExecutionProvider",
    "CPUExecutionProvider", "OpenVINOExecutionProvider", "CoreMLExecutionProvider",
    "XnnpackExecutionProvider", "ACLExecutionProvider", "ArmNNExecutionProvider",
    "DnnlExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
    "QNNExecutionProvider", "NnapiExecutionProvider", "DmlExecutionProvider",
    "VitisAIExecutionProvider", "CANNExecutionProvider", "RknpuExecutionProvider",
    "WebGpuExecutionProvider", "WebNNExecutionProvider", "JsExecutionProvider",
    "VSINPUExecutionProvider", "TvmExecutionProvider", "AzureExecutionProvider",
)

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class ProviderSpec:
    """One execution provider and the options passed to it (ONNX Runtime's provider_options)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class SessionSettings:
    """onnxruntime.SessionOptions for the profile; 0 threads means ONNX Runtime's default."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"


@dataclass(frozen=True)
class MeasureSettings:
    """How latency is measured: per batch size, warmup then interleaved rounds of A/B runs.

    Rounds continue past ``rounds`` until ``min_seconds`` of measurement have passed, but
    never beyond ``max_rounds``.
    """

    batch_sizes: tuple[int, ...] = (1,)
    warmup_runs: int = 10
    rounds: int = 5
    runs_per_round: int = 10
    min_seconds: float = 0.0
    max_rounds: int = 100
    memory_runs: int = 5


@dataclass(frozen=True)
class Budgets:
    """Limits the deployed model must meet on this device; None means no limit."""

    latency_ms_p50: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None


@dataclass(frozen=True)
class Hardware:
    """Facts about the device, for the record only (nothing is configured from them)."""

    cpu: str | None = None
    cores: int | None = None
    memory_gb: float | None = None
    accelerator: str | None = None
    os: str | None = None
    jetpack: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class DeviceProfile:
    """A parsed, validated device profile."""

    name: str
    description: str
    source: str
    providers: tuple[ProviderSpec, ...]
    session: SessionSettings = SessionSettings()
    measure: MeasureSettings = MeasureSettings()
    budgets: Budgets = Budgets()
    hardware: Hardware = Hardware()

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]

    def with_batch_sizes(self, batch_sizes: tuple[int, ...]) -> "DeviceProfile":
        """A copy measuring other batch sizes (the caller's profile stays unchanged)."""
        import dataclasses

        for b in batch_sizes:
            if not isinstance(b, int) or b < 1:
                raise ProfileError(f"Batch size {b!r} is not a positive integer.")
        m = dataclasses.replace(self.measure, batch_sizes=tuple(batch_sizes))
        return dataclasses.replace(self, measure=m)


# ---------------------------------------------------------------------------------------------
# finding profiles


def list_profiles() -> list[str]:
    """Names of the shipped profiles, sorted."""
    root = importlib.resources.files(PROFILE_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | os.PathLike) -> DeviceProfile:
    """Load a shipped profile by name, or a user's profile from a path to a ``.toml`` file."""
    text_name = str(name_or_path)
    looks_like_path = (isinstance(name_or_path, os.PathLike) or text_name.endswith(".toml")
                       or os.sep in text_name or "/" in text_name)
    if looks_like_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"The profile file '{path}' does not exist.",
                               fix="Check the path, or pass a shipped profile name: "
                                   + ", ".join(list_profiles()) + ".")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ProfileError(f"The profile file '{path}' cannot be read.", why=str(exc)) from exc
        return parse_profile(raw, source=str(path), default_name=path.stem)
    names = list_profiles()
    if text_name not in names:
        raise ProfileError(f"There is no shipped device profile named '{text_name}'.",
                           why="Shipped profiles: " + ", ".join(names) + ".",
                           fix="Pick one of those, or pass the path to your own .toml profile.")
    res = importlib.resources.files(PROFILE_PACKAGE) / f"{text_name}.toml"
    return parse_profile(res.read_bytes(), source=f"{text_name}.toml (shipped)", default_name=text_name)


def profile_text(name_or_path: str | os.PathLike) -> str:
    """The TOML source of a profile (validated first), comments and all: the reasons live there."""
    profile = load_profile(name_or_path)
    if profile.source.endswith("(shipped)"):
        return (importlib.resources.files(PROFILE_PACKAGE) / f"{profile.name}.toml").read_text(encoding="utf-8")
    return Path(profile.source).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# parsing and validation


class _Checker:
    """Reads typed fields out of TOML tables; every error names the file and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field_name: str, what: str, fix: str | None = None) -> ProfileError:
        return ProfileError(f"Invalid device profile '{self.source}': field '{field_name}' {what}",
                            fix=fix or "Fix the field in the profile file (see `edgerobust profiles show laptop-cpu` for a valid example).")

    def table(self, data: Mapping, key: str, where: str, required: bool = False) -> dict:
        v = data.get(key)
        if v is None:
            if required:
                raise self.fail(f"{where}{key}", "is missing.")
            return {}
        if not isinstance(v, dict):
            raise self.fail(f"{where}{key}", f"must be a table ([{key}]), not {type(v).__name__}.")
        return v

    def no_unknown(self, data: Mapping, allowed: tuple[str, ...], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(f"{where}{key}", "is not a known field.",
                                fix=f"Known fields here: {', '.join(allowed)}. Check the spelling.")

    def string(self, data: Mapping, key: str, where: str, default: str | None = None) -> str | None:
        v = data.get(key, default)
        if v is not None and not isinstance(v, str):
            raise self.fail(f"{where}{key}", f"must be a string, not {v!r}.")
        return v

    def integer(self, data: Mapping, key: str, where: str, default: int | None, minimum: int) -> int | None:
        v = data.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{where}{key}", f"must be an integer, not {v!r}.")
        if v < minimum:
            raise self.fail(f"{where}{key}", f"must be at least {minimum}; got {v}.")
        return v

    def number(self, data: Mapping, key: str, where: str, default: float | None,
               positive: bool) -> float | None:
        v = data.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise self.fail(f"{where}{key}", f"must be a number, not {v!r}.")
        if positive and v <= 0:
            raise self.fail(f"{where}{key}", f"must be greater than 0; got {v}.")
        if not positive and v < 0:
            raise self.fail(f"{where}{key}", f"must not be negative; got {v}.")
        return float(v)


_TOP = ("name", "description", "providers", "session", "measure", "budgets", "hardware")


def parse_profile(raw: bytes | str, source: str, default_name: str) -> DeviceProfile:
    """Parse and validate profile TOML; ``source`` names the file in every error message."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"The device profile '{source}' is not valid TOML.", why=str(exc),
                           fix="Fix the syntax at the line and column named above.") from exc
    c = _Checker(source)
    c.no_unknown(data, _TOP, "")
    name = c.string(data, "name", "", default_name) or default_name
    description = c.string(data, "description", "", "") or ""
    return DeviceProfile(
        name=name, description=description, source=source,
        providers=_providers(c, data), session=_session(c, data), measure=_measure(c, data),
        budgets=_budgets(c, data), hardware=_hardware(c, data),
    )


def _providers(c: _Checker, data: Mapping) -> tuple[ProviderSpec, ...]:
    raw = data.get("providers")
    if raw is None:
        raise c.fail("providers", "is missing.",
                     fix='Add at least one [[providers]] table, e.g. name = "CPUExecutionProvider".')
    if not isinstance(raw, list) or not raw:
        raise c.fail("providers", "must be a non-empty array of [[providers]] tables.")
    specs, seen = [], set()
    for i, entry in enumerate(raw):
        where = f"providers[{i}]."
        if not isinstance(entry, dict):
            raise c.fail(f"providers[{i}]", "must be a table with 'name' and optional 'options'.")
        c.no_unknown(entry, ("name", "options"), where)
        pname = c.string(entry, "name", where)
        if not pname:
            raise c.fail(f"{where}name", "is missing.")
        if pname not in KNOWN_PROVIDERS:
            raise c.fail(f"{where}name", f"names an unknown execution provider '{pname}'.",
                         fix="Known providers: " + ", ".join(KNOWN_PROVIDERS) + ".")
        if pname in seen:
            raise c.fail(f"{where}name", f"repeats '{pname}'; list each provider once.")
        seen.add(pname)
        options = c.table(entry, "options", where)
        for k, v in options.items():
            if not isinstance(v, (str, int, float, bool)):
                raise c.fail(f"{where}options.{k}", f"must be a string, number or boolean, not {v!r}.")
        specs.append(ProviderSpec(name=pname, options=dict(options)))
    return tuple(specs)


def _session(c: _Checker, data: Mapping) -> SessionSettings:
    t = c.table(data, "session", "")
    c.no_unknown(t, ("intra_op_threads", "inter_op_threads", "graph_optimization"), "session.")
    level = c.string(t, "graph_optimization", "session.", "all")
    if level not in GRAPH_OPTIMIZATION_LEVELS:
        raise c.fail("session.graph_optimization", f"must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}; got {level!r}.")
    return SessionSettings(
        intra_op_threads=c.integer(t, "intra_op_threads", "session.", 0, 0),
        inter_op_threads=c.integer(t, "inter_op_threads", "session.", 0, 0),
        graph_optimization=level,
    )


def _measure(c: _Checker, data: Mapping) -> MeasureSettings:
    t = c.table(data, "measure", "")
    c.no_unknown(t, ("batch_sizes", "warmup_runs", "rounds", "runs_per_round", "min_seconds",
                     "max_rounds", "memory_runs"), "measure.")
    bs = t.get("batch_sizes", [1])
    if not isinstance(bs, list) or not bs:
        raise c.fail("measure.batch_sizes", f"must be a non-empty array of positive integers; got {bs!r}.")
    for b in bs:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise c.fail("measure.batch_sizes", f"must hold positive integers only; got {b!r}.")
    if len(set(bs)) != len(bs):
        raise c.fail("measure.batch_sizes", f"lists a batch size twice: {bs}.")
    rounds = c.integer(t, "rounds", "measure.", 5, 1)
    max_rounds = c.integer(t, "max_rounds", "measure.", max(100, rounds), 1)
    if max_rounds < rounds:
        raise c.fail("measure.max_rounds", f"({max_rounds}) must be at least measure.rounds ({rounds}).")
    return MeasureSettings(
        batch_sizes=tuple(bs),
        warmup_runs=c.integer(t, "warmup_runs", "measure.", 10, 0),
        rounds=rounds,
        runs_per_round=c.integer(t, "runs_per_round", "measure.", 10, 1),
        min_seconds=c.number(t, "min_seconds", "measure.", 0.0, positive=False),
        max_rounds=max_rounds,
        memory_runs=c.integer(t, "memory_runs", "measure.", 5, 1),
    )


def _budgets(c: _Checker, data: Mapping) -> Budgets:
    t = c.table(data, "budgets", "")
    c.no_unknown(t, ("latency_ms_p50", "peak_memory_mb", "model_size_mb"), "budgets.")
    b = Budgets(
        latency_ms_p50=c.number(t, "latency_ms_p50", "budgets.", None, positive=True),
        peak_memory_mb=c.number(t, "peak_memory_mb", "budgets.", None, positive=True),
        model_size_mb=c.number(t, "model_size_mb", "budgets.", None, positive=True),
    )
    bs = data.get("measure", {}).get("batch_sizes", [1]) if isinstance(data.get("measure"), dict) else [1]
    if b.latency_ms_p50 is not None and 1 not in bs:
        raise c.fail("budgets.latency_ms_p50", "applies at batch size 1, but measure.batch_sizes lacks 1.",
                     fix="Add 1 to measure.batch_sizes, or remove the latency budget.")
    return b


def _hardware(c: _Checker, data: Mapping) -> Hardware:
    t = c.table(data, "hardware", "")
    c.no_unknown(t, ("cpu", "cores", "memory_gb", "accelerator", "os", "jetpack", "notes"), "hardware.")
    return Hardware(
        cpu=c.string(t, "cpu", "hardware."), cores=c.integer(t, "cores", "hardware.", None, 1),
        memory_gb=c.number(t, "memory_gb", "hardware.", None, positive=True),
        accelerator=c.string(t, "accelerator", "hardware."), os=c.string(t, "os", "hardware."),
        jetpack=c.string(t, "jetpack", "hardware."), notes=c.string(t, "notes", "hardware."),
    )


# ---------------------------------------------------------------------------------------------
# the host's best match


@dataclass(frozen=True)
class ProfileMatch:
    """The shipped profile that fits this host best, and why it was chosen."""

    name: str
    reason: str


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_bytes().decode("utf-8", "replace").strip("\x00").strip()
    except OSError:
        return None


def _available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def best_match_profile(*, device_model: str | None = None, is_tegra: bool | None = None,
                       providers: list[str] | None = None) -> ProfileMatch:
    """Pick the shipped profile for this host from the device-tree model and the providers.

    The keyword arguments override what is read from the host (for tests and callers that
    already know): ``device_model`` is ``/proc/device-tree/model``, ``is_tegra`` whether
    ``/etc/nv_tegra_release`` exists, ``providers`` onnxruntime's available providers.
    """
    if device_model is None:
        device_model = _read_text("/proc/device-tree/model") or ""
    if is_tegra is None:
        is_tegra = Path("/etc/nv_tegra_release").exists()
    if providers is None:
        providers = _available_providers()
    model = device_model.lower()
    if is_tegra or "jetson" in model:
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in providers]
        if gpu:
            if "agx orin" in model:
                name = "jetson-agx-orin"
            elif "orin" in model:
                name = "jetson-orin-nano"
            elif "nano" in model:
                name = "jetson-nano"
            else:
                name = "jetson-orin-nano"
            return ProfileMatch(name, f"Jetson detected ({device_model or 'L4T'}) with {', '.join(gpu)}")
        return ProfileMatch("laptop-cpu", f"Jetson detected ({device_model or 'L4T'}) but onnxruntime offers "
                            "no CUDA/TensorRT provider (install NVIDIA's onnxruntime-gpu wheel); using the CPU")
    if "raspberry pi 5" in model:
        return ProfileMatch("raspberry-pi-5", f"detected {device_model}")
    if "raspberry pi 4" in model:
        return ProfileMatch("raspberry-pi-4", f"detected {device_model}")
    return ProfileMatch("laptop-cpu", f"no edge device detected ({platform.machine() or 'unknown'} "
                        f"{platform.system() or ''}); using the generic CPU profile".replace("  ", " "))
