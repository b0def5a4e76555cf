"""The first stage: load the model and the data, split it, settle the normalization.

``prepare(PrepareConfig) -> Prepared``. Everything after it (prune, fine-tune, export, int8,
attack sets; compress, sweep, attack, recipes, demo) works on the one Prepared object, so the
model, the split and the normalization are decided once, the same way for every command.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgerobust import ui
from edgerobust.workstation.data import Dataset, Splits, load_data, split
from edgerobust.workstation.devices import describe, resolve_device
from edgerobust.errors import DataError, UsageError
from edgerobust.workstation.export import INPUT_NAME
from edgerobust.workstation.finetune import predict
from edgerobust.workstation.load import LoadedModel, load_model
from edgerobust.workstation.nets import PixelModel
from edgerobust.workstation.normalization import Decision, NormSpec, decide, parse_normalize, weak_base_check

VAL_CHECK_SAMPLES = 512  # validation samples the normalization and weak-base checks use


@dataclass(frozen=True)
class PrepareConfig:
    """Which model, which data, how to split it, which normalization.

    ``normalize`` is a --normalize text (auto, none, data, imagenet, MEAN/STD) or a NormSpec.
    """

    model: str | Path
    arch: str | None = None
    num_classes: int | None = None
    trust_model: bool = False
    data: str | None = None  # default: the checkpoint's own data, else digits
    image_size: int | None = None
    normalize: str | NormSpec = "auto"
    seed: int = 0
    eval_samples: int = 1000
    calib_samples: int = 256
    allow_weak_base: bool = False
    device: str = "auto"  # where torch runs: auto, cpu, cuda, cuda:N (edgerobust.workstation.devices)

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise UsageError(f"--image-size must be a positive number of pixels; got {self.image_size}.")
        if self.num_classes is not None and self.num_classes < 2:
            raise UsageError(f"--num-classes must be >= 2; got {self.num_classes}.")
        if self.eval_samples < 1:
            raise UsageError(f"--eval-samples must be >= 1; got {self.eval_samples}.")
        if isinstance(self.normalize, str):
            object.__setattr__(self, "normalize", parse_normalize(self.normalize))


@dataclass
class Prepared:
    """The loaded model in pixel space, its data split, and the normalization decided for it."""

    loaded: LoadedModel
    dataset: Dataset
    splits: Splits
    data_name: str
    image_size: int | None
    norm: Decision
    base: PixelModel  # the model as given, taking [0, 1] pixels
    num_classes: int
    seed: int
    warnings: list[str]
    device: torch.device = torch.device("cpu")  # where the stages run torch; models live on the CPU between stages

    @property
    def example(self) -> torch.Tensor:
        return torch.from_numpy(self.splits.eval.x[:1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.base.mean) / self.base.std

    def wrap(self, net: torch.nn.Module) -> PixelModel:
        """``net`` (taking normalized input) as a pixel-space model with this normalization."""
        return PixelModel(net, self.norm.mean, self.norm.std)

    def input_spec(self) -> dict:
        ds = self.dataset
        names = ds.class_names if ds.num_classes == self.num_classes else [str(i) for i in range(self.num_classes)]
        return {"name": INPUT_NAME, "shape": [None, *ds.input_shape], "dtype": "float32", "layout": "NCHW",
                "value_range": [0.0, 1.0], "mean": list(self.norm.mean), "std": list(self.norm.std),
                "normalization": "inside-model", "num_classes": self.num_classes, "class_names": names,
                "data": self.data_name, "image_size": self.image_size}


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


def _candidates(spec: NormSpec, loaded: LoadedModel, ds: Dataset) -> tuple[str, dict[str, NormSpec]]:
    """(source, the candidate normalizations): one for a flag or a checkpoint, several for auto."""
    if spec.kind != "auto":
        return "flag", {spec.kind: spec}
    recorded = loaded.input_spec or {}
    if recorded.get("mean") and recorded.get("std"):
        return "checkpoint", {"checkpoint": NormSpec("custom", tuple(recorded["mean"]), tuple(recorded["std"]))}
    cands = {"none": NormSpec("none"), "data": NormSpec("data")}
    if ds.input_shape[0] == 3:
        cands["imagenet"] = NormSpec("imagenet")
    return "auto", cands


def _decide_norm(spec: NormSpec, loaded: LoadedModel, ds: Dataset, val: Dataset) -> tuple[Decision, float]:
    """The normalization Decision and the base's validation accuracy under it."""
    source, cands = _candidates(spec, loaded, ds)
    c = ds.input_shape[0]
    values = {k: s.values(c, ds.mean, ds.std) for k, s in cands.items()}
    x, y = val.x[:VAL_CHECK_SAMPLES], val.y[:VAL_CHECK_SAMPLES]
    with torch.no_grad():
        correct = {k: predict(PixelModel(loaded.model, m, s).eval(), x) == y for k, (m, s) in values.items()}
    accs = {k: float(v.mean()) for k, v in correct.items()}
    if source == "auto":
        choice, reason = decide(correct)
    else:
        choice = next(iter(cands))
        reason = "recorded in the checkpoint" if source == "checkpoint" else "given with --normalize/--mean/--std"
    mean, std = values[choice]
    return Decision(choice=choice, source=source, mean=mean, std=std, reason=reason,
                    val_accuracy=accs, val_samples=len(y)), accs[choice]


def _check_samples(sp: Splits) -> Dataset:
    """Up to VAL_CHECK_SAMPLES held-out samples for the normalization and weak-base checks."""
    n_val = min(len(sp.val), VAL_CHECK_SAMPLES)
    extra = np.arange(min(len(sp.train), VAL_CHECK_SAMPLES - n_val))
    v = sp.val.subset(np.arange(n_val))
    t = sp.train.subset(extra)
    return Dataset(x=np.concatenate([v.x, t.x]), y=np.concatenate([v.y, t.y]), class_names=v.class_names,
                   mean=v.mean, std=v.std, name=v.name)


def prepare(cfg: PrepareConfig) -> Prepared:
    """Load the model and data, split them deterministically, decide the normalization, check the base."""
    device = resolve_device(cfg.device)  # a CUDA request on a host without CUDA stops here, before any work
    torch.manual_seed(cfg.seed)
    loaded = load_model(cfg.model, arch=cfg.arch, num_classes=cfg.num_classes, trust_model=cfg.trust_model)
    ds, data_name, image_size = resolve_data(cfg.data, cfg.image_size, loaded)
    sp = split(ds, seed=cfg.seed, eval_samples=cfg.eval_samples, calib_samples=cfg.calib_samples)
    example = torch.from_numpy(sp.eval.x[:1])
    width = check_runs(loaded.model, example, data_name)
    if ds.num_classes > width:
        raise DataError(f"The data has {ds.num_classes} classes but the model outputs {width} logits.")
    num_classes = loaded.num_classes or width
    # held-out samples for the checks: validation first, topped up from train (the checks ask what
    # input scaling the model expects, which does not need unseen data); never the eval split
    val = _check_samples(sp)
    norm, val_acc = _decide_norm(cfg.normalize, loaded, ds, val)
    warnings = []
    chance = float(np.bincount(val.y[:VAL_CHECK_SAMPLES]).max() / max(1, len(val.y[:VAL_CHECK_SAMPLES])))
    weak = weak_base_check(val_acc, chance, len(val.y[:VAL_CHECK_SAMPLES]), cfg.allow_weak_base)
    if weak:
        ui.warn(weak)
        warnings.append(weak)
    base = PixelModel(loaded.model, norm.mean, norm.std).eval()
    mean_txt = ", ".join(f"{v:.3g}" for v in norm.mean)
    std_txt = ", ".join(f"{v:.3g}" for v in norm.std)
    ui.info(f"torch runs on {describe(device)}")
    ui.info(f"normalization: {norm.choice} (mean {mean_txt}; std {std_txt}): {norm.reason}")
    ui.info(f"{Path(str(cfg.model)).name}: {loaded.kind} {loaded.arch or type(loaded.model).__name__}, "
            f"{num_classes} classes; data {data_name} {ds.input_shape}, split train {len(sp.train)} / "
            f"val {len(sp.val)} / eval {len(sp.eval)} (seed {cfg.seed})")
    return Prepared(loaded=loaded, dataset=ds, splits=sp, data_name=data_name, image_size=image_size, norm=norm,
                    base=base, num_classes=num_classes, seed=cfg.seed, warnings=warnings, device=device)
