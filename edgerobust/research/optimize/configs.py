"""The budget search's config: what to search, under which budget, for which aim. torch-free.

    from edgerobust import OptimizeConfig, PrepareConfig, optimize
    from edgerobust.workstation.attacks.spec import make_specs
    cfg = OptimizeConfig(PrepareConfig("model.pt"), out="opt/digits", profile="laptop-cpu",
                         max_latency_ms=0.5, attacks=make_specs("fgsm,pgd", "8/255"), trials=20)

Exactly one budget: ``max_latency_ms`` (p50 at batch 1 on ``profile``) or ``min_speedup`` (the base's
p50 over the point's, on the same profile). Errors name fields in backticks (edgerobust.cli.flags).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.defaults import DEFAULT_MAX_PRUNE_DROP
from edgerobust.errors import UsageError
from edgerobust.registries import CALIBRATIONS, FINETUNE_MODES, KEEP_FP32, RATIOS, Choice, Registry
from edgerobust.workstation.attacks.spec import attacks_from_config
from edgerobust.workstation.configs import PrepareConfig
from edgerobust.workstation.corrupt.registry import (DEFAULT_CORRUPTIONS, load_corruptions, load_severities,
                                                     parse_corruptions, parse_severities)

AIMS = Registry("aim", [
    Choice("robust", "maximize the per-sample worst-case robust accuracy under the budget, clean accuracy at most "
                     "`max_clean_drop` points below the base"),
    Choice("speed", "minimize the p50 latency under the budget, robust accuracy at most `max_robust_drop` points "
                    "below the reference point's (sparsity 0.5, int8)"),
    Choice("corruption", "maximize the accuracy under common corruptions (pooled over the `corruptions` sets) under "
                         "the budget, clean accuracy at most `max_clean_drop` points below the base"),
])
PRECISIONS = ("int8", "fp16", "fp32")  # the variants derived from one pruned, fine-tuned model
DEFAULT_MAX_ROBUST_DROP = 2.0  # accuracy points


def _positive(name: str, value) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise UsageError(f"`{name}` must be a positive number; got {value!r}.",
                         why="A budget of 0 or less can never be met.")


def _subset(name: str, values, registry_names) -> tuple:
    values = tuple(values)
    bad = [v for v in values if v not in registry_names]
    if bad or not values or len(set(values)) != len(values):
        raise UsageError(f"Unknown, repeated or no `{name}` in {','.join(map(str, values)) or '(none)'}.",
                         fix=f"Use some of: {', '.join(map(str, registry_names))}.")
    return values


@dataclass(frozen=True)
class SearchSpace:
    """The bounds the search draws from. Small by default, so a digits trial takes seconds.

    sparsity: continuous in [``sparsity_min``, ``sparsity_max``]; ``ratios``: names of registries.RATIOS;
    ``round_to``: channel multiples; ``modes``: fine-tuning modes (registries.FINETUNE_MODES) with
    ``epochs_min``..``epochs_max`` epochs and ``adv_steps`` PGD steps for the adversarial ones;
    ``precisions``: some of int8, fp16 and fp32; None (the default): those the profile's runtime runs
    (edgerobust.workstation.quantize.variants.PREFERENCE: int8 and fp32 on a CPU, fp16 too on TensorRT);
    ``calibrations`` and ``keep_fp32``: the int8 settings.
    """

    sparsity_min: float = 0.2
    sparsity_max: float = 0.8
    ratios: tuple[str, ...] = ("uniform", "global", "mrs")
    round_to: tuple[int, ...] = (1, 8)
    modes: tuple[str, ...] = ("standard", "pgd-at", "trades")
    epochs_min: int = 1
    epochs_max: int = 3
    adv_steps: int = 3
    precisions: tuple[str, ...] | None = None
    calibrations: tuple[str, ...] = ("minmax", "percentile")
    keep_fp32: tuple[str, ...] = ("none", "first")

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        lo, hi = self.sparsity_min, self.sparsity_max
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or not 0 < lo <= hi < 1:
            raise UsageError(f"`sparsity_min` and `sparsity_max` must satisfy 0 < min <= max < 1; got {lo!r}, {hi!r}.")
        set_("ratios", _subset("ratios", self.ratios, list(RATIOS)))
        set_("modes", _subset("modes", [FINETUNE_MODES.resolve(m) for m in self.modes], list(FINETUNE_MODES)))
        if self.precisions is not None:
            set_("precisions", _subset("precisions", self.precisions, PRECISIONS))
        set_("calibrations", _subset("calibrations", self.calibrations, list(CALIBRATIONS)))
        set_("keep_fp32", _subset("keep_fp32", self.keep_fp32, list(KEEP_FP32)))
        set_("round_to", tuple(self.round_to))
        if not self.round_to or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in self.round_to):
            raise UsageError(f"`round_to` choices must be integers >= 1; got {self.round_to!r}.")
        for name, v, low in (("epochs_min", self.epochs_min, 0), ("epochs_max", self.epochs_max, self.epochs_min),
                             ("adv_steps", self.adv_steps, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UsageError(f"`{name}` must be an integer >= {low}; got {v!r}.")


@dataclass(frozen=True)
class OptimizeConfig:
    """Everything a budget search needs; validated when built (before torch is imported).

    prepare: the base model and its data, as in compress. out: the search folder (study.db,
    points/, pareto.json, report.html, best/); rerunning into it resumes and extends the study.
    profile: the device profile latency is measured (or, with ``estimate``, predicted) on.
    max_latency_ms / min_speedup: the budget, exactly one. aim: a key of AIMS. max_clean_drop:
    the clean-accuracy gate of aim robust (points below the base; default the compress gate).
    max_robust_drop: the robustness gate of aim speed (points below the reference point).
    trials: how many trials the study holds when done (a resumed study runs only the missing ones).
    attacks: the AttackSpecs crafted once on the base and replayed on every point (as compress reads them).
    estimate: a calibration file (``edgerobust calibrate``) of a device not at hand: latency is
    predicted there with its band and the budget is checked against the band's upper edge.
    corruptions / corruption_severities: common corruptions (as compress reads them) made once from the
    evaluation rows and replayed on every point: its accuracy pooled over the sets is recorded, and is
    what aim corruption maximizes. None (the default): the default subset for aim corruption, none otherwise.
    latency_rounds: interleaved rounds of each trial's measurement. halving: aim robust scores a point
    on a quarter of the evaluation rows first (at least 64) and stops it there when Optuna's
    WilcoxonPruner finds it worse than the best feasible point on the same rows (p < 0.05); False
    scores every point on every row. space: the search space.
    """

    prepare: PrepareConfig
    out: str | Path
    profile: str = "laptop-cpu"
    max_latency_ms: float | None = None
    min_speedup: float | None = None
    aim: str = "robust"
    max_clean_drop: float = DEFAULT_MAX_PRUNE_DROP
    max_robust_drop: float = DEFAULT_MAX_ROBUST_DROP
    trials: int = 20
    attacks: tuple = field(default=(), metadata={"load": attacks_from_config})
    estimate: str | Path | None = None
    latency_rounds: int = 5
    halving: bool = True
    corruptions: tuple | None = field(default=None, metadata={"load": load_corruptions})
    corruption_severities: tuple = field(default=(1, 3, 5), metadata={"load": load_severities})
    space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if isinstance(self.prepare, (str, Path)):
            set_("prepare", PrepareConfig(self.prepare))
        budgets = [b for b in ("max_latency_ms", "min_speedup") if getattr(self, b) is not None]
        if len(budgets) != 1:
            raise UsageError(f"Give exactly one budget, `max_latency_ms` or `min_speedup`; got "
                             f"{' and '.join(f'`{b}`' for b in budgets) if budgets else 'neither'}.",
                             why="The search maximizes one aim under one latency budget.",
                             fix="e.g. `max_latency_ms` 5, or `min_speedup` 2.")
        _positive(budgets[0], getattr(self, budgets[0]))
        set_("aim", AIMS.resolve(str(self.aim).strip().lower()))
        wanted = DEFAULT_CORRUPTIONS if self.corruptions is None and self.aim == "corruption" else self.corruptions
        set_("corruptions", parse_corruptions(wanted))
        set_("corruption_severities", parse_severities(self.corruption_severities))
        if self.aim == "corruption" and not self.corruptions:
            raise UsageError("Aim corruption maximizes accuracy under common corruptions, and `corruptions` is none.",
                             fix="Leave `corruptions` out (the default subset), or name some.")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise UsageError(f"`trials` must be an integer >= 1; got {self.trials!r}.")
        if isinstance(self.latency_rounds, bool) or not isinstance(self.latency_rounds, int) or self.latency_rounds < 1:
            raise UsageError(f"`latency_rounds` must be an integer >= 1; got {self.latency_rounds!r}.")
        for name in ("max_clean_drop", "max_robust_drop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UsageError(f"`{name}` must be a number of accuracy points >= 0; got {v!r}.")
        if self.prepare.model is None:
            raise UsageError("No `model` to optimize.", fix="Give the model file's path.")
        set_("attacks", tuple(self.attacks))
        if not self.attacks:
            raise UsageError("The search needs adversarial sets to score robust accuracy; `attacks` is empty.",
                             fix="Give `attacks`, e.g. fgsm,pgd at `eps` 8/255.")
        if self.estimate is not None and not Path(self.estimate).is_file():
            raise UsageError(f"The `estimate` calibration '{self.estimate}' does not exist.",
                             fix="Give a file written by `edgerobust calibrate`.")
        if not isinstance(self.halving, bool):
            raise UsageError(f"`halving` must be true or false; got {self.halving!r}.")
        if isinstance(self.space, dict):
            set_("space", SearchSpace(**self.space))

    @property
    def budget_name(self) -> str:
        return "max_latency_ms" if self.max_latency_ms is not None else "min_speedup"

    def latency_budget(self, base_p50_ms: float) -> float:
        """The budget as a p50 in ms (a speedup budget through the base's p50)."""
        return self.max_latency_ms if self.max_latency_ms is not None else base_p50_ms / self.min_speedup
