"""CLI commands for research: `sweep`, `recipe list|run` and `study` (torch imported inside the commands)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgerobust import ui
from edgerobust.cli.compress import OptionalModel
from edgerobust.cli.configured import ConfigFile, Flag, FlagValues, configured
from edgerobust.cli.options import (AllowWeakBase, Arch, Attacks, AttackSteps, CorruptionSeverities, Criterion, Device,
                                    EvalData, EvalSamples, Eps, Json, Normalize, NumClasses, OldSteps, Seed, TrustModel, floats, names)
from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_CRITERION, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES

_PRECISIONS = "fp32, int8"
_THREATS = "transfer (sets crafted on the base), whitebox (crafted on each pruned model)"
SWEEP_PROFILE = "laptop-cpu-1thread"  # = edgerobust.research.sweep.SWEEP_PROFILE (kept here so --help needs no torch)

Out = Annotated[Path, typer.Option("--out", "-o", help="Folder for the JSON, the PNGs, report.html, the points "
                                                       "(bundles, adversarial sets). Rerun the same command to "
                                                       "resume: finished points are reused.")]
SweepProfile = Annotated[str, typer.Option(
    "--profile", "-p", envvar="EDGEROBUST_PROFILE",
    help="Device profile for the latency and speedup. Default: one CPU thread at batch 1, so a speedup compares "
         "the models' compute rather than how each spreads over this host's cores (and other points or "
         "processes on the host disturb it less).")]
Ray = Annotated[bool, typer.Option("--ray", help="Run the points as Ray tasks: a local Ray instance with this "
                                                 "machine's cores, or the cluster at --ray-address; with torch "
                                                 "on CUDA (--device) each task asks Ray for one whole GPU. Needs "
                                                 "pip install 'edgerobust[ray]'.")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", envvar="RAY_ADDRESS", show_default=False,
                                                   help="Join this Ray cluster (e.g. ray://head:10001) instead of "
                                                        "starting a local one; --out must be on storage every node "
                                                        "sees.")]
# --overwrite as every command spells it; what it replaces differs here: a research folder is resumed, not replaced
ResearchOverwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out that is not a folder "
                                                 "this command left (it is removed when the run starts). A folder "
                                                 "it left is resumed; --fresh starts it over.")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Recompute every point instead of reusing the finished ones "
                                                     "in --out.")]


def point_runner(ray: bool, address: Optional[str], device: str):
    from edgerobust.research.runners import make_runner

    return make_runner("ray" if ray else "local", address if ray else None, device=device)


def _render_points(points, title: str, eps_text: str) -> Table:
    from edgerobust.research.points import pct

    t = Table(title=escape(title), title_justify="left")  # the output folder's path, as it is
    for col in ("model", "set", "accuracy", "speedup", "MACs red."):
        t.add_column(col, justify="left" if col in ("model", "set") else "right")
    for p in points:
        if p.threat not in ("clean", "corruption-mean") and p.eps_text != eps_text or p.threat == "corruption":
            continue
        name = {"clean": "clean", "corruption-mean": "corruptions (pooled)"}.get(
            p.threat, f"{p.attack} {p.eps_text} ({p.threat})")
        t.add_row(p.model, name, pct(p.accuracy, p.accuracy_std), f"{p.speedup:.2f}x", f"{p.macs_reduction:.2f}x")
    return t


def _ran_on(result) -> str:
    where = "on Ray" if result.runner == "ray" else "in this process"
    return f"ran {result.computed} point(s) {where}, reused {result.reused} finished point(s)"


Sparsities = Annotated[str, typer.Option("--sparsities", help="Comma-separated sparsities in [0, 1); 0 is the base "
                                                                "unpruned.")]
Precisions = Annotated[str, typer.Option("--precisions", help=f"Comma-separated: {_PRECISIONS}.")]
FocusEps = Annotated[Optional[str], typer.Option("--focus-eps", help="The eps of the sparsity and speedup plots (one of "
                                                                    "--eps). Default: the largest.")]
Threats = Annotated[str, typer.Option("--threats", help=f"Comma-separated: {_THREATS}.")]
SweepCorruptions = Annotated[str, typer.Option(
    "--corruptions", help="Common corruptions and camera noise (ImageNet-C, Hendrycks & Dietterich 2019) made once from "
                          "the evaluation rows and replayed on every model: accuracy per corruption and severity, and "
                          "pooled over every set as one more axis of the plots. Names, families, default, all or none; "
                          "see `edgerobust compress --help` for the names.")]
SweepEpochs = Annotated[int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs after pruning.")]
SweepData = Annotated[Optional[str], typer.Option("--data", help="Data source (default: the checkpoint's).")]
SweepOut = Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False, help=Out.__metadata__[0].help)]


def _floats(text: str) -> list[float]:
    return list(floats(text, "--sparsities"))


F = Flag
# Every sweep flag and the key it sets in edgerobust.research.configs.SweepConfig's schema (--config FILE).
SWEEP_FLAGS = (
    F("out", SweepOut, None, "out", str), F("sparsities", Sparsities, "0.5,0.7", "sparsities", _floats),
    F("precisions", Precisions, "fp32,int8", "precisions", names), F("attacks", Attacks, DEFAULT_ATTACKS, "attacks"),
    F("eps", Eps, DEFAULT_EPS, "eps"), F("focus_eps", FocusEps, None, "focus_eps"),
    F("threats", Threats, "transfer", "threats", names), F("steps", OldSteps, None, "steps"),
    F("corruptions", SweepCorruptions, "none", "corruptions"),
    F("corruption_severities", CorruptionSeverities, "1,3,5", "corruption_severities"),
    F("attack_steps", AttackSteps, None, "steps"), F("criterion", Criterion, DEFAULT_CRITERION, "prune.criterion"),
    F("finetune_epochs", SweepEpochs, 2, "finetune.epochs"),
    F("eval_samples", EvalSamples, DEFAULT_EVAL_SAMPLES, "prepare.eval_samples"),
    F("data", SweepData, None, "prepare.data"), F("eval_data", EvalData, None, "prepare.eval_data"),
    F("arch", Arch, None, "prepare.arch"), F("num_classes", NumClasses, None, "prepare.num_classes"),
    F("trust_model", TrustModel, False, "prepare.trust_model"), F("normalize", Normalize, "auto", "prepare.normalize"),
    F("allow_weak_base", AllowWeakBase, False, "prepare.allow_weak_base"), F("seed", Seed, 0, "prepare.seed"),
    F("profile", SweepProfile, SWEEP_PROFILE, "latency_profile"), F("device", Device, "auto", "prepare.device"),
    F("ray", Ray, False), F("ray_address", RayAddress, None),
    F("fresh", Fresh, False, "fresh"), F("overwrite", ResearchOverwrite, False, "overwrite"),
)


@configured(SWEEP_FLAGS)
def sweep_cmd(model: OptionalModel = None, config: ConfigFile = None, as_json: Json = False, *,
              flags: FlagValues) -> None:
    from edgerobust.research.configs import SweepConfig

    cfg = flags.build(SweepConfig, config, model=model, out_for="the sweep's folder")
    # torch-free so far: a bad value is refused before torch loads
    from edgerobust.research.sweep import findings, sweep
    from edgerobust.research.points import summarize

    out = Path(cfg.out)
    result = sweep(cfg, point_runner(flags["ray"], flags["ray_address"], cfg.prepare.device))
    ui.info(_ran_on(result))
    if as_json:
        typer.echo((out / "sweep.json").read_text())
        return
    points = summarize([result])
    ui.out.print(_render_points(points, f"sweep → {out} (n={result.n_eval}, {result.seconds:.0f} s, torch on "
                                        f"{result.config['device']})", cfg.focus))
    for f in findings(points, cfg):
        ui.out.print(f"• {f}", markup=False, highlight=False)
    ui.info(f"wrote {out / 'sweep.json'} and {out / 'report.html'}")


recipe_app = typer.Typer(help="Named research recipes: published experiments on compression and robustness.",
                         no_args_is_help=True)


@recipe_app.command("list", help="List the recipes with the paper each reproduces.")
def recipe_list(as_json: Json = False) -> None:
    from edgerobust.research.recipes import RECIPES

    if as_json:
        typer.echo(json.dumps([{"name": r.name, "title": r.title, "paper": r.paper, "summary": r.summary}
                               for r in RECIPES.values()], indent=2))
        return
    t = Table(title="recipes", title_justify="left")
    for col in ("name", "experiment", "paper"):
        t.add_column(col)
    for r in RECIPES.values():
        t.add_row(r.name, r.title, r.paper)
    ui.out.print(t)


def _recipe_help() -> str:
    from edgerobust.research.recipes import RECIPES

    lines = "\n".join(f"[bold]{k}[/bold]: {r.summary}\n" for k, r in RECIPES.items())
    return ("Run recipe NAME: train (or load) the base model per seed, sweep, and write OUT/recipe.json, "
            "the PNGs and OUT/report.html with the finding in one sentence. Rerun to resume. --device: where "
            f"torch runs (zoo training and every sweep).\n\nRecipes:\n\n{lines}")


RecipeOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default research/NAME).")]
RecipeData = Annotated[Optional[str], typer.Option("--data", help="Data source; needs --model unless it is the zoo "
                                                                  "model's own.")]
RecipeArch = Annotated[Optional[str], typer.Option("--arch", help="Zoo model to train (digits-cnn, digits-resnet), or "
                                                                  "the architecture of a --model state_dict.")]
RecipeModel = Annotated[Optional[Path], typer.Option("--model", help="Your base model instead of a zoo model trained "
                                                                     "by the recipe.")]
Seeds = Annotated[int, typer.Option("--seeds", min=1, help="Repeat with seeds 0..N-1; report mean and sd.")]
RecipeEpochs = Annotated[int, typer.Option("--finetune-epochs", min=0, help="Fine-tuning epochs.")]
ZooEpochs = Annotated[Optional[int], typer.Option("--zoo-epochs", min=1, help="Zoo training epochs (default: the "
                                                                              "zoo's).")]
RecipeSparsities = Annotated[Optional[str], typer.Option("--sparsities", help="Override the recipe's sparsities.")]
RecipeEps = Annotated[Optional[str], typer.Option("--eps", help="Override the recipe's eps grid (keep 8/255 in it).")]

# Every recipe run flag and the key it sets in edgerobust.research.configs.RecipeConfig's schema.
RECIPE_FLAGS = (
    F("out", RecipeOut, None, "out", str), F("data", RecipeData, None, "prepare.data"),
    F("arch", RecipeArch, None, "prepare.arch"), F("model", RecipeModel, None, "prepare.model", str),
    F("num_classes", NumClasses, None, "prepare.num_classes"), F("normalize", Normalize, "auto", "prepare.normalize"),
    F("allow_weak_base", AllowWeakBase, False, "prepare.allow_weak_base"), F("seeds", Seeds, 1, "seeds"),
    F("eval_samples", EvalSamples, DEFAULT_EVAL_SAMPLES, "prepare.eval_samples"),
    F("finetune_epochs", RecipeEpochs, 2, "finetune_epochs"), F("zoo_epochs", ZooEpochs, None, "zoo_epochs"),
    F("sparsities", RecipeSparsities, None, "sparsities", _floats), F("eps", RecipeEps, None, "eps"),
    F("steps", OldSteps, None, "attack_steps"), F("attack_steps", AttackSteps, None, "attack_steps"),
    F("device", Device, "auto", "prepare.device"), F("ray", Ray, False), F("ray_address", RayAddress, None),
    F("fresh", Fresh, False, "fresh"), F("overwrite", ResearchOverwrite, False, "overwrite"),
)


@recipe_app.command("run", help=_recipe_help(), no_args_is_help=True)
@configured(RECIPE_FLAGS)
def recipe_run(name: Annotated[str, typer.Argument(help="The recipe (see `edgerobust recipe list`).", metavar="NAME")],
               config: ConfigFile = None, as_json: Json = False, *, flags: FlagValues) -> None:
    from edgerobust.research.configs import RecipeConfig
    from edgerobust.research.recipes import get_recipe, run_recipe

    get_recipe(name)
    cfg = flags.build(RecipeConfig, config, defaults={"out": str(Path("research") / name)})
    result = run_recipe(name, cfg, point_runner(flags["ray"], flags["ray_address"], cfg.prepare.device))
    ui.info("; ".join(_ran_on(r) for r in result.runs))
    if as_json:
        typer.echo((result.out / "recipe.json").read_text())
        return
    ui.out.print(f"[bold]finding:[/bold] {escape(result.finding)}", highlight=False)
    ui.info(f"wrote {result.out / 'recipe.json'} and {result.out / 'report.html'} in {result.seconds:.0f} s "
            f"(torch on {result.runs[0].config['device']})")


def study_cmd(
    file: Annotated[Path, typer.Argument(help="The study file (TOML): [[models]] and a [grid]; see docs/research.md, "
                                              "Studies.")],
    out: Out,
    device: Device = "auto",
    ray: Ray = False,
    ray_address: RayAddress = None,
    fresh: Fresh = False,
    overwrite: ResearchOverwrite = False,
    as_json: Json = False,
) -> None:
    from edgerobust.research.study import load_study, run_study

    study = load_study(file, out, device=device)
    result = run_study(study, out, point_runner(ray, ray_address, device), fresh=fresh, overwrite=overwrite)
    ui.info("; ".join(_ran_on(r) for r in result.runs))
    if as_json:
        typer.echo((out / "study.json").read_text())
        return
    focus = study.sweeps[0][2].focus
    ui.out.print(_render_points(result.points, f"study {study.name} → {out} ({result.seconds:.0f} s, torch on "
                                               f"{result.runs[0].config['device']})", focus))
    ui.info(f"wrote {out / 'study.json'} and {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command(name="sweep", no_args_is_help=True,
                help="Compress one model at several sparsities and precisions, replay adversarial sets crafted "
                     "once on the base, measure speedup, and write sweep.json, plots and report.html. Resumable "
                     "(rerun to reuse finished points); --ray runs the points as Ray tasks; --device puts torch's "
                     "work (pruning, fine-tuning, attacks) on the CPU or a CUDA GPU.")(sweep_cmd)
    app.add_typer(recipe_app, name="recipe")
    app.command(name="study", no_args_is_help=True,
                help="Run a study file: several models x sparsities x precisions x fine-tuning modes x seeds as "
                     "sweeps on the same resumable points (in this process or --ray), reported together with "
                     "the models as series in study.json, plots and report.html. --device: where torch runs "
                     "for every sweep.")(study_cmd)
