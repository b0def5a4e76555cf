"""Common corruptions replayed on the audited runtimes: accuracy per corruption and severity, mCE, McNemar.

Definitions (Hendrycks & Dietterich 2019, with the bundle's base model as the reference where they
use AlexNet). For model m, corruption c and severity s, E^m_{c,s} = 1 - accuracy on that set, and
E^m_clean the clean error on the same evaluation rows:

* CE^m_c = sum_s E^m_{c,s} / sum_s E^base_{c,s}; mCE^m = the mean of CE^m_c over the corruptions.
  The base's mCE is 1 (100 %) by construction; below 1 the model errs less under corruption.
* relative CE^m_c = sum_s (E^m_{c,s} - E^m_clean) / sum_s (E^base_{c,s} - E^base_clean): the errors the
  corruption adds, against the base's; relative mCE its mean.
* A CE whose denominator is 0 (the base errs nowhere on c) or a relative CE whose denominator is <= 0
  (c does not hurt the base) is undefined: None, shown "n/a", and left out of the mean, which counts
  the corruptions it averages (``n_mce``, ``n_relative_mce``).
* Δ = deployed - base accuracy on the same corrupted inputs, with the exact McNemar test of their
  paired correctness (edgerobust.edge.scores.stats); every variant gets its own Δ and test against base.
* Holm's step-down correction (edgerobust.edge.scores.stats.holm) across every corruption set of one
  model pair (deployed vs base; each variant vs base): ``p_holm`` (``others[v]["p_holm"]``). A loss is
  significant only where the Holm-adjusted p is below ALPHA; the raw p stays in the tables.
* the worst set: the largest loss of the deployed model that survives the correction (Δ < 0, p_holm < ALPHA).

Every model's answers on every set join the audit's predictions.npz (source ``corruption``) and each set
file's sha256 its provenance, so ``edgerobust compare`` puts devices' corruption accuracy side by side.
Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.edge.files.corruptset import CorruptionSet, check_corruption_set
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.edge.files.predictions import CORRUPTION, Predictions
from edgerobust.edge.files.provenance import Provenance
from edgerobust.edge.scores.replay import keep_answers, predict_all
from edgerobust.edge.scores.stats import McNemar, Proportion, accuracy, holm, mcnemar_exact

ALPHA = 0.05  # a loss counts when McNemar's Holm-adjusted p is below this
FEW_ERRORS = 10  # a CE whose base made fewer errors than this (over its severities) is flagged as noisy


@dataclass(frozen=True)
class CorruptionScore:
    """Every model on one corruption set: accuracy, clean accuracy on the same rows, Δ and McNemar
    against the base (``delta`` / ``mcnemar`` for deployed, ``others`` for each variant)."""

    name: str
    corruption: str
    family: str
    severity: int
    n: int
    models: dict[str, Proportion]
    clean: dict[str, float]
    delta: float | None
    mcnemar: McNemar | None
    others: dict[str, dict] = field(default_factory=dict)  # variant -> {"delta", "p_value", "p_holm"}
    p_holm: float | None = None  # McNemar's p, Holm-adjusted over every set of the report (summarize)

    @property
    def p_adjusted(self) -> float | None:
        """The Holm-adjusted p where summarize set it, else the raw p (a set scored alone)."""
        return self.p_holm if self.p_holm is not None else (self.mcnemar.p_value if self.mcnemar else None)

    @property
    def significant_loss(self) -> bool:
        p = self.p_adjusted
        return self.delta is not None and self.delta < 0 and p is not None and p < ALPHA


@dataclass(frozen=True)
class CorruptionError:
    """CE and relative CE of every model on one corruption (None: undefined, see the module docstring)."""

    corruption: str
    family: str
    severities: tuple[int, ...]
    ce: dict[str, float | None]
    relative_ce: dict[str, float | None]
    base_errors: int = 0  # the base's errors summed over the severities: a CE over few of them is noisy


@dataclass(frozen=True)
class CorruptionReport:
    sets: tuple[CorruptionScore, ...]
    corruptions: tuple[CorruptionError, ...]
    mce: dict[str, float | None]
    relative_mce: dict[str, float | None]
    n_mce: dict[str, int]
    n_relative_mce: dict[str, int]
    worst: CorruptionScore | None
    skipped: tuple[dict, ...] = ()  # what the bundle left out at this size, and why
    left_out: dict = field(default_factory=dict)  # ImageNet-C corruptions not implemented, and why
    implementation: str | None = None
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["definitions"] = {"error": "1 - accuracy", "ce": "sum_s E_model / sum_s E_base",
                            "relative_ce": "sum_s (E_model - E_model_clean) / sum_s (E_base - E_base_clean)",
                            "mce": "mean of CE over the corruptions where it is defined", "reference": "base",
                            "alpha": ALPHA, "test": "exact McNemar, deployed vs base on the same inputs"}
        return d


def score_set(meta: dict, y: np.ndarray, pred: dict[str, np.ndarray], clean: dict[str, np.ndarray]) -> CorruptionScore:
    """One set's scores from each role's predictions on it and on the clean rows it was made from."""
    right = {r: p == y for r, p in pred.items()}
    models = {r: accuracy(p, y) for r, p in pred.items()}
    others = {}
    for r in pred:
        if r not in ("base", "deployed"):
            t = mcnemar_exact(right["base"], right[r])
            others[r] = {"delta": models[r].value - models["base"].value, "p_value": t.p_value}
    test = mcnemar_exact(right["base"], right["deployed"]) if "deployed" in pred else None
    delta = models["deployed"].value - models["base"].value if test is not None and len(y) else None
    return CorruptionScore(meta["name"], meta["corruption"], meta.get("family", "?"), int(meta["severity"]), len(y),
                           models, {r: float(np.mean(c == y)) if len(y) else 0.0 for r, c in clean.items()},
                           delta, test, others)


def _ratio(num: float, den: float, strict: bool) -> float | None:
    return None if (den <= 0 if strict else den == 0) else num / den


def corruption_errors(sets) -> tuple[CorruptionError, ...]:
    """CE and relative CE per corruption (the module docstring's definitions), in the sets' order."""
    out = []
    for name in dict.fromkeys(s.corruption for s in sets):
        group = [s for s in sets if s.corruption == name]
        err = {r: sum(1 - s.models[r].value for s in group if s.models[r].value is not None) for r in group[0].models}
        added = {r: sum((1 - s.models[r].value) - (1 - s.clean[r]) for s in group) for r in group[0].models}
        out.append(CorruptionError(name, group[0].family, tuple(s.severity for s in group),
                                   {r: _ratio(e, err["base"], strict=False) for r, e in err.items()},
                                   {r: _ratio(a, added["base"], strict=True) for r, a in added.items()},
                                   sum(s.models["base"].n - s.models["base"].k for s in group)))
    return tuple(out)


def mean_of(per: tuple[CorruptionError, ...], key: str) -> tuple[dict[str, float | None], dict[str, int]]:
    """The mean over corruptions of ``key`` (ce or relative_ce) per role, and how many were defined."""
    roles = per[0].ce.keys() if per else ()
    means, counts = {}, {}
    for r in roles:
        vals = [getattr(c, key)[r] for c in per if getattr(c, key)[r] is not None]
        means[r], counts[r] = (float(np.mean(vals)) if vals else None), len(vals)
    return means, counts


def with_holm(sets: list[CorruptionScore]) -> list[CorruptionScore]:
    """``sets`` with Holm-adjusted p values across all of them, per model pair (deployed vs base, and each
    variant vs base)."""
    tested = [i for i, s in enumerate(sets) if s.mcnemar is not None]
    adjusted = dict(zip(tested, holm([sets[i].mcnemar.p_value for i in tested])))
    others: dict[str, dict[int, float]] = {}
    for v in dict.fromkeys(v for s in sets for v in s.others):
        at = [i for i, s in enumerate(sets) if v in s.others]
        others[v] = dict(zip(at, holm([sets[i].others[v]["p_value"] for i in at])))
    return [dataclasses.replace(s, p_holm=adjusted.get(i),
                                others={v: {**o, "p_holm": others[v][i]} for v, o in s.others.items()})
            for i, s in enumerate(sets)]


def summarize(sets: list[CorruptionScore], skipped=(), left_out=None, implementation=None) -> CorruptionReport:
    per = corruption_errors(sets)
    mce, n_mce = mean_of(per, "ce")
    rel, n_rel = mean_of(per, "relative_ce")
    sets = with_holm(sets)
    losses = [s for s in sets if s.significant_loss]
    worst = min(losses, key=lambda s: (s.delta, s.p_adjusted)) if losses else None
    roles = tuple(sets[0].models) if sets else ()
    return CorruptionReport(tuple(sets), per, mce, rel, n_mce, n_rel, worst, tuple(skipped), dict(left_out or {}),
                            implementation, roles)


def corruption_source(bundle, eval_path: Path):
    """(the bundle whose corruption sets apply, a warning): the sets were made from the bundle's own
    eval.npz, so with another evaluation set (the audit's ``eval_set``) they are not replayed, and said so."""
    if bundle is None or not bundle.corruption_paths:
        return bundle, None
    if Path(eval_path).resolve() == bundle.eval_path.resolve():
        return bundle, None
    return None, (f"the bundle's {len(bundle.corruption_paths)} corruption sets were made from its own "
                  f"{bundle.eval_path.name}, not from {Path(eval_path).name}: not replayed")


def check_corruption_sets(paths, eval_path: Path, ev) -> None:
    """Load and check every set before any time is spent measuring (BundleError on the first bad one)."""
    sha = sha256_file(eval_path) if paths else ""
    for p in paths:
        check_corruption_set(CorruptionSet.load(p), p, sha, ev.x.shape, ev.y)


def replay_corruptions(sessions: dict, bundle, eval_path: Path, ev, predictions: Predictions, prov: Provenance,
                       batch_size: int, show: bool) -> tuple[CorruptionReport | None, Predictions, Provenance]:
    """Every session on every corruption set of ``bundle``: (the scores, None when it has none; ``predictions``
    with every set's per-sample answers added, source "corruption"; ``prov`` with each set file's sha256 under
    the set's name). ``predictions``: the audit's, whose clean set gives each model's clean answers on the same
    rows. Two audits of one bundle share the sets' hashes, so ``edgerobust compare`` pairs them."""
    paths = bundle.corruption_paths if bundle is not None else []
    info = (bundle.manifest.get("corruption_sets") if bundle is not None else None) or {}
    if not paths and not info.get("skipped"):
        return None, predictions, prov
    sha = sha256_file(eval_path)
    clean = next(s for s in predictions.sets if s.name == "clean").pred
    scores, kept, hashes = [], [], {}
    for p in paths:
        cs = CorruptionSet.load(p)
        check_corruption_set(cs, p, sha, ev.x.shape, ev.y)
        answers = predict_all(sessions, cs.x, batch_size, cs.name, show)
        scores.append(score_set({**cs.meta, "name": cs.name}, cs.y, {r: a[0] for r, a in answers.items()},
                                {r: c[cs.idx] for r, c in clean.items() if r in answers}))
        kept.append(keep_answers(cs.name, CORRUPTION, cs.y, cs.idx, answers))
        hashes[cs.name] = sha256_file(p)
    report = summarize(scores, info.get("skipped", ()), info.get("left_out"), info.get("implementation"))
    return (report, Predictions(predictions.sets + tuple(kept)),
            dataclasses.replace(prov, sets={**prov.sets, **hashes}))
