"""What a device profile holds, and how each TOML field is read and validated.

The dataclasses are the parsed profile (see :mod:`edgerobust.edge.runtime.profiles` for finding and loading
files); the readers turn one TOML table each into its dataclass, and every error names the
file and the field. Torch-free and onnxruntime-free.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgerobust.errors import ProfileError
from edgerobust.edge.runtime.profile_checker import Checker
from edgerobust.registries import INT8_ROUTES, INT8_STEMS


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
    """onnxruntime.SessionOptions for the profile; 0 threads means ONNX Runtime's default.

    ``allow_spinning``: worker threads busy-wait for work instead of sleeping (onnxruntime's
    default; lowest latency, but a core stays busy). ``thread_affinity``: onnxruntime's
    ``session.intra_op_thread_affinities``, one group of 1-based logical processor ids per
    worker thread (``intra_op_threads - 1`` groups, ';'-separated: "2;3", "3-4;5-6").
    ``cpu_arena`` / ``memory_pattern``: onnxruntime's CPU memory arena and memory-pattern
    planning (both on by default; off trades speed for a smaller peak on small devices).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    allow_spinning: bool = True
    thread_affinity: str | None = None
    cpu_arena: bool = True
    memory_pattern: bool = True


ISOLATION = ("pool", "park", "none")


@dataclass(frozen=True)
class MeasureSettings:
    """How latency is measured: per batch size, warmup then interleaved rounds of A/B turns.

    Each model's turn runs ``runs_per_round`` times, or more to last ``turn_seconds``, after
    ``switch_warmup_runs`` untimed runs. Rounds continue past ``rounds`` until every model has
    ``min_seconds`` of timed runs and (``ci_target`` > 0) the 95% interval of every p50 is
    within ±ci_target of it; never beyond ``max_rounds`` or a model's ``max_seconds`` (0: no
    cap). ``isolation``, how models timed in turn are kept from competing for the cores:
    "pool" times them in a fresh process whose sessions share one thread pool (as fast as each
    alone; needs allow_spinning and no thread_affinity, else "park"); "park" stops each
    session's threads spinning when a run returns (costs a thread wake-up per run); "none"
    leaves the idle session's threads spinning (the old way, with cross-talk).

    ``device_resident``: also time a second, device-resident path per model (IO binding: the
    input copied to the device once, the outputs bound there), next to the path from host
    memory (numpy in, numpy out). Defaults to true when the first provider is CUDA or TensorRT.
    ``cuda_graph``: on that path, run with CUDA graphs (CUDA's ``enable_cuda_graph``,
    TensorRT's ``trt_cuda_graph_enable``); needs ``device_resident`` and a GPU provider first.
    ``processes`` (isolation "pool"): split the measurement over this many fresh probe processes in
    turn (each with its share of min/max seconds and rounds) and pool their runs: a process can
    land in a slow state for its whole life (where its buffers fall in the caches, a neighbour on
    a shared host), and one process would then report that state as the model's speed.
    """

    batch_sizes: tuple[int, ...] = (1,)
    warmup_runs: int = 10
    rounds: int = 5
    runs_per_round: int = 10
    min_seconds: float = 0.0
    max_rounds: int = 100
    memory_runs: int = 5
    turn_seconds: float = 0.0
    switch_warmup_runs: int = 0
    max_seconds: float = 0.0
    ci_target: float = 0.0
    isolation: str = "pool"
    device_resident: bool = False
    cuda_graph: bool = False
    processes: int = 1


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class Budgets:
    """Limits the deployed model must meet on this device; None means no limit."""

    latency_ms_p50: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None


@dataclass(frozen=True)
class CompressHints:
    """What compress takes from its target profile for a setting that its config leaves None.

    ``round_to``: pruned channel counts are kept multiples of this (PruneConfig.round_to); None: the
    compress default (8). ``int8_stem``: how the int8 model's first convolution is written
    (QuantConfig.stem: "plain" or "space-to-depth"); None: the compress default (plain).
    ``int8_route``: which kernel the late int8 convolutions are written for (QuantConfig.route:
    "symmetric" or "gemm-late"); None: the compress default (symmetric).
    """

    round_to: int | None = None
    int8_stem: str | None = None
    int8_route: str | None = None


@dataclass(frozen=True)
class Hardware:
    """Facts about the device, for the record only (nothing is configured from them). ``isa``: CPU flags the
    device has (names of edgerobust.edge.runtime.host.ISA_FLAGS); the host check says when this host lacks one."""

    cpu: str | None = None
    cores: int | None = None
    memory_gb: float | None = None
    accelerator: str | None = None
    os: str | None = None
    jetpack: str | None = None
    notes: str | None = None
    isa: tuple[str, ...] = ()


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
    compress: CompressHints = CompressHints()

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]

    def with_batch_sizes(self, batch_sizes: tuple[int, ...]) -> "DeviceProfile":
        """A copy measuring other batch sizes (the caller's profile stays unchanged)."""
        for b in batch_sizes:
            if not isinstance(b, int) or b < 1:
                raise ProfileError(f"Batch size {b!r} is not a positive integer.")
            if b > MEASURE_LIMITS["batch_size"]:
                raise ProfileError(f"Batch size {b} is over the limit of {MEASURE_LIMITS['batch_size']}.",
                                   fix="Measure smaller batches: latency per image stops improving long before that.")
        m = dataclasses.replace(self.measure, batch_sizes=tuple(batch_sizes))
        return dataclasses.replace(self, measure=m)


# =============================================================================================
# reading TOML tables


def read_providers(c: Checker, data: Mapping) -> tuple[ProviderSpec, ...]:
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


def read_session(c: Checker, data: Mapping) -> SessionSettings:
    t = c.table(data, "session", "")
    c.no_unknown(t, ("intra_op_threads", "inter_op_threads", "graph_optimization", "allow_spinning",
                     "thread_affinity", "cpu_arena", "memory_pattern"), "session.")
    level = c.choice(t, "graph_optimization", "session.", GRAPH_OPTIMIZATION_LEVELS, "all")
    intra = c.integer(t, "intra_op_threads", "session.", 0, 0)
    affinity = c.string(t, "thread_affinity", "session.")
    if affinity is not None:
        _check_affinity(c, affinity, intra)
    return SessionSettings(
        intra_op_threads=intra,
        inter_op_threads=c.integer(t, "inter_op_threads", "session.", 0, 0),
        graph_optimization=level,
        allow_spinning=c.boolean(t, "allow_spinning", "session.", True),
        thread_affinity=affinity,
        cpu_arena=c.boolean(t, "cpu_arena", "session.", True),
        memory_pattern=c.boolean(t, "memory_pattern", "session.", True),
    )


def _check_affinity(c: Checker, affinity: str, intra: int) -> None:
    """onnxruntime's format: one group per worker thread; a group is ids or ranges, comma-separated."""
    where = "session.thread_affinity"
    if intra < 2:
        raise c.fail(where, f"needs session.intra_op_threads of 2 or more (got {intra}): onnxruntime pins only "
                            "its worker threads, intra_op_threads - 1 of them, never the caller's thread.")
    groups = affinity.split(";")
    if len(groups) != intra - 1:
        raise c.fail(where, f"has {len(groups)} ';'-separated group(s) but intra_op_threads = {intra} needs "
                            f"{intra - 1} (one per worker thread); got {affinity!r}.")
    for group in groups:
        for item in group.split(","):
            lo, _, hi = item.strip().partition("-")
            if not (_ID.fullmatch(lo) and (not hi or _ID.fullmatch(hi))) or int(lo) < 1 or (hi and int(hi) < int(lo)):
                raise c.fail(where, f"has {item.strip()!r}, which is not a 1-based processor id or a range "
                                    f"such as 3-4; got {affinity!r}.")


_ID = re.compile(r"[0-9]{1,6}")  # a processor id: ASCII digits (str.isdigit takes '²', which int() refuses)

_MEASURE_FIELDS = ("batch_sizes", "warmup_runs", "rounds", "runs_per_round", "min_seconds", "max_rounds",
                   "memory_runs", "turn_seconds", "switch_warmup_runs", "max_seconds", "ci_target", "isolation",
                   "device_resident", "cuda_graph", "processes")


# Upper bounds on what a profile may ask (Checker.too_costly): each is past anything a stable median
# needs, and a profile over them (1e9 warm-up runs, a day of min_seconds) would only hang the audit.
MEASURE_LIMITS = {"warmup_runs": 1000, "rounds": 1000, "runs_per_round": 1000, "max_rounds": 10_000,
                  "memory_runs": 100, "switch_warmup_runs": 100, "processes": 8, "batch_size": 1024,
                  "batch_sizes": 8, "min_seconds": 300.0, "max_seconds": 600.0, "turn_seconds": 10.0,
                  "runs": 100_000}


def read_measure(c: Checker, data: Mapping) -> MeasureSettings:
    t = c.table(data, "measure", "")
    c.no_unknown(t, _MEASURE_FIELDS, "measure.")
    lim = MEASURE_LIMITS
    bs = t.get("batch_sizes", [1])
    if not isinstance(bs, list) or not bs:
        raise c.fail("measure.batch_sizes", f"must be a non-empty array of positive integers; got {bs!r}.")
    for b in bs:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise c.fail("measure.batch_sizes", f"must hold positive integers only; got {b!r}.")
        if b > lim["batch_size"]:
            raise c.too_costly("measure.batch_sizes", b, lim["batch_size"])
    if len(set(bs)) != len(bs):
        raise c.fail("measure.batch_sizes", f"lists a batch size twice: {bs}.")
    if len(bs) > lim["batch_sizes"]:
        raise c.too_costly("measure.batch_sizes (count)", len(bs), lim["batch_sizes"])

    def count(key: str, default: int, minimum: int) -> int:
        return c.integer(t, key, "measure.", default, minimum, lim[key])

    def seconds(key: str) -> float:
        return c.number(t, key, "measure.", 0.0, positive=False, maximum=lim[key])

    rounds = count("rounds", 5, 1)
    max_rounds = c.integer(t, "max_rounds", "measure.", max(100, rounds), 1, lim["max_rounds"])
    if max_rounds < rounds:
        raise c.fail("measure.max_rounds", f"({max_rounds}) must be at least measure.rounds ({rounds}).")
    runs_per_round = count("runs_per_round", 10, 1)
    if max_rounds * runs_per_round > lim["runs"]:
        raise c.too_costly("measure.max_rounds x measure.runs_per_round", max_rounds * runs_per_round, lim["runs"])
    min_s, max_s = seconds("min_seconds"), seconds("max_seconds")
    if max_s and max_s < min_s:
        raise c.fail("measure.max_seconds", f"({max_s:g}) must be 0 (no cap) or at least measure.min_seconds ({min_s:g}).")
    ci = c.number(t, "ci_target", "measure.", 0.0, positive=False)
    if ci >= 0.5:
        raise c.fail("measure.ci_target", f"is the p50 interval's relative half-width, e.g. 0.02 for ±2%; got {ci:g}.")
    isolation = c.choice(t, "isolation", "measure.", ISOLATION, "pool")
    return MeasureSettings(
        batch_sizes=tuple(bs), warmup_runs=count("warmup_runs", 10, 0), rounds=rounds,
        runs_per_round=runs_per_round, min_seconds=min_s, max_rounds=max_rounds,
        memory_runs=count("memory_runs", 5, 1), turn_seconds=seconds("turn_seconds"),
        switch_warmup_runs=count("switch_warmup_runs", 0, 0),
        max_seconds=max_s, ci_target=ci, isolation=isolation, **_read_resident(c, t, data),
        processes=count("processes", 1, 1),
    )


def _read_resident(c: Checker, t: Mapping, data: Mapping) -> dict[str, bool]:
    """measure.device_resident (default: the first provider is CUDA or TensorRT) and measure.cuda_graph."""
    providers = data.get("providers")
    first = providers[0].get("name") if isinstance(providers, list) and providers and isinstance(providers[0], dict) else None
    gpu = first in GPU_PROVIDERS
    resident = c.boolean(t, "device_resident", "measure.", gpu)
    graph = c.boolean(t, "cuda_graph", "measure.", False)
    if graph and not gpu:
        raise c.fail("measure.cuda_graph", f"needs CUDAExecutionProvider or TensorrtExecutionProvider as the first "
                                           f"provider; this profile's first is {first!r}.",
                     fix="Remove measure.cuda_graph (CUDA graphs exist only on NVIDIA GPUs), or list a GPU provider first.")
    if graph and not resident:
        raise c.fail("measure.cuda_graph", "needs measure.device_resident = true: a CUDA graph replays fixed device "
                                           "addresses, so its input and outputs must be bound on the device (IO binding).",
                     fix="Set measure.device_resident = true, or measure.cuda_graph = false.")
    return {"device_resident": resident, "cuda_graph": graph}


def read_budgets(c: Checker, data: Mapping) -> Budgets:
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


def read_compress(c: Checker, data: Mapping) -> CompressHints:
    t = c.table(data, "compress", "")
    c.no_unknown(t, ("round_to", "int8_stem", "int8_route"), "compress.")
    return CompressHints(round_to=c.integer(t, "round_to", "compress.", None, 1),
                         int8_stem=c.choice(t, "int8_stem", "compress.", INT8_STEMS, None),
                         int8_route=c.choice(t, "int8_route", "compress.", INT8_ROUTES, None))


def read_hardware(c: Checker, data: Mapping) -> Hardware:
    t = c.table(data, "hardware", "")
    c.no_unknown(t, ("cpu", "cores", "memory_gb", "accelerator", "os", "jetpack", "notes", "isa"), "hardware.")
    from edgerobust.edge.runtime.host import ISA_FLAGS

    isa = t.get("isa", [])
    if not isinstance(isa, list) or any(f not in ISA_FLAGS for f in isa):
        raise c.fail("hardware.isa", f"must be a list of CPU flags among {', '.join(ISA_FLAGS)} (got {isa!r})",
                     'e.g. isa = ["amx_int8"]')
    return Hardware(isa=tuple(isa),
        cpu=c.string(t, "cpu", "hardware."), cores=c.integer(t, "cores", "hardware.", None, 1),
        memory_gb=c.number(t, "memory_gb", "hardware.", None, positive=True),
        accelerator=c.string(t, "accelerator", "hardware."), os=c.string(t, "os", "hardware."),
        jetpack=c.string(t, "jetpack", "hardware."), notes=c.string(t, "notes", "hardware."),
    )
