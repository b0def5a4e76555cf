"""Compress timm classifiers (random weights, saved as state_dicts) with `--arch timm:NAME` at sparsity 0.5
with int8, through the CLI: one table row per model, compressed or refused (exit 2, with why).

Not part of the test suite; needs `pip install 'edgerobust[timm]'` (or `pip install timm`).

    python benchmarks/check_timm.py [--models resnet18,efficientnet_b0] [--work DIR] [--jobs 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_torchvision import Row, print_table, run_all, run_one, write_inputs  # noqa: E402

# one representative per family the issue names; input sizes: the smallest these models take as built
MODELS = {"resnet18": 64, "efficientnet_b0": 64, "mobilenetv3_small_100": 64, "convnext_atto": 64,
          "regnetx_002": 64, "deit_tiny_patch16_224": 224, "vit_tiny_patch16_224": 224,
          "swin_tiny_patch4_window7_224": 224, "mobilevit_xxs": 64}


def build_timm(name: str):
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    for m in model.modules():  # zero-initialized heads would make parity vacuous
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.02)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", default=None)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--max-memory", type=float, default=8)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="er-timm-")).resolve()
    work.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> Row:
        size = MODELS.get(name, 224)
        model_path, data_path = write_inputs(work, name, build_timm(name).state_dict(), size, args.n)
        row = run_one(f"timm:{name}", name, model_path, data_path, size, work, args.timeout, args.max_memory)
        model_path.unlink()
        print(row.markdown(), flush=True)
        return row

    print_table(run_all(one, args.models.split(","), args.jobs), "timm")


if __name__ == "__main__":
    main()
