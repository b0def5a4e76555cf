"""CLI commands on the compress side (need torch): `compress`, `zoo train|list`, `demo`.

torch is imported inside the command functions, so `edgerobust audit` starts without it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgerobust import ui
from edgerobust.cli.options import (AllowWeakBase, Arch, CorruptionSeverities, Corruptions, Device, Attacks, AttackSteps,
                                    Criterion, Eps, EvalData, EvalSamples, Json, Normalize, NumClasses, Overwrite, Seed,
                                    TrustModel, floats)
from edgerobust.workstation.data.sources import SOURCES
from edgerobust.defaults import (DEFAULT_ATTACKS, DEFAULT_CRITERION, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES, DEFAULT_MAX_INT8_DROP,
                                 DEFAULT_MAX_PRUNE_DROP, DEFAULT_MIN_INT8_AGREEMENT)
from edgerobust.cli.configured import ConfigFile, Flag, FlagValues, configured
from edgerobust.cli.flags import to_flags
from edgerobust.errors import UsageError
from edgerobust.registries import (CALIBRATIONS, FINETUNE_MODES, INT8_MODES, INT8_ROUTES, INT8_STEMS, INT8_TARGETS,
                                   KEEP_FP32, OPTIMIZERS, RATIOS)

DATA_HELP = to_flags("; ".join(f"{name}: {text}" for name, (_, text) in SOURCES.items()))  # numpy-only import
# Typer's choices, generated from the registries (edgerobust.registries)
Calibration = CALIBRATIONS.enum("Calibration")
Int8Mode = INT8_MODES.enum("Int8Mode")
Int8Target = INT8_TARGETS.enum("Int8Target")
KeepFp32 = KEEP_FP32.enum("KeepFp32")
Int8Stem = INT8_STEMS.enum("Int8Stem")
Int8Route = INT8_ROUTES.enum("Int8Route")
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


# Options only compress takes (the shared ones are in edgerobust.cli.options).
_O = typer.Option
Sparsity = Annotated[float, _O(help="Fraction of output channels removed from each prunable layer (0 < s < 1). "
                                    "MACs fall roughly by (1-s)^2; the realized figures are printed.")]
Int8 = Annotated[bool, _O("--int8/--no-int8", help="Quantize the pruned model to int8 (ONNX Runtime, QDQ, per-channel).")]
Fp16 = Annotated[bool, _O("--fp16", help="Also make an fp16 variant (model_fp16.onnx, float32 inputs and outputs), "
                                         "gated on 99% top-1 agreement with fp32.")]
TargetProfile = Annotated[Optional[str], _O("--profile", "-p", help="The device profile the bundle is for: its first "
                                                                  "execution provider decides which variant is "
                                                                  "model.onnx (CPU, TensorRT, OpenVINO, QNN: int8; "
                                                                  "CUDA: fp16 or fp32; Core ML: fp32; DirectML: fp16 "
                                                                  "when made) and the --int8-target. Default: the CPU "
                                                                  "rule.")]
Data = Annotated[Optional[str], _O(help=f"Data source: {DATA_HELP}. Default: the checkpoint's own data, else digits.")]
ImageSize = Annotated[Optional[int], _O(help="Resize images to N x N.")]
OldMean = Annotated[Optional[str], _O("--mean", hidden=True, help="Older spelling of --normalize MEAN/STD.")]
OldStd = Annotated[Optional[str], _O("--std", hidden=True, help="Older spelling of --normalize MEAN/STD.")]
IgnoreLayers = Annotated[Optional[str], _O("--ignore-layers", help="Comma-separated module names (e.g. "
                                                                   "features.0,classifier) whose output channels "
                                                                   "are never pruned.")]
GlobalPruning = Annotated[bool, _O("--global-pruning", help="Rank channels across the whole network instead of per layer.")]
RatiosOpt = Annotated[Ratios, _O("--ratios", help=f"How per-layer ratios are chosen: {to_flags(RATIOS.help())}.")]
MrsSamples = Annotated[int, _O(help="Calibration samples the fixed PGD batch of --ratios mrs is crafted from.")]
RoundTo = Annotated[Optional[int], _O("--round-to", min=1, show_default=False,
                                      help="Keep channel counts multiples of N (hardware-friendly). Default: the "
                                           "--profile's compress.round_to (16 for laptop-cpu, measured faster with "
                                           "onnxruntime's int8 kernels), else 8.")]
IterativeSteps = Annotated[int, _O(help="Reach the sparsity in N pruning steps.")]
FinetuneEpochs = Annotated[int, _O(help="Fine-tuning epochs after pruning (0 to skip).")]
Lr = Annotated[float, _O(help="Peak learning rate of fine-tuning (one-cycle schedule).")]
OptimizerOpt = Annotated[Optimizer, _O("--optimizer", help=f"Fine-tuning optimizer: {to_flags(OPTIMIZERS.help())}.")]
WeightDecay = Annotated[float, _O(help="Fine-tuning weight decay.")]
FinetuneBatch = Annotated[Optional[int], _O("--finetune-batch-size", min=1, show_default=False,
                                            help="Fine-tuning batch size [default: 64].")]
OldBatch = Annotated[Optional[int], _O("--batch-size", min=1, hidden=True, help="Old name of --finetune-batch-size.")]
Finetune = Annotated[str, _O("--finetune", help=f"Fine-tuning mode: {to_flags(FINETUNE_MODES.help())}.")]
AdvEps = Annotated[str, _O(help="Linf eps of adversarial fine-tuning, in [0, 1] pixels, e.g. 8/255.")]
AdvSteps = Annotated[int, _O(help="PGD steps of adversarial fine-tuning's inner maximization.")]
TradesBeta = Annotated[float, _O(help="TRADES weight of the KL robustness term.")]
Int8ModeOpt = Annotated[Int8Mode, _O("--int8-mode", help=f"{to_flags(INT8_MODES.help())}.")]
CalibrationOpt = Annotated[Calibration, _O("--calibration", help=f"How static int8 picks activation ranges: "
                                                                f"{to_flags(CALIBRATIONS.help())}.")]
CalibSamples = Annotated[int, _O(help="Calibration samples (from the training split).")]
Int8TargetOpt = Annotated[Optional[Int8Target], _O("--int8-target", show_default=False,
                                                  help=f"{to_flags(INT8_TARGETS.help())}. Default: tensorrt for a TensorRT "
                                                       "--profile, else cpu.")]
KeepFp32Opt = Annotated[KeepFp32, _O("--int8-keep-fp32", help=f"Compute layers left in fp32: {to_flags(KEEP_FP32.help())}.")]
Int8StemOpt = Annotated[Optional[Int8Stem], _O("--int8-stem", show_default=False,
                                              help=f"How the int8 model's first convolution is written: "
                                                   f"{to_flags(INT8_STEMS.help())}. Default: the --profile's "
                                                   "compress.int8_stem (space-to-depth for laptop-cpu), else plain.")]
Int8RouteOpt = Annotated[Optional[Int8Route], _O("--int8-route", show_default=False,
                                                help=f"Which onnxruntime kernel the late int8 convolutions are written "
                                                     f"for: {to_flags(INT8_ROUTES.help())}. Default: the --profile's "
                                                     "compress.int8_route (gemm-late for xeon-amx-1thread), else "
                                                     "symmetric.")]
MaxPruneDrop = Annotated[float, _O(help="Stop if pruning + fine-tuning loses more accuracy points than this "
                                        "against the base.")]
MaxInt8Drop = Annotated[float, _O(help="Stop if int8 loses more accuracy points than this against fp32.")]
MinInt8Agreement = Annotated[float, _O(min=0.0, max=1.0, help="Stop if int8 gives fp32's top-1 answer on a smaller "
                                                           "share of the evaluation samples than this (below 0.99 "
                                                           "compress warns).")]
ParityAtol = Annotated[float, _O(help="Max |logit difference| ONNX vs torch, per unit of the largest logit.")]
Whitebox = Annotated[bool, _O("--whitebox", help="Also craft the --attacks on the pruned model itself (fp32, and an "
                                                "int8 simulation with --int8) into adv/whitebox-fp32/ and "
                                                "adv/whitebox-int8/.")]
OptionalModel = Annotated[Optional[Path], typer.Argument(
    help="The PyTorch model file: an edgerobust checkpoint, a state_dict (with --arch), or a pickled nn.Module (with "
         "--trust-model). Default: the config file's prepare.model.", show_default=False, metavar="MODEL")]
BundleOut = Annotated[Optional[Path], _O("--out", "-o", help="Bundle folder (default export/<name>/).")]
BundleName = Annotated[Optional[str], _O(help="Bundle name (default: the model file's stem).")]


def _ignore_layers(text):
    return [n.strip() for n in (text or "").split(",") if n.strip()]


F = Flag
# Every compress flag and the config key it sets (edgerobust.workstation.configs.CompressConfig's schema);
# `--config FILE` sets the same keys.
COMPRESS_FLAGS = (
    F("sparsity", Sparsity, 0.5, "prune.sparsity"), F("int8", Int8, False, "int8"), F("fp16", Fp16, False, "fp16"),
    F("profile", TargetProfile, None, "target"), F("arch", Arch, None, "prepare.arch"),
    F("num_classes", NumClasses, None, "prepare.num_classes"), F("trust_model", TrustModel, False, "prepare.trust_model"),
    F("data", Data, None, "prepare.data"), F("eval_data", EvalData, None, "prepare.eval_data"),
    F("image_size", ImageSize, None, "prepare.image_size"), F("normalize", Normalize, "auto", "prepare.normalize"),
    F("mean", OldMean), F("std", OldStd), F("allow_weak_base", AllowWeakBase, False, "prepare.allow_weak_base"),
    F("criterion", Criterion, DEFAULT_CRITERION, "prune.criterion"),
    F("global_pruning", GlobalPruning, False, "prune.global_pruning"), F("ratios", RatiosOpt, "uniform", "prune.ratios"),
    F("ignore_layers", IgnoreLayers, None, "prune.ignore_layers", _ignore_layers),
    F("mrs_samples", MrsSamples, 128, "prune.mrs_samples"), F("round_to", RoundTo, None, "prune.round_to"),
    F("iterative_steps", IterativeSteps, 1, "prune.iterative_steps"),
    F("finetune_epochs", FinetuneEpochs, 3, "finetune.epochs"), F("lr", Lr, 1e-3, "finetune.lr"),
    F("optimizer", OptimizerOpt, "adam", "finetune.optimizer"), F("weight_decay", WeightDecay, 0.0, "finetune.weight_decay"),
    F("batch_size", FinetuneBatch, None, "finetune.batch_size"), F("old_batch_size", OldBatch),
    F("finetune", Finetune, "standard", "finetune.mode"), F("adv_eps", AdvEps, "8/255", "finetune.adv_eps"),
    F("adv_steps", AdvSteps, 7, "finetune.adv_steps"), F("trades_beta", TradesBeta, 6.0, "finetune.trades_beta"),
    F("int8_mode", Int8ModeOpt, "static", "quant.mode"), F("calibration", CalibrationOpt, "minmax", "quant.calibration"),
    F("calib_samples", CalibSamples, 256, "prepare.calib_samples"), F("int8_target", Int8TargetOpt, None, "quant.int8_target"),
    F("int8_keep_fp32", KeepFp32Opt, "auto", "quant.keep_fp32"), F("int8_stem", Int8StemOpt, None, "quant.stem"),
    F("int8_route", Int8RouteOpt, None, "quant.route"),
    F("max_prune_drop", MaxPruneDrop, DEFAULT_MAX_PRUNE_DROP, "max_prune_drop"),
    F("max_int8_drop", MaxInt8Drop, DEFAULT_MAX_INT8_DROP, "max_int8_drop"),
    F("min_int8_agreement", MinInt8Agreement, DEFAULT_MIN_INT8_AGREEMENT, "min_int8_agreement"),
    F("parity_atol", ParityAtol, 1e-3, "parity_atol"), F("attacks", Attacks, DEFAULT_ATTACKS, "attacks.names"),
    F("eps", Eps, DEFAULT_EPS, "attacks.eps"), F("attack_steps", AttackSteps, None, "attacks.steps"),
    F("whitebox", Whitebox, False, "whitebox"),
    F("corruptions", Corruptions, "default", "corruptions"),
    F("corruption_severities", CorruptionSeverities, "1,3,5", "corruption_severities"),
    F("eval_samples", EvalSamples, DEFAULT_EVAL_SAMPLES, "prepare.eval_samples"),
    F("seed", Seed, 0, "prepare.seed"), F("device", Device, "auto", "prepare.device"),
    F("out", BundleOut, None, "out", str), F("name", BundleName, None, "name"),
    F("overwrite", Overwrite, False, "overwrite"),
)


@configured(COMPRESS_FLAGS)
def compress_cmd(model: OptionalModel = None, config: ConfigFile = None, as_json: Json = False, *,
                 flags: FlagValues) -> None:
    """Prune, fine-tune, export and int8-quantize a PyTorch model into a deployable bundle.

    The bundle (base.onnx, model.onnx, eval.npz, adv/, corruptions/, manifest.json) is what
    `edgerobust audit` checks on the device. Every flag is a key of a config file given with
    --config (TOML or JSON); a bundle's manifest.json replays the bundle's own config.
    """
    config = compress_config(flags, config, model)  # torch-free: a bad value is refused before torch loads
    from edgerobust.workstation.compress import compress as run

    result = run(config)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    ui.out.print(render_compress(result))
    if result.sensitivity:
        ui.out.print(render_sensitivity(result.sensitivity))
    pr = result.prune
    if not pr.honest:  # said during pruning; said again where the figures are read
        ui.out.print(f"[yellow]note:[/yellow] pruning realized {pr.macs_reduction:.2f}x fewer MACs where sparsity "
                     f"{pr.requested_sparsity:g} asks about {pr.asked_macs_reduction:.2f}x (the warnings above say "
                     "which layers and why).", highlight=False)
    for line in corruption_lines(result.corruption):
        ui.out.print(line, highlight=False)
    others = [w for w in result.warnings if w not in pr.warnings]
    for w in others:
        ui.out.print(f"[yellow]note:[/yellow] {escape(to_flags(w))}", highlight=False)
    ui.out.print(f"torch ran on {result.device}. Bundle written to [bold]{escape(str(result.bundle))}[/bold] in "
                 f"{result.seconds:.0f} s. On the device: edgerobust audit {escape(str(result.bundle / 'model.onnx'))}")


def corruption_lines(c: dict | None) -> list[str]:
    """What compress (or `edgerobust corrupt`) made of the corruptions: the sets, the time, what was left out."""
    if not c:
        return []
    out = [f"corruption sets: {len(c['files'])} ({len(c['names'])} corruptions at severities "
           f"{','.join(map(str, c['severities']))}) in {c['seconds']:.1f} s → corruptions/"]
    for s in c["skipped"]:
        at = f" at severity {s['severity']}" if s.get("severity") else ""
        out.append(f"[yellow]note:[/yellow] corruption {s['corruption']}{at} left out: {escape(s['reason'])}")
    return out


def compress_config(flags: FlagValues, config: Optional[Path], model: Optional[Path]):
    """The CompressConfig for compress's flags and --config file: flags mapped to keys, nothing decided here
    (the library validates every value and settles what the target profile leaves open)."""
    from edgerobust.workstation.configs import CompressConfig

    extra = {"finetune.batch_size": flags["old_batch_size"] if not flags.given("batch_size") else None}
    if flags["mean"] is not None or flags["std"] is not None:  # the older spelling of --normalize MEAN/STD
        if flags["mean"] is None or flags["std"] is None:
            raise UsageError("--mean and --std go together: pass both or neither.")
        if flags.given("normalize") and flags["normalize"] != "auto":
            raise UsageError("--normalize and --mean/--std say the same thing twice.", fix="Pass one of them.")
        mean = floats(flags["mean"], "--mean", "0.485,0.456,0.406")
        std = floats(flags["std"], "--std", "0.229,0.224,0.225")
        extra["prepare.normalize"] = f"{','.join(map(str, mean))}/{','.join(map(str, std))}"
    return flags.build(CompressConfig, config, extra, model=model)


def demo_cmd(
    out: Annotated[Path, _O("--out", "-o", help="The demo bundle folder (replaced on each run; the trained model is "
                                                 "kept beside it and reused).")] = Path("export/demo"),
    model: Annotated[str, _O(help="Zoo model to train: digits-resnet or digits-cnn.")] = "digits-resnet",
    retrain: Annotated[bool, _O("--retrain", help="Train the zoo model again even if it is there.")] = False,
    eps: Annotated[str, _O(help="Attack strengths of the FGSM and PGD sets.")] = DEFAULT_EPS,
    profile: Annotated[Optional[str], _O("--profile", "-p", envvar="EDGEROBUST_PROFILE",
                                         help="Device profile for the audit (default: the best match for "
                                              "this host).")] = None,
    device: Device = "auto",
) -> None:
    """Run the whole job on bundled data: train a zoo model, compress it (0.5, int8), audit it.

    Offline, 75 s on an idle 2-core machine with the training (measured once), about 8 s of it a short query
    attack on each runtime (where ART is installed, as `[all]` installs it). The bundle lands in export/demo/, the audit report in
    export/demo/reports/.
    """
    from edgerobust.workstation.demo import run_demo
    from edgerobust.edge.render.report import render

    r = run_demo(out=out, model=model, retrain=retrain, eps=eps, profile=profile, device=device)
    ui.out.print(render_compress(r.compress))
    render(r.audit, ui.out, to_flags)
    ui.out.print(f"report: {r.report_dir}")


def zoo_list() -> None:
    """List the zoo models and the data they train on."""
    from edgerobust.workstation.model.nets import ZOO

    t = Table()
    for col in ("name", "data", "input", "description"):
        t.add_column(col)
    for n, e in ZOO.items():
        t.add_row(n, e.data, f"{e.in_channels}x{e.image_size}x{e.image_size}", e.description)
    ui.out.print(t)


def zoo_train(
    name: Annotated[str, typer.Argument(help="Zoo model: digits-cnn or digits-resnet.")],
    out: Annotated[Path, _O("--out", "-o", help="Where to write the checkpoint.")] = Path("model.pt"),
    seed: Seed = 0,
    epochs: Annotated[Optional[int], _O(help="Epochs (default: the zoo recipe's).")] = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Train a zoo model on its bundled data and save a self-describing checkpoint."""
    from edgerobust.workstation.train.zoo import train_zoo

    if out.exists() and not overwrite:
        raise UsageError(f"'{out}' already exists.", fix="Pass --overwrite or choose another --out.")
    r = train_zoo(name, out, seed=seed, epochs=epochs, device=device)
    ui.out.print(f"{r.name}: eval accuracy {r.eval_acc:.2%}, {r.params:,} params, trained in "
                 f"{r.seconds:.0f} s → {r.path}")


def register(app: typer.Typer) -> None:
    zoo_app = typer.Typer(help="The reference model zoo: small models trained on bundled data, offline.",
                          no_args_is_help=True)
    app.add_typer(zoo_app, name="zoo")
    app.command(name="compress", no_args_is_help=True)(compress_cmd)
    app.command(name="demo")(demo_cmd)
    zoo_app.command("list")(zoo_list)
    zoo_app.command("train")(zoo_train)
