"""A trial's point in the search space: drawn from Optuna's trial, turned into the sweep's point.

One trial = one sweep :class:`~edgerobust.research.configs.Variant` (sparsity x ratios x round_to x
fine-tuning) built as a content-addressed sweep point (fp32 and int8 derived from the same pruned
model), plus the precision scored and the int8 settings. Identical pruning + fine-tuning + int8
settings map to the same point key, so a repeated draw, or a rerun, reuses the built point.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgerobust.research.configs import SweepConfig, Variant
from edgerobust.research.optimize.configs import OptimizeConfig
from edgerobust.workstation.configs import PruneConfig, QuantConfig, TrainConfig

# the plain compress point (`sparsity` 0.5, `int8`), its epochs clipped to the space's bounds
REFERENCE = {"sparsity": 0.5, "ratios": "uniform", "round_to": 8, "mode": "standard", "precision": "int8",
             "calibration": "minmax", "keep_fp32": "none"}


@dataclass(frozen=True)
class SpecSweepConfig(SweepConfig):
    """A SweepConfig whose attack grid is given as AttackSpecs (as compress reads them), not as text."""

    fixed_specs: tuple = field(default=())

    @property
    def specs(self) -> list:
        return list(self.fixed_specs) if self.fixed_specs else super().specs


def reference_params(cfg: OptimizeConfig) -> dict:
    """The reference point's parameters, as Optuna enqueues them."""
    sp = cfg.space
    return {**REFERENCE, "epochs": min(max(3, sp.epochs_min), sp.epochs_max)}


def suggest(trial, cfg: OptimizeConfig) -> dict:
    """Draw one point's parameters from ``trial`` (an optuna.Trial)."""
    sp = cfg.space
    lo, hi = sp.sparsity_min, sp.sparsity_max
    p = {"sparsity": trial.suggest_float("sparsity", min(lo, 0.5), max(hi, 0.5)) if lo < hi else lo,
         "ratios": trial.suggest_categorical("ratios", _with(sp.ratios, "uniform")),
         "round_to": trial.suggest_categorical("round_to", _with(sp.round_to, 8)),
         "mode": trial.suggest_categorical("mode", _with(sp.modes, "standard")),
         "epochs": trial.suggest_int("epochs", sp.epochs_min, sp.epochs_max),
         "precision": trial.suggest_categorical("precision", _with(sp.precisions, "int8"))}
    if p["precision"] == "int8":
        p["calibration"] = trial.suggest_categorical("calibration", _with(sp.calibrations, "minmax"))
        p["keep_fp32"] = trial.suggest_categorical("keep_fp32", _with(sp.keep_fp32, "none"))
    else:  # the fp32 variant of a point still carries int8: keep the default settings, so the point is shared
        p["calibration"], p["keep_fp32"] = "minmax", "none"
    return p


def _with(choices: tuple, reference) -> tuple:
    """The choices with the reference's value in them (an enqueued trial must be a legal draw)."""
    return tuple(choices) if reference in choices else tuple(choices) + (reference,)


def label(p: dict) -> str:
    """A point's parameters in one line."""
    int8 = f" ({p['calibration']}, keep {p['keep_fp32']})" if p["precision"] == "int8" else ""
    ft = f"{p['mode']} x{p['epochs']}" if p["epochs"] else "no fine-tuning"
    return f"s={p['sparsity']:.3g} {p['ratios']} round {p['round_to']}, {ft}, {p['precision']}{int8}"


def variant(p: dict, cfg: OptimizeConfig) -> Variant:
    prune = PruneConfig(sparsity=p["sparsity"], ratios=p["ratios"], round_to=p["round_to"])
    ft = TrainConfig(epochs=p["epochs"], mode=p["mode"], adv_steps=cfg.space.adv_steps)
    return Variant(sparsity=p["sparsity"], prune=prune, finetune=ft)


def quant(p: dict) -> QuantConfig:
    return QuantConfig(calibration=p["calibration"], keep_fp32=p["keep_fp32"])


def sweep_config(p: dict, cfg: OptimizeConfig, root) -> SpecSweepConfig:
    """The one-variant sweep that builds this trial's point under ``root`` (fp32 and int8, transfer sets)."""
    specs = tuple(cfg.attacks)
    eps = ",".join(dict.fromkeys(s.eps_text or format(s.eps, ".6g") for s in specs))
    return SpecSweepConfig(cfg.prepare, out=root, variants=(variant(p, cfg),), precisions=("fp32", "int8"),
                           attacks=",".join(dict.fromkeys(s.attack for s in specs)), eps=eps,
                           quant=quant(p), latency_profile=cfg.profile, write_report=False, fixed_specs=specs)
