"""Sanity checks on every audit's robustness figures (Carlini et al. 2019, "On Evaluating
Adversarial Robustness", section 5): evidence that the attacks worked, before their figures are
read as robustness.

- **eps**: one attack's accuracy does not rise with eps (a larger ball contains the smaller one).
- **iterations**: more iterations of the same kind of attack never leave more samples standing
  (PGD-10 vs PGD-50 vs APGD-100, at one eps and threat).
- **white-box <= transfer**: an attack crafted on the model itself is at least as strong as one
  crafted on the base and transferred, at one eps.
- **gradient masking**: a black-box attack (query Square, or a Square set) beating the gradient
  attacks on the same model at one eps means the gradients mislead (rounding, int8 fake
  quantization, a non-differentiable preprocessing step): the gradient figures are then upper
  bounds only.
- **large eps**: at Linf eps >= 0.5 accuracy must fall to near chance, else the attack is broken.

Each check gives a Check with ``passed`` True, False, or None (not applicable: the audit had no
figures to compare). A margin of noise is allowed (TOLERANCE, and one sample), so that a check
fails only on a difference sampling cannot explain. Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgerobust.device.scores.robust import robust_accuracies

# How the warning about evaluation rows that may overlap the training data begins (held_out_warning)
OVERLAP = "the evaluation rows may overlap the base model's training data"
TOLERANCE = 0.02  # accuracy a comparison may be off by before a check fails (plus one sample)
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


def _slack(n: int) -> float:
    return TOLERANCE + 1.0 / max(1, n)


def _adv(sets):
    return [s for s in sets if s.kind == "adversarial" and s.deployed.accuracy.value is not None]


def check_eps(sets) -> Check:
    """Accuracy of one attack (same settings, same threat) must not rise with eps."""
    bad, compared = [], 0
    groups: dict[tuple, list] = {}
    for s in _adv(sets):
        a = s.attack
        key = (s.source, a.get("attack"), a.get("norm"), _steps(s))
        groups.setdefault(key, []).append(s)
    for key, members in groups.items():
        members.sort(key=lambda s: float(s.attack.get("eps", 0)))
        for lo, hi in zip(members, members[1:]):
            for role, acc_lo, acc_hi in (("deployed", lo.deployed.accuracy, hi.deployed.accuracy),
                                         ("base", lo.base.accuracy, hi.base.accuracy)):
                compared += 1
                if acc_hi.value > acc_lo.value + _slack(min(acc_lo.n, acc_hi.n)):
                    bad.append(f"{role}: {hi.name} {acc_hi.value:.1%} > {lo.name} {acc_lo.value:.1%}")
    if not compared:
        return Check("eps", None, "no attack ran at two eps")
    if bad:
        return Check("eps", False, "accuracy rose with eps (" + "; ".join(bad[:3]) + "): the attack did not "
                                   "search the larger ball well; its figures are upper bounds")
    return Check("eps", True, f"accuracy never rose with eps ({compared} comparison(s))")


def _steps(s) -> int | None:
    p = s.attack.get("params") or {}
    v = p.get("steps")
    return int(v) if isinstance(v, (int, float)) else None


def check_iterations(sets) -> Check:
    """At one eps and threat, a PGD-type attack with more iterations never leaves more standing."""
    bad, compared = [], 0
    groups: dict[tuple, list] = {}
    for s in _adv(sets):
        if s.attack.get("attack") in ("pgd", "apgd") and _steps(s) is not None:
            groups.setdefault((s.source, float(s.attack.get("eps", 0))), []).append(s)
    for members in groups.values():
        members.sort(key=_steps)
        for few, many in zip(members, members[1:]):
            if _steps(many) <= _steps(few):
                continue
            compared += 1
            for role in ("deployed", "base"):
                a_few, a_many = getattr(few, role).accuracy, getattr(many, role).accuracy
                if a_many.value > a_few.value + _slack(min(a_few.n, a_many.n)):
                    bad.append(f"{role}: {many.name} ({_steps(many)} steps) {a_many.value:.1%} > {few.name} "
                               f"({_steps(few)} steps) {a_few.value:.1%}")
    if not compared:
        return Check("iterations", None, "no two PGD-type attacks with different iterations at one eps")
    if bad:
        return Check("iterations", False, "more iterations left more samples standing (" + "; ".join(bad[:3]) + ")")
    return Check("iterations", True, f"more iterations never helped the model ({compared} comparison(s))")


def _by(robust, threat: str) -> dict[tuple, object]:
    return {(r.norm, r.eps): r for r in robust if r.threat == threat}


def check_whitebox_transfer(robust) -> Check:
    """Per eps: the deployed model's white-box robust accuracy must not exceed its transfer one."""
    white, transfer = _by(robust, "white-box"), _by(robust, "transfer")
    bad, compared = [], 0
    for key, w in white.items():
        t = transfer.get(key)
        if t is None or "deployed" not in w.models or "deployed" not in t.models:
            continue
        compared += 1
        wv, tv = w.models["deployed"].value, t.models["deployed"].value
        if wv is not None and tv is not None and wv > tv + _slack(min(w.n, t.n)):
            bad.append(f"eps {w.eps_text}: white-box {wv:.1%} > transfer {tv:.1%}")
    if not compared:
        return Check("white-box <= transfer", None, "no eps with both white-box and transfer sets")
    if bad:
        return Check("white-box <= transfer", False, "attacks crafted on the deployed model were weaker than ones "
                     "crafted on the base (" + "; ".join(bad[:3]) + "): its gradients mislead (gradient masking, "
                     "e.g. int8 simulation); its white-box figures are upper bounds")
    return Check("white-box <= transfer", True, f"white-box never weaker than transfer ({compared} eps)")


def check_gradient_masking(sets, robust) -> Check:
    """Per model and eps: a black-box attack must not beat the gradient attacks on the same model."""
    bad, compared = [], 0
    query = _by(robust, "query")
    grad = {**_by(robust, "transfer")}
    white = _by(robust, "white-box")
    for key, q in query.items():
        for role, p in q.models.items():
            # the gradient attacks crafted on this very model: the base's are the transfer sets,
            # the compressed models' the white-box sets
            g = (grad if role == "base" else white).get(key)
            if g is None or role not in g.models or p.value is None or g.models[role].value is None:
                continue
            compared += 1
            if p.value < g.models[role].value - _slack(min(q.n, g.n)):
                bad.append(f"{role} at eps {q.eps_text}: query {p.value:.1%} < gradient attacks "
                           f"{g.models[role].value:.1%}")
    for s_q in _adv(sets):  # a Square set crafted on the base against the base's own gradient sets
        if s_q.attack.get("attack") not in QUERY_ATTACKS or s_q.source != "transfer":
            continue
        eps = float(s_q.attack.get("eps", 0))
        peers = [s for s in _adv(sets) if s.source == "transfer" and s.attack.get("attack") in GRADIENT_ATTACKS
                 and float(s.attack.get("eps", 0)) == eps and s.attack.get("norm") == s_q.attack.get("norm")]
        if not peers:
            continue
        compared += 1
        best = min(peers, key=lambda s: s.base.accuracy.value)
        if s_q.base.accuracy.value < best.base.accuracy.value - _slack(min(s_q.n, best.n)):
            bad.append(f"base at eps {s_q.attack.get('eps_text')}: {s_q.name} {s_q.base.accuracy.value:.1%} < "
                       f"{best.name} {best.base.accuracy.value:.1%}")
    if not compared:
        return Check("gradient masking", None, "no black-box attack to compare with the gradient attacks "
                                               "(a query attack on the runtime gives one)")
    if bad:
        return Check("gradient masking", False, "GRADIENT MASKING suspected: a black-box attack beat the gradient "
                     "attacks (" + "; ".join(bad[:3]) + "); the gradient-based robust accuracies are upper bounds")
    return Check("gradient masking", True, f"no black-box attack beat the gradient attacks ({compared} comparison(s))")


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


def sanity_checks(sets, robust, chance: float) -> tuple[Check, ...]:
    """Every check on an audit's sets (SetResults) and robust accuracies (edgerobust.device.scores.robust)."""
    return (check_eps(sets), check_iterations(sets), check_whitebox_transfer(robust),
            check_gradient_masking(sets, robust), check_large_eps(sets, robust, chance))


def assess(results, predictions, deployed_variant, sessions, ev, query_config, batch_size: int, show: bool):
    """(robust accuracies, sanity checks, query results) of one audit: the query attack first, when
    ``query_config`` asks for one, then the per-sample worst cases, then the checks on them."""
    query = []
    if query_config is not None:
        from edgerobust.device.scores.query import run_query_attack

        query = run_query_attack(sessions, ev.x, ev.y, query_config, batch_size, show)
    robust = robust_accuracies(results, predictions, deployed_variant, query)
    chance = float(np.bincount(np.asarray(ev.y)).max() / max(1, len(ev.y)))
    return robust, sanity_checks(results, robust, chance), query


def held_out_warning(meta: dict) -> str | None:
    """The warning for an evaluation set whose rows may overlap the base model's training data
    (what compress recorded in eval.npz as ``held_out``), else None."""
    held = meta.get("held_out")
    if not isinstance(held, dict) or not held.get("may_overlap_training"):
        return None
    return (f"{OVERLAP} ({held.get('why', 'no reason recorded')}"
            "): its clean and robust accuracies are upper bounds; compress with held-out rows (`eval_data`, or "
            "x_test/y_test in the npz) for figures that are not")


INT8_AGREEMENT_WARN = 0.99  # as compress warns (edgerobust.workstation.stages), read from the manifest


def int8_agreement_warning(bundle) -> str | None:
    """The warning for a bundle whose int8 model gave the pruned fp32 model's top-1 answer on fewer
    than INT8_AGREEMENT_WARN of the evaluation samples at compress time, else None."""
    metrics = (bundle.manifest.get("metrics") or {}) if bundle is not None else {}
    agree = metrics.get("int8_top1_agreement_with_fp32")
    if not isinstance(agree, (int, float)) or agree >= INT8_AGREEMENT_WARN:
        return None
    return (f"at compress time the int8 model gave the pruned fp32 model's top-1 answer on only {agree:.1%} of the "
            "evaluation samples: it is not the same model, and its robustness is its own")
