"""Peers: what a user would pick instead of edgerobust, timed beside edgerobust's deployed model on this host.

For resnet18 and mobilenet_v2 (224x224, random weights: latency only), from one fp32 file (the
bundle's base.onnx, normalization inside): ORT fp32; ORT int8 (quant_pre_process + quantize_static,
QDQ, per-channel, U8S8: onnxruntime's choice for x86 speed); OpenVINO with f32 forced; OpenVINO at
its default hint (bf16 on CPUs with AVX512_BF16 or AMX); OpenVINO + NNCF int8 (target CPU, default
compile). Then edgerobust's deployed model (0.5 + int8) as compress builds it for each target:
laptop-cpu on onnxruntime's CPU provider, and that same file on onnxruntime's OpenVINO provider
(onnxruntime-openvino: another environment, --ovep-python) and on the OpenVINO runtime;
laptop-openvino-cpu (plain int8 stem) on the same two, f32 forced for float layers. Both int8 peers calibrate on 16 images of uniform random
pixels. Each row runs alone in a fresh process (warmup, then back-to-back runs for a fixed time:
its p50), batch 1, the harness profile's threads; a round runs every row once, in alternating
order; figures are medians over rounds [min-max], ratios per round against ORT fp32 and the best
peer (the fastest row not edgerobust's); the deployed model on the OpenVINO provider and runtime against
the CPU provider, per round. Every table comes with the host's ISA class (amx, vnni, avx2) and flags,
and issue 31's table (what | ms | speedup over ORT fp32, the best peer named) follows the full one. Precision is read back from OpenVINO's compiled model
(hint, conv/fc runtime precision) or, for onnxruntime, from the file. A row that cannot run says
why; none is estimated.

    python benchmarks/peers.py [--quick] [--models resnet18,mobilenet_v2] [--ovep-python PATH]
                               [--rounds N] [--seconds S] [--work DIR] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHAPE = (1, 3, 224, 224)
COMPUTE_OPS = ("Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "QLinearMatMul", "MatMulInteger")
OV_COMPUTE, OV_IO = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul"), ("Input", "Output", "Const")


@dataclass(frozen=True)
class Row:
    """One way to run one model: which file, which runtime, forced precision, peer or edgerobust."""

    key: str
    label: str
    runtime: str  # "ort" (CPU provider), "openvino" (the runtime's Python API), "ovep" (onnxruntime-openvino)
    source: str  # "base", "ort_int8", "nncf_int8", "deployed" (laptop-cpu build), "deployed_ov" (openvino-cpu build)
    peer: bool
    hint: str | None = None  # OpenVINO's INFERENCE_PRECISION_HINT; None: its default


ROWS = (
    Row("ort-fp32", "ORT fp32", "ort", "base", True),
    Row("ort-int8", "ORT quantize_static int8", "ort", "ort_int8", True),
    Row("ov-fp32", "OpenVINO fp32 (f32 forced)", "openvino", "base", True, "f32"),
    Row("ov-default", "OpenVINO, default precision hint", "openvino", "base", True),
    Row("nncf-int8", "OpenVINO + NNCF int8", "openvino", "nncf_int8", True),
    Row("er-cpu", "edgerobust 0.5+int8 laptop-cpu, ORT CPU EP", "ort", "deployed", False),
    Row("er-cpu-ovep", "the same laptop-cpu file, ORT OpenVINO EP", "ovep", "deployed", False, "f32"),
    Row("er-cpu-ov", "the same laptop-cpu file, OpenVINO runtime", "openvino", "deployed", False, "f32"),
    Row("er-ovep", "edgerobust 0.5+int8 openvino-cpu, ORT OpenVINO EP", "ovep", "deployed_ov", False, "f32"),
    Row("er-ov", "edgerobust 0.5+int8 openvino-cpu, OpenVINO runtime", "openvino", "deployed_ov", False, "f32"),
)
ROW, REFERENCE = {r.key: r for r in ROWS}, "ort-fp32"  # every ratio's first reference
# The deployed model elsewhere against the same model on onnxruntime's CPU provider (er-cpu), per round:
# (row key, what it is). The laptop-cpu file is what a user of the default profile holds; the openvino-cpu
# build is what `compress --profile laptop-openvino-cpu` gives (plain int8 stem).
VS_CPU = (("er-cpu-ovep", "the same file on onnxruntime's OpenVINO provider"),
          ("er-cpu-ov", "the same file on the OpenVINO runtime"),
          ("er-ovep", "built for laptop-openvino-cpu, on onnxruntime's OpenVINO provider"),
          ("er-ov", "built for laptop-openvino-cpu, on the OpenVINO runtime"))
QUIET = 0.15  # other processes' share of the cores that counts as a quiet host (--wait-quiet)


def _ov_config(threads: int, hint: str | None) -> dict:
    return {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY",
            **({"INFERENCE_PRECISION_HINT": hint} if hint else {})}


def onnx_precision(path: str | Path) -> str:
    """What an ONNX file asks of onnxruntime: how many conv/fc layers take int8 weights (QDQ or QOperator)."""
    import onnx

    g = onnx.load(str(path)).graph
    dq = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    compute = [n for n in g.node if n.op_type in COMPUTE_OPS]
    q = sum(1 for n in compute if n.op_type not in ("Conv", "Gemm", "MatMul") or n.input[1] in dq)
    return "fp32" if q == 0 else f"int8 {q}/{len(compute)} conv/fc, rest fp32"


def _ort_runner(spec: dict, x: np.ndarray):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = spec["threads"], 1, 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers, precision = ["CPUExecutionProvider"], onnx_precision(spec["model"])
    if spec["runtime"] == "ovep":
        load_config = json.dumps({"CPU": _ov_config(spec["threads"], spec["hint"])})
        providers.insert(0, ("OpenVINOExecutionProvider", {"device_type": "CPU", "load_config": load_config}))
        precision += f"; float layers: hint {spec['hint']} forced (not readable through onnxruntime)"
    sess = ort.InferenceSession(spec["model"], so, providers=providers)
    want = "OpenVINOExecutionProvider" if spec["runtime"] == "ovep" else "CPUExecutionProvider"
    if (used := sess.get_providers()[0]) != want:
        raise RuntimeError(f"the requested provider was not used: {sess.get_providers()}")
    name, feed = "onnxruntime-openvino" if spec["runtime"] == "ovep" else "onnxruntime", {sess.get_inputs()[0].name: x}
    return (lambda: sess.run(None, feed)), {"runs_on": f"{name} {ort.__version__}, {used}", "precision": precision}


def _ov_runner(spec: dict, x: np.ndarray):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(spec["model"])
    if model.inputs[0].get_partial_shape().is_dynamic:
        model.reshape({model.inputs[0]: list(x.shape)})
    compiled = core.compile_model(model, "CPU", _ov_config(spec["threads"], spec["hint"]))
    ops = [(i["layerType"].astype(str), i["runtimePrecision"].astype(str))
           for i in (op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops())]
    kind = "conv/fc" if any(t in OV_COMPUTE for t, _ in ops) else "layers"  # tiny graphs fuse into Subgraphs
    ran = collections.Counter(p for t, p in ops if t in OV_COMPUTE or kind == "layers" and t not in OV_IO)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    precision = (f"hint {hint} ({'forced' if spec['hint'] else 'default'}); {kind} ran "
                 + ", ".join(f"{n} {p}" for p, n in sorted(ran.items())))
    req = compiled.create_infer_request()
    return (lambda: req.infer({0: x}, share_inputs=True)), {"runs_on": f"OpenVINO {ov.__version__.split('-')[0]}, CPU",
                                                            "precision": precision, "hint": hint}


def child(spec: dict) -> dict:
    """Open the row's model, run ``warmup`` times, then time back-to-back runs for ``seconds``: the p50."""
    try:
        from edgerobust.edge.runtime.host import OtherLoad
    except ImportError:  # an environment without edgerobust: no load figure, nothing else lost
        OtherLoad = None
    x = np.random.default_rng(0).random(tuple(spec.get("shape", SHAPE)), dtype=np.float32)
    run, info = (_ov_runner if spec["runtime"] == "openvino" else _ort_runner)(spec, x)
    for _ in range(spec["warmup"]):
        run()
    meter = OtherLoad().start() if OtherLoad else None
    t, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < spec["seconds"]:
        a = time.perf_counter()
        run()
        t.append(time.perf_counter() - a)
    return {"p50_ms": 1e3 * float(np.median(t)), "runs": len(t), "other_load": meter.stop() if meter else None, **info}


def probe_ovep(python: str) -> str | None:
    """None when ``python``'s onnxruntime offers the OpenVINO provider, else why not."""
    code = "import onnxruntime as o, json; print(json.dumps(o.get_available_providers()))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not run: {python} did not start ({e})"
    if out.returncode or "OpenVINOExecutionProvider" not in out.stdout:
        return ("not run: install onnxruntime-openvino in a separate environment (never beside onnxruntime) "
                "and pass --ovep-python")
    return None


def availability(ovep_python: str | None, has=importlib.util.find_spec) -> dict[str, str | None]:
    """Row key -> None (runs here) or why it does not. ``has``: how a module is looked up."""
    why = {r.key: None for r in ROWS}
    for r in (r for r in ROWS if r.runtime == "openvino" and has("openvino") is None):
        why[r.key] = "not run: openvino is not installed here (pip install 'edgerobust[peers]')"
    if why["nncf-int8"] is None and has("nncf") is None:
        why["nncf-int8"] = "not run: nncf is not installed here (pip install 'edgerobust[peers]')"
    ovep = probe_ovep(ovep_python or sys.executable)
    why.update({r.key: ovep for r in ROWS if r.runtime == "ovep"})
    return why


def ort_int8(src: Path, dst: Path, calib: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = ({name: x[None]} for x in calib)

        def get_next(self):
            return next(self.it, None)

    quant_pre_process(str(src), str(pre := dst.with_name(dst.stem + "-pre.onnx")))
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def nncf_int8(src: Path, dst: Path, calib: np.ndarray) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(src))
    model.reshape({model.inputs[0]: list(SHAPE)})
    q = nncf.quantize(model, nncf.Dataset([x[None] for x in calib]), subset_size=len(calib),
                      target_device=nncf.TargetDevice.CPU)
    ov.save_model(q, str(dst), compress_to_fp16=False)
    return dst


def build(name: str, work: Path, why: dict, log) -> dict[str, Path]:
    """The files of one model's rows: source name -> path (rows that cannot run get none)."""
    from latency_truth import make_bundles

    t0 = time.perf_counter()
    bundle = make_bundles([name], work, "laptop-cpu")[name]
    files = {"base": bundle / "base.onnx", "deployed": bundle / "model.onnx"}
    if why["er-ovep"] is None or why["er-ov"] is None:  # as `compress --profile laptop-openvino-cpu`: plain int8 stem
        files["deployed_ov"] = make_bundles([name], work / "openvino-cpu", "laptop-openvino-cpu")[name] / "model.onnx"
    log(f"[build] {name}: bundles in {work} ({time.perf_counter() - t0:.0f} s)")
    calib = np.random.default_rng(0).random((16, *SHAPE[1:]), dtype=np.float32)  # 16 images, uniform random pixels
    makers = (("ort_int8", ort_int8, "ort-int8"), ("nncf_int8", nncf_int8, "nncf-int8"))
    for source, make, _ in (m for m in makers if why[m[2]] is None):  # only for rows that can run
        dst = work / f"{name}-{source}" / ("model.xml" if source == "nncf_int8" else "model.onnx")
        if not dst.exists():
            t0 = time.perf_counter()
            dst.parent.mkdir(parents=True, exist_ok=True)
            make(files["base"], dst, calib)
            log(f"[build] {name}: {source} ({time.perf_counter() - t0:.0f} s)")
        files[source] = dst
    return files


def run_child(python: str, spec: dict, timeout: float = 600) -> dict:
    """This file's --child mode under ``python``: one row alone in a fresh process."""
    out = subprocess.run([python, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError((out.stderr.strip().splitlines() or ["no output"])[-1][:300])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(jobs: dict[tuple[str, str], dict], pythons: dict[str, str], rounds: int, log,
            before_row=lambda: None, retries: int = 0) -> dict:
    """(model, row key) -> record: p50 and other load per round, the last child's info, status (None or why).
    A row disturbed by other processes (over QUIET) runs again, up to ``retries`` times; the least disturbed counts."""
    res = {k: {"p50": [], "other_load": [], "runs": [], "info": {}, "status": None} for k in jobs}
    for i in range(rounds):
        t0 = time.perf_counter()
        for key in [k for k in list(jobs)[:: 1 if i % 2 == 0 else -1] if not res[k]["status"]]:
            r = res[key]
            before_row()
            try:
                rec = run_child(py := pythons[ROW[key[1]].runtime], jobs[key])
                for _ in range(retries):
                    if (rec["other_load"] or 0) <= QUIET:
                        break
                    before_row()
                    rec = min(rec, run_child(py, jobs[key]), key=lambda x: x["other_load"] or 0)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                r["status"] = f"failed: {e}"  # shown as the row's result; never replaced by a figure
                log(f"  {key[0]} / {ROW[key[1]].label}: {r['status']}")
                continue
            for k in ("p50", "other_load", "runs"):
                r[k].append(rec.pop(k + "_ms" if k == "p50" else k))
            r["info"] = rec
        log(f"[measure] round {i + 1}/{rounds} ({time.perf_counter() - t0:.0f} s)")
    return res


def _spread(v) -> dict | None:
    v = np.asarray([x for x in v if x is not None], dtype=np.float64)
    return None if v.size == 0 else {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
                                     "n": int(v.size)}


def _ratio(num: list[float], den: list[float]) -> dict | None:
    """Per-round num/den over the rounds both have: the spread of a ratio across interleaved rounds."""
    n = min(len(num), len(den))
    return _spread([a / b for a, b in zip(num[:n], den[:n])]) if n else None


def summarize(records: dict[str, dict[str, dict]]) -> dict:
    """Per model, one entry per ROWS row: its p50 spread, x ORT fp32 and x the best peer (per-round
    ratios), where and at what precision it ran, the most other load a round saw; or its status."""
    out = {}
    for model, recs in records.items():
        ok = {k: r["p50"] for k, r in recs.items() if r["p50"] and not r["status"]}
        best = min((k for k in ok if ROW[k].peer), key=lambda k: float(np.median(ok[k])), default=None)
        rows = []
        for row in ROWS:
            r, v, load = recs.get(row.key, {}), ok.get(row.key), _spread(recs.get(row.key, {}).get("other_load", []))
            rows.append({"key": row.key, "row": row.label, "peer": row.peer, "best_peer": row.key == best,
                         "status": None if v else (r.get("status") or "not run"),
                         "runs_on": r.get("info", {}).get("runs_on", row.runtime),
                         "precision": r.get("info", {}).get("precision", "") if v else "",
                         "p50_ms": _spread(v) if v else None,
                         "x_ort_fp32": _ratio(ok[REFERENCE], v) if v and REFERENCE in ok else None,
                         "x_best_peer": _ratio(ok[best], v) if v and best else None,
                         "other_load": load["max"] if load and v else None})
        out[model] = {"best_peer": best, "rows": rows,
                      "vs_cpu_provider": {k: _ratio(ok["er-cpu"], ok[k]) if "er-cpu" in ok and k in ok else None
                                          for k, *_ in VS_CPU}}
    return out


def _f(s: dict | None, digits: int = 2) -> str:
    return "" if s is None else f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def render(summary: dict) -> str:
    lines = ["| model | row | runs on | precision as run | p50 ms | x ORT fp32 | x best peer | other load |",
             "|---|---|---|---|---|---|---|---|"]
    for model, s in summary.items():
        for r in s["rows"]:
            label = r["row"] + (" (best peer)" if r["best_peer"] else "")
            figures = (f"{r['status']} | | | " if r["status"] else
                       f"{_f(r['p50_ms'], 3)} | {_f(r['x_ort_fp32'])} | {_f(r['x_best_peer'])} | "
                       + ("n/a" if r["other_load"] is None else f"{r['other_load']:.2f}"))
            lines.append(f"| {model} | {label} | {r['runs_on']} | {r['precision']} | {figures} |")
    return "\n".join(lines)


ISSUE_ROWS = (("ort-fp32", "onnxruntime fp32 (the reference)"),
              ("er-cpu", "this bundle (laptop-cpu) on onnxruntime's CPU provider (the default)"), *VS_CPU)


def render_issue(summary: dict) -> str:
    """Issue 31's shape, per model: what | ms | speedup over ORT fp32, the best peer named, then the
    deployed model on the OpenVINO provider and runtime against the CPU provider (per-round ratios)."""
    out = []
    for model, s in summary.items():
        rows = {r["key"]: r for r in s["rows"]}
        keys = [ISSUE_ROWS[0], *([(s["best_peer"], f"{ROW[s['best_peer']].label} (the best peer)")]
                                 if s["best_peer"] else []), *ISSUE_ROWS[1:]]
        out += [f"{model}:", "", "| what | ms | speedup over ORT fp32 |", "|---|---|---|"]
        for key, what in keys:
            r = rows[key]
            out.append(f"| {what} | {r['status']} | |" if r["status"] else
                       f"| {what} | {_f(r['p50_ms'])} | {_f(r['x_ort_fp32'])}x |")
        if not s["best_peer"]:
            out.append("| the best peer | no peer ran | |")
        out.append("")
        for key, what in VS_CPU:
            v = s["vs_cpu_provider"].get(key)
            out.append(f"{model}: {what} / on the CPU provider: "
                       + (f"{v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}] over {v['n']} rounds" if v else
                          "not measured (" + (rows[key]["status"] or rows["er-cpu"]["status"] or "") + ")"))
        out.append("")
    return "\n".join(out).rstrip()


def host_line(ovep_python: str | None) -> str:
    """The host, its ISA (with the bf16 flags that decide OpenVINO's default precision) and the versions."""
    import importlib.metadata as md

    from edgerobust.edge.runtime.host import cpuinfo, host_info

    h = host_info()
    flags = {f for line in cpuinfo().splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    isa = "/".join(list(h.isa) + [f for f in ("avx512_bf16", "amx_bf16") if f in flags and f not in h.isa]) or "unknown"
    versions = [f"{n} {md.version(n)}" for n in ("onnxruntime", "openvino", "nncf") if importlib.util.find_spec(n)]
    return f"host: {h.cpu}, {h.cores} cores, ISA {isa}; {', '.join(versions)}" + (
        f"; OpenVINO EP rows under {ovep_python}" if ovep_python else "")


def headline(summary: dict):
    """One line per model and edgerobust row: the README's claim as ratios measured in this run."""
    if busy := sum((r["other_load"] or 0) > QUIET for s in summary.values() for r in s["rows"]):
        yield (f"NOTE: rows measured while other processes used over {QUIET:.0%} of the cores: {busy}; a 2-thread "
               "onnxruntime row slows far more than an OpenVINO one then (see 'other load'; --wait-quiet)")
    for model, s in summary.items():
        for r in (r for r in s["rows"] if not r["peer"] and not r["status"]):
            vs_best = (f"{r['x_best_peer']['median']:.2f}x the best peer ({ROW[s['best_peer']].label})"
                       if r["x_best_peer"] else "no peer ran")
            vs_ref = f"{r['x_ort_fp32']['median']:.2f}x ORT fp32" if r["x_ort_fp32"] else "ORT fp32 did not run"
            yield f"{model}: {r['row']}: {vs_ref}, {vs_best}"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 1 s per row (default: the profile's, of 3 s)")
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--ovep-python", default=None,
                    help="a Python whose onnxruntime is onnxruntime-openvino (default: this one, if it is)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="timed seconds per row and round")
    ap.add_argument("--work", default=None, help="folder for the bundles and int8 models (kept; reused when present)")
    ap.add_argument("--out", default=None, help="JSON results (default benchmarks/results/peers-<time>.json)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="a shared host: before each row, wait up to this "
                    "many seconds for other processes to use under 15%% of the cores; a disturbed row runs again "
                    "(twice at most)")
    args = ap.parse_args()
    from common import bench_profile, isa_line, wait_quiet
    from edgerobust.edge.runtime.host import OtherLoad

    log = lambda m: print(m, flush=True)  # noqa: E731
    threads = (profile := bench_profile(args.quick)).session.intra_op_threads  # bench-2threads.toml: threads, rounds
    rounds = args.rounds or (3 if args.quick else profile.measure.rounds)
    seconds, warmup = args.seconds or (1.0 if args.quick else 3.0), 10 if args.quick else 20
    models = [m for m in args.models.split(",") if m]
    (work := Path(args.work or tempfile.mkdtemp(prefix="er-peers-"))).mkdir(parents=True, exist_ok=True)
    why = availability(args.ovep_python)
    pythons = {"ort": sys.executable, "openvino": sys.executable, "ovep": args.ovep_python or sys.executable}
    files = {m: build(m, work, why, log) for m in models}
    jobs = {(m, r.key): {"model": str(files[m][r.source]), "runtime": r.runtime, "hint": r.hint, "threads": threads,
                         "warmup": warmup, "seconds": seconds}
            for m in models for r in ROWS if why[r.key] is None}
    load0, meter = os.getloadavg()[0], OtherLoad().start()
    quiet = lambda: args.wait_quiet and wait_quiet(QUIET, args.wait_quiet, log)  # noqa: E731
    res = measure(jobs, pythons, rounds, log, quiet, retries=2 if args.wait_quiet else 0)
    other, load1 = meter.stop(), os.getloadavg()[0]
    summary = summarize({m: {r.key: res.get((m, r.key)) or {"p50": [], "status": why[r.key]} for r in ROWS}
                         for m in models})
    host, isa = host_line(args.ovep_python if why["er-ovep"] is None else None), isa_line()
    text = "\n".join([
        f"\n{time.strftime('%Y-%m-%d %H:%M')}  {host}",
        f"batch 1, {threads} threads, each row alone in a fresh process: {warmup} warmup runs + {seconds:g} s timed, "
        f"{rounds} interleaved rounds; p50 median [min-max] over rounds; ratios per round",
        "both int8 peers calibrated on 16 images of uniform random pixels (seed 0); random-weight models, 224x224",
        f"load average {load0:.2f} before, {load1:.2f} after; other processes used "
        f"{'n/a' if other is None else f'{other:.0%}'} of the cores during the rounds "
        "('other load': the most any round of the row saw)\n",
        isa, "", render(summary), "", *headline(summary), "",
        f"issue 31's table ({isa}; batch 1, {threads} threads, 224x224; median [min-max] over rounds):", "",
        render_issue(summary)])
    print(text, flush=True)
    out = Path(args.out) if args.out else HERE / "results" / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"date": time.strftime("%Y-%m-%d %H:%M"), "host": host, "isa": isa, "threads": threads, "rounds": rounds,
            "seconds": seconds, "warmup": warmup, "work": str(work), "load_average": [load0, load1],
            "other_load": other, "rows": [asdict(r) for r in ROWS], "summary": summary,
            "raw": {f"{m}/{k}": v for (m, k), v in res.items()}}
    out.write_text(json.dumps({"_type": "edgerobust.bench.peers", "_version": 1, "_data": data}, indent=1))
    print(f"\nresults: {out}", flush=True)


if __name__ == "__main__":
    main()
