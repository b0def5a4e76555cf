"""The bundle: the one contract between `compress` (torch) and `audit` (numpy + onnxruntime).

A bundle is a folder (see export/README.md for the full format):

    manifest.json          schema version, versions, input spec, config, metrics, sha256 of every file
    base.onnx              the uncompressed model, fp32
    model.onnx             the deployed model (pruned, int8 where asked)
    model_fp32.onnx        pruned, before quantization (when int8 was applied)
    pruned.pt              the pruned torch weights: an edgerobust checkpoint (weights_only-safe)
    eval.npz               clean evaluation samples the adversarial sets were crafted from
    adv/<attack>_<eps>.npz one adversarial set each
    corruptions/<name>_s<severity>.npz  one common-corruption set each (edgerobust.edge.files.corruptset)

This module is torch-free: the audit side imports it on the device.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust.errors import BundleError
from edgerobust.edge.files.npzio import load_npz, npz_array_info, save_npz, sha256_file, write_json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
BUNDLE_KIND = "edgerobust-bundle"
ADV_KIND = "edgerobust-adversarial-set"




# =============================================================================================
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
        (0, ...) array of the stored row shape) and are read with :func:`edgerobust.edge.files.npzio.iter_npz_rows`."""
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
                              fix="Create it with `edgerobust attack`, or compress with `attacks`.")
        return cls(x=x.astype(np.float32, copy=False), y=y.astype(np.int64, copy=False),
                   idx=idx.astype(np.int64, copy=False), meta=meta)


def adv_source(meta: dict) -> str:
    """``"transfer"`` (crafted on the base model; sets older than the field) or ``"whitebox-..."``."""
    return str(meta.get("source") or "transfer")


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


# =============================================================================================
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
    def variants(self) -> dict[str, Path]:
        """The pruned model's precision variants (fp32, fp16, int8 -> file) the bundle holds; bundles
        before ``variants`` was recorded list the fp32 model, and the deployed one is int8 when it differs."""
        recorded = self.manifest.get("variants")
        if isinstance(recorded, dict):
            return {str(k): self.root / str(v) for k, v in recorded.items() if isinstance(v, str)}
        out = {}
        models = self.manifest.get("models", {})
        if models.get("fp32"):
            out["fp32"] = self.root / models["fp32"]
        if models.get("fp32") and models.get("deployed") and models["deployed"] != models["fp32"]:
            out["int8"] = self.root / models["deployed"]  # fp32 was kept beside model.onnx only when quantized
        return out

    @property
    def eval_path(self) -> Path:
        return self.root / self.manifest.get("eval", "eval.npz")

    @property
    def adv_paths(self) -> list[Path]:
        return [self.root / p for p in self.manifest.get("adv", [])]

    @property
    def corruption_paths(self) -> list[Path]:
        """The common-corruption sets (edgerobust.edge.files.corruptset), in the order they were made."""
        return [self.root / p for p in self.manifest.get("corruptions", [])]

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
                    fix="Copy the bundle again, or skip the hash check (`verify`) if you changed it on purpose.")

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
    corr = m.get("corruptions", [])
    if not isinstance(corr, list):
        raise bad("corruptions", f"a list of file names was expected, not {corr!r}.")
    for name in corr:
        rel_name("corruptions", name)


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
    if "corruptions" in manifest or any(k.startswith("corruptions/") for k in files):
        listed = [c for c in manifest.get("corruptions", []) if c in files]
        manifest["corruptions"] = listed + sorted(k for k in files if k.startswith("corruptions/") and k not in listed)
    write_json(root / MANIFEST, manifest)
    return manifest
