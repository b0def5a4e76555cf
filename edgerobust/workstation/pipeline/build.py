"""The compress stages composed into one bundle folder (torch): what compress() runs once the
config is validated and the target plan settled (edgerobust.workstation.compress)."""
from __future__ import annotations

import logging
import platform
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgerobust import __version__
from edgerobust.edge.files.bundle import BUNDLE_KIND, SCHEMA_VERSION, finalize_manifest
from edgerobust.edge.files.corruptset import CORRUPTION_DIR
from edgerobust.edge.files.atomic import atomic_dir
from edgerobust.errors import UsageError
from edgerobust.configio import to_dict
from edgerobust.workstation.configs import CompressConfig
from edgerobust.workstation.resources.torch_device import describe
from edgerobust.workstation.model.export import OUTPUT_NAME, exporter_of
from edgerobust.workstation.model.load import save_checkpoint, structure_of
from edgerobust.workstation.pipeline.prepare import Prepared, prepare
from edgerobust.workstation.pipeline.stages import (Quantized, corruption_stage, eval_set, evidence_stage, export_stage, finetune_stage, fp16_stage,
                                           prune_gate, prune_stage, pruned_accuracy, quantize_stage, whitebox_stage)
from edgerobust.workstation.pipeline.target import TargetPlan
from edgerobust.workstation.quantize.variants import Deployment, choose

logger = logging.getLogger(__name__)


@dataclass
class ModelRow:
    """One line of the closing table."""

    model: str
    params: int
    macs: int
    size_bytes: int
    accuracy: float  # on the evaluation set, measured with ONNX Runtime


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch_pruning

    v = {"edgerobust": __version__, "python": platform.python_version(), "numpy": np.__version__,
         "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
         "torch_pruning": getattr(torch_pruning, "__version__", "unknown")}
    try:
        import torchattacks

        v["torchattacks"] = torchattacks.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


def build_bundle(cfg: CompressConfig, plan: TargetPlan) -> "_Run":
    """Run every stage of ``cfg`` for ``plan`` into ``cfg.out_dir``; the finished run's artifacts."""
    prep = prepare(cfg.prepare)  # seconds: a bad model, arch or data is said before anything else
    out_dir = cfg.out_dir
    if out_dir.exists() and not cfg.overwrite:  # fail before minutes of work, not after
        raise UsageError(f"'{out_dir}' already exists.", fix="Pass `overwrite` to replace it, or choose another `out`.")
    logger.info(f"channels kept multiples of {plan.round_to} ({plan.reasons['round_to']})")
    if cfg.int8 and plan.stem != "plain":
        logger.info(f"int8 stem: {plan.stem} ({plan.reasons['stem']})")
    if cfg.int8 and plan.route != "symmetric":
        logger.info(f"int8 route: {plan.route} ({plan.reasons['route']})")
    with atomic_dir(out_dir, overwrite=cfg.overwrite) as tmp:
        run = _Run(cfg, plan, prep, tmp)
        run.models()
        run.evidence()
        finalize_manifest(tmp, run.manifest())
    run.device = describe(prep.device)
    return run


class _Run:
    """One compress run inside its temporary bundle folder: the stages' artifacts as they come."""

    def __init__(self, cfg: CompressConfig, plan: TargetPlan, prep: Prepared, tmp: Path):
        self.cfg, self.plan, self.prep, self.tmp = cfg, plan, prep, tmp
        # the stage configs as the target plan settles them (the caller's config is left as given)
        self.prune_cfg = replace(cfg.prune, round_to=plan.round_to)
        self.quant_cfg = replace(cfg.quant, int8_target=plan.int8_target, stem=plan.stem, route=plan.route)
        self.metrics: dict[str, Any] = {}
        self.parities: dict[str, dict] = {}
        self.adv_names: list[str] = []
        self.q: Quantized | None = None
        self.corruption = None  # a corrupt.sets.CorruptionRun with `corruptions`

    def models(self) -> None:
        """base.onnx, the pruned and fine-tuned model_fp32.onnx, and model.onnx (int8 with ``int8``)."""
        cfg, prep, tmp, m = self.cfg, self.prep, self.tmp, self.metrics
        self.base = export_stage(prep, prep.base, tmp / "base.onnx", cfg.parity_atol, "base model")
        self.parities["base"] = self.base.parity
        self.pruned = prune_stage(prep, self.prune_cfg)
        m["pruned_accuracy_before_finetune"] = pruned_accuracy(prep, self.pruned)
        tr = finetune_stage(prep, self.pruned, cfg.finetune)
        m["finetune_history"] = tr.history
        if tr.best_val_robust_acc is not None:
            m["finetune_best_val_robust_accuracy"] = tr.best_val_robust_acc
        self.fp32 = export_stage(prep, self.pruned.model, tmp / "model_fp32.onnx", cfg.parity_atol, "pruned model")
        self.parities["pruned"] = self.fp32.parity
        m.update(base_accuracy=self.base.accuracy, pruned_accuracy=self.fp32.accuracy,
                 onnx_exporter={"base": exporter_of(self.base.path), "pruned": exporter_of(self.fp32.path)})
        m["prune_drop_points"] = prune_gate(self.base, self.fp32, cfg.max_prune_drop, n=len(prep.splits.eval),
                                            sparsity=cfg.prune.sparsity, epochs=cfg.finetune.epochs)
        pr = self.pruned.result
        self.rows = [ModelRow("base", pr.params_before, pr.macs_before, self.base.path.stat().st_size,
                              self.base.accuracy),
                     ModelRow("pruned fp32", pr.params_after, pr.macs_after, self.fp32.path.stat().st_size,
                              self.fp32.accuracy)]
        self.variants = {"fp32": self.fp32}
        if cfg.fp16:
            f16 = self.variants["fp16"] = fp16_stage(prep, self.fp32, tmp / "model_fp16.onnx")
            self.parities["fp16"] = f16.parity
            m.update(fp16_accuracy=f16.accuracy, fp16_top1_agreement_with_fp32=f16.parity["top1_agreement_with_fp32"])
            self.rows.append(ModelRow("pruned fp16", pr.params_after, pr.macs_after, f16.path.stat().st_size,
                                      f16.accuracy))
        if cfg.int8:
            q = self.q = self.variants["int8"] = quantize_stage(prep, self.fp32, tmp / "model_int8.onnx", self.quant_cfg,
                                                                cfg.max_int8_drop, cfg.min_int8_agreement)
            m.update(int8_accuracy=q.accuracy, int8_top1_agreement_with_fp32=q.agreement,
                     int8_drop_points=q.drop_points, int8_keep_fp32=q.config.keep_fp32, int8_attempts=q.attempts)
            self.rows.append(ModelRow(f"pruned int8 ({cfg.quant.mode})", pr.params_after, pr.macs_after,
                                      q.path.stat().st_size, q.accuracy))
        self.deploy()

    def deploy(self) -> None:
        """Choose the variant for the profile's target; it becomes model.onnx, the others keep their names."""
        plan = self.plan
        if self.cfg.deploy is not None:
            self.deployment = Deployment(self.cfg.deploy, plan.runtime, "asked for (`deploy`)", plan.profile)
        else:
            self.deployment = choose({k: v.path for k, v in self.variants.items()}, plan.runtime, plan.profile)
        chosen = self.variants[self.deployment.variant]
        chosen.path = chosen.path.rename(self.tmp / "model.onnx")
        self.metrics["deployed_accuracy"] = chosen.accuracy
        self.metrics["deployed_variant"] = self.deployment.variant
        logger.info(f"deployed: {self.deployment.variant}, because {self.deployment.reason}")

    def evidence(self) -> None:
        """eval.npz, pruned.pt, the attack sets on the base and (with ``whitebox``) on the pruned model."""
        cfg, prep, tmp = self.cfg, self.prep, self.tmp
        eval_set(prep).save(tmp / "eval.npz")
        if cfg.corruptions:
            self.corruption = corruption_stage(tmp / "eval.npz", cfg.corruptions, cfg.corruption_severities, prep.seed,
                                               tmp / CORRUPTION_DIR)
        loaded = prep.loaded
        if loaded.arch:
            save_checkpoint(tmp / "pruned.pt", self.pruned.model.net, loaded.arch, prep.num_classes,
                            prep.input_spec(), info={"source_sha256": loaded.sha256, "prune": asdict(self.prune_cfg),
                                  **self._trained_on()},
                            structure=structure_of(self.pruned.model.net))
        else:
            logger.warning("the model was a pickled module without `arch`: pruned.pt is not written "
                           "(a safe, self-describing checkpoint needs an architecture name).")
        if cfg.attacks:
            paths = evidence_stage(prep, tmp / "eval.npz", self.base.path, list(cfg.attacks), tmp / "adv")
            self.adv_names = [f"adv/{Path(p).name}" for p in paths]
        if cfg.whitebox:
            paths, agreement = whitebox_stage(prep, self.pruned, tmp / "eval.npz", list(cfg.attacks), tmp / "adv",
                                              self.fp32, self.q)
            if agreement is not None:  # how closely the simulation int8 sets are crafted on follows model.onnx
                self.metrics["int8_sim_top1_agreement_with_int8"] = agreement
            self.adv_names += [Path(p).relative_to(tmp).as_posix() for p in paths]

    @property
    def warnings(self) -> list[str]:
        """Everything compress said the user should know: the data, the pruning, the int8 model."""
        q = [self.q.warning] if self.q is not None and self.q.warning else []
        return self.prep.warnings + list(self.pruned.result.warnings) + q

    def _trained_on(self) -> dict:
        """What pruned.pt saw: the training part of this split, if the base did not see the evaluation rows."""
        prep = self.prep
        # only a random split is drawn again the same way from (data, seed); and only when the base
        # had not seen its evaluation rows either is the pruned model's history known
        if prep.held_out.source != "random" or prep.held_out.may_overlap_training:
            return {}
        return {"trained_on": {"data": prep.data_name, "image_size": prep.image_size, "seed": prep.seed,
                               "split": "train"}}

    def manifest(self) -> dict:
        cfg, prep, pr = self.cfg, self.prep, self.pruned.result
        self.metrics.update(params_before=pr.params_before, params_after=pr.params_after, macs_before=pr.macs_before,
                            macs_after=pr.macs_after, macs_reduction=pr.macs_reduction,
                            params_reduction=pr.params_reduction)
        loaded = prep.loaded
        manifest = {
            "kind": BUNDLE_KIND, "schema_version": SCHEMA_VERSION, "name": cfg.bundle_name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tool": versions(),
            "source": {"path": str(loaded.path), "sha256": loaded.sha256, "kind": loaded.kind, "arch": loaded.arch},
            "input": prep.input_spec(), "output": {"name": OUTPUT_NAME, "shape": [None, prep.num_classes]},
            "normalization": prep.norm.to_dict(),
            "device": describe(prep.device),
            "models": {"base": "base.onnx", "deployed": "model.onnx",
                       **{k: v.path.name for k, v in self.variants.items() if v.path.name != "model.onnx"}},
            "variants": {k: v.path.name for k, v in self.variants.items()},
            "deployment": self.deployment.to_dict(),
            "target": self.plan.to_dict(),
            "eval": "eval.npz",
            "eval_split": prep.held_out.to_dict(),
            "adv": self.adv_names,
            **({"corruptions": self.corruption.files, "corruption_sets": self.corruption.record()}
               if self.corruption is not None else {}),
            "config": config_dict(cfg),
            "metrics": self.metrics,
            "pruning": {"layers": pr.layers, "requested_sparsity": pr.requested_sparsity, "round_to": pr.round_to,
                        "ratios": pr.ratios, "honest": pr.honest, "asked_macs_reduction": pr.asked_macs_reduction,
                        "realized_macs_reduction": pr.macs_reduction, "warnings": list(pr.warnings)},
            "parity": self.parities,
            "quantization": asdict(self.q.result) if self.q else None,
            "warnings": self.warnings,
        }
        if self.pruned.sensitivity is not None:
            manifest["sensitivity"] = {"method": "module robust criticality (Zhu et al. 2023)",
                                       "eps_rel": cfg.prune.mrs_eps_rel, "steps": cfg.prune.mrs_steps,
                                       "attack_eps": cfg.prune.mrs_attack_eps, "samples": cfg.prune.mrs_samples,
                                       "layers": self.pruned.sensitivity}
        return manifest


def config_dict(cfg: CompressConfig) -> dict:
    """The config as plain JSON values, as given (the target plan's choices are in ``target``), versioned:
    the manifest itself is a config file that builds the bundle again (edgerobust.configio)."""
    d = to_dict(cfg)
    d["out"] = str(cfg.out_dir)
    return d
