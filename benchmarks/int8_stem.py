"""The space-to-depth int8 stem (``--int8-stem space-to-depth``) across torchvision classifiers.

For each model (random weights, 224x224, exported to ONNX here): static int8 QDQ as compress
writes it, once plain and once with the stem rewrite; then, in one interleaved run per model and
batch size (the harness profile: parked sessions, 2 intra-op threads), the plain model's p50 over
the rewritten one's, as the median of per-round ratios with its min-max. Each row also says what
the rewrite did (or why it did not apply) and whether onnxruntime's outputs were bit for bit the
plain model's. Unpruned models: a pruned one spends a larger share of its time in the stem
(benchmarks/ceiling.py has resnet18 pruned 0.5).

    python benchmarks/int8_stem.py [--models resnet50,mobilenet_v3_small] [--batch 1,8] [--rounds 40] [--work DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_profile, interleaved_rounds, round_ratios  # noqa: E402

MODELS = ("resnet50", "densenet121", "googlenet", "squeezenet1_0", "efficientnet_b0", "regnet_y_400mf",
          "mobilenet_v3_small", "shufflenet_v2_x1_0", "convnext_tiny")


def build(name: str, work: Path, calib: np.ndarray) -> tuple[Path, Path, str]:
    """(plain int8, rewritten int8, the rewrite's note) for torchvision's ``name``."""
    import torch
    import torchvision

    from edgerobust.workstation.configs import QuantConfig
    from edgerobust.workstation.quantize.int8 import quantize

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    fp32 = work / f"{name}.onnx"
    torch.onnx.export(model, torch.from_numpy(calib[:1]), str(fp32), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    plain, s2d = work / f"{name}-plain.onnx", work / f"{name}-s2d.onnx"
    quantize(fp32, plain, calib, QuantConfig(keep_fp32="none"))
    r = quantize(fp32, s2d, calib, QuantConfig(keep_fp32="none", stem="space-to-depth"))
    return plain, s2d, r.stem


def ratio(plain: Path, s2d: Path, batch: int, rounds: int) -> dict:
    """plain p50 / rewritten p50 per interleaved round at ``batch``: median, min, max."""
    from edgerobust.edge.runtime.sessions import open_session, plan_providers

    profile = bench_profile()
    profile = dataclasses.replace(profile, measure=dataclasses.replace(
        profile.measure, rounds=rounds, max_rounds=rounds, switch_warmup_runs=1))
    plan = plan_providers(profile)
    x = np.random.default_rng(batch).random((batch, 3, 224, 224), dtype=np.float32)
    runners = {}
    for key, path in (("plain", plain), ("s2d", s2d)):
        s = open_session(path, key, profile, plan=plan, isolation="park")
        runners[key] = (lambda sess=s.session, feed={s.input.name: x}: sess.run(None, feed))
    ms = interleaved_rounds(runners, profile.measure)
    return round_ratios(ms["plain"], ms["s2d"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    from edgerobust.edge.runtime.host import host_info

    work = args.work or Path(tempfile.mkdtemp(prefix="er-stem-"))
    work.mkdir(parents=True, exist_ok=True)
    calib = np.random.default_rng(0).random((8, 3, 224, 224), dtype=np.float32)
    batches = [int(b) for b in args.batch.split(",")]
    h = host_info()
    print(f"host: {h.cpu}, {h.cores} cores, ISA {'/'.join(h.isa)}; onnxruntime {h.onnxruntime}; harness profile "
          f"{bench_profile().name}, {args.rounds} interleaved rounds\n")
    print("| model | " + " | ".join(f"plain / rewritten, batch {b}" for b in batches) + " | the rewrite |")
    print("|---|" + "---|" * len(batches) + "---|")
    for name in args.models.split(","):
        plain, s2d, note = build(name, work, calib)
        applied = not note.startswith("space-to-depth stem not applied")
        cells = []
        for b in batches:
            r = ratio(plain, s2d, b, args.rounds) if applied else None
            cells.append(f"{r['median']:.3f} [{r['min']:.2f}-{r['max']:.2f}]" if r else "-")
        print(f"| {name} | " + " | ".join(cells) + f" | {note} |", flush=True)


if __name__ == "__main__":
    main()
