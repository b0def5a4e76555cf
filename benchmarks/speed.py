"""Section 1: the speed compression buys (base/pruned x fp32/int8 per sparsity), measured interleaved,
and where resnet18's int8 time goes (onnxruntime's per-op profiler, the optimized graph)."""
from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import numpy as np
import onnx

from common import bare_options, bare_session, batch1_rounds, bench_profile, round_ratios, spread

IMAGE = 224


def _torchvision_checkpoint(name: str, work: Path) -> tuple[Path, Path]:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10)
    pt = work / f"{name}.pt"
    torch.save(model.state_dict(), pt)
    rng = np.random.default_rng(0)
    data = work / f"{name}-data.npz"
    np.savez(data, x=rng.integers(0, 256, (48, IMAGE, IMAGE, 3), dtype=np.uint8), y=rng.integers(0, 10, 48))
    return pt, data


def _compress(model: str, pt: Path, data: Path | None, sparsity: float, out: Path, round_to: int | None = None,
              stem: str | None = None):
    """``round_to`` / ``stem`` None: compress's defaults without a target profile (8, plain)."""
    from edgerobust import CompressConfig, PrepareConfig, PruneConfig, QuantConfig, TrainConfig, compress

    # random weights (latency only): no accuracy to gate on, no normalization to detect
    prep = PrepareConfig(pt, arch=f"torchvision:{model}" if data else None, data=f"npz:{data}" if data else None,
                         eval_samples=16, calib_samples=16,
                         **({"normalize": "imagenet", "allow_weak_base": True} if data else {}))
    cfg = CompressConfig(prep, prune=PruneConfig(sparsity=sparsity, round_to=round_to), finetune=TrainConfig(epochs=0),
                         int8=True, quant=QuantConfig(stem=stem), max_int8_drop=None, min_int8_agreement=None, max_prune_drop=None, out=out,
                         overwrite=True)
    return compress(cfg)


def _quantize(src: Path, dst: Path, calib: np.ndarray, **kw) -> Path:
    from edgerobust.workstation.configs import QuantConfig
    from edgerobust.workstation.quantize.int8 import quantize

    quantize(src, dst, calib[:16], QuantConfig(**kw))  # calibrated on every row given
    return dst


def build_family(model: str, work: Path, sparsities: tuple[float, ...], extras: bool, zoo_ckpt: Path | None):
    """Compress at every sparsity; return {row name: (onnx path, MACs)} and the compress seconds."""
    from edgerobust.edge.files.bundle import EvalSet

    work.mkdir(parents=True, exist_ok=True)
    if zoo_ckpt is None:
        pt, data = _torchvision_checkpoint(model, work)
    else:
        pt, data = zoo_ckpt, None
    rows: dict[str, dict] = {}
    seconds = {}
    for s in sparsities:
        t0 = time.perf_counter()
        res = _compress(model, pt, data, s, work / f"b{s}")
        seconds[f"compress {s}"] = time.perf_counter() - t0
        b = res.bundle
        if not rows:
            calib = EvalSet.load(b / "eval.npz").x
            rows["base fp32"] = {"path": b / "base.onnx", "macs": res.prune.macs_before}
            rows["base int8"] = {"path": _quantize(b / "base.onnx", work / "base_int8.onnx", calib),
                                 "macs": res.prune.macs_before}
            if extras:
                rows["base int8 keep_fp32=none"] = {
                    "path": _quantize(b / "base.onnx", work / "base_int8_none.onnx", calib, keep_fp32="none"),
                    "macs": res.prune.macs_before}
        rows[f"pruned {s} fp32"] = {"path": b / "model_fp32.onnx", "macs": res.prune.macs_after}
        rows[f"pruned {s} int8"] = {"path": b / "model.onnx", "macs": res.prune.macs_after}
        if extras and s == 0.5:
            rows["pruned 0.5 int8 keep_fp32=none"] = {
                "path": _quantize(b / "model_fp32.onnx", work / "p05_none.onnx", calib, keep_fp32="none"),
                "macs": res.prune.macs_after}
            rows["pruned 0.5 int8 S8S8 (target tensorrt)"] = {
                "path": _quantize(b / "model_fp32.onnx", work / "p05_s8s8.onnx", calib, target="tensorrt"),
                "macs": res.prune.macs_after}
            for r in (16, 32):
                t0 = time.perf_counter()
                rr = _compress(model, pt, data, 0.5, work / f"b0.5-r{r}", round_to=r)
                seconds[f"compress 0.5 round_to {r}"] = time.perf_counter() - t0
                rows[f"pruned 0.5 round_to={r} int8"] = {"path": rr.bundle / "model.onnx", "macs": rr.prune.macs_after}
                rows[f"pruned 0.5 round_to={r} fp32"] = {"path": rr.bundle / "model_fp32.onnx",
                                                         "macs": rr.prune.macs_after}
    return rows, seconds


def measure_family(rows: dict, profile) -> list[dict]:
    """All rows of one model in one interleaved run; speedups per round against base fp32."""
    from edgerobust.edge.runtime.sessions import open_sessions

    sessions = open_sessions({name: r["path"] for name, r in rows.items()}, profile)  # parked: no cross-talk
    ms = batch1_rounds(sessions, profile.measure)
    base = ms["base fp32"]
    int8_gain = round_ratios(base, ms["base int8"])
    out = []
    for name, r in rows.items():
        sp = round_ratios(base, ms[name])
        macs_ratio = rows["base fp32"]["macs"] / r["macs"]
        is_int8 = "int8" in name
        available = macs_ratio * (int8_gain["median"] if is_int8 else 1.0)
        out.append({"row": name, "path": str(r["path"]), "p50_ms": spread(np.median(ms[name], axis=1)),
                    "speedup": sp, "macs": r["macs"], "macs_ratio": macs_ratio,
                    "available": available, "realized": sp["median"] / available,
                    "size_mb": Path(r["path"]).stat().st_size / 2**20})
    return out


def run_speed(work: Path, quick: bool, zoo_ckpt: Path) -> dict:
    profile = bench_profile(quick)
    sparsities = (0.5,) if quick else (0.3, 0.5, 0.7)
    models = ["resnet18", "digits-resnet"] if quick else ["resnet18", "mobilenet_v2", "digits-resnet"]
    result = {"profile": str(profile.source), "settings": dict(rounds=profile.measure.rounds,
                                                              runs_per_round=profile.measure.runs_per_round,
                                                              warmup=profile.measure.warmup_runs),
              "models": {}}
    for m in models:
        t0 = time.perf_counter()
        rows, secs = build_family(m, work / m, sparsities, extras=(m == "resnet18"),
                                  zoo_ckpt=zoo_ckpt if m.startswith("digits") else None)
        table = measure_family(rows, profile)
        result["models"][m] = {"rows": table, "build_seconds": secs, "seconds": time.perf_counter() - t0}
        print(f"[speed] {m} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return result


def ort_profile(path: Path, threads: int = 2, runs: int = 40, work: Path | None = None) -> dict:
    """Per-op-type time share from onnxruntime's profiler, and the op types of the optimized graph."""
    so = bare_options(threads)
    opt_path = (work or path.parent) / (path.stem + ".optimized.onnx")
    so.optimized_model_filepath = str(opt_path)
    sess = bare_session(path, threads, options=so)
    opt_ops = collections.Counter(n.op_type for n in onnx.load(str(opt_path)).graph.node)
    so2 = bare_options(threads)
    so2.enable_profiling = True
    so2.profile_file_prefix = str((work or path.parent) / (path.stem + ".prof"))
    sess = bare_session(path, threads, options=so2)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, *[d for d in sess.get_inputs()[0].shape[1:]]), dtype=np.float32)
    for _ in range(10):
        sess.run(None, {name: x})
    prof_path = sess.end_profiling()
    sess = bare_session(path, threads, options=so2)
    for _ in range(runs):
        sess.run(None, {name: x})
    prof_path = sess.end_profiling()
    events = json.loads(Path(prof_path).read_text())
    by_op: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)
    total_run = 0.0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"].get("op_name", "?")] += e["dur"]
            by_node[e["name"][:-len("_kernel_time")] + f" ({e['args'].get('op_name')})"] += e["dur"]
        elif e.get("cat") == "Session" and e.get("name") == "model_run":
            total_run += e["dur"]
    kernel = sum(by_op.values())
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    nodes = sorted(by_node.items(), key=lambda kv: -kv[1])[:8]
    return {"model": str(path), "runs": runs, "model_run_ms": total_run / runs / 1e3,
            "kernel_ms": kernel / runs / 1e3,
            "by_op": [{"op": k, "ms": v / runs / 1e3, "share": v / kernel} for k, v in ops],
            "top_nodes": [{"node": k, "ms": v / runs / 1e3, "share": v / kernel} for k, v in nodes],
            "optimized_graph_ops": dict(opt_ops.most_common())}
