"""`compress`: the stages (edgerobust.workstation.pipeline.prepare, edgerobust.workstation.pipeline.stages) composed into one bundle.

    from edgerobust import CompressConfig, PrepareConfig, PruneConfig, compress
    result = compress(CompressConfig(PrepareConfig("model.pt"), prune=PruneConfig(sparsity=0.5), int8=True,
                                     target="laptop-cpu"))

torch-free until the work starts: the configs live in edgerobust.workstation.configs, the
target profile's choices are settled once by edgerobust.workstation.pipeline.target.resolve_target (and
recorded in the manifest), and the stages are composed in edgerobust.workstation.pipeline.build.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.workstation.configs import CompressConfig
from edgerobust.workstation.pipeline.target import resolve_target

logger = logging.getLogger(__name__)


@dataclass
class CompressResult:
    bundle: Path
    rows: list  # build.ModelRow, one line of the closing table each
    prune: Any  # prune.PruneResult
    quant: Any  # quantize.QuantResult, or None without int8
    parity: dict[str, dict]
    metrics: dict[str, Any]
    adv_sets: list[str]
    seconds: float
    sensitivity: list[dict] | None = None  # ratios mrs: name, score, ratio, channels_before/after
    normalization: dict | None = None  # what normalization was used and why
    device: str = "cpu"  # where torch ran
    warnings: list[str] = field(default_factory=list)
    target: dict | None = None  # the TargetPlan: runtime, round_to, stem, int8 target, and why each
    corruption: dict | None = None  # the manifest's corruption_sets (and `files`), None without corruptions

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "rows": [asdict(r) for r in self.rows],
                "prune": {**asdict(self.prune), "macs_reduction": self.prune.macs_reduction,
                          "params_reduction": self.prune.params_reduction},
                "quant": asdict(self.quant) if self.quant else None, "parity": self.parity,
                "metrics": self.metrics, "adv_sets": self.adv_sets, "seconds": self.seconds,
                "sensitivity": self.sensitivity,
                "normalization": self.normalization, "warnings": self.warnings, "device": self.device,
                "target": self.target, "corruption": self.corruption}


def compress(cfg: CompressConfig) -> CompressResult:
    """Prune, fine-tune, export and (optionally) int8-quantize a model into a bundle folder.

    Settles the target plan first (torch-free: a bad profile is refused at once), then composes
    the stages (edgerobust.workstation.pipeline.build): prepare -> prune -> fine-tune (+ pruning gate) ->
    export -> int8 (+ int8 gate) -> attack sets -> bundle, written atomically (nothing is left
    on failure).
    """
    t_start = time.perf_counter()
    plan = resolve_target(cfg.target, round_to=cfg.prune.round_to, stem=cfg.quant.stem,
                          int8_target=cfg.quant.int8_target, route=cfg.quant.route)
    if cfg.corruptions:  # scipy and Pillow checked now, not after the training
        from edgerobust.workstation.corrupt.deps import require_corruption_deps

        require_corruption_deps()
    if cfg.quant.stem is not None and not cfg.int8:
        logger.warning("`int8_stem` has no effect without `int8` (there is no int8 model to rewrite).")
    if cfg.quant.route is not None and not cfg.int8:
        logger.warning("`int8_route` has no effect without `int8` (there is no int8 model to rewrite).")
    from edgerobust.workstation.pipeline.build import build_bundle  # torch from here on

    run = build_bundle(cfg, plan)
    pr, prep = run.pruned.result, run.prep
    return CompressResult(bundle=cfg.out_dir, rows=run.rows, prune=pr, quant=run.q.result if run.q else None,
                          parity=run.parities, metrics=run.metrics, adv_sets=run.adv_names,
                          seconds=time.perf_counter() - t_start, sensitivity=run.pruned.sensitivity,
                          normalization=prep.norm.to_dict(), warnings=run.warnings,
                          device=run.device, target=plan.to_dict(),
                          corruption={**run.corruption.record(), "files": run.corruption.files} if run.corruption else None)
