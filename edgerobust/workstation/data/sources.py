"""Data sources by name (`data`: digits, npz:PATH, folder:PATH or cifar10:PATH) and the seeded split.

Every source yields float32 images in [0, 1], NCHW, with int64 labels 0..K-1, class names and a
per-channel mean/std. Normalization is never applied to the arrays: it lives inside the exported
model (see nets.PixelModel), so that audit feeds the deployed model exactly what compress did.
numpy-only at import time (scikit-learn and Pillow are imported by the sources that need them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgerobust.errors import DataError, require
from edgerobust.workstation.data.dataset import Dataset, check_labels, finish_dataset, resize_images, to_nchw_unit
from edgerobust.workstation.data.images import cifar10_source, folder_source


@dataclass
class Splits:
    """Deterministic train / validation / calibration / evaluation split.

    ``val`` (held out of train) picks the best fine-tuning epoch, so ``eval`` stays unseen until
    the final measurement; ``calib`` (a slice of train) calibrates int8.
    """

    train: Dataset
    val: Dataset
    calib: Dataset
    eval: Dataset
    seed: int
    held_out: "HeldOut | None" = None  # where the evaluation rows came from, and whether they are unseen


@dataclass(frozen=True)
class HeldOut:
    """Where the evaluation rows came from and what that means for the base's accuracy.

    ``source``: ``test`` (the source's own held-out split), ``eval_data`` (a separate data source
    the user named) or ``random`` (drawn at random from the one set of rows the source holds).
    ``may_overlap_training``: True when nothing says those rows were kept out of the model's
    training; the base accuracy measured on them is then an upper bound. ``why``: in words.
    """

    source: str
    may_overlap_training: bool
    why: str

    def to_dict(self) -> dict:
        return {"source": self.source, "may_overlap_training": self.may_overlap_training, "why": self.why}


# =============================================================================================
# sources


def _digits(arg: str | None, image_size: int | None) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), resized (default 16x16)."""
    datasets = require("sklearn.datasets")
    d = datasets.load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    size = image_size or 16
    x = resize_images(x, size) if size != 8 else x
    return finish_dataset(x, d.target.astype(np.int64), [str(i) for i in range(10)], "digits")


NPZ_SPLITS = ("train", "val", "test")  # x_<split>/y_<split> pairs an npz may hold instead of x/y


def _npz(arg: str | None, image_size: int | None) -> Dataset:
    """A .npz with arrays `x` (N,C,H,W or N,H,W,C or N,H,W; uint8 0..255 or float in [0,1]) and `y`,
    or with the user's own split: `x_train`/`y_train` and any of `x_val`/`y_val`, `x_test`/`y_test`."""
    from edgerobust.edge.files.npzio import load_npz

    if not arg:
        raise DataError("The data source 'npz' needs a path: `data` npz:PATH.")
    arrays, meta = load_npz(arg, (), what="data file")
    names = arrays.get("class_names")
    parts = [k for k in NPZ_SPLITS if f"x_{k}" in arrays or f"y_{k}" in arrays]
    if parts and ("x" in arrays or "y" in arrays):
        raise DataError(f"'{arg}' holds both x/y and split arrays ({', '.join(f'x_{k}' for k in parts)}).",
                        why="It cannot tell which rows the model was trained on.",
                        fix="Keep either x and y, or x_train/y_train with x_val/y_val and x_test/y_test.")
    if not parts:
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DataError(f"The data file '{arg}' lacks the array(s) {', '.join(missing)}.",
                            fix="Save images as x and labels as y (or x_train/y_train, x_test/y_test, ...): "
                                "np.savez(path, x=images, y=labels).")
        x, y = _npz_pair(arrays["x"], arrays["y"], arg, image_size)
        return _named(x, y, names, f"npz:{arg}", arg)
    for k in parts:
        if f"x_{k}" not in arrays or f"y_{k}" not in arrays:
            raise DataError(f"'{arg}' holds only one of x_{k} and y_{k}.", fix=f"Save both x_{k} and y_{k}.")
    if "train" not in parts:
        raise DataError(f"'{arg}' has no x_train/y_train.",
                        why="Fine-tuning and int8 calibration need training rows, kept apart from the evaluation.",
                        fix="Save the rows the model may train on as x_train/y_train.")
    split_xy = {k: _npz_pair(arrays[f"x_{k}"], arrays[f"y_{k}"], f"{arg} ({k})", image_size) for k in parts}
    shapes = {k: xy[0].shape[1:] for k, xy in split_xy.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"'{arg}': the splits hold images of different shapes: {shapes}.")
    k_all = max(int(xy[1].max()) for xy in split_xy.values()) + 1
    ds = _named(*split_xy["train"], names, f"npz:{arg}", arg, k_all)

    def part(k: str) -> Dataset | None:
        if k not in split_xy:
            return None
        x, y = split_xy[k]
        return Dataset(x=x, y=y, class_names=ds.class_names, mean=ds.mean, std=ds.std, name=f"npz:{arg}:{k}")

    if "test" not in split_xy:  # the user's validation rows are what is held out of training
        return replace(ds, test=part("val"), test_name="x_val")
    return replace(ds, test=part("test"), val=part("val"), test_name="x_test")


def _npz_pair(x: np.ndarray, y: np.ndarray, src: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    x = to_nchw_unit(x, src)
    y = check_labels(y, x.shape[0], src)
    if image_size and x.shape[-1] != image_size:
        x = resize_images(x, image_size)
    return x, y


def _named(x: np.ndarray, y: np.ndarray, names, name: str, src: str, k: int | None = None) -> Dataset:
    k = k or int(y.max()) + 1
    class_names = [str(n) for n in names.tolist()] if names is not None else [str(i) for i in range(k)]
    if len(class_names) < k:
        raise DataError(f"'{src}': labels go up to {k - 1} but only {len(class_names)} class_names are given.")
    return finish_dataset(x, y, class_names, name)


# name -> (loader, help). The CLI's help lists these names.
SOURCES: dict[str, tuple[Callable[[str | None, int | None], Dataset], str]] = {
    "digits": (_digits, "scikit-learn's bundled 8x8 handwritten digits, resized (default 16x16); no download"),
    "npz": (_npz, "npz:PATH, arrays x (images) and y (labels), or your own split x_train/y_train with "
                  "x_test/y_test and/or x_val/y_val (the evaluation then uses only the held-out rows); optional "
                  "class_names"),
    "folder": (folder_source, "folder:PATH, one sub-folder of images per class, or train/ and test/ (and val/) "
                        "sub-folders laid out that way"),
    "cifar10": (cifar10_source, "cifar10:PATH, the CIFAR-10 python batches folder (read without running code)"),
}


def load_data(spec: str = "digits", image_size: int | None = None) -> Dataset:
    """Load a data source named ``spec`` (``name`` or ``name:ARG``)."""
    name, _, arg = spec.partition(":")
    if name not in SOURCES:
        if Path(spec).suffix == ".npz":
            name, arg = "npz", spec
        else:
            raise DataError(f"Unknown data source '{spec}'.",
                            fix=f"Use one of: {', '.join(SOURCES)} (e.g. `data` npz:train.npz).")
    if image_size is not None and image_size < 1:
        raise DataError(f"`image_size` must be positive; got {image_size}.")
    loader = SOURCES[name][0]
    ds = loader(arg or None, image_size)
    if len(ds) < 2:
        raise DataError(f"The data source '{spec}' holds {len(ds)} sample(s); at least 2 are needed.")
    return ds


def split(ds: Dataset, seed: int = 0, eval_fraction: float = 0.2, eval_samples: int | None = None,
          calib_samples: int = 256, val_fraction: float = 0.1, eval_ds: Dataset | None = None) -> Splits:
    """Seeded split: a held-out evaluation set, a validation slice of the rest, the rest for
    training; calibration drawn from train.

    The same (data, seed) always gives the same split. The evaluation rows come from ``eval_ds``
    when given (a separate source), else from the source's own test set, else at random from its
    rows; ``Splits.held_out`` says which, and whether they may overlap the model's training data.
    A source's own validation set is used as given. ``eval_samples`` caps the evaluation set
    (crafting attacks costs time per sample).
    """
    rng = np.random.default_rng(seed)
    if eval_ds is not None or ds.test is not None:
        train = ds.subset(rng.permutation(len(ds)))
        ev = eval_ds if eval_ds is not None else ds.test
        ev = ev.subset(np.random.default_rng(seed + 1).permutation(len(ev)))
        held = (HeldOut("eval_data", False, f"the evaluation rows are the separate data '{eval_ds.name}'")
                if eval_ds is not None else
                HeldOut("test", False, f"the evaluation rows are the source's own held-out {ds.test_name}"))
    else:
        perm = rng.permutation(len(ds))
        n_eval = max(1, int(round(len(ds) * eval_fraction)))
        if n_eval >= len(ds):
            raise DataError(f"The data source has {len(ds)} samples: too few to split off an evaluation set.")
        ev, train = ds.subset(perm[:n_eval]), ds.subset(perm[n_eval:])
        held = HeldOut("random", True, f"the evaluation rows were drawn at random (seed {seed}) from the one set "
                                       f"of rows '{ds.name}' holds, which the model may have been trained on")
    if eval_samples is not None:
        if eval_samples < 1:
            raise DataError(f"`eval_samples` must be positive; got {eval_samples}.")
        ev = ev.subset(np.arange(min(eval_samples, len(ev))))
    if ds.val is not None:
        val = ds.val.subset(np.random.default_rng(seed + 2).permutation(len(ds.val)))
    else:
        n_val = max(1, int(round(len(train) * val_fraction)))
        if n_val >= len(train):
            raise DataError(f"The data source has {len(ds)} samples: too few to split off a validation set.")
        val, train = train.subset(np.arange(n_val)), train.subset(np.arange(n_val, len(train)))
    n_cal = min(calib_samples, len(train))
    calib = train.subset(np.arange(n_cal))
    return Splits(train=train, val=val, calib=calib, eval=ev, seed=seed, held_out=held)
