"""`compress`: load -> prune -> fine-tune -> export -> int8 -> bundle, as one library call.

    from edgerobust import compress, CompressConfig
    result = compress(CompressConfig(model="model.pt", sparsity=0.5, int8=True))
"""
from __future__ import annotations

import copy
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, ui
from .bundle import BUNDLE_KIND, SCHEMA_VERSION, EvalSet, atomic_dir, finalize_manifest, sha256_file
from .data import Dataset, load_data, split
from .errors import DataError, QualityGateError, UsageError
from .export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_logits, parity_of, require_parity, torch_logits
from .finetune import TrainConfig, accuracy, train
from .load import LoadedModel, load_model, save_checkpoint, structure_of
from .nets import PixelModel
from .prune import PruneConfig, PruneResult, count, prune
from .quantize import AUTO_ORDER, QuantConfig, QuantResult, quantize


@dataclass(frozen=True)
class CompressConfig:
    """Everything `edgerobust compress` needs; validated when built."""

    model: str | Path
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    data: str | None = None  # default: the checkpoint's own data, else digits
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    seed: int = 0
    eval_samples: int = 1000
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)
    int8: bool = False
    quant: QuantConfig = field(default_factory=QuantConfig)
    max_int8_drop: float = 2.0  # accuracy points int8 may lose against the pruned fp32 model
    parity_atol: float = 1e-3
    attacks: tuple = ()  # edgerobust.attacks.AttackSpec, crafted on the base model into adv/
    whitebox: bool = False  # also craft the attacks on the pruned model (fp32, and simulated int8): adv/whitebox-*/
    out: str | Path | None = None
    name: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise UsageError(f"--image-size must be a positive number of pixels; got {self.image_size}.")
        if self.num_classes is not None and self.num_classes < 2:
            raise UsageError(f"--num-classes must be >= 2; got {self.num_classes}.")
        if self.max_int8_drop < 0:
            raise UsageError(f"--max-int8-drop must be >= 0; got {self.max_int8_drop}.")
        if not self.parity_atol > 0:
            raise UsageError(f"--parity-atol must be positive; got {self.parity_atol}.")
        if (self.mean is None) != (self.std is None):
            raise UsageError("--mean and --std go together: pass both or neither.")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise UsageError(f"--std values must be positive; got {self.std}.")
        if self.whitebox and not self.attacks:
            raise UsageError("--whitebox needs attacks to craft.", fix="Pass e.g. --attacks pgd --eps 8/255.")
        if self.whitebox and self.int8 and self.quant.mode != "static":
            raise UsageError("--whitebox simulates static int8 only.",
                             fix="Use --int8-mode static with --whitebox, or drop --whitebox.")

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


    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "rows": [asdict(r) for r in self.rows],
                "prune": {**asdict(self.prune), "macs_reduction": self.prune.macs_reduction,
                          "params_reduction": self.prune.params_reduction},
                "quant": asdict(self.quant) if self.quant else None, "parity": self.parity,
                "metrics": self.metrics, "adv_sets": self.adv_sets, "seconds": self.seconds,
                "sensitivity": self.sensitivity}


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


def resolve_data(data: str | None, image_size: int | None, loaded: LoadedModel) -> tuple[Dataset, str, int | None]:
    """The data for ``loaded`` (default: the checkpoint's own, else digits), checked against it."""
    spec = loaded.input_spec or {}
    data = data or spec.get("data") or "digits"
    image_size = image_size or (spec.get("image_size") if data == spec.get("data") else None)
    ds = load_data(data, image_size=image_size)
    shape = spec.get("shape")
    if shape and list(ds.input_shape) != list(shape[1:]):
        raise DataError(f"The data '{data}' has images of shape {ds.input_shape}, but the checkpoint was "
                        f"trained on {tuple(shape[1:])}.", fix="Pass --image-size or data of the right shape.")
    if loaded.num_classes and ds.num_classes > loaded.num_classes:
        raise DataError(f"The data '{data}' has {ds.num_classes} classes but the model outputs {loaded.num_classes}.",
                        fix="Use data with the model's classes, or --num-classes when loading a state_dict.")
    return ds, data, image_size


def check_runs(net: torch.nn.Module, example: torch.Tensor, data: str) -> int:
    """Run the model once; return its output width. A shape it rejects is a DataError."""
    try:
        with torch.no_grad():
            out = net.eval()(example)
    except Exception as exc:  # the model's own shape errors
        raise DataError(f"The model rejects inputs of shape {tuple(example.shape[1:])} from '{data}'.",
                        why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                        fix="Use data with the channels and size the model expects (--image-size).") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise DataError("The model does not return a (batch, classes) tensor of logits.",
                        why=f"It returned {type(out).__name__} {getattr(out, 'shape', '')}.")
    return int(out.shape[1])


def compress(cfg: CompressConfig) -> CompressResult:
    """Prune, fine-tune, export and (optionally) int8-quantize a model into a bundle folder."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out_dir = cfg.out_dir
    if out_dir.exists() and not cfg.overwrite:  # fail before minutes of work, not after
        raise UsageError(f"'{out_dir}' already exists.", fix="Pass --overwrite to replace it, or choose another --out.")

    loaded = load_model(cfg.model, arch=cfg.arch, num_classes=cfg.num_classes, trust_model=cfg.trust_model)
    ds, data_name, image_size = resolve_data(cfg.data, cfg.image_size, loaded)
    sp = split(ds, seed=cfg.seed, eval_samples=cfg.eval_samples, calib_samples=cfg.quant.calib_samples)
    spec = loaded.input_spec or {}
    mean = cfg.mean or tuple(spec.get("mean") or ds.mean)
    std = cfg.std or tuple(spec.get("std") or ds.std)
    if len(mean) != ds.input_shape[0] or len(std) != ds.input_shape[0]:
        raise UsageError(f"--mean/--std have {len(mean)} values but the images have {ds.input_shape[0]} channels.")

    net = loaded.model
    base = PixelModel(net, mean, std).eval()
    example = torch.from_numpy(sp.eval.x[:1])
    width = check_runs(base, example, data_name)
    num_classes = loaded.num_classes or width
    if ds.num_classes > width:
        raise DataError(f"The data has {ds.num_classes} classes but the model outputs {width} logits.")
    ui.info(f"[bold]{cfg.bundle_name}[/bold]: {loaded.kind} {loaded.arch or type(net).__name__}, "
            f"{num_classes} classes; data {data_name} {ds.input_shape}, split train {len(sp.train)} / "
            f"val {len(sp.val)} / eval {len(sp.eval)} (seed {cfg.seed})")

    metrics: dict[str, Any] = {}
    parities: dict[str, dict] = {}
    with atomic_dir(out_dir, overwrite=cfg.overwrite) as tmp:
        # 1. the base model, as given
        base_onnx = export_onnx(base, example, tmp / "base.onnx")
        # logits of each model on the eval set are computed once and serve parity and accuracy
        base_torch, base_logits = torch_logits(base, sp.eval.x), onnx_logits(base_onnx, sp.eval.x)
        p = parity_of(base_torch, base_logits, atol=cfg.parity_atol)
        require_parity(p, "base model")
        parities["base"] = asdict(p)
        metrics["base_accuracy_torch"] = float((base_torch.argmax(1) == sp.eval.y).mean())

        # 2. prune a copy (the base stays intact for the adversarial sets)
        pruned_net = copy.deepcopy(net)
        pruned = PixelModel(pruned_net, mean, std)
        norm_example = (example - base.mean) / base.std
        layer_ratios, sens_rows = None, None
        if cfg.prune.ratios == "mrs":
            from .sensitivity import mrs_ratios

            with ui.task("module robustness sensitivity", total=None):
                layer_ratios, sens_rows = mrs_ratios(pruned, pruned_net, norm_example, num_classes,
                                                     sp.calib.x, sp.calib.y, cfg.prune)
        pr = prune(pruned_net, norm_example, num_classes, cfg.prune, calib=(sp.calib.x, sp.calib.y),
                   normalize=lambda x: (x - base.mean) / base.std, ratios=layer_ratios)
        if sens_rows is not None:
            after = {layer["name"]: layer["after"] for layer in pr.layers}
            for row in sens_rows:
                row["channels_after"] = after.get(row["name"])
        ui.info(f"pruned: params {pr.params_before:,} -> {pr.params_after:,} ({pr.params_reduction:.2f}x), "
                f"MACs {pr.macs_before:,} -> {pr.macs_after:,} ({pr.macs_reduction:.2f}x)")
        metrics["pruned_accuracy_before_finetune"] = accuracy(pruned, sp.eval.x, sp.eval.y)

        # 3. fine-tune
        tr = train(pruned, sp.train.x, sp.train.y, sp.val.x, sp.val.y, cfg.finetune,
                   description=f"fine-tune ({cfg.finetune.mode})")
        metrics["finetune_history"] = tr.history
        if tr.best_val_robust_acc is not None:
            metrics["finetune_best_val_robust_accuracy"] = tr.best_val_robust_acc
        pruned_torch = torch_logits(pruned, sp.eval.x)
        metrics["pruned_accuracy_torch"] = float((pruned_torch.argmax(1) == sp.eval.y).mean())

        # 4. export the pruned model
        fp32_name = "model_fp32.onnx" if cfg.int8 else "model.onnx"
        fp32_path = export_onnx(pruned, example, tmp / fp32_name)
        fp32_logits = onnx_logits(fp32_path, sp.eval.x)
        p = parity_of(pruned_torch, fp32_logits, atol=cfg.parity_atol)
        require_parity(p, "pruned model")
        parities["pruned"] = asdict(p)

        acc_base = float((base_logits.argmax(1) == sp.eval.y).mean())
        acc_fp32 = float((fp32_logits.argmax(1) == sp.eval.y).mean())
        metrics.update(base_accuracy=acc_base, pruned_accuracy=acc_fp32)

        macs_b, params_b = pr.macs_before, pr.params_before
        macs_p, params_p = pr.macs_after, pr.params_after
        rows = [ModelRow("base", params_b, macs_b, base_onnx.stat().st_size, acc_base),
                ModelRow("pruned fp32", params_p, macs_p, fp32_path.stat().st_size, acc_fp32)]

        # 5. int8
        qr = None
        quant = cfg.quant
        if cfg.int8:
            # --int8-keep-fp32 auto: the fastest layout (all int8) first, then keep the first
            # layer, then both ends in fp32, until the accuracy drop passes the gate.
            choices = AUTO_ORDER if cfg.quant.keep_fp32 == "auto" else (cfg.quant.keep_fp32,)
            attempts = []
            for keep in choices:
                quant = replace(cfg.quant, keep_fp32=keep)
                qr = quantize(fp32_path, tmp / "model.onnx", sp.calib.x, quant)
                q_logits = onnx_logits(tmp / "model.onnx", sp.eval.x)
                acc_q = float((q_logits.argmax(1) == sp.eval.y).mean())
                drop = 100 * (acc_fp32 - acc_q)
                attempts.append({"keep_fp32": keep, "accuracy": acc_q, "drop_points": drop})
                if drop <= cfg.max_int8_drop:
                    break
                if keep != choices[-1]:
                    ui.info(f"int8 with {keep} layers kept in fp32 lost {drop:.1f} points; trying the next layout")
            agree = float((q_logits.argmax(1) == fp32_logits.argmax(1)).mean())
            metrics.update(int8_accuracy=acc_q, int8_top1_agreement_with_fp32=agree, int8_drop_points=drop,
                           int8_keep_fp32=quant.keep_fp32, int8_attempts=attempts)
            rows.append(ModelRow(f"pruned int8 ({cfg.quant.mode})", params_p, macs_p,
                                 (tmp / "model.onnx").stat().st_size, acc_q))
            if drop > cfg.max_int8_drop:
                tried = "; ".join(f"{a['keep_fp32']} in fp32: {a['accuracy']:.2%}" for a in attempts)
                raise QualityGateError(
                    f"int8 lost {drop:.1f} accuracy points against fp32 "
                    f"({acc_fp32:.2%} -> {acc_q:.2%} on {len(sp.eval)} samples; tried {tried}); the limit is "
                    f"--max-int8-drop {cfg.max_int8_drop:g}. No bundle was written.",
                    why="Some layers do not survive 8-bit rounding with this calibration.",
                    fix="Try --calibration entropy or percentile, more --calib-samples, --int8-keep-fp32 ends "
                        "(first and last layers in fp32), or --int8-mode dynamic; or raise --max-int8-drop.")
        metrics["deployed_accuracy"] = rows[-1].accuracy

        # 6. evidence: eval set, pruned weights, adversarial sets
        evalset = EvalSet(x=sp.eval.x, y=sp.eval.y,
                          meta={"data": data_name, "seed": cfg.seed, "split": "eval", "n": len(sp.eval)})
        evalset.save(tmp / "eval.npz")
        input_spec = {"name": INPUT_NAME, "shape": [None, *ds.input_shape], "dtype": "float32", "layout": "NCHW",
                      "value_range": [0.0, 1.0], "mean": list(mean), "std": list(std),
                      "normalization": "inside-model", "num_classes": num_classes,
                      "class_names": ds.class_names if ds.num_classes == num_classes else [str(i) for i in range(num_classes)],
                      "data": data_name, "image_size": image_size}
        if loaded.arch:
            save_checkpoint(tmp / "pruned.pt", pruned_net, loaded.arch, num_classes, input_spec,
                            info={"source_sha256": loaded.sha256, "prune": asdict(cfg.prune)},
                            structure=structure_of(pruned_net))
        else:
            ui.warn("the model was a pickled module without --arch: pruned.pt is not written "
                    "(a safe, self-describing checkpoint needs an architecture name).")
        adv_names: list[str] = []
        if cfg.attacks:
            from .attacks import craft_sets

            (tmp / "adv").mkdir()
            paths = craft_sets(base, evalset, list(cfg.attacks), tmp / "adv",
                               base_sha256=sha256_file(base_onnx), eval_sha256=sha256_file(tmp / "eval.npz"))
            adv_names = [f"adv/{Path(p).name}" for p in paths]
        if cfg.whitebox:
            from .whitebox import int8_simulation, whitebox_sets, write_whitebox_sets

            if cfg.int8:  # how closely the simulation that int8 sets are crafted on follows model.onnx
                sim = int8_simulation(pruned, sp.calib.x, quant)
                sim_pred = np.concatenate([sim(torch.from_numpy(sp.eval.x[i:i + 256])).argmax(1).detach().numpy()
                                           for i in range(0, len(sp.eval.x), 256)])
                metrics["int8_sim_top1_agreement_with_int8"] = float((sim_pred == q_logits.argmax(1)).mean())
                del sim
            sets = whitebox_sets(pruned, sp.calib.x, evalset, list(cfg.attacks), cfg.int8, quant=quant,
                                 fp32_sha256=sha256_file(fp32_path),
                                 int8_sha256=sha256_file(tmp / "model.onnx") if cfg.int8 else "",
                                 eval_sha256=sha256_file(tmp / "eval.npz"), fp32_target=fp32_name)
            paths = write_whitebox_sets(sets, tmp / "adv")
            adv_names += [Path(p).relative_to(tmp).as_posix() for p in paths]

        metrics.update(params_before=params_b, params_after=params_p, macs_before=macs_b, macs_after=macs_p,
                       macs_reduction=pr.macs_reduction, params_reduction=pr.params_reduction)
        manifest = {
            "kind": BUNDLE_KIND, "schema_version": SCHEMA_VERSION, "name": cfg.bundle_name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tool": versions(),
            "source": {"path": str(loaded.path), "sha256": loaded.sha256, "kind": loaded.kind, "arch": loaded.arch},
            "input": input_spec, "output": {"name": OUTPUT_NAME, "shape": [None, num_classes]},
            "models": {"base": "base.onnx", "deployed": "model.onnx", **({"fp32": "model_fp32.onnx"} if cfg.int8 else {})},
            "eval": "eval.npz",
            "adv": adv_names,
            "config": _config_dict(cfg),
            "metrics": metrics,
            "pruning": {"layers": pr.layers},
            "parity": parities,
            "quantization": asdict(qr) if qr else None,
        }
        if sens_rows is not None:
            manifest["sensitivity"] = {"method": "module robust criticality (Zhu et al. 2023)",
                                       "eps_rel": cfg.prune.mrs_eps_rel, "steps": cfg.prune.mrs_steps,
                                       "attack_eps": cfg.prune.mrs_attack_eps, "samples": cfg.prune.mrs_samples,
                                       "layers": sens_rows}
        finalize_manifest(tmp, manifest)
    return CompressResult(bundle=out_dir, rows=rows, prune=pr, quant=qr, parity=parities, metrics=metrics,
                          adv_sets=adv_names, seconds=time.perf_counter() - t_start, sensitivity=sens_rows)


def _config_dict(cfg: CompressConfig) -> dict:
    d = asdict(cfg)
    d["model"] = str(cfg.model)
    d["out"] = str(cfg.out_dir)
    d["attacks"] = [asdict(a) if hasattr(a, "__dataclass_fields__") else str(a) for a in cfg.attacks]
    return d


from ._callable import make_module_callable  # noqa: E402

make_module_callable(__name__, compress)
