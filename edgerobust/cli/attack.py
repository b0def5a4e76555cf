"""CLI command `edgerobust attack`: craft adversarial sets on a torch model (torch imported lazily)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgerobust import ui
from edgerobust.workstation.attacks import ATTACKS, make_specs
from edgerobust.cli.options import (AllowWeakBase, Arch, Device, AttackSteps, Eps, EvalData, EvalSamples, ModelArg, Normalize, NumClasses,
                          OldSteps, Overwrite, Seed, TrustModel, pick)
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


def attack(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write eval.npz and adv/*.npz into.")],
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Data source: digits, npz:PATH, folder:PATH, cifar10:PATH. Default: the one "
                       "the checkpoint records, else digits.")] = None,
    attacks: Annotated[str, typer.Option("--attacks", "-a", help=f"Comma-separated attacks: {_NAMES}.")] = DEFAULT_ATTACKS,
    eps: Eps = DEFAULT_EPS,
    attack_steps: AttackSteps = None,
    steps: OldSteps = None,
    alpha: Annotated[Optional[str], typer.Option(
        "--alpha", help="Step size, e.g. 1/255 (Adam's learning rate for cw). Default per attack: "
                        "2.5*eps/steps for pgd/pgdl2, eps/steps for mifgsm/difgsm, 0.01 for cw.")] = None,
    random_start: Annotated[Optional[bool], typer.Option(
        "--random-start/--no-random-start",
        help="Start at a random point in the eps ball (pgd, pgdl2, difgsm). "
             "Default: on for pgd/pgdl2, off for difgsm.")] = None,
    seed: Seed = 0,
    eval_samples: EvalSamples = DEFAULT_EVAL_SAMPLES,
    eval_data: EvalData = None,
    n_samples: Annotated[Optional[int], typer.Option("--n-samples", "-n", min=1, hidden=True,
                                                     help="Old name of --eval-samples.")] = None,
    batch_size: Annotated[int, typer.Option("--attack-batch-size", min=1, help="Samples per attack batch.")] = 256,
    old_batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, hidden=True,
                                                          help="Old name of --attack-batch-size.")] = None,
    arch: Arch = None,
    num_classes: NumClasses = None,
    normalize: Normalize = "auto",
    allow_weak_base: AllowWeakBase = False,
    trust_model: TrustModel = False,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    # Validate every option before loading anything heavy.
    steps = pick(attack_steps, steps)
    eval_samples = pick(n_samples, None, eval_samples)
    batch_size = pick(old_batch_size, None, batch_size)
    specs = make_specs(attacks, eps, steps=steps, alpha=alpha, random_start=random_start, seed=seed)
    ignored = {s.attack: s.ignored() for s in specs if s.ignored()}
    for name, opts in ignored.items():
        ui.warn(f"{name} does not take {', '.join('--' + o.replace('_', '-') for o in opts)}; ignored for it.")
    from edgerobust.workstation.configs import PrepareConfig
    from edgerobust.workstation.sets import SetsConfig

    cfg = SetsConfig(PrepareConfig(model=model, arch=arch, num_classes=num_classes, trust_model=trust_model, data=data,
                                   eval_data=eval_data, normalize=normalize, seed=seed, eval_samples=eval_samples,
                                   allow_weak_base=allow_weak_base, device=device),
                     out=out, attacks=tuple(specs), batch_size=batch_size, overwrite=overwrite)
    from edgerobust.workstation.sets import attack_sets  # torch from here on

    res = attack_sets(cfg)
    metas = res.sets
    data, ev = res.data, range(res.n)
    table = Table(title=f"adversarial sets of {model.name} on {data} ({len(ev)} samples) -> {out}")
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
