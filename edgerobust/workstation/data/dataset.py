"""A data source's rows: images in [0, 1] (NCHW float32) with int64 labels, class names and
per-channel statistics, and the checks and conversions every source applies. numpy-only (Pillow
is imported when an image is resized)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgerobust.errors import DataError, require


@dataclass
class Dataset:
    """Images in [0, 1] (N, C, H, W) float32 and labels (N,) int64."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""
    # A source with its own held-out set (CIFAR-10's test batch, an npz's x_test, a folder's test/)
    # puts it in ``test``, and its own validation set (an npz's x_val, a folder's val/) in ``val``;
    # split() uses them instead of drawing rows at random.
    test: "Dataset | None" = field(default=None, repr=False)
    val: "Dataset | None" = field(default=None, repr=False)
    test_name: str = "test"  # what the source calls its held-out part (x_test, test/, test_batch)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> "Dataset":
        return replace(self, x=self.x[idx], y=self.y[idx], test=None, val=None)




def finish_dataset(x: np.ndarray, y: np.ndarray, class_names: list[str], name: str) -> Dataset:
    """A Dataset of checked arrays, with the per-channel mean/std of ``x``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    mean = tuple(float(v) for v in x.mean(axis=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in x.std(axis=(0, 2, 3)))
    return Dataset(x=x, y=y.astype(np.int64), class_names=class_names, mean=mean, std=std, name=name)


def to_nchw_unit(x: np.ndarray, src: str) -> np.ndarray:
    """Images of ``src`` (N,H,W / N,C,H,W / N,H,W,C; uint8 or float in [0, 1]) as NCHW float32 in [0, 1]."""
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


def check_labels(y: np.ndarray, n: int, src: str) -> np.ndarray:
    """The ``n`` labels of ``src`` as int64 0..K-1, or a DataError saying what is wrong."""
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


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) float images to size x size, via Pillow."""
    Image = require("PIL.Image")
    n, c = x.shape[:2]
    out = np.empty((n, c, size, size), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            im = Image.fromarray(x[i, j].astype(np.float32), mode="F")
            out[i, j] = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)
