"""Corruption sets in a bundle: ``corruptions/<corruption>_s<severity>.npz``, read and checked. torch-free.

A set holds ``x`` (N, C, H, W) float32 in [0, 1]: the rows ``idx`` of eval.npz under one common
corruption at one severity (edgerobust.workstation.corrupt writes them), ``y`` their labels, and JSON
metadata: kind, schema_version, name, corruption, family, severity (1..5), seed, params,
eval_sha256 (the eval set it was made from), n, max_abs_change, implementation. Listed in the manifest under
``corruptions`` and hashed under ``files`` like every file; :func:`check_corruption_set` refuses one
that does not belong to the eval set beside it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgerobust.edge.files.npzio import load_npz, save_npz
from edgerobust.errors import BundleError

CORRUPTION_KIND = "edgerobust-corruption-set"
CORRUPTION_DIR = "corruptions"


def set_name(corruption: str, severity: int) -> str:
    """``gaussian_noise_s3``: the set's name and file stem."""
    return f"{corruption}_s{severity}"


@dataclass
class CorruptionSet:
    """One corruption at one severity over rows ``idx`` of the evaluation set (see the module docstring)."""

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray
    meta: dict

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or set_name(self.corruption, self.severity))

    @property
    def corruption(self) -> str:
        return str(self.meta.get("corruption"))

    @property
    def family(self) -> str:
        return str(self.meta.get("family", "?"))

    @property
    def severity(self) -> int:
        return int(self.meta.get("severity", 0))

    def save(self, path: str | os.PathLike) -> None:
        meta = {"kind": CORRUPTION_KIND, "schema_version": 1, **self.meta}
        save_npz(path, meta=meta, x=self.x.astype(np.float32), y=self.y.astype(np.int64),
                 idx=self.idx.astype(np.int64))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CorruptionSet":
        """Read a set and check it: float inputs with a batch axis, finite and in [0, 1], one label and one
        eval row per input, metadata naming a corruption and a severity 1..5; BundleError otherwise."""
        arrays, meta = load_npz(path, ("x", "y", "idx"), what="corruption set", error=BundleError)
        x, y, idx = arrays["x"], arrays["y"], arrays["idx"]

        def bad(what: str) -> BundleError:
            return BundleError(f"The corruption set '{path}' {what}.",
                               why="A corruption set is float32 inputs in [0, 1] with one label and one eval row each.",
                               fix="Write it again with `edgerobust corrupt` (or compress again).")

        if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
            raise bad(f"holds inputs of shape {list(x.shape)} and dtype {x.dtype}")
        if y.shape != (x.shape[0],) or idx.shape != y.shape or not np.issubdtype(y.dtype, np.integer) \
                or not np.issubdtype(idx.dtype, np.integer):
            raise bad(f"has {list(y.shape)} labels and {list(idx.shape)} indices for {x.shape[0]} inputs")
        if not np.isfinite(x).all():
            raise bad(f"holds {int(np.size(x) - np.isfinite(x).sum())} NaN or infinite values")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise bad(f"holds values outside [0, 1] ({float(x.min()):.3g} to {float(x.max()):.3g})")
        if meta.get("kind") != CORRUPTION_KIND or not isinstance(meta.get("corruption"), str):
            raise bad("carries no corruption metadata (kind, corruption, severity)")
        sev = meta.get("severity")
        if isinstance(sev, bool) or not isinstance(sev, int) or not 1 <= sev <= 5:
            raise bad(f"names severity {sev!r}; severities are 1 to 5")
        return cls(x=x.astype(np.float32, copy=False), y=y.astype(np.int64, copy=False),
                   idx=idx.astype(np.int64, copy=False), meta=meta)


def check_corruption_set(cs: CorruptionSet, path, eval_sha256: str, eval_x_shape: tuple, eval_y: np.ndarray) -> None:
    """Refuse a set made from another evaluation set, of another input shape, or with other labels."""
    recorded = cs.meta.get("eval_sha256")
    if recorded and recorded != eval_sha256:
        raise BundleError(f"The corruption set '{path}' was made from another evaluation set "
                          f"(sha256 {str(recorded)[:12]}…, this one {eval_sha256[:12]}…).",
                          fix="Make the sets again for this bundle with `edgerobust corrupt`.")
    if tuple(cs.x.shape[1:]) != tuple(eval_x_shape[1:]):
        raise BundleError(f"The corruption set '{path}' holds inputs of shape {list(cs.x.shape[1:])}, "
                          f"the eval set {list(eval_x_shape[1:])}.", fix="Make the sets again with `edgerobust corrupt`.")
    if len(cs.idx) and (cs.idx.min() < 0 or cs.idx.max() >= len(eval_y)):
        raise BundleError(f"The corruption set '{path}' indexes rows outside the eval set's {len(eval_y)}.")
    if not np.array_equal(cs.y, eval_y[cs.idx]):
        raise BundleError(f"The corruption set '{path}' has labels that differ from the eval set's on its rows.",
                          fix="Make the sets again with `edgerobust corrupt`.")
