"""A trial's point in the search space: drawn from Optuna's trial, turned into what builds it.

One trial = a pruned, fine-tuned fp32 model (a content-addressed sweep point: sparsity x ratios x
round_to x fine-tuning, keyed without any precision or int8 setting) plus the precision the target
runs, derived from that model (:mod:`.derive`): int8 with its calibration and layers kept in fp32,
fp16, or the fp32 model itself. Two trials that differ only in precision or int8 settings prune and
fine-tune once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgerobust.research.configs import SweepConfig, Variant
from edgerobust.research.optimize.configs import OptimizeConfig
from edgerobust.workstation.configs import PruneConfig, QuantConfig, TrainConfig


@dataclass(frozen=True)
class SpecSweepConfig(SweepConfig):
    """A SweepConfig whose attack grid is given as AttackSpecs (as compress reads them), not as text."""

    fixed_specs: tuple = field(default=())

    @property
    def specs(self) -> list:
        return list(self.fixed_specs) if self.fixed_specs else super().specs


def precisions(cfg: OptimizeConfig, runtime: str) -> tuple[str, ...]:
    """The precisions searched: the space's, or those the profile's runtime runs (``runtime`` as
    edgerobust.workstation.pipeline.target.resolve_target names it)."""
    if cfg.space.precisions is not None:
        return cfg.space.precisions
    from edgerobust.workstation.quantize.variants import PREFERENCE

    if runtime == "cuda":  # int8 QDQ falls back to the CPU on the CUDA provider (variants.choose)
        return ("fp16", "fp32")
    return tuple(PREFERENCE.get(runtime, PREFERENCE["cpu"])[0])


def suggest(trial, cfg: OptimizeConfig, precs: tuple[str, ...]) -> dict:
    """Draw one point's parameters from ``trial`` (an optuna.Trial); ``precs``: :func:`precisions`."""
    sp = cfg.space
    lo, hi = sp.sparsity_min, sp.sparsity_max
    p = {"sparsity": trial.suggest_float("sparsity", lo, hi) if lo < hi else lo,
         "ratios": trial.suggest_categorical("ratios", sp.ratios),
         "round_to": trial.suggest_categorical("round_to", sp.round_to),
         "mode": trial.suggest_categorical("mode", sp.modes),
         "epochs": trial.suggest_int("epochs", sp.epochs_min, sp.epochs_max),
         "precision": trial.suggest_categorical("precision", precs)}
    if p["precision"] == "int8":
        p["calibration"] = trial.suggest_categorical("calibration", sp.calibrations)
        p["keep_fp32"] = trial.suggest_categorical("keep_fp32", sp.keep_fp32)
    return p


def label(p: dict) -> str:
    """A point's parameters in one line."""
    int8 = f" ({p['calibration']}, keep {p['keep_fp32']})" if p["precision"] == "int8" else ""
    ft = f"{p['mode']} x{p['epochs']}" if p["epochs"] else "no fine-tuning"
    return f"s={p['sparsity']:.3g} {p['ratios']} round {p['round_to']}, {ft}, {p['precision']}{int8}"


def variant(p: dict, cfg: OptimizeConfig) -> Variant:
    prune = PruneConfig(sparsity=p["sparsity"], ratios=p["ratios"], round_to=p["round_to"])
    ft = TrainConfig(epochs=p["epochs"], mode=p["mode"], adv_steps=cfg.space.adv_steps)
    return Variant(sparsity=p["sparsity"], prune=prune, finetune=ft)


def quant(p: dict, plan) -> QuantConfig:
    """The int8 settings of an int8 point, with the int8 preset and stem the target ``plan`` settles
    (edgerobust.workstation.pipeline.target.TargetPlan), as compress for that profile would."""
    return QuantConfig(calibration=p["calibration"], keep_fp32=p["keep_fp32"], int8_target=plan.int8_target,
                       stem=plan.stem)


def sweep_config(p: dict, cfg: OptimizeConfig, root) -> SpecSweepConfig:
    """The one-variant sweep that builds this trial's fp32 point under ``root`` (its transfer sets too)."""
    specs = tuple(cfg.attacks)
    eps = ",".join(dict.fromkeys(s.eps_text or format(s.eps, ".6g") for s in specs))
    return SpecSweepConfig(cfg.prepare, out=root, variants=(variant(p, cfg),), precisions=("fp32",),
                           attacks=",".join(dict.fromkeys(s.attack for s in specs)), eps=eps,
                           latency_profile=cfg.profile, write_report=False, fixed_specs=specs,
                           corruptions=cfg.corruptions, corruption_severities=cfg.corruption_severities)
