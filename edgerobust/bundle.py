"""The bundle: the one contract between `compress` (torch) and `audit` (numpy + onnxruntime).

A bundle is a folder (see export/README.md for the full format):

    manifest.json          schema version, versions, input spec, config, metrics, sha256 of every file
    base.onnx              the uncompressed model, fp32
    model.onnx             the deployed model (pruned, int8 where asked)
    model_fp32.onnx        pruned, before quantization (when int8 was applied)
    pruned.pt              the pruned torch weights: an edgerobust checkpoint (weights_only-safe)
    eval.npz               clean evaluation samples the adversarial sets were crafted from
    adv/<attack>_<eps>.npz one adversarial set each

This module is torch-free: the audit side imports it on the device.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import BundleError, DataError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
BUNDLE_KIND = "edgerobust-bundle"
ADV_KIND = "edgerobust-adversarial-set"


# ---------------------------------------------------------------------------------------------
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
    """Write JSON via a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


# ---------------------------------------------------------------------------------------------
# evaluation and adversarial sets


@dataclass
class EvalSet:
    """Clean evaluation samples in [0, 1] pixel space (N, C, H, W) float32 and int64 labels."""

    x: np.ndarray
    y: np.ndarray
    meta: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        save_npz(path, meta=self.meta, x=self.x.astype(np.float32), y=self.y.astype(np.int64))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvalSet":
        arrays, meta = load_npz(path, ("x", "y"), what="evaluation set", error=BundleError)
        x, y = arrays["x"], arrays["y"]
        _check_xy(path, x.shape, x.dtype, y, BundleError)
        return cls(x=x.astype(np.float32, copy=False), y=y.astype(np.int64, copy=False), meta=meta)


@dataclass
class AdvSet:
    """One adversarial set: inputs crafted on the base model by one attack at one strength.

    ``idx`` indexes the rows of ``eval.npz`` the inputs were crafted from; ``meta`` holds
    attack, params, norm, eps, base_sha256, eval_sha256, base_accuracy, versions, seconds.
    """

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray
    meta: dict

    @property
    def name(self) -> str:
        return self.meta.get("name") or f"{self.meta.get('attack', 'adv')}_{self.meta.get('eps', '')}"

    def save(self, path: str | os.PathLike) -> None:
        meta = dict(self.meta)
        meta.setdefault("kind", ADV_KIND)
        meta.setdefault("schema_version", SCHEMA_VERSION)
        save_npz(path, meta=meta, x=self.x.astype(np.float32), y=self.y.astype(np.int64),
                 idx=self.idx.astype(np.int64))

    @classmethod
    def load(cls, path: str | os.PathLike, with_x: bool = True) -> "AdvSet":
        """Load a set; with ``with_x=False`` the inputs stay on disk (``x`` is then an empty
        (0, ...) array of the stored row shape) and are read with :func:`iter_npz_rows`."""
        arrays, meta = load_npz(path, ("x", "y", "idx"), what="adversarial set", error=BundleError,
                                skip=() if with_x else ("x",))
        y, idx = arrays["y"], arrays["idx"]
        if with_x:
            x = arrays["x"]
            shape, dtype = x.shape, x.dtype
        else:
            shape, dtype = npz_array_info(path, "x", BundleError)
            x = np.empty((0, *shape[1:]), dtype=np.float32)
        _check_xy(path, shape, dtype, y, BundleError)
        if idx.shape != y.shape:
            raise BundleError(f"The adversarial set '{path}' has {idx.shape} indices for {y.shape} labels.")
        if not meta:
            raise BundleError(f"The adversarial set '{path}' carries no metadata.",
                              why="Without it edgerobust cannot tell which model and data it was crafted on.",
                              fix="Create it with `edgerobust attack` or `edgerobust compress --attacks`.")
        return cls(x=x.astype(np.float32, copy=False), y=y.astype(np.int64, copy=False),
                   idx=idx.astype(np.int64, copy=False), meta=meta)


def _check_xy(path, x_shape: tuple[int, ...], x_dtype: np.dtype, y: np.ndarray, error: type) -> None:
    if len(x_shape) < 2:
        raise error(f"'{path}': inputs 'x' must have a batch axis; got shape {x_shape}.")
    if y.ndim != 1 or y.shape[0] != x_shape[0]:
        raise error(f"'{path}': labels 'y' must be 1-D with one label per input; "
                    f"got x {x_shape} and y {y.shape}.")
    if not np.issubdtype(x_dtype, np.floating):
        raise error(f"'{path}': inputs must be floating point; got {x_dtype}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise error(f"'{path}': labels must be integers; got {y.dtype}.")


# ---------------------------------------------------------------------------------------------
# manifest


@dataclass
class Bundle:
    """A bundle folder with its parsed manifest."""

    root: Path
    manifest: dict

    @property
    def input_spec(self) -> dict:
        return self.manifest["input"]

    def path(self, role: str) -> Path:
        """Path of a model by role: 'base', 'deployed' or 'fp32'."""
        name = self.manifest.get("models", {}).get(role)
        if not name:
            raise BundleError(f"The bundle '{self.root}' has no '{role}' model.")
        return self.root / name

    @property
    def eval_path(self) -> Path:
        return self.root / self.manifest.get("eval", "eval.npz")

    @property
    def adv_paths(self) -> list[Path]:
        return [self.root / p for p in self.manifest.get("adv", [])]

    def verify(self) -> None:
        """Check the sha256 of every file the manifest lists; raise BundleError on any mismatch."""
        files = self.manifest.get("files", {})
        for rel, expected in files.items():
            p = self.root / rel
            if not p.is_file():
                raise BundleError(f"The bundle '{self.root}' is missing '{rel}'.",
                                  why="The manifest lists it, but the file is not there.",
                                  fix="Copy the whole bundle folder again.")
            got = sha256_file(p)
            if got != expected:
                raise BundleError(
                    f"'{p}' does not match the bundle's manifest (sha256 {got[:12]}…, expected {expected[:12]}…).",
                    why="The file was changed or corrupted after the bundle was written.",
                    fix="Copy the bundle again, or pass --no-verify if you changed it on purpose.")

    @classmethod
    def find(cls, start: str | os.PathLike) -> "Bundle | None":
        """The bundle a model or folder belongs to, or None if there is no manifest beside it."""
        p = Path(start)
        root = p if p.is_dir() else p.parent
        if not (root / MANIFEST).is_file():
            return None
        return cls.open(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Bundle":
        root = Path(root)
        return cls(root=root, manifest=read_manifest(root / MANIFEST))


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BundleError(f"No manifest at '{path}'.", fix="Point at a bundle written by `edgerobust compress`.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"The manifest '{path}' cannot be read.", why=str(exc)) from exc
    try:
        m = json.loads(text)
    except ValueError as exc:
        raise BundleError(f"The manifest '{path}' is not valid JSON.", why=str(exc),
                          fix="The bundle may be truncated: copy it again.") from exc
    if not isinstance(m, dict) or m.get("kind") != BUNDLE_KIND:
        raise BundleError(f"'{path}' is not an edgerobust bundle manifest.")
    v = m.get("schema_version")
    if not isinstance(v, int):
        raise BundleError(f"The manifest '{path}' has no integer schema_version.")
    if v > SCHEMA_VERSION:
        raise BundleError(f"The manifest '{path}' uses schema version {v}; this edgerobust reads up to {SCHEMA_VERSION}.",
                          fix="Upgrade edgerobust on this device (pip install -U edgerobust).")
    for key in ("input", "models", "files"):
        if not isinstance(m.get(key), dict):
            raise BundleError(f"The manifest '{path}' lacks the '{key}' section.")
    _check_manifest_fields(path, m)
    return m


def _check_manifest_fields(path: Path, m: dict) -> None:
    """The fields readers index into: types, and file names that stay inside the bundle."""
    def bad(field: str, why: str) -> BundleError:
        return BundleError(f"The manifest '{path}' has an invalid '{field}'.", why=why,
                           fix="The bundle may be damaged or edited by hand: copy it again, or write it "
                               "again with `edgerobust compress`.")

    def rel_name(field: str, v: Any) -> None:
        if not isinstance(v, str) or not v:
            raise bad(field, f"a file name (string) was expected, not {v!r}.")
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise bad(field, f"'{v}' points outside the bundle folder.")

    spec = m["input"]
    if "name" in spec and not isinstance(spec["name"], str):
        raise bad("input.name", f"a string was expected, not {spec['name']!r}.")
    shape = spec.get("shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) >= 2 and all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)):
        raise bad("input.shape", f"a list like [null, 3, 224, 224] was expected, not {shape!r}.")
    for role, name in m["models"].items():
        rel_name(f"models.{role}", name)
    for name, digest in m["files"].items():
        rel_name("files", name)
        if not isinstance(digest, str):
            raise bad(f"files.{name}", f"a sha256 hex digest was expected, not {digest!r}.")
    if "eval" in m:
        rel_name("eval", m["eval"])
    adv = m.get("adv", [])
    if not isinstance(adv, list):
        raise bad("adv", f"a list of file names was expected, not {adv!r}.")
    for name in adv:
        rel_name("adv", name)


# ---------------------------------------------------------------------------------------------
# atomic writing


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success, move it into place as ``out``.

    An interrupted run leaves at most a hidden ``.name.tmp-<pid>-*`` folder (removed on
    exceptions and Ctrl-C; after a SIGKILL the next run writing ``out`` removes it), never a
    half-written ``out``. An existing ``out`` is replaced only when ``overwrite`` is true, and
    then only after the new folder is complete; if the swap is interrupted the old ``out`` is
    put back. A failed write (a full disk, a read-only folder) is a BundleError.
    """
    out = Path(out)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"Cannot create the output folder '{parent}'.", why=str(exc),
                          fix="Choose a writable location with --out.") from exc
    if out.exists() and not overwrite:
        raise BundleError(f"'{out}' already exists.", fix="Pass --overwrite to replace it, or choose another --out.")
    if not os.access(parent, os.W_OK):
        raise BundleError(f"The output folder '{parent}' is not writable.", fix="Choose a writable location with --out.")
    clean_stale(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the bundle gets the usual mode
    except OSError as exc:
        raise _write_error(out, exc) from exc
    old: Path | None = None
    moved = False
    try:
        yield tmp
        try:
            if out.exists():
                if not overwrite:
                    raise BundleError(f"'{out}' appeared while this run was writing.",
                                      fix="Another run wrote the same folder; pass --overwrite or choose another --out.")
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=parent))
                os.rename(out, old / out.name)
                moved = True
                os.rename(tmp, out)
                moved = False
            else:
                os.rename(tmp, out)
        except OSError as exc:
            if out.exists() and not moved:  # another run renamed its folder into place first
                raise BundleError(f"'{out}' appeared while this run was writing.", why=str(exc),
                                  fix="Another run wrote the same folder; its bundle was kept. Choose another "
                                      "--out to keep both.") from exc
            raise
    except OSError as exc:
        _rollback(out, tmp, old, moved)
        raise _write_error(out, exc) from exc
    except BaseException:
        _rollback(out, tmp, old, moved)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _rollback(out: Path, tmp: Path, old: Path | None, moved: bool) -> None:
    """Undo an unfinished atomic_dir: drop the temporary folder, put a moved-away ``out`` back."""
    if moved and old is not None and not out.exists():
        try:
            os.rename(old / out.name, out)
        except OSError:  # pragma: no cover - left for clean_stale of the next run
            return
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and not (old / out.name).exists():
        shutil.rmtree(old, ignore_errors=True)


def _write_error(out: Path, exc: OSError) -> BundleError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return BundleError(
        f"Writing '{out}' failed: " + ("the disk is full." if full else f"{exc.strerror or exc}."),
        why=f"{type(exc).__name__}: {exc}. Nothing was written to '{out}'; an existing bundle there is unchanged.",
        fix="Free some disk space, or choose another --out on a disk with room." if full
        else "Choose a writable location with --out.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def clean_stale(out: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of runs writing ``out`` that were killed (SIGKILL, power loss).

    Only folders named by atomic_dir with the pid of a process that no longer runs are
    touched: a ``.name.tmp-<pid>-*`` is deleted; a ``.name.old-<pid>-*`` holding the previous
    bundle is moved back to ``out`` if the run died mid-swap, else deleted. Returns what was removed.
    """
    out = Path(out)
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        for kind in ("tmp", "old"):
            prefix = f".{out.name}.{kind}-"
            if not p.name.startswith(prefix) or not p.is_dir():
                continue
            pid = p.name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and (p / out.name).is_dir() and not out.exists():
                try:
                    os.rename(p / out.name, out)
                except OSError:
                    continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def finalize_manifest(root: Path, manifest: dict) -> dict:
    """Fill ``files`` with the sha256 of every file under root (but the manifest) and write it."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
            files[p.relative_to(root).as_posix()] = sha256_file(p)
    manifest = dict(manifest)
    manifest["files"] = files
    # keep the order the sets were crafted in (attack by attack, eps ascending); add any others
    listed = [a for a in manifest.get("adv", []) if a in files]
    manifest["adv"] = listed + sorted(k for k in files if k.startswith("adv/") and k not in listed)
    write_json(root / MANIFEST, manifest)
    return manifest
