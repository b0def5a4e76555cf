"""CLI command `edgerobust attack`: craft adversarial sets on a torch model (torch imported lazily)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgerobust import ui
from edgerobust.workstation.attacks import ATTACKS
from edgerobust.cli.compress import OptionalModel
from edgerobust.cli.configured import ConfigFile, Flag, FlagValues, configured
from edgerobust.cli.options import (AllowWeakBase, Arch, Device, AttackSteps, Eps, EvalData, EvalSamples, Normalize, NumClasses,
                                    OldSteps, Overwrite, Seed, TrustModel)
from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES

_NAMES = ", ".join(ATTACKS)


def _help() -> str:
    lines = "\n".join(f"[bold]{k}[/bold] ({e.norm}): {e.summary}\n" for k, e in ATTACKS.items())
    return ("Craft adversarial sets on MODEL (the base model) from its evaluation data, one set per "
            "attack and eps, and write OUT/eval.npz plus OUT/adv/<attack>_<eps>.npz.\n\n"
            "Attacks run on [0, 1] pixels with the model's normalization inside, so eps is in pixel "
            "units (8/255 in Linf, e.g. 0.5 in L2). Every set stays within eps of the clean input in "
            "its attack's norm; cw is clipped onto the L2 ball of radius eps.\n\n"
            f"Attacks:\n\n{lines}")


Out = Annotated[Optional[Path], typer.Option("--out", "-o", show_default=False,
                                             help="Folder to write eval.npz and adv/*.npz into.")]
Data = Annotated[Optional[str], typer.Option("--data", help="Data source: digits, npz:PATH, folder:PATH, cifar10:PATH. "
                                                            "Default: the one the checkpoint records, else digits.")]
AttackNames = Annotated[str, typer.Option("--attacks", "-a", help=f"Comma-separated attacks: {_NAMES}.")]
Alpha = Annotated[Optional[str], typer.Option(
    "--alpha", help="Step size, e.g. 1/255 (Adam's learning rate for cw). Default per attack: 2.5*eps/steps for "
                    "pgd/pgdl2, eps/steps for mifgsm/difgsm, 0.01 for cw.")]
RandomStart = Annotated[Optional[bool], typer.Option(
    "--random-start/--no-random-start", help="Start at a random point in the eps ball (pgd, pgdl2, difgsm). "
                                             "Default: on for pgd/pgdl2, off for difgsm.")]
OldSamples = Annotated[Optional[int], typer.Option("--n-samples", "-n", min=1, hidden=True,
                                                   help="Old name of --eval-samples.")]
BatchSize = Annotated[int, typer.Option("--attack-batch-size", min=1, help="Samples per attack batch.")]
OldBatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, hidden=True,
                                                     help="Old name of --attack-batch-size.")]

F = Flag
# Every attack flag and the key it sets in edgerobust.workstation.attacks.sets.SetsConfig's schema.
ATTACK_FLAGS = (
    F("out", Out, None, "out", str), F("data", Data, None, "prepare.data"),
    F("attacks", AttackNames, DEFAULT_ATTACKS, "attacks.names"), F("eps", Eps, DEFAULT_EPS, "attacks.eps"),
    F("steps", OldSteps, None, "attacks.steps"), F("attack_steps", AttackSteps, None, "attacks.steps"),
    F("alpha", Alpha, None, "attacks.alpha"), F("random_start", RandomStart, None, "attacks.random_start"),
    F("seed", Seed, 0, "prepare.seed"), F("eval_samples", EvalSamples, DEFAULT_EVAL_SAMPLES, "prepare.eval_samples"),
    F("eval_data", EvalData, None, "prepare.eval_data"), F("n_samples", OldSamples, None, "prepare.eval_samples"),
    F("batch_size", BatchSize, 256, "batch_size"), F("old_batch_size", OldBatchSize, None, "batch_size"),
    F("arch", Arch, None, "prepare.arch"), F("num_classes", NumClasses, None, "prepare.num_classes"),
    F("normalize", Normalize, "auto", "prepare.normalize"), F("allow_weak_base", AllowWeakBase, False, "prepare.allow_weak_base"),
    F("trust_model", TrustModel, False, "prepare.trust_model"), F("device", Device, "auto", "prepare.device"),
    F("overwrite", Overwrite, False, "overwrite"),
)


@configured(ATTACK_FLAGS)
def attack(model: OptionalModel = None, config: ConfigFile = None, *, flags: FlagValues) -> None:
    # Validate every option before loading anything heavy.
    from edgerobust.workstation.attacks.sets import SetsConfig

    cfg = flags.build(SetsConfig, config, model=model, out_for="the folder to write the sets into")
    ignored = {s.attack: s.ignored() for s in cfg.attacks if s.ignored()}  # one warning per attack, not per eps
    for name, opts in ignored.items():
        ui.warn(f"{name} does not take {', '.join('--' + o.replace('_', '-') for o in opts)}; ignored for it.")
    out = Path(cfg.out)
    from edgerobust.workstation.attacks.sets import attack_sets  # torch from here on

    res = attack_sets(cfg)
    metas = res.sets
    data, ev = res.data, range(res.n)
    table = Table(title=f"adversarial sets of {Path(str(cfg.prepare.model)).name} on {data} ({len(ev)} samples) -> {out}")
    for col in ("attack", "eps", "norm", "n", "base clean acc", "base adv acc", "seconds"):
        table.add_column(col, justify="left" if col in ("attack", "norm") else "right")
    for m in metas:
        table.add_row(m["attack"], m["eps_text"], m["norm"], str(m["n"]),
                      f"{m['base_accuracy']:.1%}", f"{m['base_adv_accuracy']:.1%}", f"{m['seconds']:.1f}")
    ui.out.print(table)
    ui.info(f"wrote {out / 'eval.npz'}, {out / 'base.onnx'} (the base the sets record) and {len(metas)} set(s) in "
            f"{out / 'adv'}")


def register(app: typer.Typer) -> None:
    app.command(name="attack", help=_help(), no_args_is_help=True)(attack)
