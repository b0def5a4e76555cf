"""How many channels each prunable layer keeps: the rounding rule, the plan per dependency group,
and the check of what pruning realized against what was asked.

The rule (:func:`kept_channels`): a layer of ``c`` output channels pruned at sparsity ``s`` keeps
``ceil((1 - s) * c)`` channels, rounded *up* to a multiple of ``round_to``, never fewer than
``round_to`` and never more than ``c``. Kept counts therefore never rise with ``s``, and neither do
MACs. torch-pruning 1.6's own ``round_to`` rounds the kept count *down*; where that reaches 0 it
plans to remove every channel, its over-pruning check then drops the group, and the layer is not
pruned at all (digits-cnn at s=0.9, round_to 8: 1.18x fewer MACs). So the plan is computed here,
per dependency group of torch-pruning's DependencyGraph, and edgerobust.workstation.prune.structural removes exactly the
planned number of channels from each group (ranked by the criterion), dependency-aware.

Groups whose channels must stay divisible (grouped convolutions, GroupNorm, the embedding of a
``nn.MultiheadAttention``) round to the least common multiple of ``round_to`` and that divisor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

# Pruning is honest when the realized MACs reduction lies within this factor of the 1/(1-s)^2 that
# the sparsity asks for (below TOLERANCE times it, or above it divided by TOLERANCE, is a warning).
TOLERANCE = 0.7
# A layer row deviates when its realized sparsity is this far from the requested one.
ROW_TOLERANCE = 0.05


def kept_channels(channels: int, sparsity: float, multiple: int = 1) -> int:
    """``ceil((1 - sparsity) * channels)`` rounded up to ``multiple``, within ``[multiple, channels]``."""
    raw = math.ceil((1.0 - sparsity) * channels - 1e-6)  # the tolerance absorbs float noise: 0.3 * 10
    return _snap(raw, channels, multiple)


def _snap(raw: int, channels: int, multiple: int) -> int:
    return min(channels, max(multiple, -(-raw // multiple) * multiple))


@dataclass
class GroupPlan:
    """One dependency group: its root layer, channel count, rounding multiple and planned kept count."""

    name: str
    root: nn.Module
    channels: int
    channel_groups: int
    multiple: int
    group: object = field(repr=False)  # the torch-pruning Group
    members: list[nn.Module] = field(default_factory=list, repr=False)  # layers whose outputs it prunes
    classes: list[list[int]] = field(default_factory=list, repr=False)  # root channels removed together
    requested: float = 0.0
    kept: int = 0
    kept_because: str = ""  # set: the group keeps all its channels, for this reason (prune_arch.cut_constraint)


def plan_groups(net: nn.Module, dg, ignored: list[nn.Module], round_to: int, constraint=None) -> list[GroupPlan]:
    """A plan (kept = channels) for every group of ``dg`` rooted at a conv, linear or LSTM layer, as
    torch-pruning's MetaPruner enumerates them; groups holding an ``ignored`` layer's outputs are left out.

    ``constraint(group, channels) -> (reason, parts)``: a reason sets ``kept_because`` (the group keeps
    its channels); ``parts`` > 1 makes the group's channels stay in that many equal parts (a split
    into equal chunks), like a grouped convolution's.
    """
    import torch_pruning as tp

    names = {m: n for n, m in net.named_modules()}
    skip = [s for m in ignored for s in m.modules()]
    plans = []
    for group in dg.get_all_groups(ignored_layers=skip, root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR,
                                                                             tp.ops.TORCH_LSTM]):
        root = group[0].dep.target.module
        channels = dg.get_out_channels(root)
        if root not in names or not channels:
            continue
        multiple, g, members = round_to, 1, []
        for dep, _ in group:
            m = dep.target.module
            out = dg.is_out_channel_pruning_fn(dep.handler)
            if out and m in names:
                members.append(m)
            if isinstance(m, nn.MultiheadAttention):  # its out_proj is pruned with it, off the graph
                multiple = math.lcm(multiple, m.num_heads)
                if out:
                    members.append(m.out_proj)
            if isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels:
                continue  # depthwise: pruned channel by channel
            pruner = dg.get_pruner_of_module(m)
            if pruner is not None:
                g = max(g, pruner.get_out_channel_groups(m) if out else pruner.get_in_channel_groups(m))
        reason, parts = constraint(group, int(channels)) if constraint is not None else ("", 1)
        classes = channel_classes(int(channels), math.lcm(g, parts), getattr(group, "ties", ()))
        if classes is None:
            reason = reason or ("its channels are tied to each other in sets of different sizes (a channel follows "
                                "several of the first layer's), which pruning cannot remove evenly")
            classes = [[c] for c in range(int(channels))]
        g = len(classes[0])
        plans.append(GroupPlan(names[root], root, int(channels), g, math.lcm(multiple, g), group, members,
                               classes=classes, kept=int(channels), kept_because=reason or ""))
    return plans


def channel_classes(channels: int, parts: int, ties=()) -> list[list[int]] | None:
    """The root's channels as sets removed together, all of one size, or None where the sizes differ.

    Channel ``i`` of each of ``parts`` equal parts goes together (a grouped convolution, a split into
    equal chunks), and so do the pairs of ``ties`` (prune_graph: one channel reached from two of the
    root's). Without either, every channel is its own set.
    """
    parent = list(range(channels))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    size = channels // parts if parts > 1 and channels % parts == 0 else channels
    pairs = [(i, i + k * size) for k in range(1, channels // size) for i in range(size)]
    for a, b in list(pairs) + [tuple(t) for t in ties]:
        if 0 <= a < channels and 0 <= b < channels:
            parent[find(a)] = find(b)
    sets: dict[int, list[int]] = {}
    for c in range(channels):
        sets.setdefault(find(c), []).append(c)
    classes = sorted(sets.values())
    return classes if len({len(c) for c in classes}) == 1 else None


def plan_local(plans: list[GroupPlan], sparsity: float, overrides: dict[nn.Module, float]) -> None:
    """Each group keeps :func:`kept_channels` at its own ratio (``overrides`` by member layer, else ``sparsity``)."""
    for p in plans:
        s = overrides.get(p.root)
        if s is None:
            s = next((overrides[m] for m in p.members if m in overrides), sparsity)
        if p.kept_because:
            continue
        p.requested = float(s)
        p.kept = kept_channels(p.channels, p.requested, p.multiple)


def plan_global(plans: list[GroupPlan], importance, sparsity: float) -> None:
    """Rank channels across all groups by ``importance``, keep ``ceil((1-s) * total)`` of them, then
    round each group's share up to its multiple (at least one multiple per layer).

    The threshold rises with ``sparsity``, so every group's kept count only falls as it rises.
    """
    scores = []
    for p in plans:
        imp = importance(p.group) if not p.kept_because else None
        if imp is None:
            scores.append(None)
            continue
        imp = imp.detach().float().cpu()
        scores.append(torch.stack([imp[c].mean() for c in p.classes]) if p.channel_groups > 1 else imp)
    ranked = [s for s in scores if s is not None]
    total = sum(len(s) for s in ranked)
    remove = total - math.ceil((1.0 - sparsity) * total - 1e-6)
    thres = torch.cat(ranked).kthvalue(remove).values if ranked and remove > 0 else None
    for p, s in zip(plans, scores):
        if p.kept_because:
            continue
        p.requested = float(sparsity)
        if s is None or thres is None:
            continue
        removed = int((s <= thres).sum()) * p.channel_groups
        p.kept = _snap(p.channels - removed, p.channels, p.multiple)


def layer_rows(net: nn.Module, before: dict[str, int], plans: list[GroupPlan], channels_of) -> list[dict]:
    """One row per layer with channels: name, type, before, after, target, requested and realized sparsity,
    and ``partial`` (it holds only some of its group's channels: its target is its share)."""
    owner = {m: p for p in plans for m in p.members}
    rows = []
    for name, m in net.named_modules():
        c = channels_of(m)
        if c is None or name not in before:
            continue
        p = owner.get(m)
        b = before[name]
        # a layer holding only part of its group's channels (one chunk of a split) loses its share
        partial = p is not None and b != p.channels
        target = b if p is None else (round(b * p.kept / p.channels) if partial else p.kept)
        rows.append({"name": name, "type": type(m).__name__, "before": b, "after": c, "target": target,
                     "requested_sparsity": round(p.requested, 6) if p is not None else 0.0,
                     "realized_sparsity": round(1.0 - c / b, 6) if b else 0.0, "partial": partial})
    return rows


def check(sparsity: float, macs_reduction: float, rows: list[dict], round_to: int,
          mode: str) -> tuple[bool, list[str], list[dict]]:
    """(honest, warnings, deviating rows) for a pruned model.

    Honest: every layer holds its planned channel count and the MACs reduction is within
    :data:`TOLERANCE` of ``1 / (1 - sparsity)^2``. Deviating rows: layers whose realized sparsity
    is more than :data:`ROW_TOLERANCE` from the requested one, or that missed their planned count (a
    ``partial`` row, one chunk of a split group, is judged by its sparsity only: which chunk loses
    which channels follows their importance).
    """
    asked = 1.0 / (1.0 - sparsity) ** 2
    share = macs_reduction / asked
    missed = [r for r in rows if r["after"] != r["target"] and not r.get("partial")]
    off = [r for r in rows if r["requested_sparsity"] > 0
           and abs(r["realized_sparsity"] - r["requested_sparsity"]) > ROW_TOLERANCE]
    deviating = missed + [r for r in off if r not in missed]
    warnings = []
    if missed:
        names = ", ".join(r["name"] for r in missed[:5])
        warnings.append(f"{len(missed)} layer(s) kept other channel counts than planned ({names}): "
                        "a dependency constraint of torch-pruning overrode the plan.")
    if not TOLERANCE <= share <= 1 / TOLERANCE:
        under = [r for r in rows if r["realized_sparsity"] < r["requested_sparsity"] - 1e-6]
        why = (f"{len(under)} layer(s) keep more than (1-s) of their channels, as counts are rounded up to whole "
               f"channels and to multiples of {round_to} (at least {round_to} per layer)"
               + ("; `round_to` 1 prunes closer to s" if round_to > 1 else "")) if under else \
            ("global pruning spreads s unevenly over the layers" if mode == "global" else
             "layers that are never pruned (the input channels of the first layer, the classifier) "
             "do not shrink quadratically")
        warnings.append(f"s={sparsity:g} asks for about {asked:.3g}x fewer MACs; the pruned model has "
                        f"{macs_reduction:.3g}x fewer ({share:.0%} of that): {why}. Quote the realized "
                        "figures, not s.")
    return not warnings, warnings, deviating
