"""Adversarial sets for any model and data, outside a bundle: what `edgerobust attack` runs.

``attack_sets(SetsConfig) -> SetsResult``: prepare the model and data as compress does, export the
base to ``base.onnx``, save the evaluation split to ``eval.npz`` and craft each attack x eps set
into ``adv/`` with the same evidence stage as compress, so every set records the hash of the
ONNX base it was crafted on (what an audit with OUT/base.onnx as its `baseline` and OUT/eval.npz as its `eval_set` checks),
and the source model's hash beside it. Written atomically: nothing is left on failure.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edgerobust.edge.files.bundle import AdvSet
from edgerobust.edge.files.atomic import atomic_dir
from edgerobust.errors import UsageError
from edgerobust.workstation.attacks.spec import attacks_from_config
from edgerobust.workstation.configs import PrepareConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetsConfig:
    """``prepare``: the model and data; ``attacks``: AttackSpecs (make_specs); ``batch_size``:
    samples per attack batch; ``out``: the folder written (replaced only with ``overwrite``)."""

    prepare: PrepareConfig
    out: str | Path
    attacks: tuple = field(default=(), metadata={"load": attacks_from_config})
    batch_size: int = 256
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(self.attacks))
        if not self.attacks:
            raise UsageError("No `attacks` to craft.", fix="Give at least one attack, e.g. pgd at `eps` 8/255.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"`batch_size` must be an integer >= 1; got {self.batch_size!r}.")
        if self.prepare.model is None:
            raise UsageError("No `model` to attack.", fix="Give the model file's path.")


@dataclass
class SetsResult:
    out: Path
    data: str
    n: int  # evaluation samples attacked
    sets: list[dict]  # each set's metadata (attack, eps_text, norm, n, base_accuracy, base_adv_accuracy, seconds)


def attack_sets(cfg: SetsConfig) -> SetsResult:
    """Write ``cfg.out``: base.onnx, eval.npz and adv/<attack>_<eps>.npz, crafted on the base model."""
    from edgerobust.workstation.model.export import export_onnx
    from edgerobust.workstation.pipeline.prepare import prepare
    from edgerobust.workstation.pipeline.stages import eval_set, evidence_stage

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:  # the folder was named explicitly: say so before any work
        raise UsageError(f"'{out}' already exists.", fix="Pass `overwrite` to replace it, or choose another `out`.")
    prep = prepare(cfg.prepare)
    n = len(prep.splits.eval)
    if n < cfg.prepare.eval_samples:
        logger.warning(f"The evaluation split holds {n} samples; attacking all of them (asked for {cfg.prepare.eval_samples}).")
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        ev = eval_set(prep)
        ev.meta.update(kind="edgerobust-eval-set", class_names=prep.dataset.class_names,
                       source_sha256=prep.loaded.sha256, normalization=prep.norm.to_dict(),
                       source=f"the first {n} samples of split(data, seed).eval")
        ev.save(tmp / "eval.npz")
        export_onnx(prep.base, prep.example, tmp / "base.onnx")
        paths = evidence_stage(prep, tmp / "eval.npz", tmp / "base.onnx", list(cfg.attacks), tmp / "adv",
                               batch_size=cfg.batch_size)
        metas = [AdvSet.load(p).meta for p in paths]
    return SetsResult(out=out, data=prep.data_name, n=n, sets=metas)
