"""Robust accuracy as the field defines it: per sample, the worst case over every attack.

A sample counts as robust at one eps, under one threat model, only if the model answers it
correctly clean *and* on every adversarial set of that eps and threat (as AutoAttack and
RobustBench report; Croce & Hein 2020). The figure is a proportion over the evaluation rows all
those sets hold, with its 95% Wilson interval, for base, deployed and every variant the audit ran.

Threat models:

- ``transfer``: sets crafted on the base model; every model answers the same inputs.
- ``white-box``: each model against sets crafted on itself: the base against the transfer sets
  (crafted on it), the deployed model and each variant against the white-box sets crafted on
  that variant (``whitebox-fp32``, ``whitebox-int8``).
- ``query``: the score-based black-box attack run by the audit on each model's own runtime
  (edgerobust.device.scores.query): nothing is transferred, the model itself is queried.

The *grade* says how far the figure can be trusted as a robustness claim: ``autoattack`` when
the standard AutoAttack components ran at that eps with their standard budgets (APGD-CE and
APGD-T 100 iterations, FAB-T 100 iterations, Square 5000 queries), else ``upper-bound``: weaker
attacks (FGSM, PGD-10) leave samples standing that a stronger attack would break, so the true
robust accuracy is at most this. Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edgerobust.device.scores.stats import Proportion, proportion

# AutoAttack's standard version (Croce & Hein 2020): component -> (the torchattacks parameter that
# holds its budget, the standard budget)
AUTOATTACK_STANDARD = {"apgd": ("steps", 100), "apgd-t": ("steps", 100), "fab-t": ("steps", 100),
                       "square": ("n_queries", 5000)}
GRADES = {"autoattack": "AutoAttack-grade", "upper-bound": "upper bound from weaker attacks",
          "query": "query attack on the runtime"}
THREAT_ORDER = ("transfer", "white-box", "query")


@dataclass(frozen=True)
class RobustAccuracy:
    """Per-sample worst-case robust accuracy at one eps under one threat model.

    ``models``: role -> Proportion (base, deployed, and variants by precision). ``sets``: role ->
    the sets (or attack) each model faced. ``n``: the evaluation rows every set of the group holds.
    ``grade``: a key of GRADES; ``components``: the attacks that ran, and for ``autoattack`` the
    standard ones present.
    """

    threat: str
    norm: str
    eps: float
    eps_text: str
    grade: str
    components: tuple[str, ...]
    n: int
    models: dict[str, Proportion]
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def delta(self) -> float | None:
        """deployed − base, in accuracy (0..1)."""
        b, d = self.models.get("base"), self.models.get("deployed")
        if b is None or d is None or b.value is None or d.value is None:
            return None
        return d.value - b.value

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta"] = self.delta
        d["grade_text"] = GRADES[self.grade]
        return d


def grade_of(attacks: list[dict]) -> tuple[str, tuple[str, ...]]:
    """(grade, components) for the attacks (SetResult.attack dicts) of one eps and threat."""
    names = tuple(sorted({str(a.get("attack")) for a in attacks}))
    full = set()
    for a in attacks:
        std = AUTOATTACK_STANDARD.get(str(a.get("attack")))
        params = a.get("params") or {}
        if std and isinstance(params.get(std[0]), (int, float)) and params[std[0]] >= std[1]:
            full.add(str(a.get("attack")))
    if full == set(AUTOATTACK_STANDARD):
        return "autoattack", tuple(sorted(full))
    return "upper-bound", names


def _correct_on_rows(sp, role: str, rows: np.ndarray) -> np.ndarray:
    """Whether ``role`` answered each eval row in ``rows`` correctly on set predictions ``sp``."""
    pos = {int(r): i for i, r in enumerate(sp.idx)}
    at = np.array([pos[int(r)] for r in rows], dtype=np.int64)
    return np.asarray(sp.pred[role])[at] == np.asarray(sp.y)[at]


def _target_role(source: str, deployed_variant: str | None, roles: tuple[str, ...]) -> str | None:
    """The role a white-box set was crafted against: its variant's role (deployed when that is the
    deployed precision), or None when that model was not audited."""
    precision = source.split("-", 1)[1] if "-" in source else ""
    if precision and precision == deployed_variant:
        return "deployed"
    if precision in roles:
        return precision
    return "deployed" if deployed_variant is None and precision else None


def robust_accuracies(sets, predictions, deployed_variant: str | None = None,
                      query: list | None = None) -> tuple[RobustAccuracy, ...]:
    """Every (threat, norm, eps) group of the audit's sets as per-sample worst-case robust accuracy.

    ``sets``: the report's SetResults; ``predictions``: its Predictions (every role's answers per
    set); ``query``: QueryResults of the audit's query attack, if it ran.
    """
    if predictions is None:
        return ()
    clean = predictions.get("clean")
    if clean is None:
        return ()
    roles = clean.pred and tuple(clean.pred)
    by_name = {s.name: s for s in sets}
    groups: dict[tuple, list] = {}
    for sp in predictions.sets:
        s = by_name.get(sp.name)
        if s is None or s.kind != "adversarial":
            continue
        a = s.attack
        key = (str(a.get("norm", "Linf")), float(a.get("eps", 0.0)))
        groups.setdefault(key, []).append((s, sp))
    out = []
    for (norm, eps), members in sorted(groups.items()):
        eps_text = str(members[0][0].attack.get("eps_text") or f"{eps:g}")
        transfer = [(s, sp) for s, sp in members if s.source == "transfer"]
        white = [(s, sp) for s, sp in members if s.whitebox]
        if transfer:
            out.append(_group("transfer", norm, eps, eps_text, {r: transfer for r in roles}, clean))
        if white:
            faced = {"base": transfer} if transfer else {}
            for s, sp in white:
                target = _target_role(s.source, deployed_variant, roles)
                if target is not None:
                    faced.setdefault(target, []).append((s, sp))
            if "deployed" not in faced:  # no set crafted on the deployed precision: its fp32 twin's (same
                twin = [(s, sp) for s, sp in white if s.source == "whitebox-fp32"]  # weights) is the nearest
                if twin:
                    faced["deployed"] = twin
            if any(r != "base" for r in faced):
                out.append(_group("white-box", norm, eps, eps_text, faced, clean))
    for q in query or ():
        out.append(q.robust_accuracy())
    order = {t: i for i, t in enumerate(THREAT_ORDER)}
    return tuple(sorted(out, key=lambda r: (order.get(r.threat, 9), r.norm, r.eps)))


def _group(threat: str, norm: str, eps: float, eps_text: str, faced: dict[str, list], clean) -> RobustAccuracy:
    """One group: each role against its own list of (SetResult, SetPredictions), over common rows."""
    rows = None
    for members in faced.values():
        for _, sp in members:
            rows = set(map(int, sp.idx)) if rows is None else rows & set(map(int, sp.idx))
    rows_arr = np.array(sorted(rows or ()), dtype=np.int64)
    models, used, grades = {}, {}, []
    for role, members in faced.items():
        if role not in clean.pred:
            continue
        ok = _correct_on_rows(clean, role, rows_arr)
        for s, sp in members:
            ok &= _correct_on_rows(sp, role, rows_arr)
        models[role] = proportion(int(ok.sum()), len(rows_arr))
        used[role] = tuple(s.name for s, _ in members)
        grades.append(grade_of([s.attack for s, _ in members]))
    # AutoAttack-grade only when every model faced the standard components
    grade = "autoattack" if grades and all(g == "autoattack" for g, _ in grades) else "upper-bound"
    components = tuple(sorted({c for _, cs in grades for c in cs}))
    return RobustAccuracy(threat=threat, norm=norm, eps=eps, eps_text=eps_text, grade=grade, components=components,
                          n=len(rows_arr), models=models, sets=used)
