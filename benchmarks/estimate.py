"""Are the latency estimates right? Calibrate this host, predict bundles the fit never saw, then measure them.

For each profile (laptop-cpu and laptop-cpu-1thread count as two devices): `calibrate` this host
(edgerobust.edge.estimate), predict every model of the bundles below from that calibration, then
measure each model alone on the same profile (edgerobust's own measurement: the profile's probe
processes, p50 at batch 1; twice, forward then backward, the faster kept: a neighbour only slows a model) and print predicted vs measured, the error, whether the measured p50 fell in
the band, and the share within ±10% / ±20%; also the predicted and measured speedup over the base.

Bundles: torchvision classifiers with random weights (nothing can be downloaded), compressed with
laptop-cpu's hints (channels rounded to 16, the space-to-depth int8 stem) at sparsity 0.3, 0.5, 0.7,
each with its fp32 and int8 variant, plus the unpruned fp32 base: 7 models per architecture. The input is
128 px by default (--size): compressing at 224 takes several times longer on 2 cores, and the grid
covers both. Bundles are cached under --work (default ~/.cache/edgerobust-bench/estimate) and reused.
None of these models is used in the fit: the calibration times only its own grid of single kernels.

    python benchmarks/estimate.py [--quick] [--models resnet18,mobilenet_v2] [--sparsities 0.3,0.5,0.7]
                                  [--profiles laptop-cpu,laptop-cpu-1thread] [--size 128] [--out results.json]

--quick: resnet18 only at sparsity 0.5 (base, fp32, int8), a quick calibration (a 0.3 grid, one pass):
a few minutes. Timings taken while other processes use the cores are slow and noisy: the table gives
the other processes' share of the cores during each calibration and measurement, and `uptime`'s load.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import wait_quiet  # noqa: E402

WORK = Path.home() / ".cache" / "edgerobust-bench" / "estimate"


def build(model: str, sparsity: float, size: int, work: Path) -> Path:
    """One bundle (cached): random-weight torchvision ``model`` pruned at ``sparsity``, int8 + fp32 variants."""
    out = work / f"{model}-{size}" / f"s{sparsity}"
    if (out / "model.onnx").exists() and (out / "model_fp32.onnx").exists():
        return out
    import torch
    import torchvision

    from edgerobust import CompressConfig, PrepareConfig, PruneConfig, QuantConfig, TrainConfig, compress
    from edgerobust.workstation.pipeline.target import resolve_target

    root = out.parent
    root.mkdir(parents=True, exist_ok=True)
    pt, data = root / f"{model}.pt", root / "data.npz"
    if not pt.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(model, weights=None, num_classes=10).state_dict(), pt)
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.integers(0, 256, (48, size, size, 3), dtype=np.uint8), y=rng.integers(0, 10, 48))
    plan = resolve_target("laptop-cpu")  # the profile's channel rounding and int8 stem, as `compress --profile`
    prep = PrepareConfig(pt, arch=f"torchvision:{model}", data=f"npz:{data}", eval_samples=16, calib_samples=16,
                         normalize="imagenet", allow_weak_base=True)
    compress(CompressConfig(prep, prune=PruneConfig(sparsity=sparsity, round_to=plan.round_to),
                            finetune=TrainConfig(epochs=0), int8=True, quant=QuantConfig(stem=plan.stem),
                            max_int8_drop=None, min_int8_agreement=None, max_prune_drop=None, out=out, overwrite=True))
    return out


def models_of(archs: list[str], sparsities: list[float], size: int, work: Path) -> dict[str, Path]:
    """name -> ONNX file: each architecture's base, and its fp32 and int8 model per sparsity."""
    out = {}
    for arch in archs:
        for s in sparsities:
            b = build(arch, s, size, work)
            out.setdefault(f"{arch} base", b / "base.onnx")
            out[f"{arch} {s} fp32"] = b / "model_fp32.onnx"
            out[f"{arch} {s} int8"] = b / "model.onnx"
    return out


def measured_p50(path: Path, profile: str) -> tuple[float, float | None]:
    """The model alone on the profile at batch 1, as `edgerobust profile` measures it: p50 ms, other load."""
    from edgerobust.edge.runtime.measure import measure_models
    from edgerobust.edge.runtime.profiles import load_profile

    p = load_profile(profile).with_batch_sizes((1,))
    r = measure_models({"model": path}, p, memory=False, show_progress=False)
    return r.models[0].latency[0].p50_ms, r.other_load


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def measure_all(models: dict[str, Path], profile: str, repeats: int, wait_s: float) -> dict[str, list]:
    """Every model measured ``repeats`` times, in turn forward and backward: [(p50 ms, other load), ...] each."""
    got: dict[str, list] = {name: [] for name in models}
    for r in range(repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            wait_quiet(max_wait_s=wait_s, log=lambda m: None)
            got[name].append(measured_p50(models[name], profile))
    return got


def run_profile(profile: str, models: dict[str, Path], work: Path, quick: bool, wait_s: float, repeats: int) -> dict:
    from edgerobust.edge.estimate.calibrate import CalibrateConfig, calibrate
    from edgerobust.edge.estimate.predict import EstimateConfig, estimate

    wait_quiet(max_wait_s=wait_s)
    t0, load0 = time.perf_counter(), uptime()
    cal = calibrate(CalibrateConfig(profile=profile, out=work / f"calibration-{profile}.json", overwrite=True,
                                    scale=0.3 if quick else 1.0, passes=1 if quick else 2, show_progress=False))
    print(f"  calibrated {profile} in {time.perf_counter() - t0:.0f} s (other load {cal.other_load}; {load0})", flush=True)
    est = estimate(EstimateConfig(cal, models))
    rows = []
    for name, runs in measure_all(models, profile, repeats, wait_s).items():
        p50, load = min(runs)  # the fastest measurement: a neighbour only ever slows a model down
        m = est.model(name)
        rows.append({"model": name, "predicted_ms": m.p50_ms, "low_ms": m.low_ms, "high_ms": m.high_ms,
                     "measured_ms": p50, "measured_all_ms": [r[0] for r in runs], "error": m.p50_ms / p50 - 1,
                     "in_band": m.low_ms <= p50 <= m.high_ms, "other_load": load, "by_kind": m.by_kind,
                     "weights_mb": m.weights_mb, "cold": m.cold})
        print(f"  {name}: predicted {m.p50_ms:.3f} ms, measured {p50:.3f} ms ({100 * (m.p50_ms / p50 - 1):+.0f}%)",
              flush=True)
    fits = {k: {n: v for n, v in f["holdout"].items() if n != "errors"} for k, f in cal.fits.items()}
    return {"profile": profile, "calibration": {"seconds": cal.seconds, "other_load": cal.other_load, "uptime": load0,
                                                "run_us": cal.run_us, "node_us": cal.node_us, "holdout": fits},
            "rows": rows, "uptime_after": uptime()}


def speedups(rows: list[dict]) -> list[tuple[str, float, float]]:
    """(model, predicted speedup, measured speedup) over its architecture's base."""
    base = {r["model"].split()[0]: r for r in rows if r["model"].endswith(" base")}
    out = []
    for r in rows:
        b = base.get(r["model"].split()[0])
        if b is not None and r is not b:
            out.append((r["model"], b["predicted_ms"] / r["predicted_ms"], b["measured_ms"] / r["measured_ms"]))
    return out


def render(results: dict) -> str:
    h = results["host"]
    lines = [f"Host: {h['cpu']}, {h['cores']} cores, {h['machine']}, ISA {', '.join(h['isa'])}, onnxruntime "
             f"{h['onnxruntime']}; {results['date']}; input {results['size']} px", ""]
    for res in results["profiles"]:
        rows, c = res["rows"], res["calibration"]
        err = np.array([r["error"] for r in rows])
        lines += [f"### {res['profile']}", "",
                  f"Calibration: {c['seconds']:.0f} s, other processes {100 * (c['other_load'] or 0):.0f}% of the "
                  f"cores; {c['uptime']}", "",
                  "| model | predicted p50 ms [band] | measured p50 ms (each measurement) | error | in band | other load |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            each = ", ".join(f"{v:.3f}" for v in r["measured_all_ms"])
            lines.append(f"| {r['model']} | {r['predicted_ms']:.3f} [{r['low_ms']:.3f}–{r['high_ms']:.3f}] | "
                         f"{r['measured_ms']:.3f} ({each}) | {100 * r['error']:+.0f}% | "
                         f"{'yes' if r['in_band'] else 'no'} | {100 * (r['other_load'] or 0):.0f}% |")
        sp = speedups(rows)
        sp_err = np.array([p / m - 1 for _, p, m in sp]) if sp else np.zeros(0)
        lines += ["", f"Within ±10%: {np.mean(np.abs(err) <= 0.1):.0%}, within ±20%: {np.mean(np.abs(err) <= 0.2):.0%} "
                      f"of {len(err)} models; median |error| {np.median(np.abs(err)):.0%}; measured p50 in the band: "
                      f"{np.mean([r['in_band'] for r in rows]):.0%}."]
        if sp:
            lines += [f"Speedup over the base, predicted vs measured: within ±20% for {np.mean(np.abs(sp_err) <= 0.2):.0%}"
                      f" of {len(sp)} (" + ", ".join(f"{n} {p:.2f}x/{m:.2f}x" for n, p, m in sp) + ")."]
        lines += [f"Load after: {res['uptime_after']}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=None, help="torchvision architectures (default resnet18,mobilenet_v2)")
    ap.add_argument("--sparsities", default=None, help="default 0.3,0.5,0.7")
    ap.add_argument("--profiles", default="laptop-cpu,laptop-cpu-1thread")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--work", default=str(WORK))
    ap.add_argument("--wait-quiet", type=float, default=30.0, help="seconds to wait for other processes to calm "
                                                                  "down before each calibration and measurement")
    ap.add_argument("--repeats", type=int, default=2, help="measurements of each model (forward, then backward "
                                                          "order); the fastest is the measured p50")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args()
    archs = (a.models or ("resnet18" if a.quick else "resnet18,mobilenet_v2")).split(",")
    sparsities = [float(s) for s in (a.sparsities or ("0.5" if a.quick else "0.3,0.5,0.7")).split(",")]
    work = Path(os.path.expanduser(a.work))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models = models_of(archs, sparsities, a.size, work)
    print(f"{len(models)} models ready in {time.perf_counter() - t0:.0f} s", flush=True)
    from edgerobust.edge.runtime.host import host_info

    results = {"host": dataclasses.asdict(host_info()), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "size": a.size,
               "profiles": [run_profile(p, models, work, a.quick, a.wait_quiet, 1 if a.quick else a.repeats)
                            for p in a.profiles.split(",")]}
    print(render(results))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
