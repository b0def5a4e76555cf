"""Replay the clean and adversarial sets through the audited sessions: scores and per-sample answers.

Each model sees each set once, batch by batch (an adversarial set's inputs are streamed from
its .npz, so memory stays flat in the set's size); only the predicted class and the top-1
margin of every sample are kept. They are scored (:mod:`edgerobust.edge.scores.scoring`) and kept as
:class:`edgerobust.edge.files.predictions.Predictions` for the report folder. Torch-free.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.edge.files.npzio import iter_npz_rows
from edgerobust.errors import BundleError
from edgerobust.edge.runtime.measure import maybe_task
from edgerobust.edge.runtime.sessions import OpenSession
from edgerobust.edge.files.predictions import Predictions, SetPredictions, top1_margin
from edgerobust.edge.scores.scoring import Outcome, SetResult, score_adversarial, score_clean, with_references

Answers = dict[str, tuple[np.ndarray, np.ndarray]]  # role -> (predicted class, top-1 margin)


def predict_margin(s: OpenSession, x: np.ndarray, batch_size: int, advance=None) -> tuple[np.ndarray, np.ndarray]:
    """Argmax predictions and top-1 margins, batch by batch: one batch of outputs exists at a time."""
    fixed = s.input.shape[0]
    bs = fixed or batch_size
    pred, margin = np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), bs):
        chunk = x[i:i + bs].astype(s.input.dtype, copy=False)
        n = len(chunk)
        if fixed and n < fixed:  # a fixed batch axis: pad the last batch, drop the padding
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        logits = s.session.run([s.output_name], {s.input.name: chunk})[0]
        pred[i:i + n], margin[i:i + n] = top1_margin(np.asarray(logits).reshape(len(chunk), -1)[:n])
        if advance:
            advance(n)
    return pred, margin


def predict(s: OpenSession, x: np.ndarray, batch_size: int, advance=None) -> np.ndarray:
    """Argmax predictions, batch by batch."""
    return predict_margin(s, x, batch_size, advance)[0]


def predict_all(sessions: dict[str, OpenSession], x: np.ndarray, batch_size: int, label: str,
                show: bool) -> Answers:
    """Every session's answers on in-memory inputs."""
    with maybe_task(f"Evaluating {label}", len(sessions) * len(x), show) as advance:
        return {role: predict_margin(s, x, batch_size, lambda n, r=role: advance(n, r)) for role, s in sessions.items()}


def predict_stream(sessions: dict[str, OpenSession], chunks, n: int, batch_size: int, label: str,
                   show: bool) -> Answers:
    """Every session's answers on inputs that arrive in chunks (read once, run on each model)."""
    out = {role: (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32)) for role in sessions}
    pos = 0
    with maybe_task(f"Evaluating {label}", len(sessions) * n, show) as advance:
        for chunk in chunks:
            k = len(chunk)
            if pos + k > n:
                break
            for role, s in sessions.items():
                p, m = predict_margin(s, chunk, batch_size, lambda j, r=role: advance(j, r))
                out[role][0][pos:pos + k], out[role][1][pos:pos + k] = p, m
            pos += k
    if pos != n:
        raise BundleError(f"The set '{label}' holds a different number of inputs than labels ({n}).")
    return out


def keep_answers(name: str, source: str, y: np.ndarray, idx: np.ndarray, answers: Answers) -> SetPredictions:
    """One set's answers as kept in predictions.npz."""
    return SetPredictions(name=name, source=source, y=y, idx=idx, pred={r: a[0] for r, a in answers.items()},
                          margin={r: a[1] for r, a in answers.items()})


def replay(sessions: dict[str, OpenSession], eval_path: Path, ev: EvalSet, adv_paths: tuple[Path, ...],
           batch_size: int, show: bool) -> tuple[list[SetResult], Predictions]:
    """Both models on the clean set and every adversarial set: scores (white-box Δ like for like)
    and every sample's answers."""
    clean = predict_all(sessions, ev.x, batch_size, "clean set", show)
    clean_pred = {role: a[0] for role, a in clean.items()}
    results = [score_clean("clean", eval_path, ev.y, clean_pred)]
    kept = [keep_answers("clean", "clean", ev.y, np.arange(len(ev.y), dtype=np.int64), clean)]
    outcomes = {}
    for p in adv_paths:
        adv = AdvSet.load(p, with_x=False)  # inputs are streamed: memory stays flat with the set's size
        answers = predict_stream(sessions, iter_npz_rows(p, "x", max(batch_size, 256)), len(adv.y), batch_size,
                                 adv.name, show)
        pred = {role: a[0] for role, a in answers.items()}
        on_clean = {role: v[adv.idx] for role, v in clean_pred.items()}
        result = score_adversarial(adv.name, p, adv, on_clean, pred)
        results.append(result)
        kept.append(keep_answers(adv.name, result.source, adv.y, adv.idx, answers))
        outcomes[adv.name] = Outcome(idx=adv.idx, base=pred["base"] == adv.y, deployed=pred["deployed"] == adv.y)
    return with_references(results, outcomes), Predictions(tuple(kept))
