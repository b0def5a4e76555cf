"""What a sweep measured, as data: the per-run results and the plotted :class:`Point` rows.

torch-free. ``sweep`` produces :class:`SweepResult` runs; :func:`summarize` turns one or more
of them (seeds) into points; ``plots``, ``recipes`` and the findings read the points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from edgerobust.errors import UsageError
from edgerobust.edge.scores.stats import Proportion

VERSION = 1


@dataclass(frozen=True)
class ModelResult:
    """One model of the sweep: the base, or a variant at one precision."""

    model: str  # "base", "base int8", "s=0.5 fp32", "l1 s=0.5 int8", ...
    group: str
    sparsity: float
    precision: str
    path: str  # relative to the sweep folder
    params: int
    macs: int
    macs_reduction: float
    size_bytes: int
    latency_p50_ms: float
    speedup: float  # base p50 / this p50 at batch 1, measured interleaved in the same run
    clean: Proportion
    finetune: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SetScore:
    """One model on one adversarial set."""

    model: str
    threat: str  # "transfer", "whitebox", "corruption" or "corruption-mean" (edgerobust.research.corruption_axis)
    attack: str
    eps: float
    eps_text: str
    set: str  # the set's file, relative to the sweep folder
    accuracy: Proportion  # robust accuracy
    attack_success: Proportion  # among samples the model gets right clean


@dataclass(frozen=True)
class SweepResult:
    """Every number one sweep (one seed) measured. ``reused``: points taken from an earlier run."""

    seed: int
    n_eval: int
    profile: str
    models: tuple[ModelResult, ...]
    sets: tuple[SetScore, ...]
    config: dict
    seconds: float
    out: str
    runner: str = "local"
    reused: int = 0
    computed: int = 0
    corruption: dict | None = None  # the common-corruption sets made: names, severities, seed, what was left out


@dataclass(frozen=True)
class Point:
    """One plotted value: a model on the clean set or on one adversarial set, over seeds.

    ``accuracy`` is the mean over ``seeds`` runs and ``accuracy_std`` the sample standard
    deviation (None with one seed); ``ci_low``/``ci_high`` are the Wilson 95 % interval of a
    single run (None over several seeds). ``sparsity`` is what was requested; ``macs_reduction``
    what pruning realized (base MACs / this model's MACs, mean over seeds): plots and findings
    use the realized figure, as rounding can make it differ much from ``1 / (1 - sparsity)^2``.
    """

    model: str
    group: str
    sparsity: float
    precision: str
    threat: str  # "clean", "transfer", "whitebox", "corruption" (eps: the severity) or "corruption-mean" (pooled)
    attack: str  # "clean" for the clean set; the corruption's name
    eps: float
    eps_text: str
    n: int  # samples per run
    seeds: int
    accuracy: float
    accuracy_std: float | None
    ci_low: float | None
    ci_high: float | None
    attack_success: float | None
    speedup: float
    speedup_std: float | None
    macs_reduction: float

    @property
    def key(self) -> str:
        return point_key(self.model, self.threat, self.attack, self.eps_text)


def point_key(model: str, threat: str, attack: str, eps_text: str) -> str:
    return f"{model}|{threat}|{attack}|{eps_text}"


def _rows(results: list[SweepResult]) -> tuple[list[str], dict[str, list[tuple]]]:
    """Per point key, the (model, threat, attack, eps, eps_text, accuracy, attack_success) of every run."""
    order: list[str] = []
    rows: dict[str, list[tuple]] = {}
    for r in results:
        models = {m.model: m for m in r.models}
        for m in r.models:
            k = point_key(m.model, "clean", "clean", "0")
            rows.setdefault(k, []).append((m, "clean", "clean", 0.0, "0", m.clean, None))
            if k not in order:
                order.append(k)
        for s in r.sets:
            k = point_key(s.model, s.threat, s.attack, s.eps_text)
            rows.setdefault(k, []).append((models[s.model], s.threat, s.attack, s.eps, s.eps_text, s.accuracy,
                                           s.attack_success))
            if k not in order:
                order.append(k)
    return order, rows


def summarize(results: Iterable[SweepResult]) -> list[Point]:
    """Points over one or more runs of the same sweep (seeds): mean and sample std per point."""
    results = list(results)
    if not results:
        raise UsageError("There are no sweep results to summarize.")
    order, rows = _rows(results)
    points = []
    for k in order:
        runs = rows[k]
        m, threat, attack, eps, eps_text, _, _ = runs[0]
        acc = [p.value for *_, p, _ in runs]
        asr = [a.value for *_, a in runs if a is not None and a.value is not None]
        speed = [r[0].speedup for r in runs]
        one = len(runs) == 1
        points.append(Point(
            model=m.model, group=m.group, sparsity=m.sparsity, precision=m.precision, threat=threat,
            attack=attack, eps=eps, eps_text=eps_text, n=runs[0][5].n, seeds=len(runs),
            accuracy=_mean(acc), accuracy_std=None if one else _std(acc),
            ci_low=runs[0][5].ci_low if one else None, ci_high=runs[0][5].ci_high if one else None,
            attack_success=_mean(asr) if asr else None, speedup=_mean(speed),
            speedup_std=None if one else _std(speed), macs_reduction=_mean([r[0].macs_reduction for r in runs])))
    return points


def _mean(v: list[float | None]) -> float:
    vals = [x for x in v if x is not None]
    return float(np.mean(vals)) if vals else float("nan")


def _std(v: list[float | None]) -> float:
    vals = [x for x in v if x is not None]
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def find(points: Iterable[Point], **match) -> list[Point]:
    """The points whose fields equal every ``match`` value (e.g. ``attack="pgd", eps_text="8/255"``)."""
    return [p for p in points if all(getattr(p, k) == v for k, v in match.items())]


def to_json(kind: str, data: dict) -> dict:
    """``{"_type", "_version", "_data"}``: how sweep.json, recipe.json and study.json are stored."""
    return {"_type": kind, "_version": VERSION, "_data": data}


def pct(v: float | None, std: float | None = None) -> str:
    """A proportion as findings quote it: ``81.2%`` or ``81.2% ± 1.3``; ``n/a`` for None or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}%" + (f" ± {100 * std:.1f}" if std is not None else "")


def macs_text(p: Point) -> str:
    """The realized compression of a point's model, as findings quote it: ``3.9x fewer MACs``."""
    return "unpruned" if p.sparsity == 0 else f"{p.macs_reduction:.1f}x fewer MACs"


def proportion_from(d: dict) -> Proportion:
    """A Proportion back from its JSON form."""
    return Proportion(**d)
