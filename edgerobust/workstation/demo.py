"""`edgerobust demo`: the whole job on bundled data, offline, in 75 s on 2 idle cores (measured once).

Train (or reuse) a zoo model on scikit-learn's digits, compress it at sparsity 0.5 with int8
while crafting FGSM and PGD sets on the base model, then audit the deployed model on this host,
with the audit's short query attack on each runtime where ART is installed (the ``[all]`` install has it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    checkpoint: Path
    trained: bool
    compress: object  # compress.CompressResult
    audit: object  # audit.AuditReport
    report_dir: Path


def run_demo(out: Path = Path("export/demo"), model: str = "digits-resnet", retrain: bool = False,
             eps: str = DEFAULT_EPS, profile: str | None = None, seed: int = 0, device: str = "auto") -> DemoResult:
    from edgerobust.workstation.attacks import make_specs
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.edge.scores.query import QUICK
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig, PrepareConfig, PruneConfig, TrainConfig
    from edgerobust.edge.render.report import write_report
    from edgerobust.workstation.train.zoo import train_zoo

    out = Path(out)
    ckpt = out.parent / f"{out.name}-{model}.pt"
    trained = retrain or not ckpt.is_file()
    if trained:
        logger.info(f"1/3 training the zoo model {model} on digits → {ckpt}")
        out.parent.mkdir(parents=True, exist_ok=True)
        train_zoo(model, ckpt, seed=seed, device=device)
    else:
        logger.info(f"1/3 reusing {ckpt} (`retrain` to train it again)")
    logger.info("2/3 compressing: sparsity 0.5, int8, FGSM + PGD sets crafted on the base model, common corruptions")
    cres = compress(CompressConfig(
        PrepareConfig(ckpt, seed=seed, device=device), prune=PruneConfig(sparsity=0.5), finetune=TrainConfig(epochs=3),
        int8=True, attacks=tuple(make_specs(DEFAULT_ATTACKS, eps, seed=seed)), corruptions="default", out=out,
        name="demo", overwrite=True))
    logger.info("3/3 auditing the deployed model on this host")
    report = audit(AuditConfig(model=cres.bundle / "model.onnx", profile=profile, query=QUICK))
    folder = write_report(report)
    return DemoResult(checkpoint=ckpt, trained=trained, compress=cres, audit=report, report_dir=folder)
