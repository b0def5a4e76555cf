"""Compress torchvision classifiers (random weights, saved as state_dicts) at sparsity 0.5 with int8,
through the CLI, and print one table row per model: compressed (params, MACs, parity), or refused
(exit 2, with why), or anything else (a bug: traceback, kill, timeout).

Not part of the test suite. `--all` runs every one of torchvision.models.list_models() at a small
valid input size (a few seconds to minutes each on 2 cores); the default runs five.

    python benchmarks/check_torchvision.py [--all | --models resnet18,vit_b_16] [--work DIR]

Each model runs in its own process under a wall-time limit (--timeout) and a memory limit
(--max-memory, passed as EDGEROBUST_MAX_MEMORY: edgerobust's own guard stops it with a message).
The shared harness (run_one, print_table) is used by check_timm.py too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Row:
    arch: str
    size: int
    outcome: str  # compressed | refused | FAILED | TIMEOUT
    why: str = ""
    params: str = ""
    macs: str = ""
    parity: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0

    def markdown(self) -> str:
        what = self.outcome + (f": {self.why}" if self.why else "")
        return (f"| {self.arch} | {self.size} | {what} | {self.params} | {self.macs} | {self.parity} | "
                f"{self.seconds:.0f} | {self.peak_mb:.0f} |")


HEADER = ("| architecture | input | outcome | params before -> after | MACs before -> after | parity (pruned) | "
          "seconds | peak MB |\n|---|---|---|---|---|---|---|---|")


def write_inputs(work: Path, name: str, state: dict, size: int, n: int) -> tuple[Path, Path]:
    import torch

    model_path, data_path = work / f"{name}.pt", work / f"{name}-data.npz"
    torch.save(state, model_path)
    rng = np.random.default_rng(0)
    np.savez(data_path, x=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), y=rng.integers(0, 10, n))
    return model_path, data_path


def run_one(arch: str, name: str, model_path: Path, data_path: Path, size: int, work: Path, timeout: float,
            max_memory_gb: float) -> Row:
    """Compress one model through the CLI in a child process; the row records what a user would see."""
    out = work / f"{name}-bundle"
    cmd = [sys.executable, "-m", "edgerobust", "--quiet", "compress", str(model_path), "--arch", arch,
           "--data", f"npz:{data_path}", "--sparsity", "0.5", "--int8", "--finetune-epochs", "0",
           "--eval-samples", "16", "--calib-samples", "16", "--max-int8-drop", "100", "--min-int8-agreement", "0", "--max-prune-drop", "100",
           "--normalize", "imagenet", "--allow-weak-base", "--attacks", "none", "--out", str(out),
           "--overwrite", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEROBUST_MAX_MEMORY": f"{max_memory_gb}G"}
    t0 = time.perf_counter()
    with open(work / f"{name}.stdout", "w") as fo, open(work / f"{name}.stderr", "w") as fe:
        # cwd: ONNX Runtime's shape inference leaves temporary files in the current folder
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, start_new_session=True, cwd=work)
        status, usage, timed_out = None, None, False
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
                break
            rss = _rss_gb(proc.pid)
            if time.perf_counter() - t0 > timeout or rss > 1.5 * max_memory_gb:  # edgerobust's guard failed
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    row = Row(arch=arch, size=size, outcome="", seconds=time.perf_counter() - t0,
              peak_mb=usage.ru_maxrss / 1024 if usage else 0.0)
    err = (work / f"{name}.stderr").read_text(errors="replace").strip().splitlines()
    if timed_out:
        row.outcome, row.why = "KILLED", f"by the harness: over {timeout:.0f} s or {1.5 * max_memory_gb:g} GB"
    elif proc.returncode == 0:
        try:
            _fill_compressed(row, json.loads((work / f"{name}.stdout").read_text()))
        except (ValueError, KeyError) as exc:
            row.outcome, row.why = "FAILED", f"exit 0 but --json output unreadable: {exc}"
    elif proc.returncode == 2:
        row.outcome, row.why = "refused", _first_message_line(err)
    else:
        row.outcome, row.why = "FAILED", f"exit {proc.returncode}: " + " / ".join(err[-2:])[:200]
    return row


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(ln.split()[1]) / 2**20 for ln in f if ln.startswith("VmRSS:")), 0.0)
    except OSError:
        return 0.0


def _first_message_line(err: list[str]) -> str:
    """The refusal as a person reads it: the 'error:' line and its 'why:', on one line."""
    text = " ".join(ln.strip() for ln in err)
    at = text.find("error:")
    text = text[at + len("error:"):] if at >= 0 else text
    return " ".join(text.split("fix:")[0].split())[:260]


def _fill_compressed(row: Row, r: dict) -> None:
    m, par = r["metrics"], r["parity"].get("pruned") or {}
    row.outcome = "compressed"
    row.params = f"{m['params_before'] / 1e6:.2f}M -> {m['params_after'] / 1e6:.2f}M"
    row.macs = f"{m['macs_before'] / 1e6:.1f}M -> {m['macs_after'] / 1e6:.1f}M ({m['macs_reduction']:.2f}x)"
    row.parity = f"{par.get('max_abs_diff', float('nan')):.1e} / {par.get('top1_agreement', 0):.0%}"
    exporter = (r.get("metrics") or {}).get("onnx_exporter") or {}
    used = sorted({e for e in (exporter.values() if isinstance(exporter, dict) else [exporter]) if e})
    if used and used != ["torchscript"]:
        row.why = f"exported with the {'/'.join(used)} exporter"


def run_all(one, names: list[str], jobs: int) -> list[Row]:
    """``one(name)`` for every name, ``jobs`` at a time; rows in the order of ``names``."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, names))


def print_table(rows: list[Row], title: str) -> None:
    done = sum(r.outcome == "compressed" for r in rows)
    refused = sum(r.outcome == "refused" for r in rows)
    print(f"\n{title}: {done} of {len(rows)} compressed, {refused} refused with a message, "
          f"{len(rows) - done - refused} other\n")
    print(HEADER)
    for r in rows:
        print(r.markdown())


# ---------------------------------------------------------------------------------------------
# torchvision

DEFAULT_SIZE = 64
SIZES = {"inception_v3": 96,  # its stem needs at least 75 px
         "maxvit_t": 224,  # its 7x7 partitions need 224 px
         "vit_h_14": 56}  # 14 px patches
HEAVY = {"regnet_y_128gf", "vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_x_32gf", "regnet_y_16gf",
         "regnet_x_16gf", "efficientnet_b7", "efficientnet_v2_l", "vgg19_bn", "vgg19", "vgg16_bn", "vgg16",
         "resnext101_64x4d", "wide_resnet101_2", "resnext101_32x8d", "convnext_large", "swin_v2_b", "swin_b", "maxvit_t"}
VIT_SIZE = 64  # ViTs are built at this image_size: the state_dict's position embedding records it


def build_torchvision(name: str, size: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"image_size": size} if name.startswith("vit_") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)
    for m in model.modules():  # torchvision zero-initializes some heads (ViT): all-zero logits
        if isinstance(m, torch.nn.Linear) and not m.weight.any():  # would make parity vacuous
            torch.nn.init.normal_(m.weight, std=0.02)
    return model


def main() -> None:
    import argparse
    import tempfile

    import torchvision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,mobilenet_v3_small,efficientnet_b0,vit_b_16")
    ap.add_argument("--all", action="store_true", help="every classifier of torchvision.models.list_models()")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--n", type=int, default=48, help="random-labelled images per model")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model")
    ap.add_argument("--max-memory", type=float, default=8, help="GB per model (edgerobust's guard)")
    ap.add_argument("--jobs", type=int, default=1, help="models compressed at the same time")
    args = ap.parse_args()
    names = torchvision.models.list_models(module=torchvision.models) if args.all else args.models.split(",")
    names = sorted(names, key=lambda n: n in HEAVY)  # the largest last: the table fills with the rest first
    work = Path(args.work or tempfile.mkdtemp(prefix="er-tv-")).resolve()
    work.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> Row:
        size = SIZES.get(name, VIT_SIZE if name.startswith("vit_") else DEFAULT_SIZE)
        model = build_torchvision(name, size)
        model_path, data_path = write_inputs(work, name, model.state_dict(), size, args.n)
        del model
        row = run_one(f"torchvision:{name}", name, model_path, data_path, size, work, args.timeout, args.max_memory)
        model_path.unlink()
        print(row.markdown(), flush=True)
        return row

    print_table(run_all(one, names, args.jobs), "torchvision")


if __name__ == "__main__":
    main()
