"""The CPU int8 ceiling: how much of the available speed a pruned int8 model realizes, and what moves it.

available = MACs ratio x the base model's own int8 gain (same int8 format, same host). For one
compressed bundle this quantizes the base and the pruned fp32 model in each int8 format
(QDQ, QOperator), optionally with the stem (first conv) kept in fp32 or rewritten space-to-depth
(``--int8-stem space-to-depth``, edgerobust.workstation.quantize.stem), measures every row in
one interleaved run (parked sessions, batch 1, the harness profile's threads) at graph
optimization "all" and at "extended" (without onnxruntime's layout transformations), and
prints each row's speedup over base fp32 and its realized share of the available.

    python benchmarks/ceiling.py BUNDLE [--rounds 20] [--extras round_to=BUNDLE16,...]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import batch1_rounds, bench_profile, round_ratios, spread  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-stem", action="store_true", help="skip the stem rows (fp32 stem, space-to-depth stem)")
    ap.add_argument("--extras", default="", help="label=BUNDLE,... more pruned models (e.g. other --round-to)")
    args = ap.parse_args()
    from common import other_load_now
    from edgerobust.edge.runtime.host import OtherLoad, host_info

    extras = dict(e.split("=", 1) for e in args.extras.split(",") if e)
    work = Path(tempfile.mkdtemp(prefix="er-ceiling-"))
    rows = build_rows(args.bundle, work, not args.no_stem, {k: Path(v) for k, v in extras.items()})
    h = host_info()
    load0 = other_load_now()
    meter = OtherLoad().start()
    table = measure(rows, args.rounds)
    print(f"\nhost: {h.cpu}, {h.cores} cores, ISA {'/'.join(h.isa)}; onnxruntime {h.onnxruntime}; "
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
