"""CLI command `optimize`: search the compressions for the best model under a latency budget
(torch and optuna imported inside the command, after the flags are checked)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerobust import ui
from edgerobust.cli.compress import OptionalModel
from edgerobust.cli.configured import ConfigFile, Flag, FlagValues, configured
from edgerobust.cli.flags import to_flags
from edgerobust.cli.options import (AllowWeakBase, Arch, Attacks, AttackSteps, CorruptionSeverities, Device, EvalData,
                                    EvalSamples, Eps, Json, Normalize, NumClasses, Seed, TrustModel)
from edgerobust.cli.research import Ray, RayAddress, SweepData, point_runner
from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES, DEFAULT_MAX_PRUNE_DROP
from edgerobust.research.optimize.configs import AIMS, DEFAULT_MAX_ROBUST_DROP

_O = typer.Option
OptOut = Annotated[Optional[Path], _O("--out", "-o", show_default=False,
                                      help="The search folder: study.db (Optuna's SQLite storage), points/, pareto.json, "
                                           "report.html and best/ (the chosen bundle). Rerun to resume; a rerun with "
                                           "more --trials extends the study.")]
Profile = Annotated[str, _O("--profile", "-p", envvar="EDGEROBUST_PROFILE",
                            help="The device profile the budget is for: latency is measured with it on this host "
                                 "(or, with --estimate, predicted on the calibrated device).")]
MaxLatency = Annotated[Optional[float], _O("--max-latency-ms", show_default=False,
                                           help="The budget: p50 latency at batch 1, in ms (exactly one budget).")]
MinSpeedup = Annotated[Optional[float], _O("--min-speedup", show_default=False,
                                           help="The budget: the base's p50 over the point's, on the same profile.")]
Aim = Annotated[str, _O("--aim", help=f"What to optimize: {to_flags(AIMS.help())}.")]
MaxCleanDrop = Annotated[float, _O("--max-clean-drop", help="Aims robust and corruption: clean accuracy may fall at most this many "
                                                            "points below the base's.")]
MaxRobustDrop = Annotated[float, _O("--max-robust-drop", help="Aim speed: robust accuracy may fall at most this many "
                                                              "points below the reference point's (--sparsity 0.5 --int8).")]
Trials = Annotated[int, _O("--trials", help="Trials the study holds when done (a resumed study runs only the rest).")]
Estimate = Annotated[Optional[Path], _O("--estimate", show_default=False,
                                        help="A device's calibration file (edgerobust calibrate): latency is predicted "
                                             "there, labelled estimated with its band, and the budget is checked "
                                             "against the band's upper edge.")]
Halving = Annotated[bool, _O("--halving/--no-halving",
                             help="Aim robust: score each point on a quarter of the rows first and stop it there when "
                                  "Optuna's WilcoxonPruner finds it worse than the best point on those rows (p < 0.05).")]
OptCorruptions = Annotated[Optional[str], _O(
    "--corruptions", show_default=False,
    help="Common corruptions (names, families, default, all or none; see `edgerobust compress --help`) made once from "
         "the evaluation rows and replayed on every point: its accuracy pooled over the sets is recorded, and "
         "--aim corruption maximizes it. Default: the default subset with --aim corruption, none otherwise.")]
FtEpochs = Annotated[int, _O("--max-finetune-epochs", help="The largest fine-tuning epochs a trial may draw.")]

F = Flag
# Every optimize flag and the key it sets in edgerobust.research.optimize.configs.OptimizeConfig's schema.
OPTIMIZE_FLAGS = (
    F("out", OptOut, None, "out", str), F("profile", Profile, "laptop-cpu", "profile"),
    F("max_latency_ms", MaxLatency, None, "max_latency_ms"), F("min_speedup", MinSpeedup, None, "min_speedup"),
    F("aim", Aim, "robust", "aim"), F("max_clean_drop", MaxCleanDrop, DEFAULT_MAX_PRUNE_DROP, "max_clean_drop"),
    F("max_robust_drop", MaxRobustDrop, DEFAULT_MAX_ROBUST_DROP, "max_robust_drop"),
    F("trials", Trials, 20, "trials"), F("estimate", Estimate, None, "estimate", str),
    F("max_finetune_epochs", FtEpochs, 3, "space.epochs_max"), F("halving", Halving, True, "halving"),
    F("attacks", Attacks, DEFAULT_ATTACKS, "attacks.names"), F("eps", Eps, DEFAULT_EPS, "attacks.eps"),
    F("attack_steps", AttackSteps, None, "attacks.steps"), F("corruptions", OptCorruptions, None, "corruptions"),
    F("corruption_severities", CorruptionSeverities, "1,3,5", "corruption_severities"),
    F("eval_samples", EvalSamples, DEFAULT_EVAL_SAMPLES, "prepare.eval_samples"),
    F("data", SweepData, None, "prepare.data"), F("eval_data", EvalData, None, "prepare.eval_data"),
    F("arch", Arch, None, "prepare.arch"), F("num_classes", NumClasses, None, "prepare.num_classes"),
    F("trust_model", TrustModel, False, "prepare.trust_model"), F("normalize", Normalize, "auto", "prepare.normalize"),
    F("allow_weak_base", AllowWeakBase, False, "prepare.allow_weak_base"), F("seed", Seed, 0, "prepare.seed"),
    F("device", Device, "auto", "prepare.device"), F("ray", Ray, False), F("ray_address", RayAddress, None),
)


@configured(OPTIMIZE_FLAGS)
def optimize_cmd(model: OptionalModel = None, config: ConfigFile = None, as_json: Json = False, *,
                 flags: FlagValues) -> None:
    from edgerobust.research.optimize.configs import OptimizeConfig

    cfg = flags.build(OptimizeConfig, config, model=model, out_for="the search's folder")
    # torch-free so far: a bad value is refused before torch (and optuna) load
    from edgerobust.research.optimize.report import closing_line
    from edgerobust.research.optimize.search import optimize

    with ui.status_only_from("edgerobust.research.optimize"):  # not every trial's compress lines; warnings show
        result = optimize(cfg, point_runner(flags["ray"], flags["ray_address"], cfg.prepare.device))
    out = Path(result.out)
    if as_json:
        typer.echo(json.dumps(json.loads((out / "pareto.json").read_text()), indent=2))
        return
    feasible = sum(bool(t.get("feasible")) for t in result.trials)
    ui.info(f"ran {result.ran} trial(s), {len(result.trials)} in the study, {feasible} within the budget; "
            f"{result.seconds:.0f} s")
    ui.out.print(closing_line(result), markup=False, highlight=False)
    ui.info(f"wrote {out / 'best'}, {out / 'pareto.json'} and {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    app.command(name="optimize", no_args_is_help=True,
                help="Search the compressions (sparsity, ratios, rounding, fine-tuning mode and epochs, precision, "
                     "int8 settings) with Optuna for the most robust model under a latency budget (or the most "
                     "accurate under common corruptions, or the fastest under a robustness gate), every point scored on the profile's ONNX Runtime session; the "
                     "chosen bundle is audited in full and written to OUT/best/. Resumable; --ray builds the "
                     "points as Ray tasks.")(optimize_cmd)
