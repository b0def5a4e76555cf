"""The compress pipeline's stages after `prepare`, each ``stage(input, config) -> artifact``:

    prepare -> prune_stage -> finetune_stage (+ pruning gate) -> export_stage
            -> quantize_stage (+ int8 gate) -> corruption_stage, evidence_stage (attack sets) -> bundle

compress composes them into one bundle; sweep, attack, recipes and demo compose the ones they
need. Each stage takes the Prepared object (model, splits, normalization) and its own config.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edgerobust import events
from edgerobust.edge.files.bundle import EvalSet
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.errors import QualityGateError
from edgerobust.workstation.model.export import export_onnx, onnx_logits, parity_of, require_parity, torch_logits
from edgerobust.workstation.resources.torch_device import on_device
from edgerobust.workstation.train.finetune import TrainResult, accuracy, predict, train
from edgerobust.workstation.configs import PruneConfig, QuantConfig, TrainConfig
from edgerobust.workstation.model.nets import PixelModel
from edgerobust.workstation.pipeline.prepare import Prepared
from edgerobust.workstation.prune.structural import PruneResult, prune
from edgerobust.workstation.quantize.int8 import AUTO_ORDER, QuantResult, quantize

logger = logging.getLogger(__name__)


@dataclass
class Pruned:
    """A pruned copy of the base (the base stays intact for the attack sets)."""

    model: PixelModel
    result: PruneResult
    sensitivity: list[dict] | None = None  # ratios="mrs": per-layer scores and ratios


@dataclass
class Exported:
    """An ONNX file with its logits on the eval split, its parity against torch and its accuracy."""

    path: Path
    logits: np.ndarray
    accuracy: float
    parity: dict | None = None


@dataclass
class Quantized(Exported):
    result: QuantResult | None = None
    config: QuantConfig | None = None  # the layout that passed (keep_fp32 resolved)
    attempts: list[dict] | None = None
    drop_points: float = 0.0
    agreement: float = 0.0  # top-1 agreement with the fp32 model
    warning: str | None = None  # said when the agreement is below INT8_AGREEMENT_WARN


def prune_stage(prep: Prepared, config: PruneConfig) -> Pruned:
    """Prune a deep copy of the base model with ``config`` (per-layer ratios from MRS if asked)."""
    net = copy.deepcopy(prep.loaded.model)
    pruned = prep.wrap(net)
    norm_example = prep.normalize(prep.example)
    calib = prep.splits.calib
    layer_ratios, sens_rows = None, None
    if config.ratios == "mrs":
        from edgerobust.workstation.prune.sensitivity import mrs_ratios

        with events.task("module robustness sensitivity", total=None):
            layer_ratios, sens_rows = mrs_ratios(pruned, net, norm_example, prep.num_classes, calib.x, calib.y, config,
                                                 device=prep.device, seed=prep.seed)
    pr = prune(net, norm_example, prep.num_classes, config, calib=(calib.x, calib.y), normalize=prep.normalize,
               ratios=layer_ratios, seed=prep.seed)
    if sens_rows is not None:
        after = {layer["name"]: layer["after"] for layer in pr.layers}
        for row in sens_rows:
            row["channels_after"] = after.get(row["name"])
    logger.info(f"pruned: params {pr.params_before:,} -> {pr.params_after:,} ({pr.params_reduction:.2f}x), "
                f"MACs {pr.macs_before:,} -> {pr.macs_after:,} ({pr.macs_reduction:.2f}x)")
    return Pruned(model=pruned, result=pr, sensitivity=sens_rows)


def finetune_stage(prep: Prepared, pruned: Pruned, config: TrainConfig) -> TrainResult:
    """Fine-tune the pruned model in place on the train split; the best validation epoch is kept."""
    sp = prep.splits
    with on_device(pruned.model, prep.device) as model:
        return train(model, sp.train.x, sp.train.y, sp.val.x, sp.val.y, config,
                     description=f"fine-tune ({config.mode}) on {prep.device}", seed=prep.seed)


def export_stage(prep: Prepared, model: torch.nn.Module, path: Path, parity_atol: float, what: str) -> Exported:
    """Export ``model`` (pixel space) to ``path``; its ONNX logits on the eval split must match torch's."""
    ev = prep.splits.eval
    path = export_onnx(model, prep.example, path)
    ref, got = torch_logits(model, ev.x), onnx_logits(path, ev.x)
    p = parity_of(ref, got, atol=parity_atol)
    require_parity(p, what)
    return Exported(path=path, logits=got, accuracy=float((got.argmax(1) == ev.y).mean()), parity=asdict(p))


def prune_gate(base: Exported, pruned: Exported, max_drop: float | None, *, n: int, sparsity: float,
               epochs: int) -> float:
    """The points pruning + fine-tuning lost against the base; QualityGateError above ``max_drop``."""
    drop = 100 * (base.accuracy - pruned.accuracy)
    if max_drop is not None and drop > max_drop:
        raise QualityGateError(
            f"Pruning lost {drop:.1f} accuracy points against the base ({base.accuracy:.2%} -> "
            f"{pruned.accuracy:.2%} on {n} samples, sparsity {sparsity:g}, {epochs} fine-tuning epoch(s)); "
            f"the limit is `max_prune_drop` {max_drop:g}. No bundle was written.",
            why="The pruned model is not the same model any more; its robustness would say little about the base's.",
            fix="Try more fine-tuning (`epochs`), a lower `sparsity`, or another `criterion` (e.g. taylor); "
                "or raise `max_prune_drop`.")
    return drop


INT8_AGREEMENT_WARN = 0.99  # top-1 agreement of int8 with fp32 below which compress says so


def quantize_stage(prep: Prepared, fp32: Exported, out: Path, config: QuantConfig,
                   max_drop: float | None, min_agreement: float | None = None) -> Quantized:
    """int8 of ``fp32`` into ``out``; with keep_fp32 'auto' the fastest layout that passes the gate.

    A layout passes when it loses at most ``max_drop`` accuracy points against fp32 *and* gives
    the fp32 model's top-1 answer on at least ``min_agreement`` of the evaluation samples (None
    disables either check): accuracy alone can hide an int8 model that answers differently, with
    errors that cancel out. Layouts are tried in AUTO_ORDER (all int8, then the first layer in
    fp32, then both ends); QualityGateError with every attempt's figures if none passes. Below
    INT8_AGREEMENT_WARN agreement a passing model is shipped with a warning.
    """
    ev = prep.splits.eval
    choices = AUTO_ORDER if config.keep_fp32 == "auto" else (config.keep_fp32,)
    attempts: list[dict] = []
    ref = fp32.logits.argmax(1)
    for keep in choices:
        quant = replace(config, keep_fp32=keep)
        qr = quantize(fp32.path, out, prep.splits.calib.x, quant)
        logits = onnx_logits(out, ev.x)
        acc = float((logits.argmax(1) == ev.y).mean())
        agree = float((logits.argmax(1) == ref).mean())
        drop = 100 * (fp32.accuracy - acc)
        attempts.append({"keep_fp32": keep, "accuracy": acc, "drop_points": drop, "top1_agreement": agree})
        failed = [what for what, bad in (
            (f"lost {drop:.1f} accuracy points against fp32", max_drop is not None and drop > max_drop),
            (f"gave fp32's top-1 answer on only {agree:.1%} of the samples",
             min_agreement is not None and agree < min_agreement)) if bad]
        if not failed:
            break
        if keep != choices[-1]:
            logger.info(f"int8 with {keep} layers kept in fp32 {' and '.join(failed)}; trying the next layout")
    if failed:
        tried = "; ".join(f"{a['keep_fp32']} in fp32: {a['accuracy']:.2%}, agreement {a['top1_agreement']:.1%}"
                          for a in attempts)
        limits = " and ".join(x for x in (f"`max_int8_drop` {max_drop:g} points" if max_drop is not None else "",
                                          f"`min_int8_agreement` {min_agreement:.0%}" if min_agreement is not None
                                          else "") if x)
        raise QualityGateError(
            f"int8 {' and '.join(failed)} ({fp32.accuracy:.2%} -> {acc:.2%} on {len(ev)} "
            f"samples; tried {tried}); the limits are {limits}. No bundle was written.",
            why="Some layers do not survive 8-bit rounding with this calibration.",
            fix="Try `calibration` entropy or percentile, more `calib_samples`, `keep_fp32` ends "
                "(first and last layers in fp32), or `int8_mode` dynamic; or relax `max_int8_drop` / "
                "`min_int8_agreement`.")
    if qr.stem:
        logger.info(qr.stem)
    if qr.route:
        logger.info(qr.route)
    warning = None
    if agree < INT8_AGREEMENT_WARN:
        warning = (f"int8 gives the fp32 model's top-1 answer on only {agree:.1%} of {len(ev)} samples (accuracy "
                   f"{fp32.accuracy:.2%} fp32, {acc:.2%} int8): the int8 model is not the same model as fp32, and "
                   f"its robustness is its own; `min_int8_agreement` stops compress below a share you choose")
        logger.warning(warning)
    return Quantized(path=out, logits=logits, accuracy=acc, result=qr, config=quant, attempts=attempts,
                     drop_points=drop, agreement=agree, warning=warning)


def fp16_stage(prep: Prepared, fp32: Exported, out: Path) -> Exported:
    """An fp16 copy of the fp32 model (float32 inputs and outputs) into ``out``, gated on its top-1
    agreement with fp32 on the eval split (edgerobust.workstation.quantize.variants.FP16_MIN_AGREEMENT)."""
    from edgerobust.workstation.quantize.variants import convert_fp16, fp16_gate

    ev = prep.splits.eval
    path = convert_fp16(fp32.path, out)
    logits = onnx_logits(path, ev.x)
    agree = fp16_gate(fp32.logits, logits)
    return Exported(path=path, logits=logits, accuracy=float((logits.argmax(1) == ev.y).mean()),
                    parity={"top1_agreement_with_fp32": agree, "n": len(ev.y),
                            "max_abs_diff": float(np.abs(logits - fp32.logits).max())})


def eval_set(prep: Prepared) -> EvalSet:
    """The evaluation split as the bundle's eval.npz content."""
    ev = prep.splits.eval
    return EvalSet(x=ev.x, y=ev.y, meta={"data": prep.data_name, "seed": prep.seed, "split": "eval", "n": len(ev),
                                         "held_out": prep.held_out.to_dict()})


def corruption_stage(evalset_path: Path, names, severities, seed: int, folder: Path):
    """The common-corruption sets of the saved eval set into ``folder`` (edgerobust.workstation.corrupt.sets):
    a CorruptionRun (files, what was left out and why, seconds)."""
    from edgerobust.workstation.corrupt.sets import make_sets

    run = make_sets(EvalSet.load(evalset_path), names, severities, seed, folder, sha256_file(evalset_path))
    logger.info(f"corruption sets: {len(run.files)} in {run.seconds:.1f} s")
    return run


def evidence_stage(prep: Prepared, evalset_path: Path, base_onnx: Path, attacks: list, adv_dir: Path,
                   batch_size: int = 256) -> list[Path]:
    """Craft ``attacks`` (AttackSpecs) on the base model over the saved eval set into ``adv_dir``;
    each set records the hashes of ``base_onnx`` and the eval set, which the audit checks."""
    from edgerobust.workstation.attacks import craft_sets

    if not attacks:
        return []
    evalset = EvalSet.load(evalset_path)
    with on_device(prep.base, prep.device) as base:
        return craft_sets(base, evalset, list(attacks), adv_dir, base_sha256=sha256_file(base_onnx),
                          eval_sha256=sha256_file(evalset_path), batch_size=batch_size)


def whitebox_stage(prep: Prepared, pruned: Pruned, evalset_path: Path, attacks: list, adv_dir: Path,
                   fp32: Exported, q: Quantized | None) -> tuple[list[Path], float | None]:
    """Craft ``attacks`` on the pruned model (fp32 and, with ``q``, its int8 simulation).

    Returns the written paths and, with int8, how often the simulation's top-1 agrees with the
    real int8 model on the eval split.
    """
    from edgerobust.workstation.attacks.whitebox import int8_simulation, whitebox_sets, write_whitebox_sets

    ev = prep.splits.eval
    agreement = None
    with on_device(pruned.model, prep.device) as model:
        if q is not None:
            sim = int8_simulation(model, prep.splits.calib.x, q.config)
            agreement = float((predict(sim, ev.x) == q.logits.argmax(1)).mean())
            del sim
        sets = whitebox_sets(model, prep.splits.calib.x, EvalSet.load(evalset_path), list(attacks), q is not None,
                             quant=q.config if q else None, fp32_sha256=sha256_file(fp32.path),
                             int8_sha256=sha256_file(q.path) if q else "", eval_sha256=sha256_file(evalset_path),
                             fp32_target=fp32.path.name, int8_target=q.path.name if q else "model.onnx")
    return write_whitebox_sets(sets, adv_dir), agreement


def pruned_accuracy(prep: Prepared, pruned: Pruned) -> float:
    """Accuracy of the pruned torch model on the eval split."""
    return accuracy(pruned.model, prep.splits.eval.x, prep.splits.eval.y)
