"""Common corruptions as an axis of the research commands (sweep, study, optimize).

The sets are made once per output folder from its eval.npz (:func:`make`, the compress stage's
:func:`edgerobust.workstation.corrupt.sets.make_sets`: the same seeded bytes a bundle gets) and
replayed on every model with ONNX Runtime (:func:`replay`). A model's figure on the axis is its
accuracy **pooled over every set** (:func:`pooled`): correct answers over all corrupted samples.
Every evaluation row appears once per set, so the samples are not independent: the pooled figure
carries no Wilson interval (``ci_low``/``ci_high`` None, ``method`` says why). Per set, the sweep
also keeps a point per corruption and severity (threat ``corruption``, eps the severity).
Torch-free.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerobust.edge.files.corruptset import CORRUPTION_DIR, CorruptionSet
from edgerobust.edge.scores.stats import Proportion, accuracy, attack_success_rate

THREAT = "corruption"  # a point per corruption and severity
MEAN_THREAT = "corruption-mean"  # a point per model: accuracy pooled over every set
MEAN_ATTACK = "corruptions"
MEAN_EPS = "mean"
POOLED = "pooled over {n} corruption sets (each row counted once per set: no interval)"


@dataclass(frozen=True)
class Made:
    """The sets made under a folder: ``files`` relative to it, and the record of what was left out."""

    files: tuple[str, ...]
    record: dict


def make(out: Path, names, severities, seed: int) -> Made:
    """Every set of ``names`` x ``severities`` over ``out``/eval.npz into ``out``/corruptions/ (emptied
    first); nothing with no names."""
    from edgerobust.edge.files.bundle import EvalSet
    from edgerobust.edge.files.npzio import sha256_file

    shutil.rmtree(out / CORRUPTION_DIR, ignore_errors=True)
    if not names:
        return Made((), {})
    from edgerobust.workstation.corrupt.sets import make_sets

    run = make_sets(EvalSet.load(out / "eval.npz"), names, severities, seed, out / CORRUPTION_DIR,
                    sha256_file(out / "eval.npz"))
    return Made(tuple(run.files), run.record())


def load(out: Path, files) -> list[CorruptionSet]:
    return [CorruptionSet.load(out / f) for f in files]


def replay(session, sets: list[CorruptionSet]) -> list[np.ndarray]:
    """The session's class per sample of every set."""
    from edgerobust.edge.scores.replay import predict

    return [predict(session, cs.x, 256) for cs in sets]


def pooled(sets: list[CorruptionSet], preds: list[np.ndarray]) -> Proportion | None:
    """Accuracy over every corrupted sample of every set (None without sets); no interval (see the module)."""
    if not sets:
        return None
    k = sum(int(np.sum(p == cs.y)) for cs, p in zip(sets, preds))
    n = sum(len(cs.y) for cs in sets)
    return Proportion(k=k, n=n, value=k / n if n else None, ci_low=None, ci_high=None,
                      method=POOLED.format(n=len(sets)))


def set_scores(model: str, sets: list[CorruptionSet], preds: list[np.ndarray], clean_pred: np.ndarray,
               files) -> list:
    """A sweep's SetScores of one model: one per set (eps = severity) and the pooled one."""
    from edgerobust.research.points import SetScore

    out = [SetScore(model=model, threat=THREAT, attack=cs.corruption, eps=float(cs.severity),
                    eps_text=f"s{cs.severity}", set=f, accuracy=accuracy(pred, cs.y),
                    attack_success=attack_success_rate(clean_pred[cs.idx], pred, cs.y))
           for cs, pred, f in zip(sets, preds, files)]
    if sets:
        right = sum(int(np.sum(clean_pred[cs.idx] == cs.y)) for cs in sets)
        lost = sum(int(np.sum((clean_pred[cs.idx] == cs.y) & (p != cs.y))) for cs, p in zip(sets, preds))
        out.append(SetScore(model=model, threat=MEAN_THREAT, attack=MEAN_ATTACK, eps=0.0, eps_text=MEAN_EPS,
                            set=CORRUPTION_DIR, accuracy=pooled(sets, preds),
                            attack_success=Proportion(lost, right, lost / right if right else None, None, None,
                                                      POOLED.format(n=len(sets)))))
    return out
