"""edgerobust's benchmark harness: the speed compression buys, and what the tool's own measuring costs.

One command, not part of the test suite; prints markdown tables and writes
benchmarks/results/<timestamp>.json. Sections (--only, comma-separated):

  demo        the end-to-end demo (`edgerobust demo`): wall time, peak memory (its bundle feeds the rest)
  speed       resnet18, mobilenet_v2 (224x224, random weights) and digits-resnet: base/pruned x fp32/int8
              at sparsity 0.3/0.5/0.7 via compress(); interleaved batch-1 latency, 2 threads
  ortprof     onnxruntime's per-op profile of resnet18's fp32/int8 rows (where the time goes)
  fidelity    `edgerobust profile` p50 against a bare onnxruntime timing loop
  throughput  audit's evaluation against bare batched onnxruntime inference on the same arrays
  attack      craft_set (`edgerobust attack`) against a bare torchattacks loop, same parameters
  scale       audit time and peak memory with 1k/10k/100k adversarial samples

    python benchmarks/run.py [--quick] [--only speed,fidelity] [--out benchmarks/results] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_profile, fmt  # noqa: E402

SECTIONS = ("demo", "speed", "ortprof", "fidelity", "throughput", "attack", "scale")


def host_line() -> tuple[str, dict]:
    import torch

    from edgerobust.edge.runtime.host import host_info

    h = host_info()
    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return (f"host: {h.cpu}, {h.cores} cores, ISA {'/'.join(isa) or 'unknown'} (/proc/cpuinfo); "
            f"onnxruntime {h.onnxruntime}, torch {torch.__version__}, python {h.python}"), {**asdict(h), "isa": isa}


def table(title: str, head: list[str], rows: list[list]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render(res: dict) -> str:
    out = [res["host_line"] + f"; load average at start {res['loadavg_start'][0]:.2f}, "
           f"at end {res.get('loadavg_end', [float('nan')])[0]:.2f} (a shared machine)"]
    if "demo" in res:
        d = res["demo"]
        rows = [[k, f"{v['wall_s']:.1f}", f"{v['peak_rss_mb']:.0f}", "met" if v["wall_s"] < 90 else "MISSED"]
                for k, v in d.get("runs", {}).items()]
        out.append(table("6. End-to-end demo (`edgerobust demo`; cold = trains the zoo model, warm = reuses it)",
                         ["run", "wall s", "peak RSS MB (largest process)", "< 90 s"], rows))
    if "speed" in res:
        s = res["speed"]
        out.append(f"\nlatency: batch 1, {s['settings']['rounds']} interleaved rounds x "
                   f"{s['settings']['runs_per_round']} runs, 2 intra-op threads; figures are median [min-max] over rounds")
        for m, block in s["models"].items():
            rows = []
            for r in block["rows"]:
                rows.append([r["row"], fmt(r["p50_ms"], 3), fmt(r["speedup"]), f"{r['macs'] / 1e9:.3f}",
                             f"{r['macs_ratio']:.2f}", f"{r['available']:.2f}", f"{r['realized']:.2f}"])
            out.append(table(f"1. Speed bought by compression: {m}",
                             ["row", "p50 ms", "speedup vs base fp32", "GMACs", "MACs ratio",
                              "available (MACs x base int8 gain)", "realized"], rows))
    if "ortprof" in res:
        for p in res["ortprof"]:
            rows = [[o["op"], f"{o['ms']:.3f}", f"{o['share']:.1%}"] for o in p["by_op"][:8]]
            out.append(table(f"onnxruntime profile: {p['label']} (model_run {p['model_run_ms']:.2f} ms, "
                             f"kernels {p['kernel_ms']:.2f} ms; optimized graph {p['optimized_graph_ops']})",
                             ["op type", "ms per run", "share of kernel time"], rows))
    if "fidelity" in res:
        rows = [[r["model"], fmt(r["profile_p50_ms"], 3), fmt(r["bare_p50_ms"], 3), fmt(r["ratio"], 3),
                 "met" if abs(r["ratio"]["median"] - 1) <= 0.05 else "MISSED"] for r in res["fidelity"]]
        out.append(table("2. Measurement fidelity: `edgerobust profile` p50 vs a bare onnxruntime loop",
                         ["model", "profile p50 ms", "bare p50 ms", "ratio", "within 5%"], rows))
    if "throughput" in res:
        rows = [[r["case"], r["samples"], fmt(r["audit_samples_per_s"], 0), fmt(r["bare_samples_per_s"], 0),
                 fmt(r["throughput_ratio"], 3), fmt(r["throughput_ratio_with_progress"], 3),
                 "met" if r["throughput_ratio"]["median"] >= 0.9 else "MISSED"] for r in res["throughput"]]
        out.append(table("3. Audit evaluation throughput vs bare batched onnxruntime (base + deployed, batch 64)",
                         ["case", "samples", "audit samples/s", "bare samples/s", "ratio", "ratio (progress bars on)",
                          ">= 0.9"], rows))
    if "attack" in res:
        a = res["attack"]
        out.append(table("4. Attack crafting cost: craft_set vs bare torchattacks loop",
                         ["attack", "n", "edgerobust s", "bare s", "ratio", "<= 1.1x"],
                         [[a["attack"], a["n"], fmt(a["tool_s"]), fmt(a["bare_s"]), fmt(a["ratio"], 3),
                           "met" if a["ratio"]["median"] <= 1.1 else "MISSED"]]))
    if "scale" in res:
        rows = [[r["n"], f"{r['file_mb']:.1f}", f"{r['audit_s']:.2f}", f"{r['peak_rss_mb']:.0f}",
                 f"{r['rss_after_import_mb']:.0f}"] for r in res["scale"]["rows"]]
        sc = res["scale"]
        out.append(table("5. Audit scale (fresh process each; median of repeats)",
                         ["adv samples", "set file MB", "audit s", "peak RSS MB", "RSS after imports MB"], rows)
                   + f"\n\nmemory 10k -> 100k: +{sc['mem_growth_10k_100k']:.0%} (target < 20%: "
                     f"{'met' if sc['mem_growth_10k_100k'] < 0.2 else 'MISSED'}); seconds per 1k samples "
                     f"1k->10k {sc['s_per_1k_small']:.3f}, 10k->100k {sc['s_per_1k_large']:.3f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sparsity 0.5 only, resnet18 + zoo, fewer rounds")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections: {','.join(SECTIONS)}")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    work = Path(args.work or tempfile.mkdtemp(prefix="er-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    import scale
    import speed
    import overhead

    line, host = host_line()
    print(line, flush=True)
    res: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host_line": line, "host": host,
                 "quick": args.quick, "sections": only, "work": str(work),
                 "loadavg_start": os.getloadavg()}
    t_all = time.perf_counter()
    profile = bench_profile(args.quick)
    repeats = 3 if args.quick else 5

    # The demo's bundle and zoo checkpoint feed the other sections.
    need_demo = any(s in only for s in ("demo", "speed", "throughput", "attack", "scale", "fidelity"))
    if need_demo:
        res["demo"] = scale.demo(work)
        print(f"[demo] {res['demo']['wall_s']:.1f} s, rc {res['demo']['rc']}", flush=True)
        if res["demo"]["rc"]:
            sys.exit(f"demo failed: {res['demo']['stderr_tail']}")
        if "demo" not in only:
            res.pop("demo")
    bundle, ckpt = work / "demo", work / "demo-digits-resnet.pt"

    if "speed" in only or "ortprof" in only or "fidelity" in only or "throughput" in only:
        res["speed"] = speed.run_speed(work / "speed", args.quick, ckpt)
    r18 = {r["row"]: Path(r["path"]) for r in res.get("speed", {}).get("models", {}).get("resnet18", {}).get("rows", [])}

    if "ortprof" in only and r18:
        res["ortprof"] = []
        for label in ("base fp32", "base int8", "pruned 0.5 fp32", "pruned 0.5 int8", "pruned 0.5 int8 keep_fp32=none"):
            if label in r18:
                p = speed.ort_profile(r18[label], work=work / "speed")
                res["ortprof"].append({"label": f"resnet18 {label}", **p})
        print("[ortprof] done", flush=True)

    if "fidelity" in only:
        models = {"digits-resnet deployed int8": bundle / "model.onnx"}
        if r18:
            models = {"resnet18 base fp32": r18["base fp32"], "resnet18 pruned 0.5 int8": r18["pruned 0.5 int8"],
                      **models}
        res["fidelity"] = overhead.fidelity(models, profile, repeats)
        print("[fidelity] done", flush=True)

    if "throughput" in only:
        import numpy as np

        from edgerobust.edge.files.bundle import EvalSet

        cases = {"digits-resnet demo bundle (eval set x4)": (bundle / "base.onnx", bundle / "model.onnx",
                                                           np.tile(EvalSet.load(bundle / "eval.npz").x, (4, 1, 1, 1)))}
        if r18:
            ev = EvalSet.load(r18["base fp32"].parent / "eval.npz").x
            cases["resnet18 base fp32 + pruned 0.5 int8 (224x224)"] = (
                r18["base fp32"], r18["pruned 0.5 int8"], np.tile(ev, (8 if not args.quick else 4, 1, 1, 1)))
        res["throughput"] = overhead.audit_throughput(cases, profile, repeats)
        print("[throughput] done", flush=True)

    if "attack" in only:
        res["attack"] = overhead.attack_cost(ckpt, n=500, repeats=repeats)
        print("[attack] done", flush=True)

    if "scale" in only:
        rows = scale.audit_scale(bundle, (1000, 10000, 100000), work / "scale", repeats=1 if args.quick else 2)
        by = {r["n"]: r for r in rows}
        res["scale"] = {"rows": rows,
                        "mem_growth_10k_100k": by[100000]["peak_rss_mb"] / by[10000]["peak_rss_mb"] - 1,
                        "s_per_1k_small": (by[10000]["audit_s"] - by[1000]["audit_s"]) / 9,
                        "s_per_1k_large": (by[100000]["audit_s"] - by[10000]["audit_s"]) / 90}
        print("[scale] done", flush=True)

    res["seconds"] = time.perf_counter() - t_all
    res["loadavg_end"] = os.getloadavg()
    text = render(res)
    print(text)
    print(f"\ntotal {res['seconds']:.0f} s; work folder {work}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    (out / "latest.md").write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
