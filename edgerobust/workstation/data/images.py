"""Data sources read from image files: a folder of class sub-folders (optionally split into
train/, val/ and test/) and the CIFAR-10 python batches (read without running code)."""
from __future__ import annotations

import io
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgerobust.errors import DataError, require
from edgerobust.workstation.data.dataset import Dataset, finish_dataset, resize_images

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


FOLDER_SPLITS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def folder_source(arg: str | None, image_size: int | None) -> Dataset:
    """A folder with one sub-folder of images per class (ImageFolder layout), or with train/ and
    test/ (and val/) sub-folders laid out that way: the user's own split."""
    if not arg:
        raise DataError("The data source 'folder' needs a path: `data` folder:PATH.")
    root = Path(arg)
    if not root.is_dir():
        raise DataError(f"The data folder '{root}' does not exist.")
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    found = {k: next((subdirs[n] for n in names if n in subdirs), None) for k, names in FOLDER_SPLITS.items()}
    if found["train"] is not None and (found["test"] is not None or found["val"] is not None):
        return _folder_splits(arg, found, image_size)
    return _image_folder(root, image_size, f"folder:{arg}")


def _folder_splits(arg: str, found: dict, image_size: int | None) -> Dataset:
    """train/ with test/ and/or val/, each one sub-folder per class; the class list is train's."""
    ds = _image_folder(found["train"], image_size, f"folder:{arg}")
    held = {}
    for k in ("val", "test"):
        if found[k] is None:
            continue
        part = _image_folder(found[k], image_size, f"folder:{arg}:{k}", classes=ds.class_names)
        if part.input_shape != ds.input_shape:
            raise DataError(f"The images in '{found[k]}' are {part.input_shape}, in '{found['train']}' "
                            f"{ds.input_shape}.", fix="Pass `image_size` N to resize them all to N x N.")
        held[k] = replace(part, mean=ds.mean, std=ds.std)
    if "test" not in held:
        return replace(ds, test=held["val"], test_name=f"{found['val'].name}/")
    return replace(ds, test=held["test"], val=held.get("val"), test_name=f"{found['test'].name}/")


def _image_folder(root: Path, image_size: int | None, name: str, classes: list[str] | None = None) -> Dataset:
    """One folder of class sub-folders; ``classes`` (another split's) fixes the label order."""
    own = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        extra = [c for c in own if c not in classes]
        if extra:
            raise DataError(f"'{root}' has class folders the training folder lacks: {', '.join(extra[:5])}.",
                            fix="Give every split the same class sub-folders.")
    else:
        classes = own
    if not classes:
        raise DataError(f"The data folder '{root}' has no class sub-folders.",
                        fix="Put the images of each class in their own sub-folder: ROOT/<class>/<image>.png.")
    Image = require("PIL.Image")
    images, labels, sizes = [], [], set()
    for ci, c in enumerate(classes):
        if not (root / c).is_dir():
            continue
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
                        fix="Pass `image_size` N to resize them all to N x N.")
    x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return finish_dataset(x, np.asarray(labels, dtype=np.int64), list(classes), name)


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


def cifar10_source(arg: str | None, image_size: int | None) -> Dataset:
    """The CIFAR-10 python batches folder (data_batch_1..5, test_batch, batches.meta)."""
    if not arg:
        raise DataError("The data source 'cifar10' needs a path: `data` cifar10:PATH.")
    root = Path(arg)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"

    def read(name: str) -> dict:
        p = root / name
        if not p.is_file():
            raise DataError(f"The CIFAR-10 folder '{root}' lacks '{name}'.",
                            fix="Point `data` cifar10:PATH at the extracted cifar-10-batches-py folder.")
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
        x, xt = resize_images(x, image_size), resize_images(xt, image_size)
    # The standard CIFAR-10 statistics, so that models trained elsewhere see what they expect.
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    test = Dataset(x=xt, y=yt, class_names=names, mean=mean, std=std, name=f"cifar10:{arg}:test")
    return Dataset(x=x, y=y, class_names=names, mean=mean, std=std, name=f"cifar10:{arg}", test=test,
                   test_name="test_batch")
