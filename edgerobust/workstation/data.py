"""Data sources by name (`--data digits|npz:PATH|folder:PATH|cifar10:PATH`) and the seeded split.

Every source yields float32 images in [0, 1], NCHW, with int64 labels 0..K-1, class names and a
per-channel mean/std. Normalization is never applied to the arrays: it lives inside the exported
model (see nets.PixelModel), so that audit feeds the deployed model exactly what compress did.
numpy-only at import time (scikit-learn and Pillow are imported by the sources that need them).
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgerobust.errors import DataError, require

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class Dataset:
    """Images in [0, 1] (N, C, H, W) float32 and labels (N,) int64."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    # A source with its own held-out set (CIFAR-10's test batch) puts it here; split() uses it.
    test: "Dataset | None" = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> "Dataset":
        return replace(self, x=self.x[idx], y=self.y[idx], test=None)


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


# ---------------------------------------------------------------------------------------------
# sources


def _digits(arg: str | None, image_size: int | None) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), resized (default 16x16)."""
    datasets = require("sklearn.datasets")
    d = datasets.load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    size = image_size or 16
    x = _resize(x, size) if size != 8 else x
    return _finish(x, d.target.astype(np.int64), [str(i) for i in range(10)], "digits")


def _npz(arg: str | None, image_size: int | None) -> Dataset:
    """A .npz with arrays `x` (N,C,H,W or N,H,W,C or N,H,W; uint8 0..255 or float in [0,1]) and `y`."""
    from edgerobust.device.bundle import load_npz

    if not arg:
        raise DataError("The data source 'npz' needs a path: --data npz:PATH.")
    arrays, meta = load_npz(arg, ("x", "y"), what="data file")
    x, y = arrays["x"], arrays["y"]
    names = arrays.get("class_names")
    x = _to_nchw_unit(x, arg)
    y = _labels(y, x.shape[0], arg)
    if image_size and x.shape[-1] != image_size:
        x = _resize(x, image_size)
    k = int(y.max()) + 1
    class_names = [str(n) for n in names.tolist()] if names is not None else [str(i) for i in range(k)]
    if len(class_names) < k:
        raise DataError(f"'{arg}': labels go up to {k - 1} but only {len(class_names)} class_names are given.")
    return _finish(x, y, class_names, f"npz:{arg}")


def _folder(arg: str | None, image_size: int | None) -> Dataset:
    """A folder with one sub-folder of images per class (ImageFolder layout)."""
    if not arg:
        raise DataError("The data source 'folder' needs a path: --data folder:PATH.")
    root = Path(arg)
    if not root.is_dir():
        raise DataError(f"The data folder '{root}' does not exist.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"The data folder '{root}' has no class sub-folders.",
                        fix="Put the images of each class in their own sub-folder: ROOT/<class>/<image>.png.")
    Image = require("PIL.Image")
    images, labels, sizes = [], [], set()
    for ci, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if image_size:
                        im = im.resize((image_size, image_size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except Exception as exc:  # Pillow raises many types for bad images
                raise DataError(f"Cannot read the image '{f}'.", why=f"{type(exc).__name__}: {exc}") from exc
            sizes.add(arr.shape)
            images.append(arr)
            labels.append(ci)
    if not images:
        raise DataError(f"The data folder '{root}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    if len(sizes) > 1:
        raise DataError(f"The images in '{root}' have mixed sizes: {sorted(sizes)[:4]}.",
                        fix="Pass --image-size N to resize them all to N x N.")
    x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return _finish(x, np.asarray(labels, dtype=np.int64), classes, f"folder:{arg}")


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: no code from the file runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")


def _cifar10(arg: str | None, image_size: int | None) -> Dataset:
    """The CIFAR-10 python batches folder (data_batch_1..5, test_batch, batches.meta)."""
    if not arg:
        raise DataError("The data source 'cifar10' needs a path: --data cifar10:PATH.")
    root = Path(arg)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"

    def read(name: str) -> dict:
        p = root / name
        if not p.is_file():
            raise DataError(f"The CIFAR-10 folder '{root}' lacks '{name}'.",
                            fix="Point --data cifar10:PATH at the extracted cifar-10-batches-py folder.")
        try:
            return _SafeUnpickler(io.BytesIO(p.read_bytes()), encoding="bytes").load()
        except Exception as exc:
            raise DataError(f"Cannot read the CIFAR-10 batch '{p}'.", why=f"{type(exc).__name__}: {exc}") from exc

    def batch(d: dict) -> tuple[np.ndarray, np.ndarray]:
        try:
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(d[b"labels"], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"A CIFAR-10 batch in '{root}' has an unexpected layout.", why=str(exc)) from exc
        return data, labels

    train_files = [f"data_batch_{i}" for i in range(1, 6) if (root / f"data_batch_{i}").is_file()]
    if not train_files:
        raise DataError(f"No CIFAR-10 training batches (data_batch_N) in '{root}'.")
    parts = [batch(read(f)) for f in train_files]
    xt, yt = batch(read("test_batch"))
    names = [f"class{i}" for i in range(10)]
    if (root / "batches.meta").is_file():
        meta = read("batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", names)]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts])
    xt = xt.astype(np.float32) / 255.0
    if image_size and image_size != 32:
        x, xt = _resize(x, image_size), _resize(xt, image_size)
    # The standard CIFAR-10 statistics, so that models trained elsewhere see what they expect.
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    test = Dataset(x=xt, y=yt, class_names=names, mean=mean, std=std, name=f"cifar10:{arg}:test")
    return Dataset(x=x, y=y, class_names=names, mean=mean, std=std, name=f"cifar10:{arg}", test=test)


# name -> (loader, help). The CLI's --help lists these names.
SOURCES: dict[str, tuple[Callable[[str | None, int | None], Dataset], str]] = {
    "digits": (_digits, "scikit-learn's bundled 8x8 handwritten digits, resized (default 16x16); no download"),
    "npz": (_npz, "npz:PATH, arrays x (images) and y (labels), optional class_names"),
    "folder": (_folder, "folder:PATH, one sub-folder of images per class"),
    "cifar10": (_cifar10, "cifar10:PATH, the CIFAR-10 python batches folder (read without running code)"),
}


def load_data(spec: str = "digits", image_size: int | None = None) -> Dataset:
    """Load a data source named ``spec`` (``name`` or ``name:ARG``)."""
    name, _, arg = spec.partition(":")
    if name not in SOURCES:
        if Path(spec).suffix == ".npz":
            name, arg = "npz", spec
        else:
            raise DataError(f"Unknown data source '{spec}'.",
                            fix=f"Use one of: {', '.join(SOURCES)} (e.g. --data npz:train.npz).")
    if image_size is not None and image_size < 1:
        raise DataError(f"--image-size must be positive; got {image_size}.")
    loader = SOURCES[name][0]
    ds = loader(arg or None, image_size)
    if len(ds) < 2:
        raise DataError(f"The data source '{spec}' holds {len(ds)} sample(s); at least 2 are needed.")
    return ds


def split(ds: Dataset, seed: int = 0, eval_fraction: float = 0.2, eval_samples: int | None = None,
          calib_samples: int = 256, val_fraction: float = 0.1) -> Splits:
    """Seeded split: a held-out evaluation set, a validation slice of the rest, the rest for
    training; calibration drawn from train.

    The same (data, seed) always gives the same split. A source with its own test set uses it for
    evaluation. ``eval_samples`` caps the evaluation set (crafting attacks costs time per sample).
    """
    rng = np.random.default_rng(seed)
    if ds.test is not None:
        train = ds.subset(rng.permutation(len(ds)))
        ev = ds.test
        ev = ev.subset(np.random.default_rng(seed + 1).permutation(len(ev)))
    else:
        perm = rng.permutation(len(ds))
        n_eval = max(1, int(round(len(ds) * eval_fraction)))
        if n_eval >= len(ds):
            raise DataError(f"The data source has {len(ds)} samples: too few to split off an evaluation set.")
        ev, train = ds.subset(perm[:n_eval]), ds.subset(perm[n_eval:])
    if eval_samples is not None:
        if eval_samples < 1:
            raise DataError(f"--eval-samples must be positive; got {eval_samples}.")
        ev = ev.subset(np.arange(min(eval_samples, len(ev))))
    n_val = max(1, int(round(len(train) * val_fraction)))
    if n_val >= len(train):
        raise DataError(f"The data source has {len(ds)} samples: too few to split off a validation set.")
    val, train = train.subset(np.arange(n_val)), train.subset(np.arange(n_val, len(train)))
    n_cal = min(calib_samples, len(train))
    calib = train.subset(np.arange(n_cal))
    return Splits(train=train, val=val, calib=calib, eval=ev, seed=seed)


# ---------------------------------------------------------------------------------------------
# helpers


def _finish(x: np.ndarray, y: np.ndarray, class_names: list[str], name: str) -> Dataset:
    x = np.ascontiguousarray(x, dtype=np.float32)
    mean = tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in x.std(axis=(0, 2, 3)))
    return Dataset(x=x, y=y.astype(np.int64), class_names=class_names, mean=mean, std=std, name=name)


def _to_nchw_unit(x: np.ndarray, src: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"'{src}': images 'x' must have 3 or 4 dimensions (N,H,W / N,C,H,W / N,H,W,C); got {x.shape}.")
    if x.shape[0] == 0:
        raise DataError(f"'{src}' holds no images.")
    if x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"'{src}': integer images must be in 0..255; got {x.min()}..{x.max()}.")
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"'{src}': images must be numeric; got dtype {x.dtype}.")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"'{src}': images contain NaN or infinite values.",
                        fix="Clean the data: every pixel must be a finite number in [0, 1].")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise DataError(f"'{src}': float images must be in [0, 1]; got {lo:.3g}..{hi:.3g}.",
                        why="edgerobust works in pixel space [0, 1]; normalization goes inside the model.",
                        fix="Save uint8 images (0..255) or divide by 255 before saving.")
    return np.clip(x, 0.0, 1.0)


def _labels(y: np.ndarray, n: int, src: str) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"'{src}': labels 'y' must be 1-D with one label per image; got {y.shape} for {n} images.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"'{src}': labels must be whole numbers.")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"'{src}': labels must be integers; got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"'{src}': labels must be 0..K-1; found {int(y.min())}.")
    return y


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) float images to size x size, via Pillow."""
    Image = require("PIL.Image")
    n, c = x.shape[:2]
    out = np.empty((n, c, size, size), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            im = Image.fromarray(x[i, j].astype(np.float32), mode="F")
            out[i, j] = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)
