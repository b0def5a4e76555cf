"""Module robustness sensitivity (MRS): how much each layer's weights matter to adversarial loss.

Module robust criticality (Zhu et al., ICCV 2023, arXiv:2308.16046), used to set per-layer
pruning ratios as in Bai, Tabia and Santos-Rodriguez, "Adaptive Pruning with Module Robustness
Sensitivity" (2024/25): for module *i* with weight ``W``,

    score_i = max_{||delta|| <= eps_rel * ||W||}  L(W + delta; x_adv, y)  -  L(W; x_adv, y)

where ``L`` is the mean cross-entropy on a *fixed* adversarial batch ``x_adv`` (Linf PGD crafted
once, on the unperturbed model) and the norms are Frobenius. The maximum is searched by
projected gradient ascent on ``delta`` alone (every other weight fixed): the first iterate is the
gradient direction scaled to the bound (the first-order solution), then ``steps - 1`` steps of
length ``2.5 * bound / steps`` along the normalized gradient, each projected back onto the ball;
the largest loss seen (``delta = 0`` included) is kept, so the score is >= 0 and at least the
first-order estimate. Only ``weight`` is perturbed (not biases); the weights are restored exactly.

:func:`allocate_ratios` turns scores into per-layer pruning ratios: sensitive layers keep more.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgerobust.workstation.resources.torch_device import model_device, on_device
from edgerobust.errors import UsageError
from edgerobust.workstation.train.finetune import pgd_linf


def module_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, modules: Mapping[str, nn.Module],
                       eps_rel: float = 0.1, steps: int = 10, attack_eps: float = 8 / 255,
                       attack_steps: int = 10, seed: int = 0) -> dict[str, float]:
    """The robust criticality of each module in ``modules`` (name -> module with a ``weight``).

    ``model`` takes [0, 1] pixels (a PixelModel); ``x``, ``y`` are the batch the fixed PGD
    examples (``attack_eps``, ``attack_steps``, seeded by ``seed``) are crafted from. See the
    module docstring for the definition. The model comes back with the same weights (bit for
    bit), train/eval flags and requires_grad flags, and no ``.grad`` written.
    """
    if not (math.isfinite(eps_rel) and eps_rel > 0):
        raise UsageError(f"eps_rel must be positive; got {eps_rel}.")
    if steps < 1 or attack_steps < 1:
        raise UsageError(f"steps and attack_steps must be >= 1; got {steps}, {attack_steps}.")
    for name, m in modules.items():
        if not isinstance(getattr(m, "weight", None), torch.Tensor):
            raise UsageError(f"The module '{name}' has no weight to perturb.")
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    scores: dict[str, float] = {}
    try:
        gen = torch.Generator().manual_seed(seed)
        x_adv = pgd_linf(model, x, y, attack_eps, attack_steps, gen=gen)

        def loss() -> torch.Tensor:
            return F.cross_entropy(model(x_adv), y)

        with torch.no_grad():
            base = float(loss())
        for name, m in modules.items():
            scores[name] = _ascend(m.weight, loss, base, eps_rel, steps)
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)
    return scores


def _ascend(w: torch.Tensor, loss, base: float, eps_rel: float, steps: int) -> float:
    """Projected gradient ascent on a perturbation of ``w`` (in place, restored); max loss - base."""
    w0 = w.detach().clone()
    bound = eps_rel * float(w0.norm())
    step = 2.5 * bound / steps
    best = base
    delta = torch.zeros_like(w0)
    try:
        for i in range(steps):
            w.requires_grad_(True)
            value = loss()
            (g,) = torch.autograd.grad(value, w)
            w.requires_grad_(False)
            if i > 0:
                best = max(best, float(value.detach()))
            gn = float(g.norm())
            if gn == 0 or bound == 0:
                break
            delta = bound * g / gn if i == 0 else delta + step * g / gn
            dn = float(delta.norm())
            if dn > bound:
                delta = delta * (bound / dn)
            with torch.no_grad():
                w.copy_(w0 + delta)
        with torch.no_grad():
            best = max(best, float(loss()))
    finally:
        with torch.no_grad():
            w.copy_(w0)
        w.requires_grad_(False)
    return best - base


def allocate_ratios(scores: Mapping[str, float], target: float, channels: Mapping[str, int], round_to: int = 1,
                    min_ratio: float = 0.0, max_ratio: float = 0.9) -> dict[str, float]:
    """Per-layer pruning ratios from sensitivity scores, keeping the overall target.

    Mapping: with ``s_i = score_i / mean(score)``, ``ratio_i = clip(k / (1 + s_i), min_ratio,
    max_ratio)``, and ``k`` is found by bisection so that the channel-weighted mean
    ``sum(c_i * ratio_i) / sum(c_i)`` equals ``target``. A layer of average sensitivity is
    pruned half as hard as one of zero sensitivity, and more sensitive layers less (monotone;
    the ``+1`` keeps a near-zero score from taking everything). Equal scores give the uniform
    ratio. Then each layer's kept channels are snapped to a multiple of ``round_to`` (at
    least ``round_to``, as torch-pruning keeps them), and the snapped ratios are nudged one
    ``round_to`` block at a time (least sensitive layers first for more pruning, most
    sensitive first for less) while that brings the weighted mean closer to ``target``.
    """
    names = list(scores)
    if not names:
        return {}
    missing = [n for n in names if n not in channels]
    if missing:
        raise UsageError(f"No channel count for layer(s) {', '.join(missing[:5])}.")
    if not (0 <= min_ratio <= target <= max_ratio < 1):
        raise UsageError(f"The target ratio {target:g} must lie within [min_ratio, max_ratio] = "
                         f"[{min_ratio:g}, {max_ratio:g}] (and max_ratio < 1).")
    vals = [max(float(scores[n]), 0.0) for n in names]
    if not all(math.isfinite(v) for v in vals):
        raise UsageError("Sensitivity scores must be finite numbers.")
    c = [int(channels[n]) for n in names]
    total = sum(c)
    mean = sum(vals) / len(vals)
    w = [1.0 / (1.0 + (v / mean if mean > 0 else 0.0)) for v in vals]

    def weighted(k: float) -> float:
        return sum(ci * min(max(k * wi, min_ratio), max_ratio) for ci, wi in zip(c, w)) / total

    lo, hi = 0.0, max_ratio / min(w) + 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if weighted(mid) < target else (lo, mid)
    ratios = [min(max(hi * wi, min_ratio), max_ratio) for wi in w]
    if round_to <= 1:
        return dict(zip(names, ratios))

    # snap kept channels to multiples of round_to
    kept = []
    for ci, r in zip(c, ratios):
        k = max(round_to, int(round(ci * (1 - r) / round_to)) * round_to) if ci >= round_to else ci
        kept.append(min(k, ci))

    def floor_kept(ci: int) -> int:  # the fewest channels max_ratio allows, as a multiple of round_to
        return max(round_to, math.ceil(ci * (1 - max_ratio) / round_to) * round_to)

    def err(kp: list[int]) -> float:
        return sum(ci - k for ci, k in zip(c, kp)) / total - target

    by_sensitivity = sorted(range(len(names)), key=lambda i: vals[i])
    while True:
        e = err(kept)
        order = by_sensitivity if e < 0 else by_sensitivity[::-1]
        move = -round_to if e < 0 else round_to  # prune more (fewer kept) or less
        for i in order:
            k = kept[i] + move
            if c[i] < round_to or k < floor_kept(c[i]) or k > c[i] or (move > 0 and k > c[i]):
                continue
            trial = kept.copy()
            trial[i] = k
            if abs(err(trial)) < abs(e) - 1e-12:
                kept = trial
                break
        else:
            break
    # exact fractions: edgerobust.workstation.prune.plan.kept_channels(c, r, round_to) gives back ``kept``
    return {n: 1 - k / ci if k < ci else 0.0 for n, ci, k in zip(names, c, kept)}


def mrs_ratios(model: nn.Module, net: nn.Module, example: torch.Tensor, num_classes: int, x, y,
               config, device: torch.device | None = None, seed: int = 0) -> tuple[dict[str, float], list[dict]]:
    """Per-layer ratios for ``PruneConfig(ratios="mrs")``: (ratios by name of ``net``, table rows).

    ``model`` is the pixel-space wrapper of ``net``; ``example`` a normalized input batch for
    the dependency graph; ``x``, ``y`` (numpy, pixels) the calibration samples, of which the
    first ``config.mrs_samples`` make the fixed adversarial batch. Rows hold name, score,
    ratio and channels_before.
    """
    from edgerobust.workstation.prune.structural import prunable_layers

    layers = prunable_layers(net, example, num_classes)
    n = min(len(y), config.mrs_samples)
    with on_device(model, device or torch.device("cpu")):  # scored on the device, pruning trials on the CPU
        dev = model_device(model)
        xb, yb = torch.as_tensor(x[:n]).to(dev), torch.as_tensor(y[:n]).to(dev)
        scores = module_sensitivity(model, xb, yb, layers, eps_rel=config.mrs_eps_rel, steps=config.mrs_steps,
                                    attack_eps=config.mrs_attack_eps, seed=seed)
    channels = {k: int(m.weight.shape[0]) for k, m in layers.items()}
    ratios = _match_uniform_macs(net, example, num_classes, scores, channels, config)
    rows = [{"name": k, "score": scores[k], "ratio": ratios[k], "channels_before": channels[k]} for k in layers]
    return ratios, rows


def _match_uniform_macs(net: nn.Module, example: torch.Tensor, num_classes: int, scores: Mapping[str, float],
                        channels: Mapping[str, int], config, iters: int = 12) -> dict[str, float]:
    """Sensitivity-shaped ratios whose pruned model has the MACs of uniform pruning at ``config.sparsity``.

    A channel-weighted target is not a MACs target: sparing the early, high-resolution layers
    costs far more MACs than sparing late ones. So the channel-weighted target passed to
    :func:`allocate_ratios` is found by bisection, pruning a copy of ``net`` for each trial, until
    the MACs match uniform pruning's (the shape of the allocation, sensitive layers pruned less,
    is kept). Comparisons of MRS against uniform are then at equal MACs, as Bai et al. make them.
    """
    import copy
    from dataclasses import replace

    from edgerobust.workstation.prune.structural import count, prune

    plain = replace(config, ratios="uniform", global_pruning=False, criterion="l2", iterative_steps=1)

    def macs_of(ratios: dict[str, float] | None) -> int:
        trial = copy.deepcopy(net)
        prune(trial, example, num_classes, plain, ratios=ratios, show_progress=False, warn=False)
        return count(trial, example)[0]

    target_macs = macs_of(None)
    max_ratio = 0.9
    lo, hi = 0.0, max_ratio
    best = allocate_ratios(scores, config.sparsity, channels, config.round_to)
    best_gap = abs(macs_of(best) - target_macs)
    for _ in range(iters):
        mid = (lo + hi) / 2
        ratios = allocate_ratios(scores, mid, channels, config.round_to, max_ratio=max_ratio)
        macs = macs_of(ratios)
        if abs(macs - target_macs) < best_gap:
            best, best_gap = ratios, abs(macs - target_macs)
        if macs > target_macs:  # too many MACs left: prune more
            lo = mid
        else:
            hi = mid
    return best
