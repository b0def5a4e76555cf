"""`compress`: the stages (edgerobust.workstation.prepare, edgerobust.workstation.stages) composed into one bundle.

    from edgerobust.workstation.compress import CompressConfig, compress
    from edgerobust.workstation.prune import PruneConfig
    result = compress(CompressConfig(model="model.pt", prune=PruneConfig(sparsity=0.5), int8=True))
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgerobust import __version__, ui
from edgerobust.device.bundle import BUNDLE_KIND, SCHEMA_VERSION, atomic_dir, finalize_manifest
from edgerobust.defaults import DEFAULT_EVAL_SAMPLES, DEFAULT_MAX_INT8_DROP, DEFAULT_MAX_PRUNE_DROP
from edgerobust.workstation.devices import describe
from edgerobust.errors import UsageError
from edgerobust.workstation.export import OUTPUT_NAME, exporter_of
from edgerobust.workstation.finetune import TrainConfig
from edgerobust.workstation.load import save_checkpoint, structure_of
from edgerobust.workstation.normalization import parse_normalize
from edgerobust.workstation.prepare import Prepared, PrepareConfig, check_runs, prepare, resolve_data  # noqa: F401 (sweep)
from edgerobust.workstation.prune import PruneConfig, PruneResult
from edgerobust.workstation.quantize import QuantConfig, QuantResult
from edgerobust.workstation.stages import (Quantized, eval_set, evidence_stage, export_stage, finetune_stage, fp16_stage, prune_gate,
                     prune_stage, pruned_accuracy, quantize_stage, whitebox_stage)
from edgerobust.workstation.variants import choose, target_of



@dataclass(frozen=True)
class CompressConfig:
    """Everything `edgerobust compress` needs; validated when built.

    ``normalize`` is a --normalize text (auto, none, data, imagenet, MEAN/STD); ``mean``/``std``
    are the older spelling of a custom one. ``max_prune_drop`` / ``max_int8_drop`` are the
    quality gates in accuracy points (None disables a gate, as sweeps do).
    """

    model: str | Path
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    data: str | None = None  # default: the checkpoint's own data, else digits
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    normalize: str = "auto"
    allow_weak_base: bool = False
    seed: int = 0
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    max_prune_drop: float | None = DEFAULT_MAX_PRUNE_DROP
    int8: bool = False
    fp16: bool = False  # also an fp16 variant (model_fp16.onnx), float32 inputs and outputs
    profile: str | None = None  # the target device profile: decides which variant is model.onnx
    quant: QuantConfig = field(default_factory=QuantConfig)
    max_int8_drop: float | None = DEFAULT_MAX_INT8_DROP  # accuracy points int8 may lose against the pruned fp32 model
    parity_atol: float = 1e-3
    attacks: tuple = ()  # edgerobust.workstation.attacks.AttackSpec, crafted on the base model into adv/
    whitebox: bool = False  # also craft the attacks on the pruned model (fp32, and simulated int8): adv/whitebox-*/
    device: str = "auto"  # where torch runs (edgerobust.workstation.devices); export and int8 stay on the CPU
    out: str | Path | None = None
    name: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        for flag, value in (("--max-int8-drop", self.max_int8_drop), ("--max-prune-drop", self.max_prune_drop)):
            if value is not None and not value >= 0:
                raise UsageError(f"{flag} must be >= 0; got {value}.")
        if not self.parity_atol > 0:
            raise UsageError(f"--parity-atol must be positive; got {self.parity_atol}.")
        parse_normalize(self.normalize, self.mean, self.std)  # validates
        if self.whitebox and not self.attacks:
            raise UsageError("--whitebox needs attacks to craft.", fix="Pass e.g. --attacks pgd --eps 8/255.")
        if self.whitebox and self.int8 and self.quant.mode != "static":
            raise UsageError("--whitebox simulates static int8 only.",
                             fix="Use --int8-mode static with --whitebox, or drop --whitebox.")
        self.prepare_config()  # validates the rest
        if self.profile is not None:
            target_of(self.profile)  # a bad --profile fails now, not after minutes of work

    def prepare_config(self) -> PrepareConfig:
        return PrepareConfig(model=self.model, arch=self.arch, num_classes=self.num_classes,
                             trust_model=self.trust_model, data=self.data, image_size=self.image_size,
                             normalize=parse_normalize(self.normalize, self.mean, self.std), seed=self.seed,
                             eval_samples=self.eval_samples, calib_samples=self.quant.calib_samples,
                             allow_weak_base=self.allow_weak_base, device=self.device)

    @property
    def bundle_name(self) -> str:
        return self.name or Path(self.model).stem

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("export") / self.bundle_name


@dataclass
class ModelRow:
    """One line of the closing table."""

    model: str
    params: int
    macs: int
    size_bytes: int
    accuracy: float  # on the evaluation set, measured with ONNX Runtime


@dataclass
class CompressResult:
    bundle: Path
    rows: list[ModelRow]
    prune: PruneResult
    quant: QuantResult | None
    parity: dict[str, dict]
    metrics: dict[str, Any]
    adv_sets: list[str]
    seconds: float
    sensitivity: list[dict] | None = None  # --ratios mrs: name, score, ratio, channels_before/after
    normalization: dict | None = None  # what normalization was used and why
    device: str = "cpu"  # where torch ran
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "rows": [asdict(r) for r in self.rows],
                "prune": {**asdict(self.prune), "macs_reduction": self.prune.macs_reduction,
                          "params_reduction": self.prune.params_reduction},
                "quant": asdict(self.quant) if self.quant else None, "parity": self.parity,
                "metrics": self.metrics, "adv_sets": self.adv_sets, "seconds": self.seconds,
                "sensitivity": self.sensitivity,
                "normalization": self.normalization, "warnings": self.warnings, "device": self.device}


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


def compress(cfg: CompressConfig) -> CompressResult:
    """Prune, fine-tune, export and (optionally) int8-quantize a model into a bundle folder.

    Composes the stages: prepare -> prune -> fine-tune (+ pruning gate) -> export -> int8
    (+ int8 gate) -> attack sets -> bundle, written atomically (nothing is left on failure).
    """
    t_start = time.perf_counter()
    out_dir = cfg.out_dir
    if out_dir.exists() and not cfg.overwrite:  # fail before minutes of work, not after
        raise UsageError(f"'{out_dir}' already exists.", fix="Pass --overwrite to replace it, or choose another --out.")
    prep = prepare(cfg.prepare_config())
    with atomic_dir(out_dir, overwrite=cfg.overwrite) as tmp:
        run = _Run(cfg, prep, tmp)
        run.models()
        run.evidence()
        finalize_manifest(tmp, run.manifest())
    pr = run.pruned.result
    return CompressResult(bundle=out_dir, rows=run.rows, prune=pr, quant=run.q.result if run.q else None,
                          parity=run.parities, metrics=run.metrics, adv_sets=run.adv_names,
                          seconds=time.perf_counter() - t_start, sensitivity=run.pruned.sensitivity,
                          normalization=prep.norm.to_dict(), warnings=prep.warnings + list(pr.warnings),
                          device=describe(prep.device))


class _Run:
    """One compress run inside its temporary bundle folder: the stages' artifacts as they come."""

    def __init__(self, cfg: CompressConfig, prep: Prepared, tmp: Path):
        self.cfg, self.prep, self.tmp = cfg, prep, tmp
        self.metrics: dict[str, Any] = {}
        self.parities: dict[str, dict] = {}
        self.adv_names: list[str] = []
        self.q: Quantized | None = None

    def models(self) -> None:
        """base.onnx, the pruned and fine-tuned model_fp32.onnx, and model.onnx (int8 with --int8)."""
        cfg, prep, tmp, m = self.cfg, self.prep, self.tmp, self.metrics
        self.base = export_stage(prep, prep.base, tmp / "base.onnx", cfg.parity_atol, "base model")
        self.parities["base"] = self.base.parity
        self.pruned = prune_stage(prep, cfg.prune)
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
            q = self.q = self.variants["int8"] = quantize_stage(prep, self.fp32, tmp / "model_int8.onnx", cfg.quant,
                                                                cfg.max_int8_drop)
            m.update(int8_accuracy=q.accuracy, int8_top1_agreement_with_fp32=q.agreement,
                     int8_drop_points=q.drop_points, int8_keep_fp32=q.config.keep_fp32, int8_attempts=q.attempts)
            self.rows.append(ModelRow(f"pruned int8 ({cfg.quant.mode})", pr.params_after, pr.macs_after,
                                      q.path.stat().st_size, q.accuracy))
        self.deploy()

    def deploy(self) -> None:
        """Choose the variant for the profile's target; it becomes model.onnx, the others keep their names."""
        target, profile = target_of(self.cfg.profile)
        self.deployment = choose({k: v.path for k, v in self.variants.items()}, target, profile)
        chosen = self.variants[self.deployment.variant]
        chosen.path = chosen.path.rename(self.tmp / "model.onnx")
        self.metrics["deployed_accuracy"] = chosen.accuracy
        self.metrics["deployed_variant"] = self.deployment.variant
        ui.info(f"deployed: {self.deployment.variant}, because {self.deployment.reason}")

    def evidence(self) -> None:
        """eval.npz, pruned.pt, the attack sets on the base and (with --whitebox) on the pruned model."""
        cfg, prep, tmp = self.cfg, self.prep, self.tmp
        eval_set(prep).save(tmp / "eval.npz")
        loaded = prep.loaded
        if loaded.arch:
            save_checkpoint(tmp / "pruned.pt", self.pruned.model.net, loaded.arch, prep.num_classes,
                            prep.input_spec(), info={"source_sha256": loaded.sha256, "prune": asdict(cfg.prune)},
                            structure=structure_of(self.pruned.model.net))
        else:
            ui.warn("the model was a pickled module without --arch: pruned.pt is not written "
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
            "eval": "eval.npz",
            "adv": self.adv_names,
            "config": _config_dict(cfg),
            "metrics": self.metrics,
            "pruning": {"layers": pr.layers, "requested_sparsity": pr.requested_sparsity, "round_to": pr.round_to,
                        "ratios": pr.ratios, "honest": pr.honest, "asked_macs_reduction": pr.asked_macs_reduction,
                        "realized_macs_reduction": pr.macs_reduction, "warnings": list(pr.warnings)},
            "parity": self.parities,
            "quantization": asdict(self.q.result) if self.q else None,
            "warnings": prep.warnings + list(pr.warnings),
        }
        if self.pruned.sensitivity is not None:
            manifest["sensitivity"] = {"method": "module robust criticality (Zhu et al. 2023)",
                                       "eps_rel": cfg.prune.mrs_eps_rel, "steps": cfg.prune.mrs_steps,
                                       "attack_eps": cfg.prune.mrs_attack_eps, "samples": cfg.prune.mrs_samples,
                                       "layers": self.pruned.sensitivity}
        return manifest


def _config_dict(cfg: CompressConfig) -> dict:
    d = asdict(cfg)
    d["model"] = str(cfg.model)
    d["out"] = str(cfg.out_dir)
    d["attacks"] = [asdict(a) if hasattr(a, "__dataclass_fields__") else str(a) for a in cfg.attacks]
    return d

