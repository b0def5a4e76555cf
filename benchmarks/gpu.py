"""GPU benchmark (issue 9): edgerobust's torch work on a CUDA GPU against the bare libraries, compress's wall
time on the GPU against the CPU, and the audit's variants on ONNX Runtime's CUDA provider.

    python benchmarks/gpu.py [--device cuda|cpu] [--quick] [--only 1,2,3] [--work DIR]

  1  throughput on one device: craft_set (the `edgerobust attack` path, PGD-10 at eps 8/255) against a bare
     torchattacks.PGD loop, and finetune.train (standard, augment on and off, and PGD-AT) against a bare torch
     SGD loop; torchvision resnet18 with random weights, random inputs; img/s, median [min-max] of repeats
  2  compress's wall time (resnet18 at 224, PGD sets at 2/255,4/255,8/255, one epoch of PGD-AT, --int8 --fp16)
     with --device cuda against --device cpu, on random images with random labels
  3  section 2's bundle measured by edgerobust.edge.runtime.measure.measure_models: base fp32, pruned fp32/fp16/int8
     on the CUDA provider (the jetson-agx-orin profile's CUDA options, TensorRT left out) at batch 1 and 64,
     host-memory inputs; speedup against base. Without CUDA: the CPU provider (laptop-cpu profile).

Without a GPU every figure is a CPU one, and the script says so next to every table.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, spread  # noqa: E402
from run import host_line, table  # noqa: E402

ISSUE_SAMPLES, ISSUE_IMAGE = 2000, 224
GOAL_RATIO, GOAL_SPEEDUP = 0.9, 1.4
PGD_EPS = "8/255"
VARIANT_ROWS = (("base fp32", "base"), ("pruned fp32", "fp32"), ("pruned fp16", "fp16"), ("pruned int8", "int8"))


@dataclass(frozen=True)
class Sizes:
    """How big each section's work is: section 1's images, batches and repeats; section 2's sample count."""

    image: int = 224
    attack_batch: int = 256
    attack_n: int = 1024
    train_batch: int = 64
    train_n: int = 1280
    repeats: int = 5
    pgd_at: bool = True
    compress_samples: int = ISSUE_SAMPLES
    compress_image: int = ISSUE_IMAGE
    batch_sizes: tuple[int, ...] = (1, 64)


def sizes_for(device_type: str, quick: bool) -> Sizes:
    if device_type == "cuda":
        return Sizes(attack_n=512, train_n=640, repeats=3, compress_samples=400) if quick else Sizes()
    if quick:
        return Sizes(image=64, attack_batch=16, attack_n=32, train_batch=16, train_n=64, repeats=3,
                     compress_samples=48)
    return Sizes(attack_batch=16, attack_n=32, train_batch=16, train_n=64, repeats=3, compress_samples=120)


# ---------------------------------------------------------------------------------------------
# host


def gpu_line(device) -> str:
    """The GPU half of the host line: GPU name, torch/CUDA/cuDNN versions, onnxruntime and its providers."""
    import onnxruntime as ort
    import torch

    if torch.cuda.is_available():
        gpu = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
    else:
        gpu = "NO GPU (torch.cuda.is_available() is False)"
    where = ("figures on the GPU" if device.type == "cuda" else
             "figures are CPU ones (no GPU used)" if torch.cuda.is_available() else
             "NO GPU on this host: every figure below is a CPU one")
    return (f"gpu: {gpu}; torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}, cuDNN "
            f"{torch.backends.cudnn.version() if torch.cuda.is_available() else 'n/a'}); onnxruntime {ort.__version__} "
            f"({ort.get_device()}), providers {', '.join(ort.get_available_providers())}; {where}")


def full_host_line(device) -> str:
    return host_line()[0] + "\n" + gpu_line(device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _resnet18(num_classes: int = 1000, seed: int = 0):
    import torch
    import torchvision

    from edgerobust.workstation.model.nets import PixelModel

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    return PixelModel(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _inputs(n: int, image: int, classes: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, image, image), dtype=np.float32), rng.integers(0, classes, n).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# section 1: throughput against the bare libraries


def _pair(tool, bare, n_tool: int, n_bare: int, repeats: int, device) -> dict:
    """One untimed run of each, then ``repeats`` timed runs alternating which goes first; img/s per run."""
    tool(), bare()
    ips = {"tool": [], "bare": []}
    for r in range(repeats):
        order = (("tool", tool, n_tool), ("bare", bare, n_bare))
        for key, fn, n in order if r % 2 == 0 else order[::-1]:
            ips[key].append(n / _timed(fn, device))
    ratios = [a / b for a, b in zip(ips["tool"], ips["bare"])]
    return {"tool_ips": spread(ips["tool"]), "bare_ips": spread(ips["bare"]), "ratio": spread(ratios)}


def attack_throughput(device, sz: Sizes) -> dict:
    """craft_set (what `edgerobust attack` runs per spec) against a bare torchattacks.PGD loop."""
    import torch
    import torchattacks

    from edgerobust.workstation.attacks import craft_set, make_specs

    model = _resnet18().to(device).eval()
    x, y = _inputs(sz.attack_n, sz.image)
    spec = make_specs("pgd", PGD_EPS, steps=10, seed=0)[0]
    params, bs = spec.params(), sz.attack_batch

    def tool():
        craft_set(model, x, y, spec, batch_size=bs, progress=lambda *a, **k: None)

    def bare():
        torch.manual_seed(0)
        atk = torchattacks.PGD(model, **params)
        out = [atk(torch.from_numpy(x[i:i + bs]).to(device), torch.from_numpy(y[i:i + bs]).to(device)).cpu().numpy()
               for i in range(0, len(y), bs)]
        return np.concatenate(out)

    res = _pair(tool, bare, len(y), len(y), sz.repeats, device)
    return {"case": f"PGD-10 eps {PGD_EPS} (craft_set vs torchattacks.PGD)", "batch": bs, "n": len(y), **res}


def _bare_sgd_epoch(model, xt, yt, bs: int, lr: float, device, atk=None) -> None:
    """A plain torch loop: shuffled batches moved to the device, cross-entropy, SGD (momentum 0.9, Nesterov)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    model.train()
    perm = torch.randperm(len(xt))
    for i in range(0, len(xt), bs):
        idx = perm[i:i + bs]
        xb, yb = xt[idx].to(device), yt[idx].to(device)
        if atk is not None:
            xb = atk(xb, yb)  # torchattacks crafts in eval mode and puts the model back in train mode
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def finetune_throughput(device, sz: Sizes) -> list[dict]:
    """finetune.train (one epoch, the path finetune_stage runs) against a bare SGD loop, same batches."""
    import torch
    import torchattacks

    from edgerobust.workstation.configs import TrainConfig
    from edgerobust.workstation.train.finetune import train

    x, y = _inputs(sz.train_n, sz.image)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lr, eps, steps = 1e-3, 8 / 255, 7
    cases = [("standard, augment_shift 1 (the default)", "standard", 1),
             ("standard, augment_shift 0 (the bare loop's work)", "standard", 0)]
    if sz.pgd_at:
        cases.append((f"PGD-AT ({steps} steps, eps 8/255)", "pgd-at", 1))
    rows = []
    for label, mode, shift in cases:
        tool_model = _resnet18().to(device)
        bare_model = copy.deepcopy(tool_model)
        cfg = TrainConfig(epochs=1, lr=lr, optimizer="sgd", batch_size=sz.train_batch, mode=mode,
                          augment_shift=shift, adv_eps=eps, adv_steps=steps, robust_val_samples=1)
        atk = (torchattacks.PGD(bare_model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
               if mode == "pgd-at" else None)
        res = _pair(lambda m=tool_model, c=cfg: train(m, x, y, x[:1], y[:1], c),
                    lambda m=bare_model, a=atk: _bare_sgd_epoch(m, xt, yt, sz.train_batch, lr, device, a),
                    len(y), len(y), sz.repeats, device)
        rows.append({"case": f"fine-tune epoch: {label} (train vs bare SGD loop)", "batch": sz.train_batch,
                     "n": len(y), **res})
        del tool_model, bare_model
    return rows


class _quiet:
    """ui.set_quiet(True) inside, the previous setting restored after (no progress bars in timings)."""

    def __enter__(self):
        from edgerobust import ui

        self.before = ui.is_quiet()
        ui.set_quiet(True)

    def __exit__(self, *exc):
        from edgerobust import ui

        ui.set_quiet(self.before)


def section1(device, sz: Sizes) -> dict:
    with _quiet():
        rows = [attack_throughput(device, sz)] + finetune_throughput(device, sz)
    return {"device": _describe(device), "image": sz.image, "repeats": sz.repeats, "rows": rows}


def render1(res: dict, host: str) -> str:
    rows = [[r["case"], r["batch"], r["n"], fmt(r["tool_ips"], 1), fmt(r["bare_ips"], 1), fmt(r["ratio"], 3),
             "met" if r["ratio"]["median"] >= GOAL_RATIO else "MISSED"] for r in res["rows"]]
    return (table(f"GPU 1. Throughput on {res['device']}: edgerobust vs the bare libraries (resnet18 "
                  f"{res['image']}x{res['image']}, random weights and inputs; median [min-max] of {res['repeats']} "
                  "alternating repeats after one untimed run each)",
                  ["case", "batch", "images per run", "edgerobust img/s", "bare img/s", "ratio", f">= {GOAL_RATIO}"],
                  rows) + f"\n\n{host}")


# ---------------------------------------------------------------------------------------------
# section 2: compress on the GPU against the CPU


def _describe(device) -> str:
    from edgerobust.workstation.resources.torch_device import describe

    return describe(device)


def profile_toml(device_type: str, quick: bool, work: Path, batch_sizes=(1, 64)) -> Path:
    """A measuring profile: jetson-agx-orin's CUDA provider (TensorRT left out) then the CPU, or laptop-cpu;
    batch sizes 1 and 64. Written as a file so compress (--profile) and measure_models read the same one."""
    from edgerobust.edge.runtime.profiles import load_profile

    base = load_profile("jetson-agx-orin" if device_type == "cuda" else "laptop-cpu")
    lines = [f"description = {json.dumps('gpu.py benchmark: ' + base.description)}"]
    for p in base.providers:
        if p.name == "TensorrtExecutionProvider":
            continue
        lines += ["", "[[providers]]", f"name = {json.dumps(p.name)}"]
        if p.options:
            lines.append("[providers.options]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in p.options.items()]
    s = base.session
    lines += ["", "[session]", f"intra_op_threads = {s.intra_op_threads}", f"inter_op_threads = {s.inter_op_threads}",
              f"graph_optimization = {json.dumps(s.graph_optimization)}",
              f"allow_spinning = {json.dumps(s.allow_spinning)}", f"cpu_arena = {json.dumps(s.cpu_arena)}",
              f"memory_pattern = {json.dumps(s.memory_pattern)}"]
    if device_type == "cuda":
        m = dict(warmup_runs=10, rounds=3, runs_per_round=10, min_seconds=1.0, max_seconds=10.0, ci_target=0.05) \
            if quick else dict(warmup_runs=20, rounds=5, runs_per_round=10, min_seconds=3.0, max_seconds=30.0,
                               ci_target=0.02)
    else:
        m = dict(warmup_runs=1, rounds=2, runs_per_round=1, min_seconds=0.0, max_seconds=0.0, ci_target=0.0) \
            if quick else dict(warmup_runs=3, rounds=3, runs_per_round=3, min_seconds=3.0, max_seconds=30.0,
                               ci_target=0.05)
    lines += ["", "[measure]", f"batch_sizes = {list(batch_sizes)}", "max_rounds = 2000", "memory_runs = 1",
              f"turn_seconds = {0.1 if not quick else 0.0}", "switch_warmup_runs = 1",
              f"isolation = {json.dumps(base.measure.isolation)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in m.items()]
    path = work / f"gpu-bench-{device_type}.toml"
    path.write_text("\n".join(lines) + "\n")
    load_profile(path)  # validates
    return path


def compress_inputs(work: Path, n: int, image: int) -> tuple[Path, Path]:
    """A random-weight torchvision resnet18 checkpoint (10 classes) and ``n`` random uint8 images, random labels."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    pt, data = work / "resnet18.pt", work / f"data-{n}-{image}.npz"
    torch.save(_resnet18(10).net.state_dict(), pt)
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 256, (n, image, image, 3), dtype=np.uint8), y=rng.integers(0, 10, n))
    return pt, data


def compress_once(device_type: str, pt: Path, data: Path, profile: Path, out: Path) -> dict:
    """One `edgerobust compress --int8 --fp16 --attacks pgd --finetune pgd-at --finetune-epochs 1`, timed."""
    from edgerobust import CompressConfig, PrepareConfig, TrainConfig, compress
    from edgerobust.workstation.attacks import make_specs

    prep = PrepareConfig(pt, arch="torchvision:resnet18", data=f"npz:{data}", normalize="imagenet",
                         allow_weak_base=True, device=device_type)
    cfg = CompressConfig(prep, max_prune_drop=None, max_int8_drop=None, min_int8_agreement=None,  # random labels: no gates
                         finetune=TrainConfig(epochs=1, mode="pgd-at"),
                         attacks=tuple(make_specs("pgd", "2/255,4/255,8/255")),
                         int8=True, fp16=True, target=str(profile), out=out, overwrite=True)
    t0 = time.perf_counter()
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)  # fp16 rounding
        res = compress(cfg)
    wall = time.perf_counter() - t0
    man = json.loads((res.bundle / "manifest.json").read_text())
    return {"device": res.device, "wall_s": wall, "bundle": str(res.bundle), "adv_sets": len(res.adv_sets),
            "deployed": man["deployment"]["variant"], "deployment_reason": man["deployment"]["reason"]}


def section2(devices: list[str], sz: Sizes, quick: bool, work: Path, profile: Path) -> dict:
    pt, data = compress_inputs(work / "compress", sz.compress_samples, sz.compress_image)
    runs = {d: compress_once(d, pt, data, profile, work / f"bundle-{d}") for d in devices}
    issue = sz.compress_samples == ISSUE_SAMPLES and sz.compress_image == ISSUE_IMAGE
    return {"samples": sz.compress_samples, "image": sz.compress_image, "issue_config": issue, "quick": quick,
            "runs": runs, "gpu_speedup": (runs["cpu"]["wall_s"] / runs["cuda"]["wall_s"]
                                          if {"cpu", "cuda"} <= set(runs) else None)}


def render2(res: dict, host: str) -> str:
    rows = [[d, r["device"], f"{r['wall_s']:.1f}", r["adv_sets"], r["deployed"]] for d, r in res["runs"].items()]
    if "cuda" not in res["runs"]:
        rows.append(["cuda", "not run: no CUDA GPU on this host", "n/a", "", ""])
    sp = res["gpu_speedup"]
    note = (f"CPU s / GPU s = {sp:.2f}x" if sp is not None else "CPU s / GPU s: n/a (no GPU run)")
    cfg = ("the issue's configuration" if res["issue_config"] else
           f"NOT the issue's configuration ({ISSUE_SAMPLES} images at {ISSUE_IMAGE}): a small sample count so the "
           "CPU side finishes in minutes")
    return (table(f"GPU 2. Wall time of compress: resnet18 {res['image']}x{res['image']}, {res['samples']} random "
                  "images (random labels, gates off), PGD sets at 2/255,4/255,8/255, one epoch of PGD-AT, "
                  "--int8 --fp16", ["--device", "torch ran on", "wall s", "adv sets", "deployed variant"], rows)
            + f"\n\n{note}; {cfg}.\n\n{host}")


# ---------------------------------------------------------------------------------------------
# section 3: the audit's variants on the CUDA provider


def _resident(m, bs: int) -> str:
    """The device-resident (IO-binding) p50 when measure.py records one, else "not measured"."""
    r = getattr(m, "resident_latency", None)
    if r is None:
        return "not measured"
    if isinstance(r, dict):
        r = r.get(bs)
    elif isinstance(r, (list, tuple)):
        r = next((v for v in r if getattr(v, "batch_size", None) == bs), None)
    p50 = getattr(r, "p50_ms", r)
    return f"{p50:.3f}" if isinstance(p50, (int, float)) and math.isfinite(p50) else "not measured"


def section3(bundle: Path, profile: Path) -> dict:
    from edgerobust.edge.runtime.measure import measure_models
    from edgerobust.edge.runtime.profiles import load_profile

    man = json.loads((bundle / "manifest.json").read_text())
    deployed = man["deployment"]["variant"]
    files = {"base": bundle / man["models"]["base"]}
    files.update({v: bundle / ("model.onnx" if v == deployed else name) for v, name in man["variants"].items()})
    prof = load_profile(profile)
    with _quiet():
        rep = measure_models({label: files[key] for label, key in VARIANT_ROWS if key in files}, prof, memory=False,
                             show_progress=False)
    base = rep.model("base fp32")
    rows = []
    for m in rep.models:
        row = {"variant": m.role, "deployed": m.role == f"pruned {deployed}", "providers": list(m.session.providers),
               "size_mb": m.size_mb, "by_batch": {}}
        for bs in prof.measure.batch_sizes:
            lat, b = m.latency_at(bs), base.latency_at(bs)
            if lat is None or b is None:
                continue
            row["by_batch"][bs] = {"p50_ms": lat.p50_ms, "speedup": b.p50_ms / lat.p50_ms, "resident": _resident(m, bs)}
        rows.append(row)
    return {"profile": prof.name, "profile_source": prof.source, "batch_sizes": list(prof.measure.batch_sizes),
            "deployed": deployed, "fallback": rep.fallback, "other_load": rep.other_load, "rows": rows}


def render3(res: dict, host: str) -> str:
    head = ["variant", "providers", "MB"]
    for bs in res["batch_sizes"]:
        head += [f"p50 ms b{bs}", f"speedup b{bs}", f"resident p50 ms b{bs}"]
    head.append(f"deployed >= {GOAL_SPEEDUP}x")
    rows = []
    for r in res["rows"]:
        cells = [r["variant"] + (" (deployed)" if r["deployed"] else ""), "+".join(p.replace("ExecutionProvider", "")
                                                                              for p in r["providers"]),
                 f"{r['size_mb']:.1f}"]
        for bs in res["batch_sizes"]:
            b = r["by_batch"].get(bs)
            cells += [f"{b['p50_ms']:.3f}", f"{b['speedup']:.2f}", b["resident"]] if b else ["skipped"] * 3
        met = all(b["speedup"] >= GOAL_SPEEDUP for b in r["by_batch"].values())
        cells.append(("met" if met else "MISSED") if r["deployed"] else "")
        rows.append(cells)
    load = res["other_load"]
    return (table(f"GPU 3. The audit's variants, measured by measure_models (profile {res['profile']}: "
                  f"{res['profile_source']}; host-memory inputs; deployed = {res['deployed']})", head, rows)
            + f"\n\nother processes' CPU share while timing: {'n/a' if load is None else f'{load:.0%}'}"
            + ("; some provider FELL BACK" if res["fallback"] else "") + f"\n\n{host}")


# ---------------------------------------------------------------------------------------------


def run_all(device_spec: str, quick: bool, work: Path, only=("1", "2", "3"), sz: Sizes | None = None) -> tuple[dict, str]:
    """Run the sections; return the results and the markdown text (also printed as each section ends)."""
    import torch

    from edgerobust.workstation.resources.torch_device import resolve_device

    device = resolve_device(device_spec)
    work.mkdir(parents=True, exist_ok=True)
    sz = sz or sizes_for(device.type, quick)
    host = full_host_line(device)
    print(host, flush=True)
    res: dict = {"device": _describe(device), "quick": quick, "sizes": sz.__dict__, "host": host}
    text = [host]

    def emit(s: str) -> None:
        load = os.getloadavg()[0]
        s += f"; load average {load:.2f} on {os.cpu_count()} cores as this table ended" + (
            " (a busy, shared host: CPU figures are noisy)" if load > (os.cpu_count() or 1) else "")
        text.append(s)
        print(s, flush=True)

    if "1" in only:
        res["throughput"] = section1(device, sz)
        emit(render1(res["throughput"], host))
    if "2" in only or "3" in only:
        profile = profile_toml(device.type, quick, work, sz.batch_sizes)
        devices = ["cuda", "cpu"] if device.type == "cuda" else ["cpu"]
        if "2" not in only:
            devices = devices[:1]
        res["compress"] = section2(devices, sz, quick, work, profile)
        if "2" in only:
            emit(render2(res["compress"], host))
        if "3" in only:
            bundle = Path(res["compress"]["runs"][devices[0]]["bundle"])
            res["variants"] = section3(bundle, profile)
            emit(render3(res["variants"], host))
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res, "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when torch sees one), cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (section 2: not the issue's size)")
    ap.add_argument("--only", default="1,2,3", help="sections to run, comma-separated (1, 2, 3)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    if set(only) - {"1", "2", "3"}:
        ap.error(f"unknown section(s) in --only {args.only!r}; choose from 1, 2, 3")
    work = Path(args.work or tempfile.mkdtemp(prefix="er-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res, _ = run_all(args.device, args.quick, work, only)
    res["seconds"] = time.perf_counter() - t0
    print(f"\ntotal {res['seconds']:.0f} s; work folder {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
