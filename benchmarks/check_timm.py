"""Compress timm classifiers (random weights, saved as state_dicts) with `--arch timm:NAME` at sparsity 0.5
with int8, through the CLI: one table row per model, compressed or refused (exit 2, with why). The
default runs the 30 families of MODELS; the table in docs/benchmarks.md ("Model coverage") is its output.

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

# One representative per family, 30 in all, with its input size: 64 px where the model takes it as
# built, 224 where it was built for one resolution (position embeddings, attention biases, windows).
MODELS = {
    # CNNs
    "resnet18": 64, "efficientnet_b0": 64, "mobilenetv3_small_100": 64, "convnext_atto": 64, "regnetx_002": 64,
    "mobileone_s0": 64, "densenet121": 64, "dla34": 64, "hrnet_w18_small": 64, "resnest14d": 64,
    # splits, slices and stored sizes (issue 22: refused, or walked for hours)
    "cspresnet50": 64, "res2net50_14w_8s": 64, "mixnet_s": 64, "rexnet_100": 64, "ghostnet_100": 64, "dpn68": 64,
    "fasternet_t0": 64, "inception_next_atto": 64,
    # MetaFormers: layer scales, 1x1-convolution MLPs, pooling or attention
    "poolformer_s12": 64, "efficientformer_l1": 224, "fastvit_t8": 64, "edgenext_xx_small": 64,
    # attention
    "deit_tiny_patch16_224": 224, "vit_tiny_patch16_224": 224, "swin_tiny_patch4_window7_224": 224,
    "mobilevit_xxs": 64, "levit_128s": 224, "efficientvit_b0": 64, "tiny_vit_5m_224": 224, "pvt_v2_b0": 64,
}


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
