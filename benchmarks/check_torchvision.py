"""Compress torchvision state_dicts (random weights) at sparsity 0.5 with int8, through the CLI.

Not part of the test suite (vit_b_16 at 224x224 takes minutes on 2 cores). Prints a table of
params/MACs before and after, parity, and int8 agreement for each architecture.

    python benchmarks/check_torchvision.py [--models resnet18,vit_b_16] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

SIZES = {"vit_b_16": 224}  # ViT's position embeddings fix its input size; conv nets take smaller images
DEFAULT_SIZE = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,mobilenet_v3_small,efficientnet_b0,vit_b_16")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--n", type=int, default=48, help="random-labelled images per model")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="er-tv-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        size = SIZES.get(name, DEFAULT_SIZE)
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=10)
        for m in model.modules():  # torchvision zero-initializes some heads (ViT): all-zero logits
            if isinstance(m, torch.nn.Linear) and not m.weight.any():  # would make parity vacuous
                torch.nn.init.normal_(m.weight, std=0.02)
        torch.save(model.state_dict(), work / f"{name}.pt")
        rng = np.random.default_rng(0)
        np.savez(work / f"{name}-data.npz", x=rng.integers(0, 256, (args.n, size, size, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, args.n))
        cmd = [sys.executable, "-m", "edgerobust", "--quiet", "compress", str(work / f"{name}.pt"),
               "--arch", f"torchvision:{name}", "--data", f"npz:{work / f'{name}-data.npz'}",
               "--sparsity", "0.5", "--int8", "--finetune-epochs", "0", "--eval-samples", "16",
               "--calib-samples", "16", "--max-int8-drop", "100", "--out", str(work / f"{name}-bundle"),
               "--overwrite", "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode != 0:
            rows.append((name, size, "FAILED", proc.stderr.strip().splitlines()[-3:], secs))
            continue
        r = json.loads(proc.stdout)
        m = r["metrics"]
        rows.append((name, size, "ok", {
            "params": f"{m['params_before']:,} -> {m['params_after']:,}",
            "MACs": f"{m['macs_before'] / 1e9:.3f}G -> {m['macs_after'] / 1e9:.3f}G ({m['macs_reduction']:.2f}x)",
            "parity base": f"{r['parity']['base']['max_abs_diff']:.1e} / {r['parity']['base']['top1_agreement']:.0%}",
            "parity pruned": f"{r['parity']['pruned']['max_abs_diff']:.1e} / {r['parity']['pruned']['top1_agreement']:.0%}",
            "int8 agreement": f"{m['int8_top1_agreement_with_fp32']:.0%}",
            "qdq nodes": r["quant"]["qdq_nodes"],
        }, secs))
        print(rows[-1], flush=True)
    print("\n| model | input | status | details | seconds |\n|---|---|---|---|---|")
    for name, size, status, details, secs in rows:
        print(f"| {name} | {size} | {status} | {details} | {secs:.0f} |")


if __name__ == "__main__":
    main()
