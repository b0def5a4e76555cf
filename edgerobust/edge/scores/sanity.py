"""Sanity checks on every audit's robustness figures (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", section 5): evidence that the attacks worked, before their figures are
read as robustness.

- **eps**: one attack's accuracy does not rise with eps (a larger ball contains the smaller one),
  on the model it was crafted on.
- **iterations**: more iterations of the same kind of attack never leave more samples standing
  (PGD-10 vs PGD-50 vs APGD-100, at one eps), on the model it was crafted on.
- **white-box <= transfer**: an attack crafted on the model itself is at least as strong as one
  crafted on the base and transferred, at one eps.
- **gradient masking**: a black-box attack (query Square, or a Square set) beating the gradient
  attacks on the same model at one eps means the gradients mislead (rounding, int8 fake
  quantization, a non-differentiable preprocessing step): the gradient figures are then upper
  bounds only. So does a gradient attack's set whose craft-time gradient check (meta
  ``gradient_check``, edgerobust.workstation.attacks.gradcheck) found the input gradients zero or
  the attack changing (almost) no prediction: those figures were measured at compress time.
- **large eps**: at Linf eps >= 0.5 accuracy must fall to near chance, else the attack is broken.

Each check gives a Check with ``passed`` True, False, or None (not applicable: the audit had no
figures to compare). Comparisons are per sample, over the evaluation rows both sides hold: a check
fails only when an exact McNemar test puts the difference past chance (ALPHA). Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgerobust.edge.scores.robust import robust_accuracies
from edgerobust.edge.scores.stats import mcnemar_exact

# How the warning about evaluation rows that may overlap the training data begins (held_out_warning)
OVERLAP = "the evaluation rows may overlap the base model's training data"
LARGE_EPS = 0.5  # Linf radius at which every image can be turned mid-gray: any working attack reaches chance
NEAR_CHANCE = 0.1  # accuracy allowed above chance at LARGE_EPS
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd", "apgd-t", "fab-t", "mifgsm", "difgsm", "pgdl2", "cw")
QUERY_ATTACKS = ("square",)


@dataclass(frozen=True)
class Check:
    name: str  # eps, iterations, white-box <= transfer, gradient masking, large eps
    passed: bool | None
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


ALPHA = 0.05  # a comparison fails only when an exact McNemar test puts the difference past chance


class Rows:
    """Per-sample correctness of one role on each set, from the audit's predictions (eval row -> bool)."""

    def __init__(self, predictions) -> None:
        self.sets = {sp.name: sp for sp in (predictions.sets if predictions is not None else ())}

    def ok(self, name: str, role: str) -> dict[int, bool] | None:
        sp = self.sets.get(name)
        if sp is None or role not in sp.pred:
            return None
        return dict(zip(map(int, sp.idx), (np.asarray(sp.pred[role]) == np.asarray(sp.y)).tolist()))


def _both(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    rows = sorted(set(a) & set(b))
    return np.array([a[r] for r in rows], bool), np.array([b[r] for r in rows], bool)


def _more_standing(weak_ok: np.ndarray, strong_ok: np.ndarray) -> tuple[bool, int, int]:
    """Does the attack expected to be stronger leave significantly more samples standing? (flag,
    rows only it left standing, rows only the other left standing)."""
    only_strong = int((strong_ok & ~weak_ok).sum())
    only_weak = int((weak_ok & ~strong_ok).sum())
    if only_strong <= only_weak:
        return False, only_strong, only_weak
    return mcnemar_exact(strong_ok, weak_ok).p_value < ALPHA, only_strong, only_weak


def _verdict(name: str, compared: int, bad: list[str], none: str, failed, passed: str) -> Check:
    """n/a when nothing was compared, FAIL naming up to three failures (``failed(listed)``), else PASS."""
    if not compared:
        return Check(name, None, none)
    if bad:
        return Check(name, False, failed("; ".join(bad[:3])))
    return Check(name, True, passed)


def _adv(sets):
    return [s for s in sets if s.kind == "adversarial" and s.deployed.accuracy.value is not None]


def _kind_key(s) -> tuple:
    """An attack with all its settings but eps."""
    params = {k: v for k, v in (s.attack.get("params") or {}).items() if k != "eps"}
    return s.source, s.attack.get("attack"), s.attack.get("norm"), str(sorted(params.items()))


def check_eps(sets, rows: Rows) -> Check:
    """On the model it was crafted on (the base, for transfer sets), one attack with the same
    settings must not leave significantly more samples standing at a larger eps."""
    bad, compared = [], 0
    groups: dict[tuple, list] = {}
    for s in _adv(sets):
        if s.source == "transfer":
            groups.setdefault(_kind_key(s), []).append(s)
    for members in groups.values():
        members.sort(key=lambda s: float(s.attack.get("eps", 0)))
        for lo, hi in zip(members, members[1:]):
            if float(hi.attack.get("eps", 0)) == float(lo.attack.get("eps", 0)):
                continue
            a, b = rows.ok(lo.name, "base"), rows.ok(hi.name, "base")
            if a is None or b is None:
                continue
            compared += 1
            flag, more, fewer = _more_standing(*_both(a, b))
            if flag:
                bad.append(f"base: {more} samples stand at {hi.name} that fall at {lo.name} ({fewer} the other way)")
    return _verdict("eps", compared, bad, "no attack ran at two eps",
                    lambda listed: "accuracy rose with eps (" + listed + "): the attack did not "
                                   "search the larger ball well; its figures are upper bounds",
                    f"accuracy never rose with eps beyond chance ({compared} comparison(s))")


def _steps(s) -> int | None:
    p = s.attack.get("params") or {}
    v = p.get("steps")
    return int(v) if isinstance(v, (int, float)) else None


def check_iterations(sets, rows: Rows) -> Check:
    """At one eps, on the base (transfer sets are crafted on it), a PGD-type attack with more
    iterations never leaves significantly more samples standing."""
    bad, compared = [], 0
    groups: dict[float, list] = {}
    for s in _adv(sets):
        if s.source == "transfer" and s.attack.get("attack") in ("pgd", "apgd") and _steps(s) is not None:
            groups.setdefault(float(s.attack.get("eps", 0)), []).append(s)
    for members in groups.values():
        members.sort(key=_steps)
        for few, many in zip(members, members[1:]):
            a, b = rows.ok(few.name, "base"), rows.ok(many.name, "base")
            if _steps(many) <= _steps(few) or a is None or b is None:
                continue
            compared += 1
            flag, more, fewer = _more_standing(*_both(a, b))
            if flag:
                bad.append(f"{many.name} ({_steps(many)} steps) leaves {more} samples standing that {few.name} "
                           f"({_steps(few)} steps) breaks ({fewer} the other way)")
    return _verdict("iterations", compared, bad, "no two PGD-type attacks with different iterations at one eps",
                    lambda listed: "more iterations left more samples standing (" + listed + ")",
                    f"more iterations never helped the model ({compared} comparison(s))")


def _by(robust, threat: str) -> dict[tuple, object]:
    return {(r.norm, r.eps): r for r in robust if r.threat == threat}


def _per_row(ra, role: str) -> dict[int, bool] | None:
    if ra is None or not ra.correct or role not in ra.correct:
        return None
    return dict(zip(map(int, ra.rows), ra.correct[role].tolist()))


def check_whitebox_transfer(robust) -> Check:
    """Per eps: the deployed model must not stand significantly more often under the white-box sets
    than under the transfer ones."""
    white, transfer = _by(robust, "white-box"), _by(robust, "transfer")
    bad, compared = [], 0
    for key, w in white.items():
        a, b = _per_row(transfer.get(key), "deployed"), _per_row(w, "deployed")
        if a is None or b is None:
            continue
        compared += 1
        flag, more, fewer = _more_standing(*_both(a, b))
        if flag:
            bad.append(f"eps {w.eps_text}: {more} samples stand under white-box and fall under transfer "
                       f"({fewer} the other way)")
    return _verdict("white-box <= transfer", compared, bad, "no eps with both white-box and transfer sets",
                    lambda listed: "attacks crafted on the compressed model were weaker than ones "
                     "crafted on the base (" + listed + "): its gradients mislead (gradient masking, "
                     "e.g. int8 simulation); its white-box figures are upper bounds",
                    f"white-box never weaker than transfer ({compared} eps)")


def _masked_at_craft(sets) -> list[str]:
    """The sets whose gradient check at compress time (meta ``gradient_check``) found masked
    gradients, each with its figures; sets crafted before the check existed carry none."""
    out = []
    for s in _adv(sets):
        g = s.attack.get("gradient_check")
        if not isinstance(g, dict) or not g.get("masked"):
            continue
        zero, changed = g.get("zero_gradient_share"), g.get("changed_share")
        zero_text = f"{zero:.0%}" if isinstance(zero, (int, float)) else "n/a"
        changed_text = f"{changed:.1%}" if isinstance(changed, (int, float)) else "n/a"
        out.append(f"{s.name}: zero input gradient for {zero_text} of {g.get('probed', '?')} probed samples, "
                   f"{changed_text} of the correct predictions changed")
    return out


def check_gradient_masking(sets, robust, rows: Rows) -> Check:
    """Per model and eps: a black-box attack must not break significantly more samples than the
    gradient attacks crafted on that same model (per sample, over the rows both ran on). Fails
    also when a gradient attack's craft-time gradient check recorded masked gradients."""
    bad, compared = [], 0
    white, transfer = _by(robust, "white-box"), _by(robust, "transfer")
    for key, q in _by(robust, "query").items():
        for role in q.models:
            # the gradient attacks crafted on this very model: the base's are the transfer sets, the
            # compressed models' the white-box sets (not a twin's: those are transferred again)
            g = transfer.get(key) if role == "base" else white.get(key)
            if g is None or (role != "base" and g.note):
                continue
            a, b = _per_row(g, role), _per_row(q, role)
            if a is None or b is None:
                continue
            compared += 1
            flag, more, fewer = _more_standing(*_both(b, a))
            if flag:
                bad.append(f"{role} at eps {q.eps_text}: the query attack broke {more} samples the gradient "
                           f"attacks left standing ({fewer} the other way)")
    for s_q in _adv(sets):  # a Square set crafted on the base, against the base's own gradient sets
        if s_q.attack.get("attack") not in QUERY_ATTACKS or s_q.source != "transfer":
            continue
        eps = float(s_q.attack.get("eps", 0))
        peers = [s for s in _adv(sets) if s.source == "transfer" and s.attack.get("attack") in GRADIENT_ATTACKS
                 and float(s.attack.get("eps", 0)) == eps and s.attack.get("norm") == s_q.attack.get("norm")]
        oks = [rows.ok(s.name, "base") for s in peers]
        q_ok = rows.ok(s_q.name, "base")
        if not peers or q_ok is None or any(o is None for o in oks):
            continue
        common = set(q_ok).intersection(*oks)
        grad = {r: all(o[r] for o in oks) for r in common}
        compared += 1
        flag, more, fewer = _more_standing(*_both({r: q_ok[r] for r in common}, grad))
        if flag:
            bad.append(f"base at eps {s_q.attack.get('eps_text')}: {s_q.name} broke {more} samples every gradient "
                       f"set left standing ({fewer} the other way)")
    crafted = _masked_at_craft(sets)
    if crafted:
        beaten = f"a black-box attack beat the gradient attacks ({'; '.join(bad[:3])}); " if bad else ""
        return Check("gradient masking", False,
                     "GRADIENT MASKING suspected: " + beaten + "at compress time the gradient attacks saw (almost) "
                     "no gradient (" + "; ".join(crafted[:3]) + "): the model's gradients are masked, e.g. it rounds "
                     "or quantizes its input; the gradient-based robust accuracies are upper bounds, trust the query "
                     "attack (`query_attack` square)")
    return _verdict("gradient masking", compared, bad, "no black-box attack to compare with the gradient attacks "
                                               "(a query attack on the runtime gives one)",
                    lambda listed: "GRADIENT MASKING suspected: a black-box attack beat the gradient "
                     "attacks (" + listed + "); the gradient-based robust accuracies are upper bounds",
                    f"no black-box attack beat the gradient attacks beyond chance "
                                           f"({compared} comparison(s))")


def check_large_eps(sets, robust, chance: float) -> Check:
    """At Linf eps >= LARGE_EPS accuracy must reach near chance."""
    found, bad = [], []
    for s in _adv(sets):
        if s.attack.get("norm") == "Linf" and float(s.attack.get("eps", 0)) >= LARGE_EPS:
            found.append(s.name)
            for role in ("base", "deployed"):
                v = getattr(s, role).accuracy.value
                if v > chance + NEAR_CHANCE:
                    bad.append(f"{role} on {s.name}: {v:.1%}")
    for r in robust:
        if r.threat == "query" and r.norm == "Linf" and r.eps >= LARGE_EPS:
            found.append(f"query {r.eps_text}")
            bad += [f"{role} under query eps {r.eps_text}: {p.value:.1%}" for role, p in r.models.items()
                    if p.value is not None and p.value > chance + NEAR_CHANCE]
    if not found:
        return Check("large eps", None, f"no attack at Linf eps >= {LARGE_EPS:g} (a query attack with eps 0.5 "
                                        "or a set at eps 0.5 checks that the attacks can succeed at all)")
    if bad:
        return Check("large eps", False, f"accuracy stayed above chance ({chance:.0%}) + {NEAR_CHANCE:.0%} at a large "
                     "eps (" + "; ".join(bad[:3]) + "): the attack is broken or the gradients mislead")
    return Check("large eps", True, f"near chance at a large eps ({', '.join(found[:3])})")


def sanity_checks(sets, robust, chance: float, predictions=None) -> tuple[Check, ...]:
    """Every check on an audit's sets (SetResults), their per-sample answers (Predictions) and the
    robust accuracies (edgerobust.edge.scores.robust)."""
    rows = Rows(predictions)
    return (check_eps(sets, rows), check_iterations(sets, rows), check_whitebox_transfer(robust),
            check_gradient_masking(sets, robust, rows), check_large_eps(sets, robust, chance))


def assess(results, predictions, deployed_variant, sessions, ev, query_config, batch_size: int, show: bool):
    """(robust accuracies, sanity checks, query results, query status) of one audit: the query attack
    first, when ``query_config`` (AuditConfig.query: a QueryConfig, QUICK or None) asks for one and
    can run (edgerobust.edge.scores.query.resolve_query), then the per-sample worst cases, then the
    checks on them."""
    from edgerobust.edge.scores.query import resolve_query, run_query_attack

    query = []
    query_config, status = resolve_query(query_config, results)
    if query_config is not None:
        query = run_query_attack(sessions, ev.x, ev.y, query_config, batch_size, show)
    robust = robust_accuracies(results, predictions, deployed_variant, query)
    chance = float(np.bincount(np.asarray(ev.y)).max() / max(1, len(ev.y)))
    return robust, sanity_checks(results, robust, chance, predictions), query, status


def held_out_warning(meta: dict) -> str | None:
    """The warning for an evaluation set whose rows may overlap the base model's training data
    (what compress recorded in eval.npz as ``held_out``), else None."""
    held = meta.get("held_out")
    if not isinstance(held, dict) or not held.get("may_overlap_training"):
        return None
    return (f"{OVERLAP} ({held.get('why', 'no reason recorded')}"
            "): its clean and robust accuracies are upper bounds; compress with held-out rows (`eval_data`, or "
            "x_test/y_test in the npz) for figures that are not")


INT8_AGREEMENT_WARN = 0.99  # as compress warns (edgerobust.workstation.pipeline.stages), read from the manifest


def int8_agreement_warning(bundle) -> str | None:
    """The warning for a bundle whose int8 model gave the pruned fp32 model's top-1 answer on fewer
    than INT8_AGREEMENT_WARN of the evaluation samples at compress time, else None."""
    metrics = (bundle.manifest.get("metrics") or {}) if bundle is not None else {}
    agree = metrics.get("int8_top1_agreement_with_fp32")
    if not isinstance(agree, (int, float)) or agree >= INT8_AGREEMENT_WARN:
        return None
    return (f"at compress time the int8 model gave the pruned fp32 model's top-1 answer on only {agree:.1%} of the "
            "evaluation samples: it is not the same model, and its robustness is its own")
