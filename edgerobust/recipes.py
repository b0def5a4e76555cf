"""Named research recipes: published experiments on compression and robustness, one command each.

    edgerobust recipe list
    edgerobust recipe run pruning-defence --seeds 3 --out research/defence

Each recipe (a :class:`Recipe` in :data:`RECIPES`) is a plan for :func:`edgerobust.sweep.sweep`
(variants, precisions, attacks, threats) and a function that states its finding in one
sentence with the numbers behind it, whatever they turn out to be. A pruned model is named by
the sparsity requested *and* the MACs reduction pruning realized (they differ where channel
counts are rounded), and the figures plot against the realized reduction. By default a recipe trains
its own zoo model (``digits-cnn`` on the bundled digits data) per seed; ``--model`` brings your
own. ``--seeds N`` repeats everything with seeds 0..N-1 (zoo training, split, pruning,
fine-tuning, attacks) and reports mean and sample standard deviation.

Output folder: ``recipe.json`` ({"_type": "edgerobust.recipe", "_version": 1, "_data": ...}
with every run, every plotted point and the finding), the PNGs, ``report.html``, and per seed
``seed-<s>/`` with the zoo checkpoint and the sweep (bundles, adversarial sets, sweep.json).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import ui
from .bundle import atomic_dir
from .errors import DependencyError, UsageError
from .sweep import Point, SweepConfig, SweepResult, Variant, find, macs_text, pct, summarize, sweep

RECIPE_TYPE = "edgerobust.recipe"
COMPARABLE_PP = 5.0  # within this many points of the base, robust accuracy "stays comparable"


@dataclass(frozen=True)
class RecipeConfig:
    """How to run a recipe. The defaults are the recipe's full setting (minutes on a laptop CPU);
    the knobs below shrink it (tests, quick looks).

    out: the report folder. data / arch / model: the base model; without ``model`` the zoo
        architecture ``arch`` is trained on its own data per seed. seeds: runs with seeds 0..N-1.
    eval_samples: evaluation samples every set is crafted from. finetune_epochs: fine-tuning
        after pruning. zoo_epochs: zoo training epochs (None: the zoo's own). sparsities / eps:
        override the recipe's grid. attack_steps: PGD steps. latency_rounds: interleaved rounds.
    """

    out: str | Path
    data: str | None = None
    arch: str | None = None
    model: str | Path | None = None
    seeds: int = 1
    eval_samples: int = 300
    finetune_epochs: int = 2
    zoo_epochs: int | None = None
    sparsities: tuple[float, ...] | None = None
    eps: str | None = None
    attack_steps: int = 10
    latency_rounds: int = 5
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name, lo in (("seeds", 1), ("eval_samples", 1), ("finetune_epochs", 0), ("attack_steps", 1),
                         ("latency_rounds", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {lo}; got {v!r}.")
        if self.zoo_epochs is not None and (not isinstance(self.zoo_epochs, int) or self.zoo_epochs < 1):
            raise UsageError(f"--zoo-epochs must be an integer >= 1; got {self.zoo_epochs!r}.")
        if self.sparsities is not None:
            object.__setattr__(self, "sparsities", tuple(float(s) for s in self.sparsities))
            for s in self.sparsities:
                Variant(s)  # validates the range
        if self.model is None:
            from .nets import ZOO

            arch = self.zoo_name
            if arch not in ZOO:
                raise UsageError(f"--arch {self.arch!r} is not a zoo model, and no --model was given.",
                                 why="Without --model the recipe trains a zoo model itself.",
                                 fix=f"Use --arch {' or '.join(ZOO)}, or pass --model PATH (with --arch for a "
                                     "state_dict).")
            if self.data is not None and self.data != ZOO[arch].data:
                raise UsageError(f"The zoo model '{arch}' trains on '{ZOO[arch].data}', not on --data {self.data!r}.",
                                 fix="Pass --model with a model trained on that data, or leave out --data.")
        elif not Path(self.model).is_file():
            raise UsageError(f"The model '{self.model}' does not exist.", fix="Check --model.")

    @property
    def zoo_name(self) -> str:
        arch = self.arch or "digits-cnn"
        return arch[4:] if arch.startswith("zoo:") else arch


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
    """One named experiment: its paper, its plan and its finding sentence."""

    name: str
    title: str
    paper: str
    plan: Callable[[RecipeConfig], Plan]
    finding: Callable[[list[Point], Plan], str]
    doc: str

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


RECIPES: dict[str, Recipe] = {}


def _recipe(name: str, title: str, paper: str, plan: Callable[[RecipeConfig], Plan]):
    """Register the decorated finding function as recipe ``name``; its docstring is the recipe's doc."""

    def deco(fn: Callable[[list[Point], Plan], str]):
        RECIPES[name] = Recipe(name, title, paper, plan, fn, fn.__doc__ or "")
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# helpers shared by the recipes


def _train(cfg: RecipeConfig, **kw):
    from .finetune import TrainConfig

    return TrainConfig(epochs=cfg.finetune_epochs, lr=3e-3, **kw)


def _prune(**kw):
    from .prune import PruneConfig

    return PruneConfig(**{"criterion": "l1", **kw})


def _needs(cls: type, fields: tuple[str, ...], what: str, recipe: str) -> None:
    have = {f.name for f in dataclasses.fields(cls)}
    missing = [f for f in fields if f not in have]
    if missing:
        raise DependencyError(
            f"The '{recipe}' recipe needs {what}, which this edgerobust does not have yet.",
            why=f"{cls.__module__}.{cls.__name__} has no field(s) {', '.join(missing)}.",
            fix="Update edgerobust to a version with it (issue 6), or run another recipe (`edgerobust recipe list`).")


def _v(p: list[Point]) -> Point:
    if not p:
        raise UsageError("A recipe's finding needs a point its sweep did not produce.",
                         why="The --sparsities or --eps given leave out what the recipe compares.",
                         fix="Include the recipe's focus eps in --eps, or leave --eps/--sparsities out.")
    return p[0]


def _fmt(p: Point) -> str:
    return pct(p.accuracy, p.accuracy_std)


def _n(p: Point) -> str:
    return f"n={p.n}" + (f", mean ± sd over {p.seeds} seeds" if p.seeds > 1 else "")


def _at(p: Point) -> str:
    """A pruned model as findings name it: the requested sparsity and the realized MACs reduction."""
    return f"s={p.sparsity:g} ({macs_text(p)})"


def _sparsities(cfg: RecipeConfig, default: tuple[float, ...]) -> tuple[float, ...]:
    return cfg.sparsities or default


# ---------------------------------------------------------------------------------------------
# (a) transfer to pruned models


def _plan_transfer(cfg: RecipeConfig) -> Plan:
    vs = tuple(Variant(s, prune=_prune(), finetune=_train(cfg)) for s in _sparsities(cfg, (0.5, 0.7)) if s > 0)
    return Plan(vs, ("fp32",), "fgsm,pgd", cfg.eps or "2/255,4/255,8/255,16/255", "8/255", ("transfer",))


@_recipe("transfer", "Transfer of base-crafted attacks to pruned models",
         "Vora et al. 2023, 'Exploring transferability of adversarial examples to pruned models'", _plan_transfer)
def _finding_transfer(points: list[Point], plan: Plan) -> str:
    """Base-crafted adversarial inputs replayed on filter-pruned models (no adversarial training).

    Vora et al. (2023) find that adversarial examples crafted on a base model transfer to its
    filter-pruned versions: their robust accuracy stays comparable to the base's. The recipe
    crafts FGSM and PGD sets once on the base, prunes (L1 filters) at each sparsity with
    standard fine-tuning, and replays the sets on every pruned model (fp32).
    Finding: PGD robust accuracy at 8/255 of each pruned model against the base's.
    """
    at = dict(threat="transfer", attack="pgd", eps_text=plan.focus_eps)
    base = _v(find(points, model="base", **at))
    pruned = sorted((p for p in find(points, **at) if p.model != "base"), key=lambda p: p.sparsity)
    diffs = [100 * (p.accuracy - base.accuracy) for p in pruned]
    worst = max(diffs, key=abs)
    verdict = (f"keep PGD-{plan.focus_eps} robust accuracy within {abs(worst):.1f} pp of the base"
               if abs(worst) <= COMPARABLE_PP else
               f"move PGD-{plan.focus_eps} robust accuracy by up to {worst:+.1f} pp from the base")
    parts = ", ".join(f"s={p.sparsity:g}: {_fmt(p)}" for p in pruned)
    return (f"Pruned models at s={'/'.join(f'{p.sparsity:g}' for p in pruned)} "
            f"({'/'.join(f'{p.macs_reduction:.1f}x' for p in pruned)} fewer MACs) {verdict} when the base-crafted "
            f"sets are replayed on them (base {_fmt(base)}, {parts}; {_n(base)}).")


# ---------------------------------------------------------------------------------------------
# (b) module robustness sensitivity


def _plan_mrs(cfg: RecipeConfig) -> Plan:
    from .prune import PruneConfig

    _needs(PruneConfig, ("ratios",), "sensitivity-guided pruning ratios (PruneConfig(ratios='mrs'))", "mrs-vs-uniform")
    vs = tuple(Variant(s, group=g, prune=_prune(ratios=g), finetune=_train(cfg))
               for s in _sparsities(cfg, (0.5, 0.7)) if s > 0 for g in ("uniform", "mrs"))
    return Plan(vs, ("fp32",), "pgd", cfg.eps or "4/255,8/255,16/255", "8/255", ("transfer", "whitebox"))


@_recipe("mrs-vs-uniform", "Sensitivity-guided vs uniform pruning",
         "Bai et al., 'Module robustness sensitivity' (robustness-aware layer-wise pruning ratios)", _plan_mrs)
def _finding_mrs(points: list[Point], plan: Plan) -> str:
    """Sensitivity-guided (module robustness sensitivity) pruning against uniform pruning at equal MACs.

    Bai et al. measure how much each module's perturbation hurts adversarial robustness and
    prune the insensitive modules harder. The recipe prunes at each sparsity once with uniform
    per-layer ratios and once with MRS-guided ratios (PruneConfig(ratios="mrs"), same overall
    budget), fine-tunes both alike, and compares white-box PGD robust accuracy next to the
    measured MACs reduction of each.
    """
    at = dict(threat="whitebox", attack="pgd", eps_text=plan.focus_eps)
    rows, diffs = [], []
    for s in sorted({p.sparsity for p in points if p.group in ("uniform", "mrs")}):
        u = _v(find(points, group="uniform", sparsity=s, precision="fp32", **at))
        m = _v(find(points, group="mrs", sparsity=s, precision="fp32", **at))
        diffs.append(100 * (m.accuracy - u.accuracy))
        rows.append(f"s={s:g}: mrs {_fmt(m)} at {m.macs_reduction:.1f}x fewer MACs vs uniform {_fmt(u)} at "
                    f"{u.macs_reduction:.1f}x")
    mean = sum(diffs) / len(diffs)
    verb = "beats" if mean > 0 else "trails" if mean < 0 else "matches"
    return (f"Sensitivity-guided pruning {verb} uniform pruning on white-box PGD-{plan.focus_eps} robust accuracy "
            f"by {mean:+.1f} pp on average ({'; '.join(rows)}; {_n(u)}).")


# ---------------------------------------------------------------------------------------------
# (c) pruning as a defence


CRITERIA_COMPARED = ("l1", "fpgm", "random")


def _plan_defence(cfg: RecipeConfig) -> Plan:
    vs = tuple(Variant(s, group=c, prune=_prune(criterion=c), finetune=_train(cfg))
               for c in CRITERIA_COMPARED for s in _sparsities(cfg, (0.3, 0.5)) if s > 0)
    return Plan(vs, ("fp32",), "fgsm,pgd", cfg.eps or "2/255,8/255,16/255", "8/255", ("whitebox",),
                notes=("White-box: each pruned model is attacked with sets crafted on itself.",))


@_recipe("pruning-defence", "Pruning as a defence (standard training only)",
         "Jordao & Pedrini 2021, 'On the effect of pruning on adversarial robustness'", _plan_defence)
def _finding_defence(points: list[Point], plan: Plan) -> str:
    """Structured pruning with standard fine-tuning only, as a defence; criteria compared.

    Jordao & Pedrini (2021) report that structured pruning with standard training alone raises
    adversarial robustness (FGSM at 8/255 among others). The recipe prunes with the L1, FPGM
    and random criteria at each sparsity, fine-tunes with standard training, and attacks each
    pruned model white-box (FGSM and PGD crafted on the pruned model itself).
    Finding: how many pruned models beat the base's white-box FGSM 8/255 robust accuracy.
    """
    at = dict(threat="whitebox", attack="fgsm", eps_text=plan.focus_eps)
    base = _v(find(points, model="base", **at))
    pruned = [p for p in find(points, precision="fp32", **at) if p.model != "base"]
    better = [p for p in pruned if p.accuracy > base.accuracy]
    per, macs = [], {}
    for c in dict.fromkeys(p.group for p in pruned):
        ps = sorted((p for p in pruned if p.group == c), key=lambda p: p.sparsity)
        macs[c] = "/".join(f"{p.macs_reduction:.1f}x" for p in ps)
        per.append(f"{c} " + "/".join(_fmt(p) for p in ps))
    if len(set(macs.values())) > 1:  # the criteria compressed differently: quote each one's figures
        per = [f"{text} ({macs[c]} fewer MACs)" for c, text in zip(macs, per)]
    verdict = "raises" if len(better) > len(pruned) / 2 else "does not raise"
    spars = "/".join(f"{s:g}" for s in sorted({p.sparsity for p in pruned}))
    realized = f" ({next(iter(macs.values()))} fewer MACs)" if len(set(macs.values())) == 1 else ""
    return (f"With standard fine-tuning only, structured pruning {verdict} white-box FGSM-{plan.focus_eps} robust "
            f"accuracy here: {len(better)} of {len(pruned)} pruned models beat the base ({_fmt(base)}; at "
            f"s={spars}{realized}: {'; '.join(per)}; {_n(base)}).")


# ---------------------------------------------------------------------------------------------
# (d) quantization and attack strength


def _plan_int8(cfg: RecipeConfig) -> Plan:
    spars = tuple(dict.fromkeys((0.0,) + _sparsities(cfg, (0.5,))))
    vs = tuple(Variant(s, prune=_prune(), finetune=_train(cfg)) for s in spars)
    return Plan(vs, ("fp32", "int8"), "fgsm,pgd", cfg.eps or "1/255,2/255,4/255,8/255,16/255", "8/255",
                ("transfer",), notes=("int8 models are attacked with sets crafted on the fp32 base (transfer): "
                                      "gradients of an int8 graph are not defined.",))


@_recipe("int8-strength", "Bit width (fp32 vs int8) across attack strengths",
         "Gorsline et al. 2021, 'On the adversarial robustness of quantized neural networks'", _plan_int8)
def _finding_int8(points: list[Point], plan: Plan) -> str:
    """Accuracy against attack strength for fp32 and int8, unpruned and pruned.

    Gorsline et al. (2021) study how quantization changes robustness as the attack gets
    stronger. The recipe quantizes the base (and a pruned model) to int8 with ONNX Runtime
    static quantization and replays FGSM and PGD sets from 1/255 to 16/255, crafted on the
    fp32 base, on fp32 and int8 alike.
    Finding: the int8 - fp32 robust accuracy gap of the unpruned model across eps.
    """
    fp = [p for p in points if p.model == "base" and p.threat == "transfer"]
    q = {(p.attack, p.eps_text): p for p in points if p.sparsity == 0 and p.precision == "int8"
         and p.threat == "transfer"}
    gaps = [(p, q[(p.attack, p.eps_text)]) for p in fp if (p.attack, p.eps_text) in q]
    if not gaps:
        raise UsageError("The int8-strength recipe found no unpruned int8 points to compare.")
    d = [100 * (b.accuracy - a.accuracy) for a, b in gaps]
    f8 = _v([a for a, _ in gaps if a.attack == "pgd" and a.eps_text == plan.focus_eps])
    q8 = q[("pgd", plan.focus_eps)]
    clean_fp = _v(find(points, model="base", threat="clean"))
    clean_q = _v([p for p in points if p.threat == "clean" and p.sparsity == 0 and p.precision == "int8"])
    eps = sorted({a.eps for a, _ in gaps})
    return (f"Across FGSM/PGD from {_eps_text(gaps, eps[0])} to {_eps_text(gaps, eps[-1])}, int8 changes the "
            f"unpruned model's robust accuracy by {min(d):+.1f} to {max(d):+.1f} pp against fp32 (clean "
            f"{_fmt(clean_fp)} -> {_fmt(clean_q)}; PGD-{plan.focus_eps} {_fmt(f8)} -> {_fmt(q8)}; {_n(f8)}).")


def _eps_text(gaps, eps: float) -> str:
    return next(a.eps_text for a, _ in gaps if a.eps == eps)


# ---------------------------------------------------------------------------------------------
# (e) adversarial fine-tuning of compressed models


ADV_EPS = 8 / 255


def _plan_advft(cfg: RecipeConfig) -> Plan:
    from .finetune import TrainConfig

    _needs(TrainConfig, ("mode", "adv_eps", "adv_steps", "adv_alpha"),
           "adversarial fine-tuning (TrainConfig(mode='pgd-at', adv_eps, adv_steps, adv_alpha))", "adv-finetune")
    std = _train(cfg, mode="standard")
    adv = _train(cfg, mode="pgd-at", adv_eps=ADV_EPS, adv_steps=5, adv_alpha=2.5 * ADV_EPS / 5)
    vs = tuple(Variant(s, group=g, prune=_prune(), finetune=t)
               for s in _sparsities(cfg, (0.5, 0.7, 0.9)) if s > 0 for g, t in (("standard", std), ("pgd-at", adv)))
    return Plan(vs, ("fp32",), "pgd", cfg.eps or "4/255,8/255,16/255", "8/255", ("whitebox",),
                notes=("PGD-AT fine-tuning: eps 8/255, 5 steps of 2.5*eps/5; evaluation: white-box PGD.",))


@_recipe("adv-finetune", "Adversarial vs standard fine-tuning after pruning",
         "Thorsteinsson et al. 2024, 'Adversarial fine-tuning of compressed neural networks'", _plan_advft)
def _finding_advft(points: list[Point], plan: Plan) -> str:
    """After pruning 0.5/0.7/0.9, a few epochs of PGD adversarial fine-tuning against standard fine-tuning.

    Thorsteinsson et al. (2024) show that adversarial fine-tuning of a compressed model for a
    few epochs recovers robustness that standard fine-tuning does not. The recipe prunes at each
    sparsity, fine-tunes one copy with standard training and one with PGD adversarial training
    (TrainConfig(mode="pgd-at")) for the same epochs, and attacks both white-box with PGD.
    """
    at = dict(threat="whitebox", attack="pgd", eps_text=plan.focus_eps)
    rows, wins = [], 0
    spars = sorted({p.sparsity for p in points if p.group in ("standard", "pgd-at")})
    for s in spars:
        a = _v(find(points, group="pgd-at", sparsity=s, **at))
        b = _v(find(points, group="standard", sparsity=s, **at))
        ca = _v(find(points, group="pgd-at", sparsity=s, threat="clean"))
        cb = _v(find(points, group="standard", sparsity=s, threat="clean"))
        wins += a.accuracy > b.accuracy
        rows.append(f"{_at(a)}: {_fmt(a)} vs {_fmt(b)}, clean {_fmt(ca)} vs {_fmt(cb)}")
    verb = "beats" if wins == len(spars) else "does not always beat" if wins else "does not beat"
    return (f"PGD adversarial fine-tuning {verb} standard fine-tuning on white-box PGD-{plan.focus_eps} robust "
            f"accuracy at {wins} of {len(spars)} sparsities (pgd-at vs standard, {'; '.join(rows)}; {_n(a)}).")


# ---------------------------------------------------------------------------------------------
# running


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"Unknown recipe {name!r}.", fix=f"Recipes: {', '.join(RECIPES)} (`edgerobust recipe list`).")
    return RECIPES[name]


def run_recipe(name: str, config: RecipeConfig) -> RecipeResult:
    """Run recipe ``name``: train (or load) the base per seed, sweep, summarize, plot, state the finding."""
    t0 = time.perf_counter()
    recipe = get_recipe(name)
    plan = recipe.plan(config)  # raises before any work when a needed feature is missing
    if not plan.variants:
        raise UsageError(f"The recipe '{name}' has no compressed model to compare with the base.",
                         why="Its sparsities are all 0 (the base itself is always included).",
                         fix="Pass --sparsities with values in (0, 1), e.g. 0.5,0.7.")
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise UsageError(f"'{out}' already exists.", fix="Pass --overwrite to replace it, or choose another --out.")
    runs: list[SweepResult] = []
    with atomic_dir(out, overwrite=config.overwrite) as tmp:
        for seed in range(config.seeds):
            ui.info(f"[bold]{name}[/bold]: seed {seed + 1}/{config.seeds}")
            folder = tmp / f"seed-{seed}"
            folder.mkdir()
            model, arch = config.model, config.arch
            if model is None:
                from .zoo import train_zoo

                model = train_zoo(config.zoo_name, folder / "base.pt", seed=seed, epochs=config.zoo_epochs).path
                arch = None  # the zoo checkpoint describes itself
            runs.append(sweep(SweepConfig(
                model=model, arch=arch, data=config.data, out=folder / "sweep", variants=plan.variants,
                precisions=plan.precisions, attacks=plan.attacks, eps=plan.eps, steps=config.attack_steps,
                threats=plan.threats, seed=seed, eval_samples=config.eval_samples, focus_eps=plan.focus_eps,
                latency_rounds=config.latency_rounds, write_report=False)))
        points = summarize(runs)
        finding = recipe.finding(points, plan)
        data = {"recipe": name, "title": recipe.title, "paper": recipe.paper, "doc": recipe.doc.strip(),
                "finding": finding, "findings": [finding], "config": _plain(config),
                "plan": {"variants": [v.label for v in plan.variants], "precisions": list(plan.precisions),
                         "attacks": plan.attacks, "eps": plan.eps, "focus_eps": plan.focus_eps,
                         "threats": list(plan.threats), "notes": list(plan.notes)},
                "sweep_config": runs[0].config, "runs": [dataclasses.asdict(r) for r in runs],
                "points": [dataclasses.asdict(p) for p in points], "seconds": time.perf_counter() - t0}
        from .plots import write_report

        n = points[0].n
        write_report(tmp, f"{recipe.title} ({name})", points, data, plan.focus_eps, RECIPE_TYPE,
                     json_name="recipe.json",
                     subtitle=f"{recipe.paper}. {config.seeds} seed(s), {n} evaluation samples per run, "
                              f"{config.finetune_epochs} fine-tuning epoch(s), PGD {config.attack_steps} steps.",
                     notes=list(plan.notes))
    return RecipeResult(name=name, finding=finding, points=tuple(points), runs=tuple(runs), out=out,
                        seconds=time.perf_counter() - t0)


def _plain(config: RecipeConfig) -> dict:
    d = dataclasses.asdict(config)
    for k in ("out", "model"):
        if d[k] is not None:
            d[k] = str(d[k])
    return d


__all__ = ["RECIPES", "Plan", "Recipe", "RecipeConfig", "RecipeResult", "get_recipe", "run_recipe"]
