"""Structural pruning with torch-pruning: channels (and head dims) physically removed.

``sparsity`` is the fraction of output channels removed from each prunable layer (or, with
``global_pruning``, across the whole network at the same overall ratio). Each layer keeps
``ceil((1 - s) * c)`` channels rounded up to ``round_to`` (edgerobust.workstation.prune.plan computes the
counts; torch-pruning removes the channels, dependency-aware), so compression grows with ``s``;
the result carries the realized figures per layer and a warning where they fall far from ``s``.
The classifier's output layer is never pruned. Importance criteria are looked up by name in
:data:`CRITERIA`, under the names of :data:`edgerobust.registries.CRITERIA`. The config is
:class:`edgerobust.workstation.configs.PruneConfig`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from edgerobust import events
from edgerobust.workstation.prune import arch as prune_arch, graph as prune_graph, plan as prune_plan
from edgerobust.workstation.prune import trace as prune_trace
from edgerobust.workstation.resources import memguard
from edgerobust.workstation.prune.arch import named_failure
from edgerobust.workstation.prune.arch import check_runs as _check_runs
from edgerobust.errors import EdgeRobustError, UsageError
from edgerobust.workstation.configs import PruneConfig
from edgerobust.workstation.prune.trace import PruneError
from edgerobust.workstation.pipeline.target import DEFAULT_ROUND_TO

logger = logging.getLogger(__name__)

__all__ = ["CRITERIA", "PruneResult", "count", "dependency_graph", "ignored_layers", "output_layers",
           "prunable_layers", "prune"]


def dependency_graph(net: nn.Module, example, progress: prune_trace.Progress | None = None) -> prune_graph.Graph:
    """torch-pruning's dependency graph of ``net``, traced on ``example``, with channel splits mapped
    right and each group walked once (edgerobust.workstation.prune.graph)."""
    return prune_graph.build(net, example, progress)


@contextlib.contextmanager
def _graph_work(label: str, seconds: float | None, show_progress: bool):
    """A :class:`prune_trace.Progress` for the block's graph work, with a status line when ``show_progress``,
    stopped by :func:`memguard.time_limit` once ``seconds`` (:func:`prune_trace.budget_seconds`) are spent."""
    seconds = prune_trace.budget_seconds(seconds)
    bar = events.task(f"dependency graph of {label}", total=None) if show_progress \
        else contextlib.nullcontext(lambda *a, **k: None)
    with bar as advance:
        progress = prune_trace.Progress(label, seconds, report=lambda status: advance(1, status))  # 1 group
        with memguard.time_limit(seconds, progress.error):
            yield progress


# A criterion (named in registries.CRITERIA) -> (factory of a torch-pruning Importance, needs gradients)
CRITERIA: dict[str, tuple[Callable[[], object], bool]] = {
    "l1": (lambda: tp.importance.MagnitudeImportance(p=1), False),
    "l2": (lambda: tp.importance.MagnitudeImportance(p=2), False),
    "taylor": (lambda: tp.importance.TaylorImportance(), True),
    "bn-scale": (lambda: tp.importance.BNScaleImportance(), False),
    "random": (lambda: tp.importance.RandomImportance(), False),
    "fpgm": (lambda: tp.importance.FPGMImportance(), False),
    "lamp": (lambda: tp.importance.LAMPImportance(), False),
}


@dataclass
class PruneResult:
    """What pruning realized: params and MACs before/after, one row per layer, and the verdict.

    ``layers`` rows: name, type, before, after (output channels), target (the planned count,
    see edgerobust.workstation.prune.plan), requested_sparsity, realized_sparsity. ``honest`` is False and
    ``warnings`` says why when the realized MACs reduction is not within
    ``prune_plan.TOLERANCE`` of the ``1 / (1 - requested_sparsity)^2`` asked, or a layer missed
    its planned count.
    """

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    requested_sparsity: float = 0.0
    round_to: int = 1
    ratios: str = "uniform"
    honest: bool = True
    warnings: list[str] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # {name, reason}: groups kept whole (prune_arch.cut_constraint)

    @property
    def macs_reduction(self) -> float:
        return self.macs_before / max(1, self.macs_after)

    @property
    def params_reduction(self) -> float:
        return self.params_before / max(1, self.params_after)

    @property
    def asked_macs_reduction(self) -> float:
        """The MACs reduction the requested sparsity stands for: ``1 / (1 - s)^2``."""
        return 1.0 / (1.0 - self.requested_sparsity) ** 2


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


def ignored_layers(net: nn.Module, names: tuple[str, ...] | list[str]) -> list[nn.Module]:
    """The modules named in ``names`` (a name covers its sub-modules); UsageError for unknown names."""
    modules = dict(net.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise UsageError(f"`ignore_layers` names layers the model lacks: {', '.join(unknown[:5])}.",
                         fix=f"Layer names look like: {', '.join(list(modules)[1:6])}.")
    return [m for n in names for m in modules[n].modules()]


@contextlib.contextmanager
def _refuse_unsupported(arch: str):
    """Turn a failure inside torch-pruning into a PruneError that names the model and the cause."""
    try:
        yield
    except (EdgeRobustError, RecursionError, MemoryError):  # the last two: memguard's to report
        raise
    except Exception as exc:
        raise PruneError(
            f"torch-pruning could not prune {arch}.",
            why=f"{type(exc).__name__} inside the dependency graph: {str(exc)[:200]}. The model holds an "
                "operation whose channel mapping torch-pruning does not know.",
            fix="Leave the blocks around that operation unpruned: name them in `ignore_layers`.") from exc


def _channels(m: nn.Module) -> int | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.MultiheadAttention):
        return m.embed_dim
    return None


def prunable_layers(net: nn.Module, example: torch.Tensor, num_classes: int,
                    graph_seconds: float | None = None) -> dict[str, nn.Module]:
    """The layers torch-pruning prunes, by module name of ``net``: the root of each dependency group.

    Layers coupled in one group (the convs feeding one residual sum) are pruned together with
    the ratio of the group's root, so per-layer ratios are given for these names only.
    ``graph_seconds``: the time budget of the graph work (:func:`prune_trace.budget_seconds`).
    """
    net.eval()
    out: dict[str, nn.Module] = {}
    ignored = output_layers(net, num_classes) + prune_arch.unprunable_layers(net)
    with _graph_work(type(net).__name__, graph_seconds, False) as progress, prune_arch.reshape_context(net):
        dg = dependency_graph(net, example, progress)
        for plan in prune_plan.plan_groups(net, dg, ignored, 1, _constraint(net, dg)):
            if not plan.kept_because and _channels(plan.root):
                out[plan.name] = plan.root
    return out


def _constraint(net: nn.Module, dg):
    return lambda group, channels: prune_arch.cut_constraint(net, dg, group, channels)


def prune(net: nn.Module, example: torch.Tensor, num_classes: int, config: PruneConfig,
          calib: tuple[np.ndarray, np.ndarray] | None = None,
          normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
          ratios: dict[str, float] | None = None, show_progress: bool = True, warn: bool = True,
          seed: int = 0, graph_seconds: float | None = None) -> PruneResult:
    """Prune ``net`` in place (it takes normalized input; ``example`` is a normalized batch).

    ``calib`` (pixel-space images, labels) feeds gradient-based criteria such as taylor;
    ``normalize`` maps those pixels to ``net``'s input. ``ratios`` optionally sets per-layer
    ratios by module name, overriding ``config.sparsity`` for those layers. Every layer keeps the
    channel count of :func:`edgerobust.workstation.prune.plan.kept_channels`; ``warn`` prints the result's
    warnings (realized compression far from the requested one) with the layers that deviate.
    ``seed`` seeds random choices (the random criterion). ``config.round_to`` None keeps
    multiples of :data:`DEFAULT_ROUND_TO`. ``graph_seconds`` bounds the time of the dependency-graph
    work (:func:`edgerobust.workstation.prune.trace.budget_seconds`): past it, a PruneError names the
    layer whose group it was collecting. Layers that must keep their channels (edgerobust.workstation.prune.arch)
    are kept and named in the result's warnings.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if config.round_to is None:
        config = dataclasses.replace(config, round_to=DEFAULT_ROUND_TO)
    net.eval()
    macs0, params0 = count(net, example)
    before = {name: _channels(m) for name, m in net.named_modules() if _channels(m) is not None}
    imp_factory, needs_grad = CRITERIA[config.criterion]
    if needs_grad and calib is None:
        raise UsageError(f"The '{config.criterion}' criterion needs data to compute gradients.")
    modules = dict(net.named_modules())
    unknown = [n for n in (ratios or {}) if n not in modules]
    if unknown:
        raise UsageError(f"Per-layer ratios name unknown layers: {', '.join(unknown[:5])}.")

    for p in net.parameters():
        p.requires_grad_(True)
    label = type(net).__name__
    overrides = {modules[n]: float(r) for n, r in (ratios or {}).items()}
    # channel shuffles, window partitions, fused attention: reshape mappings made safe (prune_arch)
    with memguard.guard("pruning", arch=label), _refuse_unsupported(label), prune_arch.reshape_context(net):
        plans = _prune_in_place(net, example, num_classes, config, (calib, normalize), overrides, show_progress,
                                graph_seconds)
        net.eval()
        _check_runs(net, example, plans, label)  # the pruned model must still run
        macs1, params1 = count(net, example)
    rows = prune_plan.layer_rows(net, before, plans, _channels)
    result = PruneResult(params_before=params0, params_after=params1, macs_before=macs0, macs_after=macs1,
                         layers=rows, requested_sparsity=config.sparsity, round_to=config.round_to,
                         ratios=config.ratios)
    result.honest, result.warnings, deviating = prune_plan.check(
        config.sparsity, result.macs_reduction, rows, config.round_to, config.ratios)
    result.kept = [{"name": p.name, "reason": p.kept_because} for p in plans if p.kept_because]
    result.warnings[:0] = _kept_warnings(net, label, result.kept)
    if warn:
        _print_warnings(result, deviating)
    result.seconds = time.perf_counter() - t0
    return result


def _kept_warnings(net: nn.Module, label: str, kept: list[dict], limit: int = 5) -> list[str]:
    """What kept its channels because torch-pruning cannot prune it safely, with the layers named."""
    out = []
    if prune_arch.windowed(net):
        out.append(f"{label}: only the hidden layers of its MLPs were pruned; torch-pruning cannot map channels "
                   "through its window partitions, so the residual stream, attention and convolutions keep their "
                   "channels.")
    elif prune_arch.attention_modules(net):
        names = [n or label for n, _ in prune_arch.attention_modules(net)]
        shown = ", ".join(f"`{n}`" for n in names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                                               else "")
        out.append(f"{label}: the layers inside its {len(names)} attention module(s) ({shown}) keep their channels, "
                   "and so does the residual stream their projections write to; torch-pruning cannot map channels "
                   "through the per-head reshape of a fused qkv projection. The rest of the model was pruned.")
    inside = prune_arch.kept_modules(net)
    if inside:
        kind = type(inside[0][1]).__name__
        shown = ", ".join(f"`{n}`" for n, _ in inside[:limit]) + (f" and {len(inside) - limit} more"
                                                                  if len(inside) > limit else "")
        out.append(f"{label}: the layers inside its {len(inside)} {kind} module(s) ({shown}) keep their channels: "
                   f"it {prune_arch.KEEP_INSIDE[prune_arch.class_key(inside[0][1])]}.")
    if kept:
        shown = "; ".join(f"`{k['name']}`: {k['reason']}" for k in kept[:limit])
        more = f"; and {len(kept) - limit} more (every one is in the result)" if len(kept) > limit else ""
        out.append(f"{label}: {len(kept)} group(s) of coupled layers keep their channels, named by their first "
                   f"layer: {shown}{more}.")
    return out


def _prune_in_place(net: nn.Module, example: torch.Tensor, num_classes: int, config: PruneConfig, data,
                    overrides: dict[nn.Module, float], show_progress: bool,
                    graph_seconds: float | None = None) -> list[prune_plan.GroupPlan]:
    """Plan every dependency group's kept channels and remove the rest (the body of :func:`prune`);
    ``data`` is (calib, normalize) for gradient criteria."""
    calib, normalize = data
    imp_factory, needs_grad = CRITERIA[config.criterion]
    importance = imp_factory()
    ignored = output_layers(net, num_classes) + ignored_layers(net, config.ignore_layers) \
        + prune_arch.unprunable_layers(net)
    label = type(net).__name__
    with _graph_work(label, graph_seconds, show_progress) as progress:
        dg = dependency_graph(net, example, progress)
        plans = prune_plan.plan_groups(net, dg, ignored, config.round_to, _constraint(net, dg))
    if config.global_pruning:
        if needs_grad:
            _accumulate_grads(net, calib, normalize)
        prune_plan.plan_global(plans, importance, config.sparsity)
    else:
        prune_plan.plan_local(plans, config.sparsity, overrides)
    steps = config.iterative_steps
    bar = events.task(f"prune {config.criterion} s={config.sparsity:g}", total=steps) if show_progress \
        else contextlib.nullcontext(lambda *a, **k: None)
    with bar as advance:
        for step in range(1, steps + 1):
            if needs_grad:
                _accumulate_grads(net, calib, normalize)
            with _graph_work(label, graph_seconds, False) as progress:
                if step > 1:  # index mappings hold the sizes traced before the last step
                    dg = dependency_graph(net, example, progress)
                _prune_step(dg, plans, importance, step / steps, first=step == 1)
            try:
                prune_arch.fix_after_pruning(net, example)
            except Exception as exc:
                raise named_failure(exc, net, plans, label) or exc
            net.zero_grad(set_to_none=True)
            advance(1, f"step {step}/{steps}")
    return plans


@torch.no_grad()
def _prune_step(dg, plans: list[prune_plan.GroupPlan], importance, done: float, first: bool) -> None:
    """Remove, in every group, the lowest-ranked channels down to ``done`` of the way to its plan.

    Channels are ranked within each group by ``importance`` (torch-pruning's Importance on the
    group); channels that must go together (the same channel of each part of a grouped convolution
    or an equal split, channels tied by a gate: prune_plan.channel_classes) are ranked by their mean
    and removed together. Every group is collected and ranked on the model as this step found it, then removed
    (:class:`edgerobust.workstation.prune.graph.Remover`).
    """
    chosen = []
    for p in plans:
        handler = dg.get_pruner_of_module(p.root).prune_out_channels
        current = dg.get_out_channels(p.root)
        g = p.channel_groups
        target = p.channels - round((p.channels - p.kept) / g * done) * g
        n = (current - target) // g
        if n <= 0:
            continue
        group = p.group if first else dg.get_pruning_group(p.root, handler, list(range(current)))
        classes = p.classes if first else prune_plan.channel_classes(current, g, getattr(group, "ties", ()))
        imp = importance(group)
        if imp is None or imp.numel() != current or not classes or len(classes[0]) != g:
            continue  # not ranked: the plan is missed, and check() says so
        imp = imp.detach().float().cpu()
        order = torch.argsort(torch.stack([imp[c].mean() for c in classes]))[:n]
        chosen.append((group, [i for k in order for i in classes[int(k)]]))
    remover = prune_graph.Remover(dg)
    for group, idxs in chosen:
        remover.prune(group, idxs)


def _print_warnings(result: PruneResult, deviating: list[dict], limit: int = 12) -> None:
    for w in result.warnings:
        logger.warning(w)
    if result.warnings and deviating:
        lines = [f"  {r['name']:<28} {r['before']:>5} -> {r['after']:<5} sparsity requested "
                 f"{r['requested_sparsity']:.2f}, realized {r['realized_sparsity']:.2f}"
                 for r in deviating[:limit]]
        if len(deviating) > limit:
            lines.append(f"  ... and {len(deviating) - limit} more (every layer is in the result and the manifest)")
        logger.warning("layers whose channels differ from the request:\n" + "\n".join(lines))


def _accumulate_grads(net: nn.Module, calib: tuple[np.ndarray, np.ndarray], normalize) -> None:
    x, y = calib
    net.zero_grad(set_to_none=True)
    for i in range(0, len(x), 64):
        xb = torch.from_numpy(x[i:i + 64])
        xb = normalize(xb) if normalize is not None else xb
        loss = F.cross_entropy(net(xb), torch.from_numpy(y[i:i + 64]), reduction="sum") / len(x)
        loss.backward()
