"""The one table from the library's config field names to the command line's flags.

The library speaks of what it was given: an error or a warning names a config field in
backticks (``"`eval_samples` must be >= 1"``), so a Python user reads the name they passed.
The CLI shows the same message with the flag a command-line user typed instead
(``"--eval-samples must be >= 1"``): :func:`to_flags` rewrites every backticked field this table
knows, and drops the backticks of the rest. Where two commands spell one field differently, the
field has two names in the library (``target`` of compress, ``latency_profile`` of sweep), never
one name with two flags.
"""
from __future__ import annotations

import re

FIELD_FLAGS: dict[str, str] = {
    # prepare: the model and its data
    "model": "MODEL", "arch": "--arch", "num_classes": "--num-classes", "trust_model": "--trust-model",
    "data": "--data", "eval_data": "--eval-data", "image_size": "--image-size", "normalize": "--normalize", "seed": "--seed",
    "eval_samples": "--eval-samples", "calib_samples": "--calib-samples", "allow_weak_base": "--allow-weak-base",
    "device": "--device", "mean": "--mean", "std": "--std",
    # prune
    "sparsity": "--sparsity", "criterion": "--criterion", "global_pruning": "--global-pruning",
    "round_to": "--round-to", "iterative_steps": "--iterative-steps", "ratios": "--ratios",
    "mrs_samples": "--mrs-samples", "ignore_layers": "--ignore-layers",
    # fine-tune
    "epochs": "--finetune-epochs", "finetune_epochs": "--finetune-epochs", "lr": "--lr", "optimizer": "--optimizer",
    "weight_decay": "--weight-decay", "batch_size": "--finetune-batch-size", "mode": "--finetune",
    "finetune": "--finetune", "adv_eps": "--adv-eps", "adv_steps": "--adv-steps", "trades_beta": "--trades-beta",
    # int8 and variants
    "int8": "--int8", "fp16": "--fp16", "int8_mode": "--int8-mode", "calibration": "--calibration",
    "int8_target": "--int8-target", "keep_fp32": "--int8-keep-fp32", "int8_stem": "--int8-stem",
    "stem": "--int8-stem", "int8_route": "--int8-route", "route": "--int8-route",
    "max_prune_drop": "--max-prune-drop", "max_int8_drop": "--max-int8-drop", "min_int8_agreement": "--min-int8-agreement",
    "parity_atol": "--parity-atol",
    # attack sets
    "attacks": "--attacks", "eps": "--eps", "attack_steps": "--attack-steps", "steps": "--attack-steps",
    "whitebox": "--whitebox", "alpha": "--alpha", "random_start": "--random-start",
    # common-corruption sets
    "halving": "--halving",
    "corruptions": "--corruptions", "corruption_severities": "--corruption-severities",
    # where things go
    "target": "--profile", "profile": "--profile", "latency_profile": "--profile", "out": "--out",
    "name": "--name", "overwrite": "--overwrite", "fresh": "--fresh", "retrain": "--retrain",
    # research
    "sparsities": "--sparsities", "precisions": "--precisions", "threats": "--threats", "focus_eps": "--focus-eps",
    "latency_rounds": "--latency-rounds", "seeds": "--seeds", "zoo_epochs": "--zoo-epochs",
    "max_latency_ms": "--max-latency-ms", "min_speedup": "--min-speedup", "aim": "--aim",
    "max_clean_drop": "--max-clean-drop", "max_robust_drop": "--max-robust-drop", "trials": "--trials",
    "epochs_max": "--max-finetune-epochs",
    # audit and profile
    "allow_fallback": "--allow-fallback", "baseline": "--baseline", "deployed_only": "--deployed-only",
    "fail_on_budget": "--fail-on-budget", "query_attack": "--query-attack", "query_eps": "--query-eps",
    "queries": "--queries", "samples": "--query-samples", "measure_memory": "--no-memory", "verify": "--no-verify",
    "eval_set": "--eval", "adv_sets": "--adv", "out_dir": "--out", "top": "--top", "runtimes": "--runtimes",
    # calibrate and estimates
    "estimate": "--estimate", "dtypes": "--dtypes", "scale": "--grid-scale", "passes": "--passes", "holdout": "--holdout",
}

_FIELD = re.compile(r"`([A-Za-z_][A-Za-z0-9_.]*)`")


def to_flags(text: str) -> str:
    """``text`` with each backticked config field as its flag (``prune.round_to`` as --round-to)."""
    if not text or "`" not in text:
        return text

    def flag(m: re.Match) -> str:
        name = m.group(1)
        return FIELD_FLAGS.get(name) or FIELD_FLAGS.get(name.rsplit(".", 1)[-1]) or name

    return _FIELD.sub(flag, text)
