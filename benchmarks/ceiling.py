"""The CPU int8 ceiling: how much of the available speed a pruned int8 model realizes, and what moves it.

available = MACs ratio x the base model's own int8 gain (same int8 format, same host). For one
compressed bundle this quantizes the base and the pruned fp32 model in each int8 format
(QDQ, QOperator), optionally with the stem (first conv) kept in fp32 or rewritten space-to-depth
(``--int8-stem space-to-depth``, edgerobust.workstation.quantize.stem), measures every row in
one interleaved run (parked sessions, batch 1, the harness profile's threads) at graph
optimization "all" and at "extended" (without onnxruntime's layout transformations), and
prints each row's speedup over base fp32 and its realized share of the available.

``--forms`` (issue 31, item 3) measures instead the int8 forms onnxruntime's CPU provider might run
faster, all built from the bundle's pruned fp32 model (FORMS: QDQ with symmetric or asymmetric,
per-channel or per-tensor weights, uint8 or int8 activations, QOperator, the dynamic
ConvInteger/MatMulInteger route) beside today's form (compress's laptop-cpu int8: QDQ U8S8,
per-channel symmetric weights, space-to-depth stem), in one interleaved run at batch 1 with the
harness profile's threads, and each form's top-1 agreement with the fp32 model on the bundle's
eval.npz rows it was not calibrated on (the first 16 calibrate every form), so a fast but wrong
form is flagged.

    python benchmarks/ceiling.py BUNDLE [--rounds 20] [--extras round_to=BUNDLE16,...]
    python benchmarks/ceiling.py BUNDLE --forms all [--rounds 20] [--threads N] [--out forms.json]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import batch1_rounds, bench_profile, round_ratios, spread  # noqa: E402

CALIB = 16  # eval.npz rows that calibrate every int8 row; the forms' agreement is taken on the rest


def macs(path: Path) -> float:
    """Conv and Gemm multiply-accumulates of an fp32 model at batch 1 (shape-inferred)."""
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0.0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            out = shapes[n.output[0]]
            total += float(np.prod(out[1:])) * float(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            w = inits[n.input[1]]
            total += float(np.prod(w))
    return total


def build_rows(bundle: Path, work: Path, stem: bool, extras: dict[str, Path]) -> dict[str, dict]:
    from edgerobust.edge.files.bundle import EvalSet
    from edgerobust.workstation.configs import QuantConfig
    from edgerobust.workstation.quantize.int8 import quantize

    calib = EvalSet.load(bundle / "eval.npz").x[:16]  # quantize() calibrates on every row given
    base, pruned = bundle / "base.onnx", bundle / "model_fp32.onnx"
    rows = {"base fp32": {"path": base, "macs": macs(base), "int8": None}}
    for fmt in ("qdq", "qoperator"):
        for name, src in (("base", base), ("pruned", pruned)):
            out = work / f"{name}-{fmt}.onnx"
            quantize(src, out, calib, QuantConfig(keep_fp32="none", format=fmt))
            rows[f"{name} int8 {fmt}"] = {"path": out, "macs": macs(src), "int8": fmt}
    if stem:
        out = work / "pruned-qdq-stem-fp32.onnx"
        quantize(pruned, out, calib, QuantConfig(keep_fp32="first", format="qdq"))
        rows["pruned int8 qdq, stem fp32"] = {"path": out, "macs": macs(pruned), "int8": "qdq"}
        # the space-to-depth stem (edgerobust.workstation.quantize.stem; laptop-cpu's compress.int8_stem),
        # on the base too: its int8 gain is the reference of the pruned row's share
        for name, src in (("base", base), ("pruned", pruned)):
            out = work / f"{name}-qdq-stem-s2d.onnx"
            quantize(src, out, calib, QuantConfig(keep_fp32="none", format="qdq",
                                                  stem="space-to-depth"))
            rows[f"{name} int8 qdq, space-to-depth stem"] = {"path": out, "macs": macs(src), "int8": "qdq",
                                                             "ref": "base int8 qdq, space-to-depth stem"}
    for label, b in extras.items():
        out = work / f"{label}-qdq.onnx"
        quantize(b / "model_fp32.onnx", out, calib, QuantConfig(keep_fp32="none", format="qdq"))
        rows[f"pruned int8 qdq, {label}"] = {"path": out, "macs": macs(b / "model_fp32.onnx"), "int8": "qdq"}
    return rows


def measure(rows: dict[str, dict], rounds: int) -> list[dict]:
    from edgerobust.edge.runtime.sessions import open_session, plan_providers

    profile = bench_profile()
    profile = dataclasses.replace(profile, measure=dataclasses.replace(
        profile.measure, rounds=rounds, max_rounds=rounds, switch_warmup_runs=1))
    ext = dataclasses.replace(profile, session=dataclasses.replace(profile.session, graph_optimization="extended"))
    plan = plan_providers(profile)
    sessions = {}
    for name, r in rows.items():
        sessions[name] = open_session(r["path"], name, profile, plan=plan, isolation="park")
        if r["int8"]:
            sessions[name + " [extended]"] = open_session(r["path"], name, ext, plan=plan, isolation="park")
    ms = batch1_rounds(sessions, profile.measure)
    base = ms["base fp32"]
    out = []
    for name in sessions:
        r = rows[name.replace(" [extended]", "")]
        suffix = " [extended]" if name.endswith("[extended]") else ""
        ref = r.get("ref", f"base int8 {r['int8']}")
        gain = round_ratios(base, ms[f"{ref}{suffix}"])["median"] if r["int8"] else 1.0
        sp = round_ratios(base, ms[name])
        macs_ratio = rows["base fp32"]["macs"] / r["macs"]
        out.append({"row": name, "p50_ms": spread(np.median(ms[name], axis=1)), "speedup": sp,
                    "macs_ratio": macs_ratio, "int8_gain": gain, "available": macs_ratio * gain,
                    "realized": sp["median"] / (macs_ratio * gain)})
    return out


@dataclasses.dataclass(frozen=True)
class Form:
    """One int8 form of the pruned fp32 model: how it is written, and why onnxruntime might run it faster."""

    label: str
    how: str  # "edgerobust" (quantize(), compress's code), "static" / "dynamic" (onnxruntime's own), "bundle"
    why: str
    fmt: str = "qdq"  # "qdq" or "qoperator"
    per_channel: bool = True
    activation: str = "uint8"
    weight: str = "int8"
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    stem: str = "plain"
    route: str = ""  # "late": the GEMM route for the late convolutions (edgerobust.workstation.quantize.route), "all"


TODAY = "today"
FORMS: dict[str, Form] = {  # --forms names; every one from the same pruned fp32 file and calibration rows
    TODAY: Form("today: QDQ U8S8, per-channel symmetric weights, space-to-depth stem", "edgerobust",
                "compress's int8 for laptop-cpu (the cpu preset, its int8_stem), rebuilt here", stem="space-to-depth"),
    "today-plain": Form("today's settings, plain stem", "edgerobust",
                        "the reference of the forms below, none of which rewrites the stem"),
    "gemm-late": Form("today, late convolutions on the GEMM route (zero point -1)", "edgerobust",
                      "the symmetric convolution kernel does not use AMX; the integer GEMM does: convolutions of at "
                      "most 16x16 output pixels and 128+ products per output rerouted, same integers",
                      stem="space-to-depth", route="late"),
    "gemm-all": Form("today, every convolution on the GEMM route (zero point -1)", "edgerobust",
                     "the same for every convolution without groups, the im2col copy of large images included",
                     stem="space-to-depth", route="all"),
    "bundle": Form("the bundle's model.onnx", "bundle", "what compress shipped (its own calibration rows)"),
    "qdq-asym-w": Form("QDQ U8S8, per-channel, asymmetric weights asked for", "static",
                       "weights with zero points: another weight-packing path ('written as' says what onnxruntime "
                       "wrote)", weight_symmetric=False),
    "qdq-tensor": Form("QDQ U8S8, per-tensor symmetric weights", "static",
                       "one scale per weight tensor: no per-channel requantization", per_channel=False),
    "qdq-tensor-asym-w": Form("QDQ U8S8, per-tensor asymmetric weights", "static",
                              "per-tensor with zero points", per_channel=False, weight_symmetric=False),
    "qdq-u8u8": Form("QDQ U8U8, per-channel asymmetric uint8 weights", "static",
                     "uint8 weights: the U8U8 kernels", weight="uint8", weight_symmetric=False),
    "qdq-s8s8": Form("QDQ S8S8, asymmetric int8 activations", "static",
                     "int8 activations: the S8S8 kernels (AMX's and ARM's native type)", activation="int8"),
    "qdq-s8s8-sym": Form("QDQ S8S8, symmetric activations (the tensorrt preset)", "static",
                         "zero points of 0 everywhere", activation="int8", activation_symmetric=True),
    "qop": Form("QOperator (QLinearConv) U8S8, per-channel", "static",
                "the integer ops written out, no fusion at session build", fmt="qoperator"),
    "qop-tensor": Form("QOperator (QLinearConv) U8S8, per-tensor", "static", "QLinearConv, one weight scale",
                       fmt="qoperator", per_channel=False),
    "dynamic": Form("dynamic (ConvInteger/MatMulInteger) U8S8, per-channel", "dynamic",
                    "activations quantized at run time: the im2col + integer GEMM route", weight_symmetric=False),
    "dynamic-u8u8": Form("dynamic (ConvInteger/MatMulInteger) U8U8, per-tensor", "dynamic",
                         "uint8 weights, per-tensor: ConvInteger's oldest kernel", per_channel=False, weight="uint8",
                         weight_symmetric=False),
}
FLAG_DROP = 0.02  # a form whose top-1 agreement with fp32 is this far below today's is flagged


def build_form(form: Form, pruned: Path, bundle: Path, pre: Path, out: Path, calib: np.ndarray) -> Path:
    """Write ``form`` of ``pruned`` (``pre``: its onnxruntime pre-processed copy) at ``out``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from edgerobust.workstation.configs import QuantConfig
    from edgerobust.workstation.quantize.int8 import ArrayReader, quantize

    if form.how == "bundle":
        return bundle / "model.onnx"
    if form.how == "edgerobust":
        quantize(pruned, out, calib, QuantConfig(keep_fp32="none", format="qdq", int8_target="cpu", stem=form.stem))
        if form.route:
            from edgerobust.workstation.quantize.route import gemm_route

            done = gemm_route(onnx.load(str(out)), **({} if form.route == "late" else {"max_pixels": 1 << 40,
                                                                                         "min_k": 0}))
            if done.model is None:
                raise ValueError(done.note)
            onnx.save(done.model, str(out))
        return out
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with contextlib.redirect_stdout(io.StringIO()):
        if form.how == "dynamic":
            quantize_dynamic(str(pre), str(out), per_channel=form.per_channel, weight_type=qtype[form.weight])
        else:
            name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
            quantize_static(str(pre), str(out), ArrayReader(calib, name),
                            quant_format=QuantFormat.QDQ if form.fmt == "qdq" else QuantFormat.QOperator,
                            per_channel=form.per_channel, activation_type=qtype[form.activation],
                            weight_type=qtype[form.weight],
                            extra_options={"WeightSymmetric": form.weight_symmetric,
                                           "ActivationSymmetric": form.activation_symmetric})
    return out


def written_as(path: Path) -> str:
    """How an int8 file asks onnxruntime to run it, read back from the file: the compute ops counted, and
    its weights' and activations' types, zero points (sym: all 0) and scales (per-channel: more than one)."""
    from onnx import numpy_helper

    m = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in m.graph.node)
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    # (weight, scale, zero point) inputs of each integer or dequantized weight, and the activations' zero points
    wq = [(n.input[0], n.input[1], n.input[2] if len(n.input) > 2 else "") for n in m.graph.node
          if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].ndim > 1]
    wq += [(n.input[3], n.input[4], n.input[5]) for n in m.graph.node if n.op_type == "QLinearConv"]
    wq += [(n.input[1], "", n.input[3] if len(n.input) > 3 else "") for n in m.graph.node
           if n.op_type in ("ConvInteger", "MatMulInteger")]
    act = [init[n.input[2]].dtype for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
           and n.input[2] in init] + [np.dtype(np.uint8)] * ops.get("DynamicQuantizeLinear", 0)
    w = []
    for name, scale, zp in wq:
        kind = {np.dtype(np.int8): "s8", np.dtype(np.uint8): "u8"}.get(init[name].dtype, str(init[name].dtype))
        per = "per-channel" if scale in init and init[scale].size > 1 or zp in init and init[zp].size > 1 else \
            "per-tensor"
        w.append(f"{kind} {per} {'asym' if zp in init and np.any(init[zp] != 0) else 'sym'}")
    a = collections.Counter({np.dtype(np.int8): "s8", np.dtype(np.uint8): "u8"}.get(d, str(d)) for d in act)
    keep = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm", "Conv", "Gemm", "MatMul")
    return (", ".join(f"{k} {ops[k]}" for k in keep if ops.get(k))
            + ("; weights " + ", ".join(f"{n} {k}" for k, n in collections.Counter(w).most_common()) if w else "")
            + ("; activations " + "/".join(sorted(a)) if a else ""))


def top1(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    """Logits of ``x`` one row at a time (batch 1, as deployed), on the CPU provider."""
    from common import bare_session

    sess = bare_session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def build_forms(names: list[str], bundle: Path, work: Path, log) -> tuple[dict[str, Path], dict[str, str]]:
    """Each named form's file, or why it could not be written (onnxruntime's message)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgerobust.edge.files.bundle import EvalSet

    pruned, pre = bundle / "model_fp32.onnx", work / "pruned-pre.onnx"
    calib = EvalSet.load(bundle / "eval.npz").x[:CALIB].astype(np.float32)
    cwd = os.getcwd()
    os.chdir(work)  # onnxruntime's shape inference writes scratch files into the current folder
    try:
        quant_pre_process(str(pruned.resolve()), str(pre))
    finally:
        os.chdir(cwd)
    files, failed = {}, {}
    logging.disable(logging.WARNING)  # onnxruntime's quantizer logs notes through the root logger
    try:
        for name in names:
            t0 = time.perf_counter()
            try:
                files[name] = build_form(FORMS[name], pruned, bundle, pre, work / f"form-{name}.onnx", calib)
            except Exception as e:  # onnxruntime's quantizer raises many kinds; the row says which, no figure
                failed[name] = f"not written: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log(f"[forms] {name}: {failed.get(name, 'written')} ({time.perf_counter() - t0:.0f} s)")
    finally:
        logging.disable(logging.NOTSET)
    return files, failed


def measure_forms(bundle: Path, names: list[str], rounds: int, log=print, threads: int | None = None) -> dict:
    """Build the named forms, time them interleaved with the pruned fp32 model (batch 1, the harness
    profile), and check each one's top-1 agreement with fp32 on the eval rows after the calibration ones."""
    from edgerobust.edge.files.bundle import EvalSet
    from edgerobust.edge.runtime.sessions import open_session, plan_providers

    x = EvalSet.load(bundle / "eval.npz").x[CALIB:].astype(np.float32)
    if not len(x):
        raise SystemExit(f"{bundle}/eval.npz has {CALIB} rows or fewer: the forms calibrate on the first {CALIB} and "
                         "check agreement on the rest; compress with more evaluation samples")
    work = Path(tempfile.mkdtemp(prefix="er-forms-"))
    files, status = build_forms(names, bundle, work, log)
    profile = bench_profile()
    profile = dataclasses.replace(profile, measure=dataclasses.replace(
        profile.measure, rounds=rounds, max_rounds=rounds, switch_warmup_runs=1))
    if threads:
        profile = dataclasses.replace(profile, session=dataclasses.replace(profile.session, intra_op_threads=threads))
    threads, plan = profile.session.intra_op_threads, plan_providers(profile)
    ref = top1(bundle / "model_fp32.onnx", x, threads)
    checks = {}
    for name, path in list(files.items()):
        try:
            logits = top1(path, x, threads)
        except Exception as e:  # onnxruntime cannot run this form here (a kernel it lacks): said, never timed
            status[name] = f"does not run: {str(e).splitlines()[0][:200]}"
            del files[name]
            continue
        checks[name] = {"agreement": float(np.mean(logits.argmax(1) == ref.argmax(1))),
                        "rel_error": float(np.sqrt(np.mean((logits - ref) ** 2)) / np.sqrt(np.mean(ref ** 2))),
                        "written_as": written_as(path)}
    sessions = {"pruned fp32": open_session(bundle / "model_fp32.onnx", "pruned fp32", profile, plan=plan,
                                            isolation="park")}
    sessions.update({n: open_session(p, n, profile, plan=plan, isolation="park") for n, p in files.items()})
    log(f"[forms] timing {len(sessions)} rows, {rounds} interleaved rounds")
    ms = batch1_rounds(sessions, profile.measure)
    today = TODAY if TODAY in ms else None
    rows = []
    for name in ["pruned fp32", *names]:
        row = {"key": name, "form": FORMS[name].label if name in FORMS else name,
               "why": FORMS[name].why if name in FORMS else "the reference: the pruned model in fp32",
               "status": status.get(name)}
        if name in ms:
            row.update({"p50_ms": spread(np.median(ms[name], axis=1)),
                        "x_fp32": round_ratios(ms["pruned fp32"], ms[name]),
                        "x_today": round_ratios(ms[today], ms[name]) if today else None,
                        "x_today_plain": round_ratios(ms["today-plain"], ms[name]) if "today-plain" in ms else None,
                        **checks.get(name, {"agreement": 1.0, "rel_error": 0.0, "written_as": written_as(
                            bundle / "model_fp32.onnx")})})
        rows.append(row)
    flag(rows)
    classes = len(set(ref.argmax(1).tolist()))
    return {"rows": rows, "eval_rows": len(x), "calib_rows": CALIB, "fp32_classes": classes, "rounds": rounds,
            "threads": threads}


def flag(rows: list[dict], drop: float = FLAG_DROP) -> list[dict]:
    """Set each measured row's ``flag``: its top-1 agreement with fp32 is more than ``drop`` below today's form's."""
    base = next((r["agreement"] for r in rows if r["key"] == TODAY and "agreement" in r), None)
    for r in rows:
        r["flag"] = ("agreement below today's" if base is not None and "agreement" in r
                     and r["agreement"] < base - drop else "")
    return rows


def render_forms(res: dict) -> str:
    def f(s, d=2):
        return "" if not s else f"{s['median']:.{d}f} [{s['min']:.{d}f}-{s['max']:.{d}f}]"

    lines = ["| form | written as | p50 ms | x pruned fp32 | x today | x today's settings, plain stem "
             "| top-1 agreement with fp32 | logit rel. error | flag |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["status"]:
            lines.append(f"| {r['form']} | {r['status']} | | | | | | | |")
            continue
        lines.append(f"| {r['form']} | {r['written_as']} | {f(r['p50_ms'], 3)} | {f(r['x_fp32'])} | "
                     f"{f(r['x_today'])} | {f(r['x_today_plain'])} | {r['agreement']:.3f} | "
                     f"{r['rel_error']:.4f} | {r['flag']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-stem", action="store_true", help="skip the stem rows (fp32 stem, space-to-depth stem)")
    ap.add_argument("--extras", default="", help="label=BUNDLE,... more pruned models (e.g. other --round-to)")
    ap.add_argument("--forms", default="", help="instead of the ceiling rows, the int8 forms of the pruned model: "
                    f"'all' or a comma list of {', '.join(FORMS)}")
    ap.add_argument("--out", type=Path, default=None, help="--forms: also write the results as JSON here")
    ap.add_argument("--threads", type=int, default=None,
                    help="--forms: intra-op threads (default: the harness profile's); 1 is laptop-cpu-1thread's")
    args = ap.parse_args()
    from common import isa_line, other_load_now
    from edgerobust.edge.runtime.host import OtherLoad, host_info

    if args.forms:
        names = list(FORMS) if args.forms == "all" else [n for n in args.forms.split(",") if n]
        if bad := [n for n in names if n not in FORMS]:
            ap.error(f"unknown form(s) {', '.join(bad)}; known: {', '.join(FORMS)}")
        h, load0 = host_info(), other_load_now()
        meter = OtherLoad().start()
        res = measure_forms(args.bundle, names, args.rounds, threads=args.threads)
        during = meter.stop()
        host = (f"host: {h.cpu}, {h.cores} cores, {isa_line()}; onnxruntime {h.onnxruntime}; other processes' CPU "
                f"share before {load0:.2f}, during {'n/a' if during is None else f'{during:.2f}'}; load average "
                f"{os.getloadavg()[0]:.2f} after")
        print(f"\n{host}\nbundle {args.bundle}: batch 1, {res['threads']} threads, {res['rounds']} interleaved "
              f"rounds, p50 median [min-max], ratios per round; agreement on {res['eval_rows']} eval rows "
              f"(fp32 answers span {res['fp32_classes']} classes), {res['calib_rows']} more calibrate every form\n")
        print(render_forms(res))
        if args.out:
            args.out.write_text(json.dumps({"_type": "edgerobust.bench.int8_forms", "_version": 1,
                                            "_data": {"host": host, "bundle": str(args.bundle), **res}}, indent=1))
        return

    extras = dict(e.split("=", 1) for e in args.extras.split(",") if e)
    work = Path(tempfile.mkdtemp(prefix="er-ceiling-"))
    rows = build_rows(args.bundle, work, not args.no_stem, {k: Path(v) for k, v in extras.items()})
    h = host_info()
    load0 = other_load_now()
    meter = OtherLoad().start()
    table = measure(rows, args.rounds)
    print(f"\nhost: {h.cpu}, {h.cores} cores, {isa_line()}; onnxruntime {h.onnxruntime}; "
          f"other processes' CPU share before {load0:.2f}, during {meter.stop():.2f}\n")
    print("| row | p50 ms | speedup over base fp32 | MACs ratio | base int8 gain (same format, level) | available | realized |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        p, s = r["p50_ms"], r["speedup"]
        print(f"| {r['row']} | {p['median']:.2f} [{p['min']:.2f}-{p['max']:.2f}] | {s['median']:.2f} "
              f"[{s['min']:.2f}-{s['max']:.2f}] | {r['macs_ratio']:.2f} | {r['int8_gain']:.2f} | "
              f"{r['available']:.2f} | {r['realized']:.2f} |")


if __name__ == "__main__":
    main()
