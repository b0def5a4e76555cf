"""A trial's precision, derived from its fp32 point: pruning and fine-tuning run once per
(sparsity, ratios, round_to, fine-tuning), every precision and int8 setting is derived from that model.

- int8: ONNX Runtime static quantization of the point's fp32 model with the trial's calibration and
  layers kept in fp32, the int8 preset and stem of the profile's target (as compress for that
  profile makes it), calibrated on the search's calibration split;
- fp16: onnxconverter-common's conversion (float32 inputs and outputs), with its top-1 agreement with
  fp32 on the evaluation split: below compress's fp16 gate the trial is infeasible, as compress
  would refuse the bundle;
- fp32: the point's model itself.

A derived model is stored under ``OUT/derived/<precision>-<key16>/`` (model.onnx, then derived.json
last with its key and sha256); the key hashes the fp32 file's sha256, the precision and its
settings, the calibration data and the tool version, so a rerun or another trial reuses it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from edgerobust import __version__
from edgerobust.edge.files.atomic import atomic_dir
from edgerobust.edge.files.npzio import sha256_file, write_json
from edgerobust.research.optimize import space as S

DERIVED_TYPE = "edgerobust.research.optimize.derived"


def derive(ctx, fp32_rel: str, p: dict) -> dict:
    """``{"path": rel, "fp16_agreement": float | None}`` for trial ``p`` of the fp32 model at ``fp32_rel``."""
    if p["precision"] == "fp32":
        return {"path": fp32_rel, "fp16_agreement": None}
    root = Path(ctx.out)
    fp32 = root / fp32_rel
    settings = asdict(S.quant(p, ctx.plan)) if p["precision"] == "int8" else {}
    desc = {"tool": __version__, "fp32": sha256_file(fp32), "precision": p["precision"], "settings": settings,
            "data": ctx.shared.data_digest}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()
    folder = root / "derived" / f"{p['precision']}-{key[:16]}"
    stored = _load(folder, key)
    if stored is not None:
        return stored
    with atomic_dir(folder, overwrite=True) as tmp:
        agreement = _make(ctx, fp32, tmp / "model.onnx", p)
        rec = {"key": key, "path": (folder / "model.onnx").relative_to(root).as_posix(),
               "sha256": sha256_file(tmp / "model.onnx"), "fp16_agreement": agreement, "settings": desc}
        write_json(tmp / "derived.json", {"_type": DERIVED_TYPE, "_data": rec})
    return {"path": rec["path"], "fp16_agreement": agreement}


def _load(folder: Path, key: str) -> dict | None:
    try:
        rec = json.loads((folder / "derived.json").read_text())["_data"]
        if rec["key"] != key or sha256_file(folder / "model.onnx") != rec["sha256"]:
            return None
        return {"path": rec["path"], "fp16_agreement": rec["fp16_agreement"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _make(ctx, fp32: Path, out: Path, p: dict) -> float | None:
    import numpy as np

    if p["precision"] == "int8":
        from edgerobust.workstation.quantize.int8 import quantize

        calib_x = np.load(Path(ctx.out) / "calib.npz", allow_pickle=False)["x"]
        quantize(fp32, out, calib_x, S.quant(p, ctx.plan))
        return None
    from edgerobust.workstation.model.export import onnx_logits
    from edgerobust.workstation.quantize.variants import convert_fp16

    convert_fp16(fp32, out)
    a, b = onnx_logits(fp32, ctx.ev.x), onnx_logits(out, ctx.ev.x)
    return float((a.argmax(1) == b.argmax(1)).mean())
