"""CLI commands for research: `sweep` and `recipe list|run` (torch imported inside the commands)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from . import ui
from .errors import UsageError

_PRECISIONS = "fp32, int8"
_THREATS = "transfer (sets crafted on the base), whitebox (crafted on each pruned model)"


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, e.g. 0.3,0.5,0.7; got '{text}'.") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in text.split(",") if v.strip())


def _render_points(points, title: str, eps_text: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("model", "set", "accuracy", "speedup", "MACs red."):
        t.add_column(col, justify="left" if col in ("model", "set") else "right")
    from .sweep import pct

    for p in points:
        if p.threat != "clean" and p.eps_text != eps_text:
            continue
        name = "clean" if p.threat == "clean" else f"{p.attack} {p.eps_text} ({p.threat})"
        t.add_row(p.model, name, pct(p.accuracy, p.accuracy_std), f"{p.speedup:.2f}x", f"{p.macs_reduction:.2f}x")
    return t


def sweep_cmd(
    model: Annotated[Path, typer.Argument(help="The base model: an edgerobust checkpoint, or a state_dict with --arch.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for sweep.json, the PNGs, report.html, "
                                                          "the bundles and the adversarial sets.")],
    sparsities: Annotated[str, typer.Option("--sparsities", help="Comma-separated sparsities in [0, 1); "
                                                                 "0 is the base unpruned.")] = "0.5,0.7",
    precisions: Annotated[str, typer.Option("--precisions", help=f"Comma-separated: {_PRECISIONS}.")] = "fp32,int8",
    attacks: Annotated[str, typer.Option("--attacks", "-a", help="Comma-separated attacks (see `edgerobust "
                                                                 "attack --help`).")] = "fgsm,pgd",
    eps: Annotated[str, typer.Option("--eps", help="Comma-separated strengths in pixel units.")] = "2/255,4/255,8/255",
    focus_eps: Annotated[Optional[str], typer.Option(
        "--focus-eps", help="The eps of the sparsity and speedup plots (one of --eps). Default: the largest.")] = None,
    threats: Annotated[str, typer.Option("--threats", help=f"Comma-separated: {_THREATS}.")] = "transfer",
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Attack iterations (default per attack).")] = None,
    criterion: Annotated[str, typer.Option("--criterion", help="Pruning criterion (as in compress).")] = "l1",
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs after "
                                                                                   "pruning.")] = 2,
    eval_samples: Annotated[int, typer.Option("--eval-samples", min=1, help="Evaluation samples.")] = 300,
    data: Annotated[Optional[str], typer.Option("--data", help="Data source (default: the checkpoint's).")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture of a state_dict.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seeds split, pruning, fine-tuning and attacks.")] = 0,
    profile: Annotated[str, typer.Option("--profile", help="Device profile for the latency.")] = "laptop-cpu-1thread",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    from .finetune import TrainConfig
    from .prune import PruneConfig
    from .sweep import SweepConfig, summarize, sweep

    cfg = SweepConfig(model=model, out=out, sparsities=_floats(sparsities, "--sparsities"),
                      precisions=_names(precisions), attacks=attacks, eps=eps, focus_eps=focus_eps,
                      threats=_names(threats), steps=steps, prune=PruneConfig(criterion=criterion),
                      finetune=TrainConfig(epochs=finetune_epochs), eval_samples=eval_samples, data=data, arch=arch,
                      seed=seed, profile=profile, overwrite=overwrite)
    result = sweep(cfg)
    points = summarize([result])
    ui.out.print(_render_points(points, f"sweep → {out} (n={result.n_eval}, {result.seconds:.0f} s)", cfg.focus))
    from .sweep import findings

    for f in findings(points, cfg):
        ui.out.print(f"• {f}", highlight=False)
    ui.info(f"wrote {out / 'sweep.json'} and {out / 'report.html'}")


recipe_app = typer.Typer(help="Named research recipes: published experiments on compression and robustness.",
                         no_args_is_help=True)


@recipe_app.command("list", help="List the recipes with the paper each reproduces.")
def recipe_list() -> None:
    from .recipes import RECIPES

    t = Table(title="recipes", title_justify="left")
    for col in ("name", "experiment", "paper"):
        t.add_column(col)
    for r in RECIPES.values():
        t.add_row(r.name, r.title, r.paper)
    ui.out.print(t)


def _recipe_help() -> str:
    from .recipes import RECIPES

    lines = "\n".join(f"[bold]{k}[/bold]: {r.summary}\n" for k, r in RECIPES.items())
    return ("Run recipe NAME: train (or load) the base model per seed, sweep, and write OUT/recipe.json, "
            f"the PNGs and OUT/report.html with the finding in one sentence.\n\nRecipes:\n\n{lines}")


@recipe_app.command("run", help=_recipe_help(), no_args_is_help=True)
def recipe_run(
    name: Annotated[str, typer.Argument(help="The recipe (see `edgerobust recipe list`).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default research/NAME).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Data source; needs --model unless it is the "
                                                               "zoo model's own.")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Zoo model to train (digits-cnn, digits-resnet), "
                                                               "or the architecture of a --model state_dict.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="Your base model instead of a zoo model "
                                                                  "trained by the recipe.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Repeat with seeds 0..N-1; report mean and sd.")] = 1,
    eval_samples: Annotated[int, typer.Option("--eval-samples", min=1, help="Evaluation samples.")] = 300,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs.")] = 2,
    zoo_epochs: Annotated[Optional[int], typer.Option("--zoo-epochs", min=1, help="Zoo training epochs "
                                                                                  "(default: the zoo's).")] = None,
    sparsities: Annotated[Optional[str], typer.Option("--sparsities", help="Override the recipe's sparsities.")] = None,
    eps: Annotated[Optional[str], typer.Option("--eps", help="Override the recipe's eps grid (keep 8/255 in it).")] = None,
    attack_steps: Annotated[int, typer.Option("--attack-steps", min=1, help="PGD steps.")] = 10,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    from .recipes import RecipeConfig, get_recipe, run_recipe

    get_recipe(name)
    cfg = RecipeConfig(out=out or Path("research") / name, data=data, arch=arch, model=model, seeds=seeds,
                       eval_samples=eval_samples, finetune_epochs=finetune_epochs, zoo_epochs=zoo_epochs,
                       sparsities=_floats(sparsities, "--sparsities") if sparsities else None, eps=eps,
                       attack_steps=attack_steps, overwrite=overwrite)
    result = run_recipe(name, cfg)
    ui.out.print(f"[bold]finding:[/bold] {result.finding}", highlight=False)
    ui.info(f"wrote {result.out / 'recipe.json'} and {result.out / 'report.html'} in {result.seconds:.0f} s")


def register(app: typer.Typer) -> None:
    app.command(name="sweep", no_args_is_help=True,
                help="Compress one model at several sparsities and precisions, replay adversarial sets crafted "
                     "once on the base, measure speedup, and write sweep.json, plots and report.html.")(sweep_cmd)
    app.add_typer(recipe_app, name="recipe")
