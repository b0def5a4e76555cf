"""Named research recipes: published experiments on compression and robustness, one command each.

    from edgerobust.research.configs import RecipeConfig
    from edgerobust.research.recipes import run_recipe
    result = run_recipe("pruning-defence", RecipeConfig(out="research/defence", seeds=3))

Each recipe (a :class:`Recipe` in :data:`RECIPES`) is a plan for :func:`edgerobust.research.sweep.sweep`
(variants, precisions, attacks, threats) and a function of :mod:`edgerobust.research.recipe_findings`
that states its finding in one sentence with the numbers behind it. A pruned model is named by
the sparsity requested *and* the MACs reduction pruning realized (they differ where channel
counts are rounded), and the figures plot against the realized reduction. By default a recipe
trains its own zoo model (``digits-cnn`` on the bundled digits data) per seed; ``prepare.model``
brings your own. ``seeds=N`` repeats everything with seeds 0..N-1 (zoo training, split,
pruning, fine-tuning, attacks) and reports mean and sample standard deviation.

Output folder: ``recipe.json`` ({"_type": "edgerobust.recipe", "_version": 1, "_data": ...}
with every run, every plotted point and the finding), the PNGs, ``report.html``, and per seed
``seed-<s>/`` with the zoo checkpoint and the sweep (points, adversarial sets, sweep.json).
Like a sweep, a recipe resumes: rerun after a crash and the finished points are reused.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgerobust.research import recipe_findings as F
from edgerobust.errors import EdgeRobustError, UsageError
from edgerobust.research.configs import RecipeConfig, SweepConfig, Variant
from edgerobust.research.points import Point, SweepResult, summarize
from edgerobust.research.sweep import prepare_out, sweep
from edgerobust.workstation.configs import PruneConfig, TrainConfig

logger = logging.getLogger(__name__)

RECIPE_TYPE = "edgerobust.recipe"


@dataclass(frozen=True)
class Plan:
    """What one recipe sweeps (handed to SweepConfig) and the eps its finding reads."""

    variants: tuple[Variant, ...]
    precisions: tuple[str, ...]
    attacks: str
    eps: str
    focus_eps: str
    threats: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """One named experiment: its paper, its plan and its finding sentence (whose docstring is its doc)."""

    name: str
    title: str
    paper: str
    plan: Callable[[RecipeConfig], Plan]
    finding: Callable[[list[Point], Plan], str]

    @property
    def doc(self) -> str:
        return self.finding.__doc__ or ""

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0]


@dataclass(frozen=True)
class RecipeResult:
    name: str
    finding: str
    points: tuple[Point, ...]
    runs: tuple[SweepResult, ...]
    out: Path
    seconds: float


# the plans


def _train(cfg: RecipeConfig, **kw):
    return TrainConfig(epochs=cfg.finetune_epochs, lr=3e-3, **kw)


def _prune(**kw):
    return PruneConfig(**{"criterion": "l1", **kw})  # the papers prune L1 filters


def _sparsities(cfg: RecipeConfig, default: tuple[float, ...]) -> tuple[float, ...]:
    return cfg.sparsities or default


def _plan_transfer(cfg: RecipeConfig) -> Plan:
    vs = tuple(Variant(s, prune=_prune(), finetune=_train(cfg)) for s in _sparsities(cfg, (0.5, 0.7)) if s > 0)
    return Plan(vs, ("fp32",), "fgsm,pgd", cfg.eps or "2/255,4/255,8/255,16/255", "8/255", ("transfer",))


def _plan_mrs(cfg: RecipeConfig) -> Plan:
    vs = tuple(Variant(s, group=g, prune=_prune(ratios=g), finetune=_train(cfg))
               for s in _sparsities(cfg, (0.5, 0.7)) if s > 0 for g in ("uniform", "mrs"))
    return Plan(vs, ("fp32",), "pgd", cfg.eps or "4/255,8/255,16/255", "8/255", ("transfer", "whitebox"))


CRITERIA_COMPARED = ("l1", "fpgm", "random")


def _plan_defence(cfg: RecipeConfig) -> Plan:
    vs = tuple(Variant(s, group=c, prune=_prune(criterion=c), finetune=_train(cfg))
               for c in CRITERIA_COMPARED for s in _sparsities(cfg, (0.3, 0.5)) if s > 0)
    return Plan(vs, ("fp32",), "fgsm,pgd", cfg.eps or "2/255,8/255,16/255", "8/255", ("whitebox",),
                notes=("White-box: each pruned model is attacked with sets crafted on itself.",))


def _plan_int8(cfg: RecipeConfig) -> Plan:
    spars = tuple(dict.fromkeys((0.0,) + _sparsities(cfg, (0.5,))))
    vs = tuple(Variant(s, prune=_prune(), finetune=_train(cfg)) for s in spars)
    return Plan(vs, ("fp32", "int8"), "fgsm,pgd", cfg.eps or "1/255,2/255,4/255,8/255,16/255", "8/255",
                ("transfer",), notes=("int8 models are attacked with sets crafted on the fp32 base (transfer): "
                                      "gradients of an int8 graph are not defined.",))


ADV_EPS = 8 / 255


def _plan_advft(cfg: RecipeConfig) -> Plan:
    std = _train(cfg, mode="standard")
    adv = _train(cfg, mode="pgd-at", adv_eps=ADV_EPS, adv_steps=5, adv_alpha=2.5 * ADV_EPS / 5)
    vs = tuple(Variant(s, group=g, prune=_prune(), finetune=t)
               for s in _sparsities(cfg, (0.5, 0.7, 0.9)) if s > 0 for g, t in (("standard", std), ("pgd-at", adv)))
    return Plan(vs, ("fp32",), "pgd", cfg.eps or "4/255,8/255,16/255", "8/255", ("whitebox",),
                notes=("PGD-AT fine-tuning: eps 8/255, 5 steps of 2.5*eps/5; evaluation: white-box PGD.",))


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("transfer", "Transfer of base-crafted attacks to pruned models",
           "Vora et al. 2023, 'Exploring transferability of adversarial examples to pruned models'",
           _plan_transfer, F.transfer),
    Recipe("mrs-vs-uniform", "Sensitivity-guided vs uniform pruning",
           "Bai et al., 'Module robustness sensitivity' (robustness-aware layer-wise pruning ratios)",
           _plan_mrs, F.mrs),
    Recipe("pruning-defence", "Pruning as a defence (standard training only)",
           "Jordao & Pedrini 2021, 'On the effect of pruning on adversarial robustness'", _plan_defence, F.defence),
    Recipe("int8-strength", "Bit width (fp32 vs int8) across attack strengths",
           "Gorsline et al. 2021, 'On the adversarial robustness of quantized neural networks'", _plan_int8, F.int8),
    Recipe("adv-finetune", "Adversarial vs standard fine-tuning after pruning",
           "Thorsteinsson et al. 2024, 'Adversarial fine-tuning of compressed neural networks'", _plan_advft,
           F.advft),
)}


# running


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"Unknown recipe {name!r}.", fix=f"Recipes: {', '.join(RECIPES)} (`edgerobust recipe list`).")
    return RECIPES[name]


def run_recipe(name: str, config: RecipeConfig, runner=None) -> RecipeResult:
    """Run recipe ``name``: train (or load) the base per seed, sweep (its points on ``runner``),
    summarize, plot, state the finding."""
    from edgerobust.workstation.resources.torch_device import resolve_device

    t0 = time.perf_counter()
    recipe = get_recipe(name)
    resolve_device(config.prepare.device)  # a CUDA request on a host without CUDA: before any folder
    plan = recipe.plan(config)
    if not plan.variants:
        raise UsageError(f"The recipe '{name}' has no compressed model to compare with the base.",
                         why="Its sparsities are all 0 (the base itself is always included).",
                         fix="Give `sparsities` in (0, 1), e.g. 0.5,0.7.")
    out = Path(config.out)
    prepare_out(out, "recipe", overwrite=config.overwrite, fresh=config.fresh)
    runs: list[SweepResult] = []
    for seed in range(config.seeds):
        logger.info(f"{name}: seed {seed + 1}/{config.seeds}")
        runs.append(_run_seed(config, plan, out / f"seed-{seed}", seed, runner))
    points = summarize(runs)
    finding = recipe.finding(points, plan)
    _write(out, recipe, config, plan, runs, points, finding, time.perf_counter() - t0)
    return RecipeResult(name=name, finding=finding, points=tuple(points), runs=tuple(runs), out=out,
                        seconds=time.perf_counter() - t0)


def _run_seed(config: RecipeConfig, plan: Plan, folder: Path, seed: int, runner) -> SweepResult:
    folder.mkdir(exist_ok=True)
    prep = dataclasses.replace(config.prepare, seed=seed)
    if prep.model is None:  # the zoo checkpoint describes itself
        prep = dataclasses.replace(prep, model=_zoo_model(config, folder / "base.pt", seed), arch=None)
    return sweep(SweepConfig(
        prep, out=folder / "sweep", variants=plan.variants, precisions=plan.precisions, attacks=plan.attacks,
        eps=plan.eps, steps=config.attack_steps, threats=plan.threats, focus_eps=plan.focus_eps,
        latency_rounds=config.latency_rounds, write_report=False, fresh=config.fresh), runner)


def _zoo_model(config: RecipeConfig, path: Path, seed: int) -> Path:
    """The seed's zoo checkpoint: trained once, then reused on a rerun (written under a temporary name)."""
    from edgerobust.workstation.model.load import load_model
    from edgerobust.workstation.train.zoo import train_zoo

    if path.is_file() and not config.fresh:
        try:
            load_model(path)
            return path
        except EdgeRobustError:  # an unreadable checkpoint is trained again, never trusted
            logger.warning(f"{path} is unreadable; training it again")
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.pt")
    train_zoo(config.zoo_name, tmp, seed=seed, epochs=config.zoo_epochs, device=config.prepare.device)
    os.replace(tmp, path)
    return path


def _write(out: Path, recipe: Recipe, config: RecipeConfig, plan: Plan, runs, points, finding, seconds) -> None:
    from edgerobust.research.plots import write_report

    data = {"recipe": recipe.name, "title": recipe.title, "paper": recipe.paper, "doc": recipe.doc.strip(),
            "finding": finding, "findings": [finding], "config": _plain(config), "device": runs[0].config["device"],
            "plan": {"variants": [v.label for v in plan.variants], "precisions": list(plan.precisions),
                     "attacks": plan.attacks, "eps": plan.eps, "focus_eps": plan.focus_eps,
                     "threats": list(plan.threats), "notes": list(plan.notes)},
            "sweep_config": runs[0].config, "runs": [dataclasses.asdict(r) for r in runs],
            "points": [dataclasses.asdict(p) for p in points], "seconds": seconds}
    steps = config.attack_steps or 10
    write_report(out, f"{recipe.title} ({recipe.name})", points, data, plan.focus_eps, RECIPE_TYPE,
                 json_name="recipe.json",
                 subtitle=f"{recipe.paper}. {config.seeds} seed(s), {points[0].n} evaluation samples per run, "
                          f"{config.finetune_epochs} fine-tuning epoch(s), PGD {steps} steps.",
                 notes=list(plan.notes))


def _plain(config: RecipeConfig) -> dict:
    d = dataclasses.asdict(config)
    d["out"] = str(d["out"])
    if d["prepare"]["model"] is not None:
        d["prepare"]["model"] = str(d["prepare"]["model"])
    return d


__all__ = ["RECIPES", "Plan", "Recipe", "RecipeConfig", "RecipeResult", "get_recipe", "run_recipe"]
