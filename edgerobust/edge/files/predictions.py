"""Per-sample predictions of an audit: every model's class and top-1 margin on every sample of every set.

An audit writes them to ``predictions.npz`` beside report.json, and records the file's sha256
in report.json. They are what makes audits of one bundle on different devices comparable
without the devices being online together (``edgerobust compare``, :mod:`edgerobust.edge.compare`).

Format (a plain .npz, read with ``allow_pickle=False``): a JSON ``meta`` string
``{"kind", "version", "roles", "sets": [{"key", "name", "source", "n"}]}`` and, per set key
``s0``, ``s1``, …: ``s0_y`` (labels), ``s0_idx`` (the eval rows the samples come from), and per
role (``base``, ``deployed``) ``s0_<role>_pred`` (int16, or int32 above 32767 classes) and
``s0_<role>_margin`` (float32: top-1 minus top-2 output, in the model's output units, logits
for edgerobust bundles; 0 for a one-output model). A set's ``source`` says what it is: ``clean``, an
adversarial set's source (``transfer``, ``whitebox…``), or ``corruption`` for a common-corruption set
(audit report version 9 and later; :mod:`edgerobust.edge.scores.corruption`). Torch-free.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerobust.edge.files.npzio import load_npz, save_npz, sha256_file
from edgerobust.errors import BundleError

KIND = "edgerobust-predictions"
VERSION = 1
FILE = "predictions.npz"
CORRUPTION = "corruption"  # the source of a common-corruption set's answers


def top1_margin(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax, top-1 minus top-2 output) per row of a (N, classes) array."""
    logits = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)
    pred = logits.argmax(axis=1)
    if logits.shape[1] < 2:
        return pred, np.zeros(len(logits), np.float32)
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return pred, (top2[:, 1] - top2[:, 0]).astype(np.float32)


@dataclass(frozen=True)
class SetPredictions:
    """Every model's answers on one set. ``idx``: the eval rows of the samples (arange for clean)."""

    name: str
    source: str
    y: np.ndarray
    idx: np.ndarray
    pred: dict[str, np.ndarray]
    margin: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Predictions:
    """Every set's predictions, in the report's set order."""

    sets: tuple[SetPredictions, ...]

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.sets[0].pred) if self.sets else ()

    def get(self, name: str) -> SetPredictions | None:
        return next((s for s in self.sets if s.name == name), None)


def save_predictions(path: str | os.PathLike, preds: Predictions) -> str:
    """Write ``preds`` as a pickle-free .npz; return its sha256."""
    arrays: dict[str, np.ndarray] = {}
    sets = []
    for i, s in enumerate(preds.sets):
        key = f"s{i}"
        sets.append({"key": key, "name": s.name, "source": s.source, "n": s.n})
        arrays[f"{key}_y"] = np.asarray(s.y, np.int64)
        arrays[f"{key}_idx"] = np.asarray(s.idx, np.int64)
        for role in s.pred:
            p = np.asarray(s.pred[role])
            small = p.size == 0 or (p.min() >= np.iinfo(np.int16).min and p.max() <= np.iinfo(np.int16).max)
            arrays[f"{key}_{role}_pred"] = p.astype(np.int16 if small else np.int32)
            arrays[f"{key}_{role}_margin"] = np.asarray(s.margin[role], np.float32)
    meta = {"kind": KIND, "version": VERSION, "roles": list(preds.roles), "sets": sets}
    save_npz(path, meta=meta, **arrays)
    return sha256_file(path)


def _bad(path: Path, why: str) -> BundleError:
    return BundleError(f"The predictions file '{path}' is not one an audit wrote.", why=why,
                       fix="Run the audit again on that device to get a complete report folder.")


def load_predictions(path: str | os.PathLike, sha256: str | None = None) -> Predictions:
    """Read a predictions file; with ``sha256``, refuse a file whose hash differs (changed after the audit)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"The report folder '{path.parent}' has no {path.name}.",
                          why="Each audit writes every model's per-sample predictions there; without them "
                              "audits from different devices cannot be compared sample by sample.",
                          fix="Copy the whole report folder, or run the audit again with this version of edgerobust.")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise BundleError(f"'{path}' was changed after the audit wrote it.",
                              why=f"Its sha256 is {got[:12]}…, report.json records {sha256[:12]}….",
                              fix="Copy the report folder again from the device, or run the audit again.")
    arrays, meta = load_npz(path, what="predictions file", error=BundleError)
    if meta.get("kind") != KIND or meta.get("version") != VERSION:
        raise _bad(path, f"Its metadata says kind {meta.get('kind')!r}, version {meta.get('version')!r}; "
                         f"expected {KIND!r}, version {VERSION}.")
    roles = meta.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles) \
            or not isinstance(meta.get("sets"), list):
        raise _bad(path, "Its metadata lacks the list of roles or sets.")
    return Predictions(tuple(_read_set(path, arrays, s, roles) for s in meta["sets"]))


def _read_set(path: Path, arrays: dict, s: dict, roles: list) -> SetPredictions:
    key = s.get("key") if isinstance(s, dict) else None
    names = [f"{key}_y", f"{key}_idx"] + [f"{key}_{r}_{a}" for r in roles for a in ("pred", "margin")]
    missing = [k for k in names if k not in arrays]
    if key is None or missing:
        raise _bad(path, f"It lacks the arrays {', '.join(missing) or 'of a set'}.")
    odd = [k for k in names if np.issubdtype(arrays[k].dtype, np.complexfloating) or not np.issubdtype(
        arrays[k].dtype, np.number if k.endswith("_margin") else np.integer)]
    if odd:
        raise _bad(path, f"The arrays {', '.join(odd)} hold {', '.join(str(arrays[k].dtype) for k in odd)}; an audit "
                         "writes integer labels, rows and classes, and real-valued margins.")
    n = s.get("n")
    bad = [k for k in names if arrays[k].ndim != 1 or len(arrays[k]) != n]
    if bad:
        raise _bad(path, f"The arrays {', '.join(bad)} do not hold {n} values each, as the metadata says.")
    return SetPredictions(name=str(s.get("name")), source=str(s.get("source")), y=arrays[f"{key}_y"],
                          idx=arrays[f"{key}_idx"],
                          pred={r: arrays[f"{key}_{r}_pred"].astype(np.int64) for r in roles},
                          margin={r: arrays[f"{key}_{r}_margin"] for r in roles})
