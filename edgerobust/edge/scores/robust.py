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
  (edgerobust.edge.scores.query): nothing is transferred, the model itself is queried.
- ``every attack`` (COMBINED): where more than one kind of attack ran at one eps (transfer sets,
  white-box sets, the query attack), the worst case over all of them together on the rows all hold:
  a sample counts robust for a model only if every set replayed on it (whoever it was crafted on)
  and the query attack run on its own runtime failed. The headline leads with it. Its Δ is given only
  like for like: when the base and the deployed model each faced the same attacks crafted on
  themselves (the base: the transfer sets; the deployed model: white-box sets of the same attacks and
  budgets) and the same query attack; otherwise the Δ is withheld (``like`` false) and ``note`` says
  what each side faced. Sets crafted on the deployed model's fp32 twin (``whitebox-fp32`` where the
  deployed model is int8 and no set was crafted on it) are not its own: they count as crafted on its
  fp32 twin, so no like-for-like Δ is claimed, and its grade stays an upper bound. ``strongest`` names,
  per model, the strongest class of attack it faced (STRENGTH).

The *grade* says how far the figure can be trusted as a robustness claim: ``autoattack`` when
the standard AutoAttack components ran at that eps with their standard budgets (APGD-CE and
APGD-T 100 iterations, FAB-T 100 iterations, Square 5000 queries), else ``upper-bound``: weaker
attacks (FGSM, PGD-10) leave samples standing that a stronger attack would break, so the true
robust accuracy is at most this. Torch-free.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from edgerobust.edge.scores.stats import Proportion, mcnemar_exact, proportion

# AutoAttack's standard version (Croce & Hein 2020): component -> (the torchattacks parameter that
# holds its budget, the standard budget)
AUTOATTACK_STANDARD = {"apgd": ("steps", 100), "apgd-t": ("steps", 100), "fab-t": ("steps", 100),
                       "square": ("n_queries", 5000)}
GRADES = {"autoattack": "AutoAttack-grade", "upper-bound": "upper bound",
          "query": "query attack on the runtime"}
COMBINED = "every attack"  # the per-sample worst case over every set and the query attack at one eps
THREAT_ORDER = ("transfer", "white-box", "query", COMBINED)
# The classes of attack a model can have faced, strongest first: what ``RobustAccuracy.strongest`` names
STRENGTH = {"autoattack": "AutoAttack crafted on itself", "white-box": "a gradient attack crafted on itself",
            "autoattack-twin": "AutoAttack crafted on its fp32 twin",
            "white-box-twin": "a gradient attack crafted on its fp32 twin",
            "query": "a query attack on its own runtime", "transfer": "sets crafted on another model only"}


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
    grades: dict[str, str] = field(default_factory=dict)  # per role: what its figure can claim
    note: str | None = None  # e.g. the deployed model faced sets crafted on its fp32 twin
    like: bool = True  # whether deployed and base faced the same kinds of attack (else no Δ: ``note`` says why)
    compares: str | None = None  # what the Δ compares, in words
    strongest: dict[str, str] = field(default_factory=dict)  # per role: a key of STRENGTH
    rows: np.ndarray | None = field(default=None, repr=False, compare=False)  # the eval rows of ``correct``
    correct: dict | None = field(default=None, repr=False, compare=False)  # role -> per-row robust (bool)

    @property
    def delta(self) -> float | None:
        """deployed − base, in accuracy (0..1); None when they did not face the same kinds of attack."""
        b, d = self.models.get("base"), self.models.get("deployed")
        if not self.like or b is None or d is None or b.value is None or d.value is None:
            return None
        return d.value - b.value

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("rows", None)
        d.pop("correct", None)
        d["delta"] = self.delta
        d["grade_text"] = GRADES[self.grade]
        return d

    def paired(self, a: str = "base", b: str = "deployed"):
        """Exact McNemar test of two roles' per-row robustness (None without per-row figures)."""
        if not self.correct or a not in self.correct or b not in self.correct:
            return None
        return mcnemar_exact(self.correct[a], self.correct[b])


def grade_of(attacks: list[dict]) -> tuple[str, tuple[str, ...]]:
    """(grade, components) for the attacks (SetResult.attack dicts) of one eps and threat."""
    names = tuple(sorted({str(a.get("attack")) for a in attacks}))
    full = set()
    for a in attacks:
        std = AUTOATTACK_STANDARD.get(str(a.get("attack")))
        params = a.get("params") or {}
        if std and isinstance(params.get(std[0]), (int, float)) and params[std[0]] >= std[1]:
            full.add(str(a.get("attack")))
    return ("autoattack" if full == set(AUTOATTACK_STANDARD) else "upper-bound"), names


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
    own: dict[tuple, dict[str, list]] = {}  # per (norm, eps): role -> the sets crafted on that model itself
    notes: dict[tuple, str | None] = {}
    twins: dict[tuple, frozenset] = {}  # per (norm, eps): the roles whose "own" sets were crafted on their fp32 twin
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
            ra = _group("transfer", norm, eps, eps_text, {r: transfer for r in roles}, clean)
            # the attacks ran on the base: for every other model the figure is a transferred one, an
            # upper bound on its robustness however strong the attacks were on the base
            grades = {r: (g if r == "base" else "upper-bound") for r, g in ra.grades.items()}
            out.append(dataclasses.replace(ra, grades=grades, grade=grades.get("deployed", ra.grade),
                                           compares="the same sets, crafted on the base, on each model"))
            own[(norm, eps)] = {"base": transfer}
        if white:
            faced, note, compares = {}, None, "each model against the same attacks crafted on itself"
            for s, sp in white:
                target = _target_role(s.source, deployed_variant, roles)
                if target is not None:
                    faced.setdefault(target, []).append((s, sp))
            if "deployed" not in faced:  # no set crafted on the deployed precision: its fp32 twin's (same
                twin = [(s, sp) for s, sp in white if s.source == "whitebox-fp32"]  # weights) is the nearest
                if twin:
                    faced["deployed"] = twin
                    note = (f"no set was crafted on the deployed {deployed_variant or 'model'}: it faced the sets "
                            "crafted on its fp32 twin (the same pruned weights)")
                    compares = ("the base against the attacks crafted on itself, the deployed model against the "
                                "same attacks crafted on its fp32 twin")
                    twins[(norm, eps)] = frozenset({"deployed"})
            crafted = {_kind(s) for members in faced.values() for s, _ in members}
            mine = [(s, sp) for s, sp in transfer if _kind(s) in crafted]  # the base: the same attacks, on itself
            if mine:
                faced["base"] = mine
            own.setdefault((norm, eps), {}).update({r: m for r, m in faced.items() if r != "base"})
            if any(r != "base" for r in faced):
                ra = _group("white-box", norm, eps, eps_text, faced, clean)
                out.append(dataclasses.replace(ra, note=note, compares=compares))
            notes[(norm, eps)] = note
    queries = [q.robust_accuracy() for q in query or ()]
    out += queries
    for (norm, eps), members in sorted(groups.items()):
        q = next((r for r in queries if r.norm == norm and math.isclose(r.eps, eps, rel_tol=1e-6)), None)
        kinds = {s.source == "transfer" for s, _ in members} | ({"query"} if q is not None else set())
        if len(kinds) > 1:  # one kind alone: its own row is already the worst case
            both = every_attack(members, own.get((norm, eps), {}), clean, q, notes.get((norm, eps)),
                                twin=twins.get((norm, eps), frozenset()))
            if both is not None:
                out.append(both)
    order = {t: i for i, t in enumerate(THREAT_ORDER)}
    return tuple(sorted(out, key=lambda r: (order.get(r.threat, 9), r.norm, r.eps)))


def every_attack(members: list, own: dict[str, list], clean, query: RobustAccuracy | None = None,
                 note: str | None = None, twin: frozenset = frozenset()) -> RobustAccuracy | None:
    """COMBINED at one norm and eps: per model, the per-sample worst case over every set of ``members``
    ((SetResult, SetPredictions), whoever they were crafted on) and ``query`` (the query attack's row at
    that eps, run on each model's own runtime), on the rows all hold, for the roles all ran. ``own``:
    role -> the members crafted on that model itself (its grade: AutoAttack-grade only if those are);
    ``twin``: the roles whose ``own`` members were crafted on their fp32 twin instead: not their own (an
    upper bound, "crafted on its fp32 twin", and no like-for-like Δ). The Δ is given only like for like
    (see the module docstring). None without common rows."""
    s0 = members[0][0]
    roles = tuple(clean.pred)
    ra = _group(COMBINED, str(s0.attack.get("norm", "Linf")), float(s0.attack.get("eps", 0.0)),
                str(s0.attack.get("eps_text") or f"{float(s0.attack.get('eps', 0.0)):g}"),
                {r: members for r in roles}, clean)
    rows, correct, sets = ra.rows, dict(ra.correct), dict(ra.sets)
    if query is not None:
        if query.rows is None or not query.correct:
            return None
        rows = np.intersect1d(ra.rows, query.rows)
        at_s, at_q = np.searchsorted(ra.rows, rows), np.searchsorted(query.rows, rows)
        correct = {r: ok[at_s] & query.correct[r][at_q] for r, ok in ra.correct.items() if r in query.correct}
        sets = {r: ra.sets.get(r, ()) + query.sets.get(r, ()) for r in correct}
    if not len(rows) or not correct:
        return None
    crafted = {r: grade_of([s.attack for s, _ in own[r]])[0] if own.get(r) else "upper-bound" for r in correct}
    grades = {r: "upper-bound" if r in twin else g for r, g in crafted.items()}  # a twin's sets are transferred
    strongest = {r: ("autoattack" if crafted[r] == "autoattack" else "white-box" if own.get(r)
                     else "query" if query is not None else "transfer") for r in correct}
    strongest = {r: f"{k}-twin" if r in twin and k in ("autoattack", "white-box") else k for r, k in strongest.items()}
    mine = {r: sorted({_kind(s) for s, _ in own.get(r, ())}, key=str) if r not in twin else []
            for r in ("base", "deployed")}
    like = mine["base"] == mine["deployed"] and bool(mine["base"])
    q_text = f" and the query attack {', '.join(query.components)} on its own runtime" if query is not None else ""
    if like:
        compares = f"each model against every set (each attack also crafted on itself){q_text}"
    else:
        twins = {r: sorted({_kind(s) for s, _ in own.get(r, ())}, key=str) for r in twin}
        compares, note = None, "; ".join(x for x in (note, _unlike(mine, query, twins)) if x)
    return RobustAccuracy(threat=COMBINED, norm=ra.norm, eps=ra.eps, eps_text=ra.eps_text,
                          grade=grades.get("deployed", "upper-bound"),
                          components=ra.components + (query.components if query is not None else ()), n=len(rows),
                          models={r: proportion(int(ok.sum()), len(rows)) for r, ok in correct.items()}, sets=sets,
                          grades=grades, note=note, like=like, compares=compares, strongest=strongest, rows=rows,
                          correct=correct)


def _unlike(mine: dict[str, list], query, twins: dict[str, list] | None = None) -> str:
    """Why the COMBINED Δ is withheld: what each side faced crafted on itself (and, in ``twins``, on its
    fp32 twin)."""
    def said(kinds):
        return "/".join(str(k[0]).upper() + (f" ({k[1] or k[2]})" if (k[1] or k[2]) else "") for k in kinds) or "no set"
    q = " (besides the same query attack on each runtime)" if query is not None else ""
    twin = (f" ({said(twins['deployed'])} crafted on its fp32 twin)" if twins and twins.get("deployed") else "")
    return (f"no like-for-like Δ: crafted on itself, the base faced {said(mine['base'])}, the deployed model "
            f"{said(mine['deployed'])}{twin}{q}; white-box sets of the same attacks on the compressed model "
            "(compress `whitebox`) make the two comparable")


def _group(threat: str, norm: str, eps: float, eps_text: str, faced: dict[str, list], clean) -> RobustAccuracy:
    """One group: each role against its own list of (SetResult, SetPredictions), over common rows."""
    rows = None
    for members in faced.values():
        for _, sp in members:
            rows = set(map(int, sp.idx)) if rows is None else rows & set(map(int, sp.idx))
    rows_arr = np.array(sorted(rows or ()), dtype=np.int64)
    models, used, grades, correct, components = {}, {}, {}, {}, set()
    for role, members in faced.items():
        if role not in clean.pred:
            continue
        ok = _correct_on_rows(clean, role, rows_arr)
        for s, sp in members:
            ok &= _correct_on_rows(sp, role, rows_arr)
        models[role], correct[role] = proportion(int(ok.sum()), len(rows_arr)), ok
        used[role] = tuple(s.name for s, _ in members)
        grades[role], cs = grade_of([s.attack for s, _ in members])
        components.update(cs)
    grade = grades.get("deployed") or next(iter(grades.values()), "upper-bound")
    return RobustAccuracy(threat=threat, norm=norm, eps=eps, eps_text=eps_text, grade=grade,
                          components=tuple(sorted(components)), n=len(rows_arr), models=models, sets=used,
                          grades=grades, rows=rows_arr, correct=correct)


def _kind(s) -> tuple:
    """What makes two sets the same attack: its name and its budget (steps, or Square's queries)."""
    p = s.attack.get("params") or {}
    return str(s.attack.get("attack")), p.get("steps"), p.get("n_queries")
