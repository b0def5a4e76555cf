"""The first stage: load the model and the data, split it, settle the normalization.

``prepare(PrepareConfig) -> Prepared``. Everything after it (prune, fine-tune, export, int8,
attack sets; compress, sweep, attack, recipes, demo) works on the one Prepared object, so the
model, the split and the normalization are decided once, the same way for every command.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgerobust.workstation.data.sources import HeldOut, Splits, load_data, split
from edgerobust.workstation.data.dataset import Dataset
from edgerobust.workstation.resources.torch_device import describe, resolve_device
from edgerobust.errors import DataError, UsageError
from edgerobust.workstation.configs import PrepareConfig
from edgerobust.workstation.model.export import INPUT_NAME
from edgerobust.workstation.train.finetune import predict
from edgerobust.workstation.model.load import LoadedModel, load_model
from edgerobust.workstation.model.nets import PixelModel
from edgerobust.workstation.data.normalization import Decision, NormSpec, decide, weak_base_check

logger = logging.getLogger(__name__)

# where the evaluation rows came from (data.HeldOut.source), for the status line
EVAL_FROM = {"test": "the source's own test split", "eval_data": "`eval_data`", "random": "a random split"}
VAL_CHECK_SAMPLES = 512  # validation samples the normalization and weak-base checks use


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

    @property
    def held_out(self) -> HeldOut:
        """Where the evaluation rows came from, and whether they may overlap the model's training data."""
        return self.splits.held_out

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
                        f"trained on {tuple(shape[1:])}.", fix="Give `image_size` or data of the right shape.")
    if loaded.num_classes and ds.num_classes > loaded.num_classes:
        raise DataError(f"The data '{data}' has {ds.num_classes} classes but the model outputs {loaded.num_classes}.",
                        fix="Use data with the model's classes, or `num_classes` when loading a state_dict.")
    return ds, data, image_size


def _eval_data(spec: str, image_size: int | None, ds: Dataset) -> Dataset:
    """The separate evaluation source ``spec`` (its own test part if it has one), checked against ``ds``."""
    e = load_data(spec, image_size=image_size)
    e = e.test if e.test is not None else e
    if e.input_shape != ds.input_shape:
        raise DataError(f"The evaluation data '{spec}' has images of shape {e.input_shape}; the data has "
                        f"{ds.input_shape}.", fix="Give `eval_data` of the same shape (or the same `image_size`).")
    if e.num_classes > ds.num_classes:
        raise DataError(f"The evaluation data '{spec}' has labels up to {e.num_classes - 1}; the data has "
                        f"{ds.num_classes} classes.", fix="Give `eval_data` with the same classes.")
    return e


def _trained_on_this_split(loaded: LoadedModel, data: str, image_size: int | None, seed: int) -> bool:
    """Does the checkpoint say it was trained on the training part of split(data, seed)? edgerobust's
    own checkpoints record it (``info.trained_on``; zoo checkpoints from before that, by their seed)."""
    info, spec = loaded.info or {}, loaded.input_spec or {}
    t = info.get("trained_on")
    if not isinstance(t, dict) and str(loaded.arch or "").startswith("zoo:") and "seed" in info:
        t = {"data": spec.get("data"), "image_size": spec.get("image_size"), "seed": info["seed"]}
    if not isinstance(t, dict):
        return False
    return t.get("data") == data and t.get("seed") == seed and (t.get("image_size") or None) == (image_size or None)


def check_runs(net: torch.nn.Module, example: torch.Tensor, data: str) -> int:
    """Run the model once; return its output width. A shape it rejects is a DataError."""
    try:
        with torch.no_grad():
            out = net.eval()(example)
    except Exception as exc:  # the model's own shape errors
        raise DataError(f"The model rejects inputs of shape {tuple(example.shape[1:])} from '{data}'.",
                        why=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                        fix="Use data with the channels and size the model expects (`image_size`).") from exc
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
        reason = "recorded in the checkpoint" if source == "checkpoint" else "given (`normalize`)"
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
    if cfg.model is None:
        raise UsageError("No `model` to prepare.", fix="Give the model file's path.")
    device = resolve_device(cfg.device)  # a CUDA request on a host without CUDA stops here, before any work
    torch.manual_seed(cfg.seed)
    loaded = load_model(cfg.model, arch=cfg.arch, num_classes=cfg.num_classes, trust_model=cfg.trust_model)
    ds, data_name, image_size = resolve_data(cfg.data, cfg.image_size, loaded)
    eval_ds = _eval_data(cfg.eval_data, image_size, ds) if cfg.eval_data else None
    sp = split(ds, seed=cfg.seed, eval_samples=cfg.eval_samples, calib_samples=cfg.calib_samples, eval_ds=eval_ds)
    if sp.held_out.may_overlap_training and _trained_on_this_split(loaded, data_name, image_size, cfg.seed):
        sp.held_out = HeldOut("random", False, f"the evaluation rows were drawn at random (seed {cfg.seed}) from "
                                               f"'{data_name}', and the checkpoint records training on the "
                                               "training part of this same seeded split, which holds none of them")
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
    if sp.held_out.may_overlap_training:
        overlap = (f"The evaluation rows may overlap the model's training data: {sp.held_out.why}. Accuracy on "
                   "them, clean and adversarial, is then an upper bound for the base. Give held-out rows: "
                   "x_train/y_train with x_test/y_test (or x_val/y_val) in the npz, train/ and test/ "
                   "sub-folders, or `eval_data`.")
        logger.warning(overlap)
        warnings.append(overlap)
    chance = float(np.bincount(val.y[:VAL_CHECK_SAMPLES]).max() / max(1, len(val.y[:VAL_CHECK_SAMPLES])))
    weak = weak_base_check(val_acc, chance, len(val.y[:VAL_CHECK_SAMPLES]), cfg.allow_weak_base)
    if weak:
        logger.warning(weak)
        warnings.append(weak)
    base = PixelModel(loaded.model, norm.mean, norm.std).eval()
    mean_txt = ", ".join(f"{v:.3g}" for v in norm.mean)
    std_txt = ", ".join(f"{v:.3g}" for v in norm.std)
    logger.info(f"torch runs on {describe(device)}")
    logger.info(f"normalization: {norm.choice} (mean {mean_txt}; std {std_txt}): {norm.reason}")
    logger.info(f"{Path(str(cfg.model)).name}: {loaded.kind} {loaded.arch or type(loaded.model).__name__}, "
                f"{num_classes} classes; data {data_name} {ds.input_shape}, split train {len(sp.train)} / "
                f"val {len(sp.val)} / eval {len(sp.eval)} (seed {cfg.seed}; eval rows: {EVAL_FROM[sp.held_out.source]})")
    return Prepared(loaded=loaded, dataset=ds, splits=sp, data_name=data_name, image_size=image_size, norm=norm,
                    base=base, num_classes=num_classes, seed=cfg.seed, warnings=warnings, device=device)
