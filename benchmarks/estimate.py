"""Are the latency estimates right? Calibrate this host, predict bundles the fit never saw, then measure them.

For each profile (laptop-cpu and laptop-cpu-1thread count as two devices): `calibrate` this host
(edgerobust.edge.estimate), predict every model of the bundles below from that calibration at each batch
size, then measure each model alone on the same profile (edgerobust's own measurement: the profile's
probe processes, p50; `--repeats` times, in turn forward and backward, the fastest kept: a neighbour only
slows a model) and print predicted vs measured, the error, whether the measured p50 fell in the band and
how wide the band is, how far apart the repeats were (spread), the share within ±10% / ±20% / ±25%, the
predicted and measured speedup over the base, and the shares again over the models whose repeats were
within 5% of each other: on a host where they are not, a ±10% aim cannot be checked.

Two lists of architectures, never mixed:

* DEVELOPMENT: the families the method was developed on, its errors looked at while it was built;
* CHECK: eight other torchvision families, one per structure (residual bottleneck, depthwise, dense, shuffle,
  squeeze-excite, grouped, inverted residual with hard-swish, ConvNeXt), kept out of developing the method.
  ShuffleNet V2 and DenseNet are in both lists as different members (x1_0 / x0_5, 121 / 169). Where a
  check result did lead to a change (convnext_tiny's graph-walk bug in calibration version 3; regnet_x_400mf
  and densenet169, whose shortfall chose version 4's new kernels), docs/estimate.md says so next to the
  figures: those families are no longer unseen.

Bundles: torchvision classifiers with random weights (nothing can be downloaded), compressed with
laptop-cpu's hints (channels rounded to 16, the space-to-depth int8 stem) at each sparsity, each with its
fp32 and int8 variant, plus the unpruned fp32 base. Bundles are cached under --work (default
~/.cache/edgerobust-bench/estimate) and reused. None of these models is used in the fit: the calibration
times only its own grid of single kernels.

    python benchmarks/estimate.py [--set check|development|both] [--models a,b] [--sparsities 0.3,0.5,0.7]
                                  [--sizes 128] [--batch 1,8] [--profiles laptop-cpu,laptop-cpu-1thread]
                                  [--quick] [--out results.json] [--measured results.json]
                                  [--calibration calibration.json]

--measured: predict again against an earlier run's measurements (its --out, on this host) instead of measuring
for 40 minutes: after a change to the method, only the calibration (5 minutes) is run again; the table names the
earlier run. --calibration: predict from a calibration file instead of calibrating (one profile).

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

STEADY = 0.05  # a model whose measurements agree within this can check a ±10% estimate; noisier ones cannot
WORK = Path.home() / ".cache" / "edgerobust-bench" / "estimate"
DEVELOPMENT = ("resnet18", "mobilenet_v2", "resnet34", "shufflenet_v2_x1_0", "densenet121", "convnext_small")
CHECK = ("resnet50", "mnasnet1_0", "densenet169", "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_x_400mf",
         "mobilenet_v3_small", "convnext_tiny")


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


def models_of(archs: list[str], sparsities: list[float], sizes: list[int], work: Path) -> dict[str, Path]:
    """name -> ONNX file: each architecture's base, and its fp32 and int8 model per sparsity (and input size)."""
    out = {}
    for size in sizes:
        at = f"@{size}" if len(sizes) > 1 else ""
        for arch in archs:
            for s in sparsities:
                b = build(arch, s, size, work)
                out.setdefault(f"{arch}{at} base", b / "base.onnx")
                out[f"{arch}{at} {s} fp32"] = b / "model_fp32.onnx"
                out[f"{arch}{at} {s} int8"] = b / "model.onnx"
    return out


def measured_p50(path: Path, profile: str, batch: int = 1) -> tuple[float, float | None]:
    """The model alone on the profile at ``batch``, as `edgerobust profile` measures it: p50 ms, other load."""
    from edgerobust.edge.runtime.measure import measure_models
    from edgerobust.edge.runtime.profiles import load_profile

    p = load_profile(profile).with_batch_sizes((batch,))
    r = measure_models({"model": path}, p, memory=False, show_progress=False)
    return r.models[0].latency[0].p50_ms, r.other_load


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def measure_all(models: dict[str, Path], profile: str, batches: list[int], repeats: int, wait_s: float) -> dict:
    """Every model at every batch size measured ``repeats`` times, in turn forward and backward:
    {(name, batch): [(p50 ms, other load), ...]}."""
    jobs = [(name, b) for b in batches for name in models]
    got: dict[tuple, list] = {j: [] for j in jobs}
    t0, done, total = time.perf_counter(), 0, len(jobs) * repeats
    for r in range(repeats):
        for name, b in (jobs if r % 2 == 0 else jobs[::-1]):
            wait_quiet(max_wait_s=wait_s, log=lambda m: None)
            got[(name, b)].append(measured_p50(models[name], profile, b))
            done += 1
            if done % 20 == 0 or done == total:  # a check list takes tens of minutes: say how far it is
                print(f"  measured {done} of {total} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return got


def earlier_runs(results: dict, profile: str) -> dict:
    """{(model, batch): [(p50 ms, other load), ...]} of one profile in an earlier run's JSON (``--out``)."""
    res = next((r for r in results.get("profiles", ()) if r["profile"] == profile), None)
    if res is None:
        return {}
    return {(r["model"], r["batch"]): [(v, r["other_load"]) for v in r["measured_all_ms"]] for r in res["rows"]}


def run_profile(profile: str, models: dict[str, Path], sets: dict[str, str], batches: list[int], work: Path,
                quick: bool, wait_s: float, repeats: int, earlier: dict | None = None,
                calibration: Path | None = None) -> dict:
    """Calibrate (or load ``calibration``), predict every model, measure it (or take its earlier measurements
    from ``earlier``: :func:`earlier_runs`), and compare."""
    from edgerobust.edge.estimate.calibrate import CalibrateConfig, calibrate, load_calibration
    from edgerobust.edge.estimate.predict import EstimateConfig, estimate

    t0, load0 = time.perf_counter(), uptime()
    if calibration is not None:
        cal = load_calibration(calibration)
        print(f"  calibration {calibration} ({cal.created})", flush=True)
    else:
        wait_quiet(max_wait_s=wait_s)
        cal = calibrate(CalibrateConfig(profile=profile, out=work / f"calibration-{profile}.json", overwrite=True,
                                        scale=0.3 if quick else 1.0, passes=1 if quick else 2, show_progress=False))
        print(f"  calibrated {profile} in {time.perf_counter() - t0:.0f} s (other load {cal.other_load}; {load0})",
              flush=True)
    est = {b: estimate(EstimateConfig(cal, models, batch=b)) for b in batches}
    earlier = earlier or {}
    todo = {name: path for name, path in models.items() if any((name, b) not in earlier for b in batches)}
    runs_of = {**{k: v for k, v in earlier.items() if k[0] in models and k[1] in batches},
               **measure_all(todo, profile, batches, repeats, wait_s)}
    rows = []
    for (name, b), runs in runs_of.items():
        p50, load = min(runs)  # the fastest measurement: a neighbour only ever slows a model down
        m = est[b].model(name)
        rows.append({"model": name, "set": sets[name.split()[0].split("@")[0]], "batch": b, "predicted_ms": m.p50_ms,
                     "low_ms": m.low_ms, "high_ms": m.high_ms, "measured_ms": p50,
                     "measured_all_ms": [r[0] for r in runs], "spread": spread([r[0] for r in runs]),
                     "error": m.p50_ms / p50 - 1,
                     "in_band": m.low_ms <= p50 <= m.high_ms, "narrow": narrow(m.p50_ms, m.low_ms, m.high_ms),
                     "other_load": load, "by_kind": m.by_kind, "weights_mb": m.weights_mb, "cold": m.cold,
                     "uncosted": list(m.uncosted), "layout": m.layout})
        print(f"  {name} batch {b}: predicted {m.p50_ms:.3f} ms, measured {p50:.3f} ms "
              f"({100 * (m.p50_ms / p50 - 1):+.0f}%)", flush=True)
    fits = {k: {n: v for n, v in f["holdout"].items() if n != "errors"} for k, f in cal.fits.items()}
    return {"profile": profile, "calibration": {"seconds": cal.seconds, "other_load": cal.other_load, "uptime": load0,
                                                "run_us": cal.run_us, "node_us": cal.node_us, "holdout": fits,
                                                "nchwc_block": cal.nchwc_block, "created": cal.created,
                                                "profiler_us": cal.profiler_us},
            "rows": rows, "uptime_after": uptime()}


def spread(runs: list[float]) -> float:
    """How far apart one model's measurements are: slowest / fastest - 1 (0 for one measurement)."""
    return max(runs) / min(runs) - 1 if runs and min(runs) > 0 else 0.0


def _spread(row: dict) -> str:
    return f"{100 * row['spread']:.0f}%" if len(row["measured_all_ms"]) > 1 and "spread" in row else "–"


def narrow(p: float, low: float, high: float, width: float = 0.25) -> bool:
    """Is the band within ±``width`` of the estimate?"""
    return low >= p * (1 - width) and high <= p * (1 + width)


def speedups(rows: list[dict]) -> list[tuple[str, float, float]]:
    """(model, predicted speedup, measured speedup) over its architecture's base at the same batch size."""
    base = {(r["model"].split()[0], r["batch"]): r for r in rows if r["model"].endswith(" base")}
    out = []
    for r in rows:
        b = base.get((r["model"].split()[0], r["batch"]))
        if b is not None and r is not b:
            out.append((r["model"], b["predicted_ms"] / r["predicted_ms"], b["measured_ms"] / r["measured_ms"]))
    return out


def summary(rows: list[dict]) -> str:
    err = np.abs([r["error"] for r in rows])
    sp = speedups(rows)
    sp_err = np.abs([p / m - 1 for _, p, m in sp])
    worst = sorted(rows, key=lambda r: -abs(r["error"]))[:3]
    steady = [abs(r["error"]) for r in rows if len(r["measured_all_ms"]) > 1 and r.get("spread", 1.0) <= STEADY]
    return (f"Within ±10%: {np.mean(err <= 0.1):.0%}, ±20%: {np.mean(err <= 0.2):.0%}, ±25%: {np.mean(err <= 0.25):.0%} "
            f"of {len(err)} models; median |error| {np.median(err):.0%}; measured p50 in the band: "
            f"{np.mean([r['in_band'] for r in rows]):.0%}; band within ±25%: {np.mean([r['narrow'] for r in rows]):.0%}"
            + (f"; speedup within ±15%: {np.mean(sp_err <= 0.15):.0%} of {len(sp)}" if sp else "")
            + (f"; of the {len(steady)} models whose repeats were within {STEADY:.0%} of each other (noise below the "
               f"±10% aim), within ±10%: {np.mean(np.array(steady) <= 0.1):.0%}, ±20%: {np.mean(np.array(steady) <= 0.2):.0%}"
               if steady else "")
            + "; largest errors: " + ", ".join(f"{r['model']} {100 * r['error']:+.0f}%" for r in worst) + ".")


def render(results: dict) -> str:
    h = results["host"]
    lines = [f"Host: {h['cpu']}, {h['cores']} cores, {h['machine']}, ISA {', '.join(h['isa'])}, onnxruntime "
             f"{h['onnxruntime']}; {results['date']}; input {results['sizes']} px"
             + (f"; measurements taken earlier: {results['measured']}" if results.get("measured") else ""), ""]
    for res in results["profiles"]:
        c = res["calibration"]
        lines += [f"### {res['profile']}", "",
                  f"Calibration: {c['seconds']:.0f} s, other processes {100 * (c['other_load'] or 0):.0f}% of the "
                  f"cores, NCHWc block {c.get('nchwc_block')}; {c['uptime']}", ""]
        for set_ in ("development", "check"):
            for b in sorted({r["batch"] for r in res["rows"]}):
                rows = [r for r in res["rows"] if r["set"] == set_ and r["batch"] == b]
                if not rows:
                    continue
                lines += [f"**{set_} set, batch {b}**", "",
                          "| model | predicted p50 ms [band] | measured p50 ms (each) | spread | error | in band | other load |",
                          "|---|---|---|---|---|---|---|"]
                for r in rows:
                    each = ", ".join(f"{v:.3f}" for v in r["measured_all_ms"])
                    lines.append(f"| {r['model']} | {r['predicted_ms']:.3f} [{r['low_ms']:.3f}–{r['high_ms']:.3f}] | "
                                 f"{r['measured_ms']:.3f} ({each}) | {_spread(r)} | "
                                 f"{100 * r['error']:+.0f}% | "
                                 f"{'yes' if r['in_band'] else 'no'} | {100 * (r['other_load'] or 0):.0f}% |")
                lines += ["", summary(rows), ""]
        lines += [f"Load after: {res['uptime_after']}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--set", choices=("check", "development", "both"), default="both",
                    help="which list of architectures (default both, reported apart)")
    ap.add_argument("--models", default=None, help="torchvision architectures instead of a list (counted as check "
                                                   "unless in the development list)")
    ap.add_argument("--sparsities", default=None, help="default 0.3,0.5,0.7")
    ap.add_argument("--profiles", default="laptop-cpu,laptop-cpu-1thread")
    ap.add_argument("--sizes", default="128", help="input sizes in px (default 128)")
    ap.add_argument("--batch", default="1,8", help="batch sizes (default 1,8)")
    ap.add_argument("--work", default=str(WORK))
    ap.add_argument("--wait-quiet", type=float, default=30.0, help="seconds to wait for other processes to calm "
                                                                  "down before each calibration and measurement")
    ap.add_argument("--repeats", type=int, default=2, help="measurements of each model (forward, then backward "
                                                          "order); the fastest is the measured p50")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--measured", default=None, help="an earlier run's --out JSON: predict again against its "
                                                     "measurements (same host), measuring only models it lacks")
    ap.add_argument("--calibration", default=None, help="predict from this calibration file instead of "
                                                        "calibrating (one profile only)")
    a = ap.parse_args()
    if a.models or a.quick:
        archs = (a.models or "resnet18").split(",")
    else:
        archs = list({"check": CHECK, "development": DEVELOPMENT}.get(a.set, DEVELOPMENT + CHECK))
    sets = {m: "development" if m in DEVELOPMENT else "check" for m in archs}
    sparsities = [float(s) for s in (a.sparsities or ("0.5" if a.quick else "0.3,0.5,0.7")).split(",")]
    sizes, batches = [int(v) for v in a.sizes.split(",")], [int(v) for v in a.batch.split(",")]
    work = Path(os.path.expanduser(a.work))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models = models_of(archs, sparsities, sizes, work)
    print(f"{len(models)} models ready in {time.perf_counter() - t0:.0f} s", flush=True)
    from edgerobust.edge.runtime.host import host_info

    results = {"host": dataclasses.asdict(host_info()), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "sizes": sizes,
               "profiles": []}
    profiles = a.profiles.split(",")
    if a.calibration and len(profiles) > 1:
        ap.error("--calibration is one device's: give one profile with --profiles")
    if a.calibration:
        from edgerobust.edge.estimate.calibrate import load_calibration
        from edgerobust.errors import UsageError

        try:
            load_calibration(a.calibration)
        except UsageError as exc:
            ap.error(f"--calibration: {exc}")
    try:
        earlier = json.loads(Path(a.measured).read_text(encoding="utf-8")) if a.measured else {}
    except (OSError, ValueError) as exc:
        ap.error(f"--measured {a.measured}: not an earlier run's JSON ({exc})")
    if earlier:
        results["measured"] = f"{a.measured} ({earlier.get('date')})"
    for p in profiles:
        results["profiles"].append(run_profile(p, models, sets, batches, work, a.quick, a.wait_quiet,
                                               1 if a.quick else a.repeats, earlier_runs(earlier, p) if earlier else None,
                                               Path(a.calibration) if a.calibration else None))
        if a.out:  # after each profile: a long run stopped later keeps what it measured
            Path(a.out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
