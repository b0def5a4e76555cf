"""White-box adversarial sets: crafted on the pruned model itself, fp32 and simulated int8.

Transfer sets (``adv/<name>.npz``, ``"source": "transfer"``) are crafted on the base model and
replayed against the deployed one. White-box sets are crafted on the model that is measured:

- ``whitebox-fp32``: on the pruned torch model (what ``model_fp32.onnx`` holds, or
  ``model.onnx`` without int8);
- ``whitebox-int8``: on an int8 *simulation* of ``model.onnx``: every Conv/Linear that ONNX
  Runtime quantizes gets fake-quantized weights (per-output-channel symmetric int8, range
  [-127, 127]) and a fake-quantized input activation (per tensor; uint8 asymmetric for the
  ``cpu`` target, int8 symmetric for ``tensorrt``, as in edgerobust.workstation.quantize.int8), with min/max
  ranges calibrated on the calibration split. Rounding uses a straight-through estimator
  (the forward pass rounds, the backward pass is the identity), so gradient attacks run on it.
  Layers that ``QuantConfig.keep_fp32`` keeps in fp32 stay fp32 here too. It does not model
  ONNX Runtime's quantized outputs of Add/activation nodes, so it approximates the int8
  model; compress records its top-1 agreement with ``model.onnx`` on the eval set as the
  metric ``int8_sim_top1_agreement_with_int8``.

Each set's meta holds ``source``, ``target`` (the bundle file of the attacked model) and
``target_sha256``; the audit checks white-box sets against that hash, not the base model's.
Files: ``adv/whitebox-fp32/<name>.npz`` and ``adv/whitebox-int8/<name>.npz``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgerobust.workstation.attacks import AttackSpec, craft_set
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.workstation.resources.torch_device import model_device
from edgerobust.errors import UsageError
from edgerobust.workstation.quantize.int8 import TARGETS
from edgerobust.workstation.configs import QuantConfig

SOURCES = ("transfer", "whitebox-fp32", "whitebox-int8")


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward ``q``, backward identity (straight-through)."""
    return x + (q - x).detach()


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 (range [-127, 127]) fake quantization with STE."""
    amax = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (w.ndim - 1)))
    scale = amax / 127.0
    return _ste(w, torch.clamp(torch.round(w / scale), -127, 127) * scale)


class FakeQuantLayer(nn.Module):
    """A Conv/Linear with int8 fake-quantized weights and input activation (STE gradients).

    ``observe`` mode records the input's min/max (calibration); afterwards the input is
    quantized per tensor with that range: uint8 asymmetric (``symmetric=False``) or int8
    symmetric.
    """

    def __init__(self, layer: nn.Module, symmetric: bool):
        super().__init__()
        if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            raise UsageError(f"Cannot fake-quantize a {type(layer).__name__}.")
        self.layer = layer
        self.symmetric = symmetric
        self.observe = True
        dev = layer.weight.device
        self.register_buffer("lo", torch.tensor(float("inf"), device=dev))
        self.register_buffer("hi", torch.tensor(float("-inf"), device=dev))

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = float(torch.clamp(self.lo, max=0.0)), float(torch.clamp(self.hi, min=0.0))
        if self.symmetric:
            scale = max(abs(lo), abs(hi), 1e-12) / 127.0
            return _ste(x, torch.clamp(torch.round(x / scale), -127, 127) * scale)
        scale = max(hi - lo, 1e-12) / 255.0
        zp = round(-lo / scale)
        return _ste(x, (torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            with torch.no_grad():
                self.lo.copy_(torch.minimum(self.lo, x.min()))
                self.hi.copy_(torch.maximum(self.hi, x.max()))
            return self.layer(x)
        xq = self._quant_input(x)
        w = fake_quant_weight(self.layer.weight)
        if isinstance(self.layer, nn.Linear):
            return F.linear(xq, w, self.layer.bias)
        return self.layer._conv_forward(xq, w, self.layer.bias)


def _compute_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) for every Conv/Linear, in registration order."""
    out = []
    for parent in model.modules():
        for attr, child in parent.named_children():
            if isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                out.append((parent, attr, child))
    return out


def int8_simulation(model: nn.Module, calib_x: np.ndarray, quant: QuantConfig | None = None,
                    batch_size: int = 256) -> nn.Module:
    """A fake-quantized copy of the pixel-space ``model`` (eval mode), calibrated on ``calib_x``.

    ``quant`` supplies the target (activation symmetry) and ``keep_fp32`` (which compute
    layers, first/last in order, stay fp32). ``model`` itself is not changed.
    """
    quant = quant or QuantConfig()
    if quant.mode != "static":
        raise UsageError("The int8 simulation models static int8 (calibrated activations) only.",
                         fix="Use `int8_mode` static with `whitebox`, or drop `whitebox`.")
    sim = copy.deepcopy(model).eval()
    layers = _compute_layers(sim)
    if not layers:
        raise UsageError("The model has no Conv/Linear layer to quantize.")
    keep = set()
    if quant.keep_fp32 in ("first", "ends"):
        keep.add(0)
    if quant.keep_fp32 in ("last", "ends"):
        keep.add(len(layers) - 1)
    symmetric = TARGETS[quant.int8_target or "cpu"].symmetric_activations
    wrapped = []
    for i, (parent, attr, layer) in enumerate(layers):
        if i in keep:
            continue
        fq = FakeQuantLayer(layer, symmetric)
        setattr(parent, attr, fq)
        wrapped.append(fq)
    dev = model_device(sim)
    with torch.no_grad():
        for i in range(0, len(calib_x), batch_size):
            sim(torch.from_numpy(np.ascontiguousarray(calib_x[i:i + batch_size], dtype=np.float32)).to(dev))
    for fq in wrapped:
        fq.observe = False
    return sim


def whitebox_sets(pruned_pixel_model: nn.Module, calib_x: np.ndarray, evalset: EvalSet, specs: list[AttackSpec],
                  int8: bool, *, quant: QuantConfig | None = None, fp32_sha256: str = "", int8_sha256: str = "",
                  eval_sha256: str = "", fp32_target: str = "model_fp32.onnx", int8_target: str = "model.onnx",
                  batch_size: int = 256) -> list[AdvSet]:
    """Craft every spec white-box on the pruned fp32 model and, with ``int8``, on its int8 simulation.

    Returns the fp32 sets, then the int8 sets. Each set's meta: ``source`` (whitebox-fp32 /
    whitebox-int8), ``name`` (``<source>/<spec name>``), ``target`` (``fp32_target`` or
    ``int8_target``: the int8 file, model.onnx when int8 is deployed) and ``target_sha256``; the crafting model's accuracies are
    ``target_accuracy`` / ``target_adv_accuracy`` / ``target_attack_success_rate``.
    """
    if not specs:
        return []
    idx = np.arange(len(evalset.y), dtype=np.int64)
    models = [("whitebox-fp32", pruned_pixel_model, fp32_target, fp32_sha256)]
    if int8:
        models.append(("whitebox-int8", int8_simulation(pruned_pixel_model, calib_x, quant), int8_target,
                       int8_sha256))
    out = []
    for source, model, target, sha in models:
        for spec in specs:
            s = craft_set(model, evalset.x, evalset.y, spec, batch_size=batch_size, idx=idx, eval_sha256=eval_sha256)
            meta = dict(s.meta)
            meta.pop("base_sha256", None)
            for k in ("accuracy", "adv_accuracy", "attack_success_rate"):
                meta[f"target_{k}"] = meta.pop(f"base_{k}")
            meta.update(name=f"{source}/{spec.name}", source=source, target=target, target_sha256=sha)
            out.append(AdvSet(x=s.x, y=s.y, idx=s.idx, meta=meta))
    return out


def write_whitebox_sets(sets: list[AdvSet], adv_dir: Path) -> list[Path]:
    """Save each set as ``adv_dir/<source>/<spec name>.npz``; return the paths."""
    paths = []
    for s in sets:
        folder = Path(adv_dir) / s.meta["source"]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{s.meta['name'].split('/', 1)[1]}.npz"
        s.save(path)
        paths.append(path)
    return paths
