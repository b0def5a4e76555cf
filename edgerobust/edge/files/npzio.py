"""Files of the bundle format: sha256, JSON, and pickle-free .npz reading (whole, row by row, or
only an array's shape) with clear errors. torch-free."""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgerobust.edge.files.atomic import atomic_file
from edgerobust.errors import BundleError, DataError

# =============================================================================================
# hashing and small file helpers


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON via a temporary file and an atomic rename (:func:`~edgerobust.edge.files.atomic.atomic_file`)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def json_shape_error(value: Any, shape: Any, at: str) -> str | None:
    """Where a JSON value read back from a user's file departs from ``shape``, as a path (``at``, the value's own
    name, then ``.key`` and ``[i]``), or None where it fits. ``shape``: a type (a bool is no number); a tuple of
    shapes, any of which fits; ``[shape]``, a list of such; ``{key: shape}``, a dict whose listed keys, where
    present, fit (``"*"``: every value). Readers check it before they index into a hand-editable file."""
    if isinstance(shape, tuple):
        return None if any(json_shape_error(value, s, at) is None for s in shape) else at
    if isinstance(shape, list):
        if not isinstance(value, list):
            return at
        return next((e for i, v in enumerate(value) if (e := json_shape_error(v, shape[0], f"{at}[{i}]"))), None)
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return at
        items = ([(k, v, shape["*"]) for k, v in value.items()] if "*" in shape
                 else [(k, value[k], s) for k, s in shape.items() if k in value])
        return next((e for k, v, s in items if (e := json_shape_error(v, s, f"{at}.{k}"))), None)
    return None if isinstance(value, shape) and not (isinstance(value, bool) and shape in (int, float)) else at


def save_npz(path: str | os.PathLike, meta: dict | None = None, **arrays: np.ndarray) -> None:
    """Save arrays (and optional JSON metadata) as a pickle-free, compressed .npz."""
    path = Path(path)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in payload.items():
        if v.dtype == object:
            raise ValueError(f"array {k!r} has dtype object; refusing to write a pickled .npz")
    if meta is not None:
        payload["meta"] = np.array(json.dumps(meta, default=_json_default))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_npz(path: str | os.PathLike, required: tuple[str, ...] = (), what: str = "array file",
             error: type = DataError, skip: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict]:
    """Load a .npz without ever unpickling; return (arrays, metadata dict).

    Arrays named in ``skip`` are not decompressed (their presence still counts for ``required``).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"The {what} '{path}' does not exist.", fix="Check the path.")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise error(f"The {what} '{path}' cannot be read.", why=str(exc)) from exc
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        # np.load would take any other bytes for a pickle and say so: name the real problem
        raise error(f"The {what} '{path}' is not a readable .npz file: it is not a zip of .npy arrays.",
                    why="empty file" if not magic else f"It starts with the bytes {magic!r}.",
                    fix="Save the arrays with numpy.savez or numpy.savez_compressed.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k not in skip}
            present = set(z.files)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise error(
                f"The {what} '{path}' contains pickled Python objects.",
                why="Unpickling can run arbitrary code, so edgerobust never loads pickled arrays.",
                fix="Re-save the arrays with plain numeric dtypes (np.savez with float/int arrays).",
            ) from exc
        raise error(f"The {what} '{path}' is not a readable .npz file.", why=str(exc)) from exc
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, RuntimeError) as exc:
        raise error(f"The {what} '{path}' is not a readable .npz file.",
                    why=f"{type(exc).__name__}: {exc}",
                    fix="The file may be truncated or corrupt: copy or regenerate it.") from exc
    except Exception as exc:  # numpy raises a zoo of errors on mangled zips/headers
        raise error(f"The {what} '{path}' is not a readable .npz file.",
                    why=f"{type(exc).__name__}: {exc}",
                    fix="The file may be truncated or corrupt: copy or regenerate it.") from exc
    missing = [k for k in required if k not in present]
    if missing:
        raise error(f"The {what} '{path}' lacks the array(s) {', '.join(missing)}.",
                    why=f"It holds: {', '.join(sorted(arrays)) or 'nothing'}.",
                    fix=f"Save it with arrays named {', '.join(required)}.")
    meta: dict = {}
    if "meta" in arrays:
        raw = arrays.pop("meta")
        try:
            meta = json.loads(str(raw[()] if raw.shape == () else raw))
            if not isinstance(meta, dict):
                raise ValueError("metadata is not a JSON object")
        except (ValueError, TypeError) as exc:
            raise error(f"The metadata inside '{path}' is not valid JSON.", why=str(exc)) from exc
    return arrays, meta


def _open_npy_member(z: zipfile.ZipFile, key: str, path, error: type):
    """Open ``key`` inside an .npz and read its .npy header: (stream, shape, dtype, fortran_order)."""
    name = f"{key}.npy"
    if name not in z.namelist():
        raise error(f"'{path}' has no array '{key}'.")
    f = z.open(name)
    version = np.lib.format.read_magic(f)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = reader(f)
    if dtype.hasobject:
        f.close()
        raise error(f"The array '{key}' in '{path}' contains pickled Python objects.",
                    why="Unpickling can run arbitrary code, so edgerobust never loads pickled arrays.",
                    fix="Re-save the arrays with plain numeric dtypes (np.savez with float/int arrays).")
    return f, shape, dtype, fortran


def npz_array_info(path: str | os.PathLike, key: str, error: type = BundleError) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array in an .npz, from its header alone (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as z:
            f, shape, dtype, _ = _open_npy_member(z, key, path, error)
            f.close()
            return tuple(shape), dtype
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise error(f"'{path}' is not a readable .npz file.", why=f"{type(exc).__name__}: {exc}") from exc


def iter_npz_rows(path: str | os.PathLike, key: str, rows: int, error: type = BundleError) -> Iterator[np.ndarray]:
    """Yield an .npz array ``rows`` rows at a time, decompressing as it goes.

    Memory stays at one chunk however long the array is (the audit replays 100k-sample sets
    this way). Fortran-ordered arrays, which cannot be read row by row, are loaded whole.
    """
    try:
        with zipfile.ZipFile(path) as z:
            f, shape, dtype, fortran = _open_npy_member(z, key, path, error)
            with f:
                if fortran or not shape:
                    data = np.load(path, allow_pickle=False)[key]
                    for i in range(0, len(data), rows):
                        yield data[i:i + rows]
                    return
                row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
                for start in range(0, shape[0], rows):
                    n = min(rows, shape[0] - start)
                    want = n * row_bytes
                    buf = f.read(want)
                    if len(buf) != want:
                        raise error(f"'{path}' ends early: the array '{key}' is truncated.",
                                    fix="Copy or regenerate the file.")
                    yield np.frombuffer(buf, dtype=dtype).reshape(n, *shape[1:])
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise error(f"'{path}' is not a readable .npz file.", why=f"{type(exc).__name__}: {exc}") from exc
