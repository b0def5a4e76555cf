"""Scoring a sweep's models with ONNX Runtime, and their speedup measured side by side.

Scores (clean and robust accuracy, attack success, Wilson intervals from :mod:`edgerobust.edge.scores.stats`)
are computed where a model is built (inside its point, locally or on a Ray worker); latency is
measured once at the end, every model interleaved with the base in one run on one profile.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.research.points import ModelResult, SetScore, proportion_from
from edgerobust.edge.scores.stats import Proportion, accuracy, attack_success_rate


@dataclass
class Built:
    """One model a sweep built and scored, before its latency is known (what a point stores)."""

    name: str
    group: str
    sparsity: float
    precision: str
    path: str  # relative to the sweep folder
    params: int
    macs: int
    macs_reduction: float
    clean: Proportion | None = None
    finetune: dict = field(default_factory=dict)
    whitebox: dict[str, str] = field(default_factory=dict)  # attack set name -> file, relative to the sweep folder

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Built":
        d = dict(d)
        d["clean"] = proportion_from(d["clean"]) if d.get("clean") else None
        return cls(**d)


def score_models(models: list[Built], root: Path, ev: EvalSet, threats: tuple[str, ...], specs,
                 transfer: dict[str, str], profile: str) -> list[SetScore]:
    """Score each model on the clean set (into ``model.clean``) and on every (threat, attack set).

    A model without white-box sets of its own (the base, the unpruned int8) is scored on the
    transfer set for the white-box threat: crafted on the base, that is its white-box set.
    """
    from edgerobust.edge.audit import resolve_profile
    from edgerobust.edge.scores.replay import predict
    from edgerobust.edge.runtime.sessions import open_sessions

    prof, _ = resolve_profile(profile)
    sessions = open_sessions({m.name: root / m.path for m in models}, prof, allow_fallback=True)
    cache: dict[str, AdvSet] = {}
    scores: list[SetScore] = []
    for m in models:
        s = sessions[m.name]
        clean_pred = predict(s, ev.x, 256)
        m.clean = accuracy(clean_pred, ev.y)
        for threat in threats:
            for spec in specs:
                rel = m.whitebox.get(spec.name) if threat == "whitebox" else None
                rel = rel or transfer[spec.name]
                if rel not in cache:
                    cache[rel] = AdvSet.load(root / rel)
                adv = cache[rel]
                pred = predict(s, adv.x, 256)
                scores.append(SetScore(model=m.name, threat=threat, attack=spec.attack, eps=spec.eps,
                                       eps_text=spec.eps_text, set=rel, accuracy=accuracy(pred, adv.y),
                                       attack_success=attack_success_rate(clean_pred[adv.idx], pred, adv.y)))
    return scores


def score_corruptions(models: list[Built], root: Path, ev: EvalSet, files, profile: str) -> list[SetScore]:
    """Every model on every common-corruption set under ``root`` (none without ``files``): a SetScore per
    set and the pooled one per model (edgerobust.research.corruption_axis)."""
    if not files:
        return []
    from edgerobust.edge.audit import resolve_profile
    from edgerobust.edge.runtime.sessions import open_sessions
    from edgerobust.edge.scores.replay import predict
    from edgerobust.research import corruption_axis as C

    sets = C.load(root, files)
    prof, _ = resolve_profile(profile)
    sessions = open_sessions({m.name: root / m.path for m in models}, prof, allow_fallback=True)
    scores: list[SetScore] = []
    for m in models:
        clean_pred = predict(sessions[m.name], ev.x, 256)
        scores += C.set_scores(m.name, sets, C.replay(sessions[m.name], sets), clean_pred, files)
    return scores


def score_from_dict(d: dict) -> SetScore:
    return SetScore(**{**d, "accuracy": proportion_from(d["accuracy"]),
                       "attack_success": proportion_from(d["attack_success"])})


def measure_speedups(models: list[Built], root: Path, profile: str, rounds: int) -> tuple[str, dict[str, float]]:
    """(the profile's name, the p50 latency in ms of every model at batch 1), interleaved with the base."""
    from edgerobust.edge.audit import resolve_profile
    from edgerobust.edge.runtime.measure import measure_latency
    from edgerobust.edge.runtime.sessions import open_sessions

    prof, _ = resolve_profile(profile)
    settings = replace(prof.measure, batch_sizes=(1,), warmup_runs=3, rounds=rounds, runs_per_round=10,
                       min_seconds=0.0, max_rounds=rounds)
    sessions = open_sessions({m.name: root / m.path for m in models}, prof, allow_fallback=True)
    latency, _ = measure_latency(sessions, settings, show_progress=False)
    return prof.name, {name: stats[0].p50_ms for name, stats in latency.items()}


def model_results(models: list[Built], root: Path, p50: dict[str, float]) -> tuple[ModelResult, ...]:
    base = p50[models[0].name]
    return tuple(ModelResult(
        model=m.name, group=m.group, sparsity=m.sparsity, precision=m.precision, path=m.path, params=m.params,
        macs=m.macs, macs_reduction=m.macs_reduction, size_bytes=(root / m.path).stat().st_size,
        latency_p50_ms=p50[m.name], speedup=base / p50[m.name], clean=m.clean, finetune=m.finetune)
        for m in models)


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtype, shape and bytes: a content key that does not depend on file timestamps."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
