"""Structural pruning with torch-pruning: channels (and head dims) physically removed.

``sparsity`` is the fraction of output channels removed from each prunable layer (or, with
``global_pruning``, across the whole network at the same overall ratio). Each layer keeps
``ceil((1 - s) * c)`` channels rounded up to ``round_to`` (edgerobust.workstation.prune_plan computes the
counts; torch-pruning removes the channels, dependency-aware), so compression grows with ``s``;
the result carries the realized figures per layer and a warning where they fall far from ``s``.
The classifier's output layer is never pruned. Importance criteria are looked up by name in
:data:`CRITERIA`.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from edgerobust import ui
from edgerobust.workstation import memguard
from edgerobust.workstation import prune_plan
from edgerobust.errors import EdgeRobustError, UsageError
from edgerobust.workstation.torchvision_support import shuffle_blocks, tolerant_reshape_mapping, unprunable_layers, windowed


class PruneError(EdgeRobustError):
    """torch-pruning cannot prune this architecture as it is: refused with the cause and what to try."""

# name -> (factory of a torch-pruning Importance, needs gradients, help)
def _forward(model: nn.Module, x):
    return model(x)


def dependency_graph(net: nn.Module, example) -> "tp.DependencyGraph":
    """torch-pruning's dependency graph of ``net``, traced on ``example``.

    The forward function is given explicitly: without one, torch-pruning runs ``model(*inputs)`` in a
    bare ``try/except`` and retries on any exception, which swallows a Ctrl-C that lands during the
    trace (the run then carried on and wrote its bundle).
    """
    return tp.DependencyGraph().build_dependency(net, example_inputs=example, forward_fn=_forward)


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


# name -> how per-layer ratios are chosen (--ratios)
RATIO_MODES: dict[str, str] = {
    "uniform": "the same ratio (--sparsity) for every prunable layer",
    "global": "channels ranked across the whole network at the same overall ratio (torch-pruning's global pruning)",
    "mrs": "module robustness sensitivity: layers whose weights matter most to the adversarial loss are "
           "pruned less, the channel-weighted mean kept at --sparsity (edgerobust.workstation.sensitivity)",
}


@dataclass(frozen=True)
class PruneConfig:
    """How to prune: per-layer channel ratio, criterion by name, rounding, iterative steps.

    ``round_to``: every layer keeps a multiple of it (rounded up, at least one multiple; see
    edgerobust.workstation.prune_plan). ``ratios`` (a key of :data:`RATIO_MODES`) picks how per-layer ratios are chosen;
    ``global_pruning=True`` is the same as ``ratios="global"``. The ``mrs_*`` fields set the
    sensitivity measurement of ``ratios="mrs"`` (see edgerobust.workstation.sensitivity): relative weight
    perturbation bound, ascent steps, the Linf eps of the fixed PGD batch, and how many
    calibration samples it is crafted from.
    """

    sparsity: float = 0.5
    criterion: str = "l2"
    global_pruning: bool = False
    round_to: int = 8
    iterative_steps: int = 1
    seed: int = 0
    ratios: str = "uniform"
    mrs_eps_rel: float = 0.1
    mrs_steps: int = 10
    mrs_attack_eps: float = 8 / 255
    mrs_samples: int = 128
    ignore_layers: tuple[str, ...] = ()  # module names (and their sub-modules) whose output channels stay

    def __post_init__(self) -> None:
        if self.ratios not in RATIO_MODES:
            raise UsageError(f"Unknown --ratios '{self.ratios}'.", fix=f"Use one of: {', '.join(RATIO_MODES)}.")
        if self.global_pruning and self.ratios == "mrs":
            raise UsageError("--global-pruning and --ratios mrs exclude each other.",
                             why="Global pruning ranks channels across layers; mrs sets a ratio per layer.",
                             fix="Pass one of them (--ratios global is the same as --global-pruning).")
        if self.global_pruning or self.ratios == "global":
            object.__setattr__(self, "global_pruning", True)
            object.__setattr__(self, "ratios", "global")
        if not (math.isfinite(self.mrs_eps_rel) and self.mrs_eps_rel > 0):
            raise UsageError(f"mrs_eps_rel must be positive; got {self.mrs_eps_rel}.")
        if self.mrs_steps < 1 or self.mrs_samples < 1:
            raise UsageError(f"mrs_steps and mrs_samples must be >= 1; got {self.mrs_steps}, {self.mrs_samples}.")
        if not (math.isfinite(self.mrs_attack_eps) and 0 < self.mrs_attack_eps <= 1):
            raise UsageError(f"mrs_attack_eps must be in (0, 1]; got {self.mrs_attack_eps}.")
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
    """What pruning realized: params and MACs before/after, one row per layer, and the verdict.

    ``layers`` rows: name, type, before, after (output channels), target (the planned count,
    see edgerobust.workstation.prune_plan), requested_sparsity, realized_sparsity. ``honest`` is False and
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
        raise UsageError(f"--ignore-layers names layers the model lacks: {', '.join(unknown[:5])}.",
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
            fix="Leave the blocks around that operation unpruned (--ignore-layers NAME,...; library: "
                "PruneConfig(ignore_layers=...)).") from exc


def _channels(m: nn.Module) -> int | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.MultiheadAttention):
        return m.embed_dim
    return None


def prunable_layers(net: nn.Module, example: torch.Tensor, num_classes: int) -> dict[str, nn.Module]:
    """The layers torch-pruning prunes, by module name of ``net``: the root of each dependency group.

    Layers coupled in one group (the convs feeding one residual sum) are pruned together with
    the ratio of the group's root, so per-layer ratios are given for these names only.
    """
    net.eval()
    dg = dependency_graph(net, example)
    names = {m: n for n, m in net.named_modules()}
    out: dict[str, nn.Module] = {}
    for group in dg.get_all_groups(ignored_layers=output_layers(net, num_classes),
                                   root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        root = group[0].dep.target.module
        if root in names and _channels(root):
            out[names[root]] = root
    return out


def prune(net: nn.Module, example: torch.Tensor, num_classes: int, config: PruneConfig,
          calib: tuple[np.ndarray, np.ndarray] | None = None,
          normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
          ratios: dict[str, float] | None = None, show_progress: bool = True, warn: bool = True) -> PruneResult:
    """Prune ``net`` in place (it takes normalized input; ``example`` is a normalized batch).

    ``calib`` (pixel-space images, labels) feeds gradient-based criteria such as taylor;
    ``normalize`` maps those pixels to ``net``'s input. ``ratios`` optionally sets per-layer
    ratios by module name, overriding ``config.sparsity`` for those layers. Every layer keeps the
    channel count of :func:`edgerobust.workstation.prune_plan.kept_channels`; ``warn`` prints the result's
    warnings (realized compression far from the requested one) with the layers that deviate.
    """
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    net.eval()
    macs0, params0 = count(net, example)
    before = {name: _channels(m) for name, m in net.named_modules() if _channels(m) is not None}
    imp_factory, needs_grad, _ = CRITERIA[config.criterion]
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
    # channel shuffles: torch-pruning's reshape mapping made safe (edgerobust.workstation.torchvision_support)
    shuffle = tolerant_reshape_mapping(skip_all=windowed(net)) if shuffle_blocks(net) or windowed(net) \
        else contextlib.nullcontext()
    with memguard.guard("pruning", arch=label), _refuse_unsupported(label), shuffle:
        plans = _prune_in_place(net, example, num_classes, config, (calib, normalize), overrides, show_progress)
        net.eval()
        macs1, params1 = count(net, example)  # the pruned model must still run
    rows = prune_plan.layer_rows(net, before, plans, _channels)
    result = PruneResult(params_before=params0, params_after=params1, macs_before=macs0, macs_after=macs1,
                         layers=rows, requested_sparsity=config.sparsity, round_to=config.round_to,
                         ratios=config.ratios)
    result.honest, result.warnings, deviating = prune_plan.check(
        config.sparsity, result.macs_reduction, rows, config.round_to, config.ratios)
    if windowed(net):
        result.warnings.insert(0, f"{label}: only the hidden layers of its MLPs were pruned; torch-pruning cannot "
                                  "map channels through its window partitions, so the residual stream, attention "
                                  "and convolutions keep their channels.")
    if warn:
        _print_warnings(result, deviating)
    result.seconds = time.perf_counter() - t0
    return result


def _prune_in_place(net: nn.Module, example: torch.Tensor, num_classes: int, config: PruneConfig, data,
                    overrides: dict[nn.Module, float], show_progress: bool) -> list[prune_plan.GroupPlan]:
    """Plan every dependency group's kept channels and remove the rest (the body of :func:`prune`);
    ``data`` is (calib, normalize) for gradient criteria."""
    calib, normalize = data
    imp_factory, needs_grad, _ = CRITERIA[config.criterion]
    importance = imp_factory()
    dg = dependency_graph(net, example)
    ignored = output_layers(net, num_classes) + ignored_layers(net, config.ignore_layers) + unprunable_layers(net)
    plans = prune_plan.plan_groups(net, dg, ignored, config.round_to)
    if config.global_pruning:
        if needs_grad:
            _accumulate_grads(net, calib, normalize)
        prune_plan.plan_global(plans, importance, config.sparsity)
    else:
        prune_plan.plan_local(plans, config.sparsity, overrides)
    steps = config.iterative_steps
    bar = ui.task(f"prune {config.criterion} s={config.sparsity:g}", total=steps) if show_progress \
        else contextlib.nullcontext(lambda *a, **k: None)
    with bar as advance:
        for step in range(1, steps + 1):
            if needs_grad:
                _accumulate_grads(net, calib, normalize)
            _prune_step(dg, plans, importance, step / steps, first=step == 1)
            _fix_after_pruning(net)
            net.zero_grad(set_to_none=True)
            advance(1, f"step {step}/{steps}")
    return plans


@torch.no_grad()
def _prune_step(dg, plans: list[prune_plan.GroupPlan], importance, done: float, first: bool) -> None:
    """Remove, in every group, the lowest-ranked channels down to ``done`` of the way to its plan.

    Channels are ranked within each group by ``importance`` (torch-pruning's Importance on the
    group); grouped layers lose the same channels in each channel group, as in torch-pruning.
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
        # the planned group is valid until the first removal anywhere (index mappings change)
        imp = importance(p.group if first else dg.get_pruning_group(p.root, handler, list(range(current))))
        if imp is None or imp.numel() != current:  # not ranked: the plan is missed, and check() says so
            continue
        size = current // g
        imp = imp.detach().float().cpu().view(g, size).mean(0)
        order = torch.argsort(imp)[:n]
        chosen.append((p.root, handler, sorted(int(i) + k * size for k in range(g) for i in order)))
    for root, handler, idxs in chosen:
        group = dg.get_pruning_group(root, handler, idxs)
        if dg.check_pruning_group(group):
            group.prune()


def _print_warnings(result: PruneResult, deviating: list[dict], limit: int = 12) -> None:
    for w in result.warnings:
        ui.warn(w)
    if result.warnings and deviating:
        lines = [f"  {r['name']:<28} {r['before']:>5} -> {r['after']:<5} sparsity requested "
                 f"{r['requested_sparsity']:.2f}, realized {r['realized_sparsity']:.2f}"
                 for r in deviating[:limit]]
        if len(deviating) > limit:
            lines.append(f"  ... and {len(deviating) - limit} more (every layer is in the result and the manifest)")
        ui.warn("layers whose channels differ from the request:\n" + "\n".join(lines))


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
