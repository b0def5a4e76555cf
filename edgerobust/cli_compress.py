"""CLI commands on the compress side (need torch): `compress`, `zoo train|list`, `demo`.

torch is imported inside the command functions, so `edgerobust audit` starts without it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from . import ui
from .cli_options import (AllowWeakBase, Arch, Attacks, AttackSteps, Criterion, Eps, EvalSamples, Json, ModelArg,
                          Normalize, NumClasses, Overwrite, Seed, TrustModel, floats, pick)
from .data import SOURCES
from .defaults import (DEFAULT_ATTACKS, DEFAULT_CRITERION, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES, DEFAULT_MAX_INT8_DROP,
                       DEFAULT_MAX_PRUNE_DROP)
from .errors import UsageError
from .registries import CALIBRATIONS, FINETUNE_MODES, INT8_MODES, INT8_TARGETS, KEEP_FP32, OPTIMIZERS, RATIOS

DATA_HELP = "; ".join(f"{name}: {text}" for name, (_, text) in SOURCES.items())  # numpy-only import
# Typer's choices, generated from the registries (edgerobust.registries)
Calibration = CALIBRATIONS.enum("Calibration")
Int8Mode = INT8_MODES.enum("Int8Mode")
Int8Target = INT8_TARGETS.enum("Int8Target")
KeepFp32 = KEEP_FP32.enum("KeepFp32")
Ratios = RATIOS.enum("Ratios")
Optimizer = OPTIMIZERS.enum("Optimizer")


def _v(choice) -> str:
    """An Enum choice's name as the library spells it."""
    return getattr(choice, "value", choice)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _si(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def render_compress(result) -> Table:
    t = Table(title=f"compressed → {result.bundle}", title_justify="left")
    for col in ("model", "params", "MACs", "file size", "accuracy"):
        t.add_column(col, justify="left" if col == "model" else "right")
    base = result.rows[0]
    for r in result.rows:
        ratio = "" if r is base else f" ({base.macs / max(1, r.macs):.2f}x fewer)"
        t.add_row(r.model, f"{r.params:,}", _si(r.macs) + ratio, _bytes(r.size_bytes), f"{r.accuracy:.2%}")
    return t


def render_sensitivity(rows: list[dict]) -> Table:
    """The per-layer sensitivity scores and ratios of --ratios mrs."""
    t = Table(title="module robustness sensitivity (--ratios mrs)", title_justify="left")
    for col in ("layer", "score", "ratio", "channels"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in rows:
        t.add_row(r["name"], f"{r['score']:.4f}", f"{r['ratio']:.3f}",
                  f"{r['channels_before']} → {r.get('channels_after', '?')}")
    return t


def attack_specs(attacks: Optional[str], eps: str, steps: Optional[int], seed: int) -> tuple:
    """Parse --attacks/--eps into AttackSpecs (one per attack x eps); 'none' or empty: no sets."""
    if not attacks or attacks.strip().lower() == "none":
        return ()
    from .attacks import make_specs

    return tuple(make_specs(attacks, eps, steps=steps, seed=seed))


def register(app: typer.Typer) -> None:
    zoo_app = typer.Typer(help="The reference model zoo: small models trained on bundled data, offline.",
                          no_args_is_help=True)
    app.add_typer(zoo_app, name="zoo")

    @app.command()
    def compress(
        model: ModelArg,
        sparsity: Annotated[float, typer.Option(help="Fraction of output channels removed from each prunable "
                                                     "layer (0 < s < 1). MACs fall roughly by (1-s)^2.")] = 0.5,
        int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Quantize the pruned model to int8 "
                                                                    "(ONNX Runtime, QDQ, per-channel).")] = False,
        arch: Arch = None,
        num_classes: NumClasses = None,
        trust_model: TrustModel = False,
        data: Annotated[Optional[str], typer.Option(help=f"Data source: {DATA_HELP}. Default: the checkpoint's own "
                                                         "data, else digits.")] = None,
        image_size: Annotated[Optional[int], typer.Option(help="Resize images to N x N.")] = None,
        normalize: Normalize = "auto",
        mean: Annotated[Optional[str], typer.Option(hidden=True, help="Older spelling of --normalize MEAN/STD.")] = None,
        std: Annotated[Optional[str], typer.Option(hidden=True, help="Older spelling of --normalize MEAN/STD.")] = None,
        allow_weak_base: AllowWeakBase = False,
        criterion: Criterion = DEFAULT_CRITERION,
        global_pruning: Annotated[bool, typer.Option("--global-pruning", help="Rank channels across the whole "
                                                                              "network instead of per layer.")] = False,
        ratios: Annotated[Ratios, typer.Option(help=f"How per-layer ratios are chosen: {RATIOS.help()}.")] = "uniform",
        mrs_samples: Annotated[int, typer.Option(help="Calibration samples the fixed PGD batch of --ratios mrs is "
                                                      "crafted from.")] = 128,
        round_to: Annotated[int, typer.Option(help="Keep channel counts multiples of N (hardware-friendly).")] = 8,
        iterative_steps: Annotated[int, typer.Option(help="Reach the sparsity in N pruning steps.")] = 1,
        finetune_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after pruning (0 to skip).")] = 3,
        lr: Annotated[float, typer.Option(help="Peak learning rate of fine-tuning (one-cycle schedule).")] = 1e-3,
        optimizer: Annotated[Optimizer, typer.Option(help=f"Fine-tuning optimizer: {OPTIMIZERS.help()}.")] = "adam",
        weight_decay: Annotated[float, typer.Option(help="Fine-tuning weight decay.")] = 0.0,
        batch_size: Annotated[Optional[int], typer.Option("--finetune-batch-size", min=1, show_default=False,
                                                          help="Fine-tuning batch size [default: 64].")] = None,
        old_batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, hidden=True,
                                                              help="Old name of --finetune-batch-size.")] = None,
        finetune: Annotated[str, typer.Option("--finetune", help=f"Fine-tuning mode: {FINETUNE_MODES.help()}.")] = "standard",
        adv_eps: Annotated[str, typer.Option(help="Linf eps of adversarial fine-tuning, in [0, 1] pixels, e.g. "
                                                  "8/255.")] = "8/255",
        adv_steps: Annotated[int, typer.Option(help="PGD steps of adversarial fine-tuning's inner maximization.")] = 7,
        trades_beta: Annotated[float, typer.Option(help="TRADES weight of the KL robustness term.")] = 6.0,
        int8_mode: Annotated[Int8Mode, typer.Option(help=f"{INT8_MODES.help()}.")] = "static",
        calibration: Annotated[Calibration, typer.Option(help=f"How static int8 picks activation ranges: "
                                                              f"{CALIBRATIONS.help()}.")] = "minmax",
        calib_samples: Annotated[int, typer.Option(help="Calibration samples (from the training split).")] = 256,
        int8_target: Annotated[Int8Target, typer.Option(help=f"{INT8_TARGETS.help()}.")] = "cpu",
        int8_keep_fp32: Annotated[KeepFp32, typer.Option(help=f"Compute layers left in fp32: {KEEP_FP32.help()}.")] = "auto",
        max_prune_drop: Annotated[float, typer.Option(help="Stop if pruning + fine-tuning loses more accuracy points "
                                                           "than this against the base.")] = DEFAULT_MAX_PRUNE_DROP,
        max_int8_drop: Annotated[float, typer.Option(help="Stop if int8 loses more accuracy points than this "
                                                          "against fp32.")] = DEFAULT_MAX_INT8_DROP,
        parity_atol: Annotated[float, typer.Option(help="Max |logit difference| ONNX vs torch, per unit of the "
                                                        "largest logit.")] = 1e-3,
        attacks: Attacks = DEFAULT_ATTACKS,
        eps: Eps = DEFAULT_EPS,
        attack_steps: AttackSteps = None,
        whitebox: Annotated[bool, typer.Option("--whitebox", help="Also craft the --attacks on the pruned model "
                                                                  "itself (fp32, and an int8 simulation with --int8) into "
                                                                  "adv/whitebox-fp32/ and adv/whitebox-int8/.")] = False,
        eval_samples: EvalSamples = DEFAULT_EVAL_SAMPLES,
        seed: Seed = 0,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle folder (default export/<name>/).")] = None,
        name: Annotated[Optional[str], typer.Option(help="Bundle name (default: the model file's stem).")] = None,
        overwrite: Overwrite = False,
        as_json: Json = False,
    ) -> None:
        """Prune, fine-tune, export and int8-quantize a PyTorch model into a deployable bundle.

        The bundle (base.onnx, model.onnx, eval.npz, adv/, manifest.json) is what
        `edgerobust audit` checks on the device.
        """
        from .attacks.spec import parse_eps
        from .compress import CompressConfig, compress as run
        from .finetune import TrainConfig
        from .prune import PruneConfig
        from .quantize import QuantConfig

        cfg = CompressConfig(
            model=model, arch=arch, num_classes=num_classes, trust_model=trust_model, data=data,
            image_size=image_size, mean=floats(mean, "--mean", "0.485,0.456,0.406"),
            std=floats(std, "--std", "0.229,0.224,0.225"), normalize=normalize,
            allow_weak_base=allow_weak_base, seed=seed, max_prune_drop=max_prune_drop,
            eval_samples=eval_samples,
            prune=PruneConfig(sparsity=sparsity, criterion=criterion, global_pruning=global_pruning,
                              round_to=round_to, iterative_steps=iterative_steps, seed=seed, ratios=_v(ratios),
                              mrs_samples=mrs_samples),
            finetune=TrainConfig(epochs=finetune_epochs, lr=lr, optimizer=_v(optimizer),
                                 weight_decay=weight_decay, batch_size=pick(batch_size, old_batch_size, 64), seed=seed, mode=finetune,
                                 adv_eps=parse_eps(adv_eps, "adv-eps"), adv_steps=adv_steps, trades_beta=trades_beta),
            int8=int8,
            quant=QuantConfig(mode=_v(int8_mode), calibration=_v(calibration), calib_samples=calib_samples,
                              target=_v(int8_target), keep_fp32=_v(int8_keep_fp32)),
            max_int8_drop=max_int8_drop, parity_atol=parity_atol,
            attacks=attack_specs(attacks, eps, attack_steps, seed), whitebox=whitebox,
            out=out, name=name, overwrite=overwrite,
        )
        result = run(cfg)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        else:
            ui.out.print(render_compress(result))
            if result.sensitivity:
                ui.out.print(render_sensitivity(result.sensitivity))
            ui.out.print(f"bundle written to [bold]{result.bundle}[/bold] in {result.seconds:.0f} s. "
                         f"On the device: edgerobust audit {result.bundle / 'model.onnx'}")

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="The demo bundle folder (replaced on each run; the "
                                                            "trained model is kept beside it and reused).")] = Path("export/demo"),
        model: Annotated[str, typer.Option(help="Zoo model to train: digits-resnet or digits-cnn.")] = "digits-resnet",
        retrain: Annotated[bool, typer.Option("--retrain", help="Train the zoo model again even if it is there.")] = False,
        eps: Annotated[str, typer.Option(help="Attack strengths of the FGSM and PGD sets.")] = DEFAULT_EPS,
        profile: Annotated[Optional[str], typer.Option("--profile", "-p", help="Device profile for the audit "
                                                                              "(default: the best match for this host).")] = None,
    ) -> None:
        """Run the whole job on bundled data: train a zoo model, compress it (0.5, int8), audit it.

        Offline, about a minute on 2 cores. The bundle lands in export/demo/, the audit report in
        export/demo/reports/.
        """
        from .demo import run_demo
        from .report import render

        r = run_demo(out=out, model=model, retrain=retrain, eps=eps, profile=profile)
        ui.out.print(render_compress(r.compress))
        render(r.audit, ui.out)
        ui.out.print(f"report: {r.report_dir}")

    @zoo_app.command("list")
    def zoo_list() -> None:
        """List the zoo models and the data they train on."""
        from .nets import ZOO

        t = Table()
        for col in ("name", "data", "input", "description"):
            t.add_column(col)
        for n, e in ZOO.items():
            t.add_row(n, e.data, f"{e.in_channels}x{e.image_size}x{e.image_size}", e.description)
        ui.out.print(t)

    @zoo_app.command("train")
    def zoo_train(
        name: Annotated[str, typer.Argument(help="Zoo model: digits-cnn or digits-resnet.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the checkpoint.")] = Path("model.pt"),
        seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
        epochs: Annotated[Optional[int], typer.Option(help="Epochs (default: the zoo recipe's).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
    ) -> None:
        """Train a zoo model on its bundled data and save a self-describing checkpoint."""
        from .zoo import train_zoo

        if out.exists() and not overwrite:
            raise UsageError(f"'{out}' already exists.", fix="Pass --overwrite or choose another --out.")
        r = train_zoo(name, out, seed=seed, epochs=epochs)
        ui.out.print(f"{r.name}: eval accuracy {r.eval_acc:.2%}, {r.params:,} params, trained in "
                     f"{r.seconds:.0f} s → {r.path}")
