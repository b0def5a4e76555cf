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
from edgerobust.cli.options import (AllowWeakBase, Arch, Device, Attacks, AttackSteps, Criterion, Eps, EvalData, EvalSamples, Json, ModelArg,
                          Normalize, NumClasses, Overwrite, Seed, TrustModel, floats, pick)
from edgerobust.workstation.data import SOURCES
from edgerobust.defaults import (DEFAULT_ATTACKS, DEFAULT_CRITERION, DEFAULT_EPS, DEFAULT_EVAL_SAMPLES, DEFAULT_MAX_INT8_DROP,
                                 DEFAULT_MAX_PRUNE_DROP, DEFAULT_MIN_INT8_AGREEMENT)
from edgerobust.cli.flags import to_flags
from edgerobust.errors import UsageError
from edgerobust.registries import (CALIBRATIONS, FINETUNE_MODES, INT8_MODES, INT8_STEMS, INT8_TARGETS, KEEP_FP32,
                                   OPTIMIZERS, RATIOS)

DATA_HELP = to_flags("; ".join(f"{name}: {text}" for name, (_, text) in SOURCES.items()))  # numpy-only import
# Typer's choices, generated from the registries (edgerobust.registries)
Calibration = CALIBRATIONS.enum("Calibration")
Int8Mode = INT8_MODES.enum("Int8Mode")
Int8Target = INT8_TARGETS.enum("Int8Target")
KeepFp32 = KEEP_FP32.enum("KeepFp32")
Int8Stem = INT8_STEMS.enum("Int8Stem")
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
    from edgerobust.workstation.attacks import make_specs

    return tuple(make_specs(attacks, eps, steps=steps, seed=seed))


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
BundleOut = Annotated[Optional[Path], _O("--out", "-o", help="Bundle folder (default export/<name>/).")]
BundleName = Annotated[Optional[str], _O(help="Bundle name (default: the model file's stem).")]


def compress_cmd(
    model: ModelArg, sparsity: Sparsity = 0.5, int8: Int8 = False, fp16: Fp16 = False,
    profile: TargetProfile = None, arch: Arch = None, num_classes: NumClasses = None,
    trust_model: TrustModel = False, data: Data = None, eval_data: EvalData = None, image_size: ImageSize = None, normalize: Normalize = "auto",
    mean: OldMean = None, std: OldStd = None, allow_weak_base: AllowWeakBase = False,
    criterion: Criterion = DEFAULT_CRITERION, global_pruning: GlobalPruning = False, ratios: RatiosOpt = "uniform",
    ignore_layers: IgnoreLayers = None,
    mrs_samples: MrsSamples = 128, round_to: RoundTo = None, iterative_steps: IterativeSteps = 1,
    finetune_epochs: FinetuneEpochs = 3, lr: Lr = 1e-3, optimizer: OptimizerOpt = "adam",
    weight_decay: WeightDecay = 0.0, batch_size: FinetuneBatch = None, old_batch_size: OldBatch = None,
    finetune: Finetune = "standard", adv_eps: AdvEps = "8/255", adv_steps: AdvSteps = 7,
    trades_beta: TradesBeta = 6.0, int8_mode: Int8ModeOpt = "static", calibration: CalibrationOpt = "minmax",
    calib_samples: CalibSamples = 256, int8_target: Int8TargetOpt = None, int8_keep_fp32: KeepFp32Opt = "auto",
    int8_stem: Int8StemOpt = None,
    max_prune_drop: MaxPruneDrop = DEFAULT_MAX_PRUNE_DROP, max_int8_drop: MaxInt8Drop = DEFAULT_MAX_INT8_DROP,
    min_int8_agreement: MinInt8Agreement = DEFAULT_MIN_INT8_AGREEMENT,
    parity_atol: ParityAtol = 1e-3, attacks: Attacks = DEFAULT_ATTACKS, eps: Eps = DEFAULT_EPS,
    attack_steps: AttackSteps = None, whitebox: Whitebox = False, eval_samples: EvalSamples = DEFAULT_EVAL_SAMPLES,
    seed: Seed = 0, device: Device = "auto", out: BundleOut = None, name: BundleName = None,
    overwrite: Overwrite = False, as_json: Json = False,
) -> None:
    """Prune, fine-tune, export and int8-quantize a PyTorch model into a deployable bundle.

    The bundle (base.onnx, model.onnx, eval.npz, adv/, manifest.json) is what
    `edgerobust audit` checks on the device.
    """
    config = _compress_config(**locals())  # torch-free: a bad value is refused before torch loads
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
    others = [w for w in result.warnings if w not in pr.warnings]
    for w in others:
        ui.out.print(f"[yellow]note:[/yellow] {escape(to_flags(w))}", highlight=False)
    ui.out.print(f"torch ran on {result.device}. Bundle written to [bold]{result.bundle}[/bold] in {result.seconds:.0f} s. "
                 f"On the device: edgerobust audit {result.bundle / 'model.onnx'}")


def _compress_config(**o):
    """The CompressConfig for compress_cmd's options: flags mapped to fields, nothing decided here
    (the library validates every value and settles what the target profile leaves open)."""
    from edgerobust.workstation.attacks.spec import parse_eps
    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, PruneConfig, QuantConfig, TrainConfig
    from edgerobust.workstation.normalization import parse_normalize

    seed = o["seed"]
    mean = floats(o["mean"], "--mean", "0.485,0.456,0.406")
    std = floats(o["std"], "--std", "0.229,0.224,0.225")
    prep = PrepareConfig(model=o["model"], arch=o["arch"], num_classes=o["num_classes"], trust_model=o["trust_model"],
                         data=o["data"], eval_data=o["eval_data"], image_size=o["image_size"], normalize=parse_normalize(o["normalize"], mean, std),
                         seed=seed, eval_samples=o["eval_samples"], calib_samples=o["calib_samples"],
                         allow_weak_base=o["allow_weak_base"], device=o["device"])
    return CompressConfig(
        prep,
        prune=PruneConfig(sparsity=o["sparsity"], criterion=o["criterion"], global_pruning=o["global_pruning"],
                          round_to=o["round_to"], iterative_steps=o["iterative_steps"], ratios=_v(o["ratios"]),
                          mrs_samples=o["mrs_samples"],
                          ignore_layers=tuple(n.strip() for n in (o["ignore_layers"] or "").split(",") if n.strip())),
        finetune=TrainConfig(epochs=o["finetune_epochs"], lr=o["lr"], optimizer=_v(o["optimizer"]),
                             weight_decay=o["weight_decay"], batch_size=pick(o["batch_size"], o["old_batch_size"], 64),
                             mode=o["finetune"], adv_eps=parse_eps(o["adv_eps"], "adv_eps"),
                             adv_steps=o["adv_steps"], trades_beta=o["trades_beta"]),
        int8=o["int8"], fp16=o["fp16"], target=o["profile"],
        quant=QuantConfig(mode=_v(o["int8_mode"]), calibration=_v(o["calibration"]),
                          int8_target=_v(o["int8_target"]) if o["int8_target"] else None,
                          keep_fp32=_v(o["int8_keep_fp32"]), stem=_v(o["int8_stem"]) if o["int8_stem"] else None),
        max_prune_drop=o["max_prune_drop"], max_int8_drop=o["max_int8_drop"],
        min_int8_agreement=o["min_int8_agreement"], parity_atol=o["parity_atol"],
        attacks=attack_specs(o["attacks"], o["eps"], o["attack_steps"], seed), whitebox=o["whitebox"],
        out=o["out"], name=o["name"], overwrite=o["overwrite"])


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

    Offline, under a minute on an idle 2-core machine. The bundle lands in export/demo/, the audit report in
    export/demo/reports/.
    """
    from edgerobust.workstation.demo import run_demo
    from edgerobust.device.render.report import render

    r = run_demo(out=out, model=model, retrain=retrain, eps=eps, profile=profile, device=device)
    ui.out.print(render_compress(r.compress))
    render(r.audit, ui.out)
    ui.out.print(f"report: {r.report_dir}")


def zoo_list() -> None:
    """List the zoo models and the data they train on."""
    from edgerobust.workstation.nets import ZOO

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
    from edgerobust.workstation.zoo import train_zoo

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
