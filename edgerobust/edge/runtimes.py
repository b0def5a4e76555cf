"""Every runtime installed here, timed: the bundle audited once per execution provider, the fastest named.

A *runtime* is one execution provider of the onnxruntime this environment has (each onnxruntime
wheel brings its own: the CPU build only the CPU provider, onnxruntime-openvino OpenVINO too,
onnxruntime-gpu CUDA and TensorRT), on one device. Each is audited with a profile
(:func:`runtime_profile`): the shipped one that describes that runtime on a laptop, or, for CUDA and
TensorRT off a Jetson, the CPU profile's session and measurement settings with the Jetson profile's
provider options (TensorRT int8 + fp16 with its engine cache; CUDA), named ``<profile>+cuda``.

``parse_runtimes("all" | "cpu,openvino-cpu")`` checks every name before anything is measured: an
unknown name, a provider this onnxruntime lacks and a device that is absent are each one
UsageError. ``summarize`` puts the audits side by side: per runtime the deployed model's and the
base's p50 at batch 1, the speedup, the precision that ran, clean accuracy, and the deployed
model's answers against the CPU provider's on every set both replayed (the share of samples whose
class differs, exact McNemar of their correctness); the fastest is the lowest deployed p50 at batch
1 among runtimes that ran on their own provider (no fallback). Torch-free.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.errors import UsageError
from edgerobust.edge.runtime.providers import device_gap, install_hint

RUNTIMES_FILE = "runtimes.json"
RUNTIMES_TYPE = "edgerobust.edge.runtimes"
RUNTIMES_VERSION = 1


@dataclass(frozen=True)
class Runtime:
    """One runtime: its provider, the device asked of it, and the shipped profile it is audited with
    (None: derived from the CPU profile, see the module docstring)."""

    name: str
    provider: str
    profile: str | None
    device: str | None = None  # OpenVINO's device_type
    what: str = ""


RUNTIMES = {r.name: r for r in (
    Runtime("cpu", "CPUExecutionProvider", "laptop-cpu", what="onnxruntime's CPU provider (MLAS kernels)"),
    Runtime("openvino-cpu", "OpenVINOExecutionProvider", "laptop-openvino-cpu", "CPU", "OpenVINO on the CPU"),
    Runtime("openvino-gpu", "OpenVINOExecutionProvider", "laptop-openvino-gpu", "GPU", "OpenVINO on an Intel GPU"),
    Runtime("openvino-npu", "OpenVINOExecutionProvider", "laptop-openvino-npu", "NPU", "OpenVINO on an Intel NPU"),
    Runtime("cuda", "CUDAExecutionProvider", None, what="CUDA on an NVIDIA GPU"),
    Runtime("tensorrt", "TensorrtExecutionProvider", None, what="TensorRT (int8 + fp16) on an NVIDIA GPU"),
    Runtime("directml", "DmlExecutionProvider", "windows-directml", what="DirectML on a Windows GPU"),
    Runtime("coreml", "CoreMLExecutionProvider", "apple-coreml", what="Core ML on Apple silicon"),
    Runtime("qnn", "QNNExecutionProvider", "snapdragon-qnn-npu", what="QNN on a Snapdragon NPU"),
)}
ALIASES = {"openvino": "openvino-cpu", "trt": "tensorrt", "dml": "directml"}


def _nvidia_gpu_gap() -> str | None:
    """Why CUDA and TensorRT have no GPU here, or None (one is there, or this system cannot say)."""
    if os.name != "posix" or not Path("/dev").is_dir():
        return None
    if Path("/dev/nvidia0").exists() or Path("/etc/nv_tegra_release").exists() or Path("/dev/nvhost-ctrl-gpu").exists():
        return None
    return "no NVIDIA GPU device (/dev/nvidia0) and no Jetson (/etc/nv_tegra_release) on this host"


def gap(rt: Runtime, available: tuple[str, ...]) -> str | None:
    """Why ``rt`` cannot run here (its provider missing from this onnxruntime, or its device absent), or None."""
    if rt.provider not in available:
        return f"this onnxruntime does not offer {rt.provider} ({install_hint([rt.provider])})"
    if rt.device is not None:
        return device_gap(rt.provider, {"device_type": rt.device})
    if rt.name in ("cuda", "tensorrt"):
        return _nvidia_gpu_gap()
    return None


def parse_runtimes(text, available=None) -> tuple[str, ...]:
    """The runtimes ``text`` names (``all``: every one this host runs, the CPU provider first), each
    checked: UsageError naming an unknown one, a missing provider or an absent device."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = tuple(available)
    items = [t.strip().lower() for t in (text if isinstance(text, (list, tuple)) else str(text).split(","))]
    items = [ALIASES.get(t, t) for t in items if t]
    if not items:
        raise UsageError("`runtimes` is empty.", fix=f"Write all, or some of: {', '.join(RUNTIMES)}.")
    if items == ["all"]:
        return tuple(n for n, rt in RUNTIMES.items() if gap(rt, available) is None)
    out: list[str] = []
    for t in items:
        if t not in RUNTIMES:
            raise UsageError(f"Unknown runtime {t!r} in `runtimes`.",
                             why=f"Known: {', '.join(RUNTIMES)} (or all: every one this host runs).",
                             fix="Pick names from that list, comma-separated.")
        why = gap(RUNTIMES[t], available)
        if why is not None:
            raise UsageError(f"The runtime {t} cannot run on this host: {why}.",
                             why=f"This onnxruntime offers {', '.join(available) or 'no provider'}.",
                             fix="Leave it out, or use all (every runtime this host runs).")
        if t not in out:
            out.append(t)
    return tuple(out)


def runtime_profile(name: str, cpu_profile=None):
    """The DeviceProfile runtime ``name`` is audited with; ``cpu_profile``: the CPU runtime's (default
    laptop-cpu), whose session and measurement settings CUDA and TensorRT take."""
    from edgerobust.edge.runtime.profiles import load_profile

    rt = RUNTIMES[name]
    cpu = cpu_profile if cpu_profile is not None else load_profile("laptop-cpu")
    if name == "cpu":
        return cpu
    if rt.profile is not None:
        return load_profile(rt.profile)
    gpu = load_profile("jetson-orin-nano")  # TensorRT int8+fp16 with its engine cache, then CUDA, then the CPU
    keep = ("TensorrtExecutionProvider", "CUDAExecutionProvider") if name == "tensorrt" else ("CUDAExecutionProvider",)
    providers = tuple(p for p in gpu.providers if p.name in keep) + tuple(cpu.providers)
    return dataclasses.replace(cpu, name=f"{cpu.name}+{name}", providers=providers,
                               description=f"{cpu.description}, through {rt.what}")


@dataclass(frozen=True)
class RuntimeRow:
    """One runtime's audit, as the comparison reads it (None: not measured or not applicable)."""

    runtime: str
    profile: str
    folder: str | None
    what: str = ""  # the runtime as a person names it (Runtime.what)
    providers: tuple[str, ...] = ()
    fallback: bool = False
    deployed_p50_ms: float | None = None
    deployed_ci_ms: tuple[float, float] | None = None  # the p50's interval (edgerobust.edge.runtime.latency)
    base_p50_ms: float | None = None
    speedup: float | None = None
    precision: str | None = None  # what the runtime declares (edgerobust.edge.runtime.precision)
    observed: str | None = None  # its outputs against the CPU provider's on the same file (None: not observed)
    clean: float | None = None
    agreement: dict | None = None  # with the CPU provider: sets, disagree (k, n), worst set, McNemar p
    error: str | None = None


@dataclass(frozen=True)
class RuntimeComparison:
    """Every runtime's row, the fastest (None: none ran on its own provider), the runtime the answers were
    compared with, and notes (the profile the bundle was built for)."""

    rows: tuple[RuntimeRow, ...]
    fastest: str | None
    reference: str | None  # the runtime the answers are compared with (cpu when it ran)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return {"_type": RUNTIMES_TYPE, "_version": RUNTIMES_VERSION, "_data": dataclasses.asdict(self)}


def row_of(name: str, profile: str, m, folder: Path | None = None, clean=None) -> RuntimeRow:
    """A runtime's row from its MeasureReport ``m`` (an audit's measurement, or profile's); ``clean``: the
    deployed model's clean accuracy where sets were replayed."""
    dep = m.model("deployed") or m.model("model")
    base = m.model("base")
    d1, b1 = (x.latency_at(1) if x is not None else None for x in (dep, base))
    sp = next((s.p50 for s in m.speedup if s.batch_size == 1), None)
    return RuntimeRow(runtime=name, profile=profile, folder=str(folder) if folder else None, what=RUNTIMES[name].what,
                      providers=tuple(dep.session.providers) if dep is not None else (), fallback=bool(m.fallback),
                      deployed_p50_ms=d1.p50_ms if d1 else None,
                      deployed_ci_ms=(d1.p50_ci_low_ms, d1.p50_ci_high_ms) if d1 else None, base_p50_ms=b1.p50_ms if b1 else None,
                      speedup=sp, clean=clean, **_ran(dep.precision if dep is not None else None))


def _ran(rec: dict | None) -> dict:
    """The precision a model ran in: what the runtime declares, and what its outputs showed where observed."""
    if not rec:
        return {}
    obs = rec.get("observed")
    return {"precision": rec.get("declared"), "observed": rec["verdict"] if obs and "error" not in obs else None}


def _report_row(name: str, report, folder: Path) -> RuntimeRow:
    clean = next((s for s in report.sets if s.kind == "clean"), None)
    return row_of(name, report.profile, report.measurement, folder,
                  clean.deployed.accuracy.value if clean is not None else None)


def agreement_with(reference, other) -> dict | None:
    """The deployed model's answers on ``other`` (Predictions) against ``reference``'s, on every set both
    replayed with the same samples: the share of samples whose class differs over the clean and adversarial
    sets together (``differ``/``n``) and over the corruption sets apart (``corruption``: rows repeat there),
    and the set where most differ, with McNemar's exact p of the two runtimes' correctness on it."""
    import numpy as np

    from edgerobust.edge.files.predictions import CORRUPTION
    from edgerobust.edge.scores.stats import mcnemar_exact

    if reference is None or other is None:
        return None
    count = {"main": [0, 0], "corruption": [0, 0]}
    worst = None
    for a in reference.sets:
        b = other.get(a.name)
        if b is None or b.n != a.n or not np.array_equal(a.idx, b.idx) or not np.array_equal(a.y, b.y):
            continue
        k = int(np.sum(a.pred["deployed"] != b.pred["deployed"]))
        c = count["corruption" if a.source == CORRUPTION else "main"]
        c[0], c[1] = c[0] + k, c[1] + a.n
        if a.n and (worst is None or k / a.n > worst["share"]):
            t = mcnemar_exact(a.pred["deployed"] == a.y, b.pred["deployed"] == b.y)
            worst = {"set": a.name, "differ": k, "n": a.n, "share": k / a.n, "p_value": t.p_value}
    (k, n), (kc, nc) = count["main"], count["corruption"]
    if not n and not nc:
        return None
    return {"differ": k, "n": n, "share": k / n if n else None,
            "corruption": {"differ": kc, "n": nc, "share": kc / nc} if nc else None, "worst": worst}


def summarize(rows: list[RuntimeRow], predictions: dict, notes=()) -> RuntimeComparison:
    """The comparison of ``rows``; ``predictions``: runtime -> the audit's Predictions (agreement with cpu)."""
    ref = "cpu" if predictions.get("cpu") is not None else None
    rows = [dataclasses.replace(r, agreement=agreement_with(predictions.get(ref), predictions.get(r.runtime)))
            if ref and r.runtime != ref and r.error is None else r for r in rows]
    timed = [r for r in rows if r.error is None and not r.fallback and r.deployed_p50_ms is not None]
    fastest = min(timed, key=lambda r: r.deployed_p50_ms).runtime if timed else None
    return RuntimeComparison(rows=tuple(rows), fastest=fastest, reference=ref, notes=tuple(notes))


def runtimes_root(model: Path, out: Path | None) -> Path:
    """The folder of one `runtimes` audit: ``out``, or ``<bundle>/reports/runtimes-<UTC stamp>`` (a new one)."""
    import datetime as _dt

    if out is not None:
        if (Path(out) / RUNTIMES_FILE).exists():
            raise UsageError(f"'{out}' already holds a runtimes comparison ({RUNTIMES_FILE}).",
                             why="edgerobust never overwrites an earlier report.", fix="Choose another `out_dir`.")
        return Path(out)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(model).resolve().parent / "reports" / f"runtimes-{stamp}"
    for i in range(1, 1000):
        candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
        if not candidate.exists():
            return candidate
    raise UsageError(f"Cannot find a free report folder beside '{base}'.")  # pragma: no cover


def audit_runtimes(config, names: tuple[str, ...], root: Path, cpu_profile=None, on_report=None) -> RuntimeComparison:
    """Audit ``config`` (an AuditConfig) once per runtime into ``root/<runtime>/``, each on its own profile
    with no fallback, then write ``root/runtimes.json``. A runtime whose audit fails is recorded with its
    error and the others go on. ``on_report(name, report, folder)``: called after each audit is written."""
    import logging

    from edgerobust.edge.audit import audit
    from edgerobust.edge.files.npzio import write_json
    from edgerobust.edge.render.report import write_report
    from edgerobust.errors import EdgeRobustError

    log = logging.getLogger(__name__)
    root.mkdir(parents=True, exist_ok=True)
    rows, predictions = [], {}
    for i, name in enumerate(names, 1):
        prof = runtime_profile(name, cpu_profile)
        log.info(f"runtime {i}/{len(names)}: {name} ({prof.name})")
        try:
            report = audit(dataclasses.replace(config, profile=prof, allow_fallback=False, out_dir=root / name,
                                               profile_reason=None, estimate=None))
            folder = write_report(report, root / name)
        except EdgeRobustError as exc:
            log.warning(f"runtime {name}: the audit failed: {exc}")
            rows.append(RuntimeRow(runtime=name, profile=prof.name, folder=None, error=str(exc)))
            continue
        rows.append(_report_row(name, report, folder))
        predictions[name] = report.predictions
        if on_report is not None:
            on_report(name, report, folder)
    result = summarize(rows, predictions, notes=_built_for(config.model))
    write_json(root / RUNTIMES_FILE, result.to_json())
    from edgerobust.edge.render.runtimes_render import to_markdown

    (root / "runtimes.md").write_text(to_markdown(result, Path(config.model).name), encoding="utf-8")
    return result


def _built_for(model: Path) -> tuple[str, ...]:
    """A note naming the profile the bundle beside ``model`` was compressed for (its int8 form and channel
    rounding follow that runtime), or nothing without a bundle."""
    from edgerobust.edge.files.bundle import Bundle

    b = Bundle.find(Path(model))
    if b is None:
        return ()
    target = b.manifest.get("target") or {}
    built = target.get("profile") or f"no profile (runtime {target.get('runtime', 'cpu')})"
    return (f"The bundle was compressed for {built}: the other runtimes ran files shaped for it.",)


def measure_runtimes(models: dict, names: tuple[str, ...], cpu_profile=None, memory: bool = True,
                     batch_sizes: tuple[int, ...] | None = None) -> RuntimeComparison:
    """Time ``models`` (role -> .onnx, as `profile` takes them) once per runtime, no sets replayed: no
    agreement. A runtime whose measurement fails is recorded with its error and the others go on."""
    import logging

    from edgerobust.edge.runtime.measure import measure_models
    from edgerobust.errors import EdgeRobustError

    rows = []
    for i, name in enumerate(names, 1):
        prof = runtime_profile(name, cpu_profile)
        if batch_sizes:
            prof = prof.with_batch_sizes(tuple(batch_sizes))
        logging.getLogger(__name__).info(f"runtime {i}/{len(names)}: {name} ({prof.name})")
        try:
            m = measure_models(models, prof, allow_fallback=False, memory=memory)
        except EdgeRobustError as exc:
            rows.append(RuntimeRow(runtime=name, profile=prof.name, folder=None, error=str(exc)))
            continue
        rows.append(row_of(name, prof.name, m))
    return summarize(rows, {}, notes=("no sets were replayed (a lone model): answers were not compared",))


def report_folders(folder: Path) -> list[Path] | None:
    """The audit report folders a runtimes comparison lists (None: ``folder`` holds none), for compare."""
    import json

    f = Path(folder) / RUNTIMES_FILE
    if not f.is_file():
        return None
    try:
        rows = json.loads(f.read_text())["_data"]["rows"]
        return [Path(folder) / Path(r["folder"]).name for r in rows if r.get("folder")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not its rows of objects
        raise UsageError(f"'{f}' is not a runtimes comparison edgerobust wrote.", why=str(exc),
                         fix="Pass the audit report folders themselves.") from None
