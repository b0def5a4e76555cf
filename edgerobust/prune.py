"""Structural pruning with torch-pruning: channels (and head dims) physically removed.

``sparsity`` is the fraction of output channels removed from each prunable layer (or, with
``global_pruning``, across the whole network at the same overall ratio). The classifier's output
layer is never pruned. Importance criteria are looked up by name in :data:`CRITERIA`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from . import ui
from .errors import UsageError

# name -> (factory of a torch-pruning Importance, needs gradients, help)
CRITERIA: dict[str, tuple[Callable[[], object], bool, str]] = {
    "l1": (lambda: tp.importance.MagnitudeImportance(p=1), False, "L1 norm of each channel's weights"),
    "l2": (lambda: tp.importance.MagnitudeImportance(p=2), False, "L2 norm of each channel's weights"),
    "taylor": (lambda: tp.importance.TaylorImportance(), True,
               "first-order Taylor |w * dL/dw| on calibration batches (Molchanov et al. 2019)"),
    "bn-scale": (lambda: tp.importance.BNScaleImportance(), False,
                 "|gamma| of the BatchNorm after each channel (Network Slimming)"),
    "random": (lambda: tp.importance.RandomImportance(), False, "random channels: the baseline criterion"),
    "fpgm": (lambda: tp.importance.FPGMImportance(), False, "distance to the geometric median (He et al. 2019)"),
    "lamp": (lambda: tp.importance.LAMPImportance(), False, "layer-adaptive magnitude (Lee et al. 2021)"),
}


@dataclass(frozen=True)
class PruneConfig:
    """How to prune: per-layer channel ratio, criterion by name, rounding, iterative steps."""

    sparsity: float = 0.5
    criterion: str = "l2"
    global_pruning: bool = False
    round_to: int = 8
    iterative_steps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.sparsity, (int, float)) and 0.0 < self.sparsity < 1.0):
            raise UsageError(f"--sparsity must be strictly between 0 and 1; got {self.sparsity}.",
                             why="It is the fraction of channels removed from each layer: 0 removes nothing, 1 everything.",
                             fix="Try --sparsity 0.5.")
        if self.criterion not in CRITERIA:
            raise UsageError(f"Unknown pruning criterion '{self.criterion}'.", fix=f"Use one of: {', '.join(CRITERIA)}.")
        if self.round_to < 1:
            raise UsageError(f"--round-to must be >= 1; got {self.round_to}.")
        if self.iterative_steps < 1:
            raise UsageError(f"--iterative-steps must be >= 1; got {self.iterative_steps}.")


@dataclass
class PruneResult:
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: list[dict] = field(default_factory=list)  # name, type, channels before/after
    seconds: float = 0.0

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(1, self.macs_after)

    @property
    def params_reduction(self) -> float:
        return self.params_before / max(1, self.params_after)


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, params) of ``model`` for one ``example`` batch."""
    was = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was)
    return int(macs), int(params)


def output_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The classifier's output layer(s): the last Linear/Conv whose output size is num_classes."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            last = m
        elif isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes:
            last = m
    if last is None:  # no layer maps to num_classes: keep the last Linear at least
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return linears[-1:]
    return [last]


def _channels(m: nn.Module) -> int | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.MultiheadAttention):
        return m.embed_dim
    return None


def prune(net: nn.Module, example: torch.Tensor, num_classes: int, config: PruneConfig,
          calib: tuple[np.ndarray, np.ndarray] | None = None,
          normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
          ratios: dict[str, float] | None = None) -> PruneResult:
    """Prune ``net`` in place (it takes normalized input; ``example`` is a normalized batch).

    ``calib`` (pixel-space images, labels) feeds gradient-based criteria such as taylor;
    ``normalize`` maps those pixels to ``net``'s input. ``ratios`` optionally sets per-layer
    ratios by module name, overriding ``config.sparsity`` for those layers.
    """
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    net.eval()
    macs0, params0 = count(net, example)
    before = {name: _channels(m) for name, m in net.named_modules() if _channels(m) is not None}

    imp_factory, needs_grad, _ = CRITERIA[config.criterion]
    ignored = output_layers(net, num_classes)
    round_to = config.round_to
    num_heads: dict[nn.Module, int] = {}
    for m in net.modules():
        if isinstance(m, nn.MultiheadAttention):
            num_heads[m] = m.num_heads
            # keep embed_dim divisible by the head count: every head loses the same dims
            round_to = math.lcm(round_to, m.num_heads)
    modules = dict(net.named_modules())
    ratio_dict = None
    if ratios:
        unknown = [n for n in ratios if n not in modules]
        if unknown:
            raise UsageError(f"Per-layer ratios name unknown layers: {', '.join(unknown[:5])}.")
        ratio_dict = {modules[n]: float(r) for n, r in ratios.items()}
    if needs_grad and calib is None:
        raise UsageError(f"The '{config.criterion}' criterion needs data to compute gradients.")

    for p in net.parameters():
        p.requires_grad_(True)
    pruner = tp.pruner.MetaPruner(
        net, example_inputs=example, importance=imp_factory(), pruning_ratio=config.sparsity,
        pruning_ratio_dict=ratio_dict, global_pruning=config.global_pruning,
        iterative_steps=config.iterative_steps, ignored_layers=ignored, round_to=round_to,
        num_heads=num_heads,
    )
    with ui.task(f"prune {config.criterion} s={config.sparsity:g}", total=config.iterative_steps) as advance:
        for step in range(config.iterative_steps):
            if needs_grad:
                _accumulate_grads(net, calib, normalize)
            pruner.step()
            _fix_after_pruning(net)
            net.zero_grad(set_to_none=True)
            advance(1, f"step {step + 1}/{config.iterative_steps}")
    net.eval()
    macs1, params1 = count(net, example)
    layers = []
    for name, m in net.named_modules():
        c = _channels(m)
        if c is not None and name in before:
            layers.append({"name": name, "type": type(m).__name__, "before": before[name], "after": c})
    return PruneResult(params_before=params0, params_after=params1, macs_before=macs0, macs_after=macs1,
                       layers=layers, seconds=time.perf_counter() - t0)


def _accumulate_grads(net: nn.Module, calib: tuple[np.ndarray, np.ndarray], normalize) -> None:
    x, y = calib
    net.zero_grad(set_to_none=True)
    for i in range(0, len(x), 64):
        xb = torch.from_numpy(x[i:i + 64])
        xb = normalize(xb) if normalize is not None else xb
        loss = F.cross_entropy(net(xb), torch.from_numpy(y[i:i + 64]), reduction="sum") / len(x)
        loss.backward()


def _fix_after_pruning(net: nn.Module) -> None:
    """Update attributes that torch-pruning cannot see but forward() relies on."""
    import sys

    vt = sys.modules.get("torchvision.models.vision_transformer")
    if vt is None:  # no torchvision model can be in play
        return
    VisionTransformer = vt.VisionTransformer
    for m in net.modules():
        if isinstance(m, VisionTransformer):
            # torchvision reshapes with self.hidden_dim in _process_input
            m.hidden_dim = m.conv_proj.out_channels
