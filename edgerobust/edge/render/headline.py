"""The audit's one-paragraph verdict: speedup, clean accuracy, and the worst case per threat model.

The worst case of a threat model is its set with the lowest deployed robust accuracy (not the
smallest Δ): what an attacker of that kind achieves at best. Threat models: **transfer** (sets
crafted on the base model, replayed on the deployed one) and **white-box** (sets crafted on the
compressed model itself, when the bundle has them). Each worst case carries its Δ as defined in
:mod:`edgerobust.edge.scores.scoring` (both sides face the same attack), or why it has none. When this host
is not the profile's device, the headline says so first. Where the audit ran its query attack at the eps of
transfer or white-box sets, or where both kinds of set are in the bundle, its robust accuracy leads with the
per-sample worst case over every attack together (:data:`edgerobust.edge.scores.robust.COMBINED`); where it could not (ART not installed), the transfer
figures say how to check them. Every Δ says what it compares; the worst case over every attack has a Δ only
where both sides faced the same kinds of attack, and a transfer Δ is never weighed against a query Δ. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from edgerobust.edge.scores.robust import COMBINED, GRADES, STRENGTH
from edgerobust.edge.scores.sanity import OVERLAP
from edgerobust.edge.runtime.precision import FP32_TOLERANCE

# (threat model, SetResult.source prefix, how the sets were crafted)
THREATS = (
    ("transfer", "transfer", "crafted on the base model"),
    ("white-box", "whitebox", "crafted on the compressed model itself"),
)


@dataclass(frozen=True)
class Worst:
    """The set of one threat model where the deployed model scores lowest.

    deployed / base: robust accuracies (0..1) of the two sides of ``delta``; ``base_set`` is
    the set the base answered (the same set for transfer; the base's own white-box set for
    white-box). ``note`` says why there is no Δ.
    """

    threat: str
    set: str
    deployed: float | None
    base: float | None
    base_set: str | None
    delta: float | None
    note: str | None = None


def worst_per_threat(sets) -> tuple[Worst, ...]:
    """One Worst per threat model present among the adversarial sets, in THREATS order."""
    out = []
    for threat, prefix, _ in THREATS:
        cands = [s for s in sets if s.kind == "adversarial" and str(getattr(s, "source", "transfer")).startswith(prefix)
                 and s.deployed.accuracy.value is not None]
        if not cands:
            continue
        w = min(cands, key=lambda s: (s.deployed.accuracy.value, s.delta_accuracy if s.delta_accuracy is not None else 0))
        ref = getattr(w, "reference", None)
        if prefix == "transfer":
            out.append(Worst(threat, w.name, w.deployed.accuracy.value, w.base.accuracy.value, w.name, w.delta_accuracy))
        elif ref is not None:
            out.append(Worst(threat, w.name, ref.deployed.value, ref.base.value, ref.set, w.delta_accuracy))
        else:
            out.append(Worst(threat, w.name, w.deployed.accuracy.value, None, None, None,
                             getattr(w, "delta_note", None) or "no Δ"))
    return tuple(out)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _pp(d: float | None) -> str:
    return "–" if d is None else f"{100 * d:+.1f} pp".replace("-", "−")


def _worst_text(w: Worst) -> str:
    head = f"{w.threat} robust accuracy {_pct(w.deployed)} on {w.set}"
    if w.delta is None:
        return f"{head} (no like-for-like Δ: see the notes under its table)"
    if w.threat == "transfer":
        return f"{head} vs base {_pct(w.base)} on the same inputs ({_pp(w.delta)})"
    return f"{head} vs base {_pct(w.base)} under {w.base_set} crafted on itself ({_pp(w.delta)})"


def headline(report) -> str:
    """The verdict of an AuditReport, as plain text (see the module docstring)."""
    out = []
    check = getattr(report, "host_check", None)
    if check is not None and not check.matches:
        line = check.settings_line(report.profile)
        out.append(f"{line[0].upper()}{line[1:]}.")
    parts = []
    sp = next((s for s in report.measurement.speedup if s.batch_size == 1), None) or \
        (report.measurement.speedup[0] if report.measurement.speedup else None)
    if sp:
        from edgerobust.edge.runtime.measure import PROCESS_SPREAD, process_speedups

        wide = sp.p50_low > 0 and sp.p50_high / sp.p50_low > 1.5
        load = report.measurement.other_load
        per = process_speedups(report.measurement, sp.batch_size)
        apart = bool(per) and max(per) / min(per) > PROCESS_SPREAD
        parts.append(f"{sp.p50:.2f}× speedup at batch {sp.batch_size} (p50"
                     + (f"; uncertain, 95% interval {sp.p50_low:.2f}–{sp.p50_high:.2f}×" if wide else "")
                     + (f"; {min(per):.2f}–{max(per):.2f}× in separate fresh processes, pooled" if apart else "")
                     + (f"; measured while other processes used {100 * load:.0f}% of the cores"
                        if load is not None and load > 0.1 else "") + ")")
    clean = next((s for s in report.sets if s.kind == "clean"), None)
    if clean:
        parts.append(f"clean accuracy {_pct(clean.deployed.accuracy.value)} vs base "
                     f"{_pct(clean.base.accuracy.value)} ({_pp(clean.delta_accuracy)})"
                     + ("; upper bounds: the evaluation rows may overlap the base's training data"
                        if any(w.startswith(OVERLAP) for w in report.warnings) else ""))
    out.append("Deployed vs base: " + ", ".join(parts) + ".")
    from edgerobust.edge.render.variant_table import better_variant, slower_than_base

    out += [line for line in (slower_than_base(report), better_variant(report), precision_sentence(report)) if line]
    robust = tuple(getattr(report, "robust", ()) or ())
    worst = worst_per_threat(report.sets)
    if robust:
        out += robust_sentences(robust, getattr(report, "query_status", None))
    elif not worst:
        out.append("Robustness not audited: no adversarial sets (the warning says how to add them).")
    else:
        out.append("Worst case per threat model (the set where the deployed model scores lowest): "
                   + "; ".join(_worst_text(w) for w in worst) + ".")
    failed = [c.name for c in getattr(report, "sanity", ()) if c.passed is False]
    if failed:
        out.append(f"SANITY CHECKS FAILED ({', '.join(failed)}): the robust accuracies above are upper bounds at best "
                   "(see the warnings).")
    from edgerobust.edge.render.corruption_lines import corruption_sentence
    from edgerobust.edge.render.estimate_lines import estimate_headline

    out += [line for line in (corruption_sentence(report),) if line]

    out += [line for line in (estimate_headline(getattr(report, "estimate", None)),) if line]
    return " ".join(out)


def _grade(ra) -> str:
    if ra.grade == "autoattack":
        return "AutoAttack-grade"
    if ra.grade == "query":
        return f"{', '.join(ra.components)}"
    text = f"upper bound from {'/'.join(c.upper() for c in ra.components)}"
    if ra.threat == "transfer" and ra.grades.get("base") == "autoattack":
        text += ", transferred; AutoAttack-grade for the base"
    return text


# Said of the transfer figures where no query attack could run (AuditReport.query_status "not installed")
UNCHECKED = (" (transfer sets are crafted on the base model and are known to flatter compressed models; to check, "
             "pip install 'edgerobust[query]' and audit again: a short query attack on each runtime then runs by "
             "default, `query_attack` square runs the full one)")


def _at(rows, r):
    """The row of ``rows`` at r's norm and eps, or None."""
    return next((x for x in rows if x.norm == r.norm and math.isclose(x.eps, r.eps, rel_tol=1e-6)), None)


def _vs(r) -> str:
    """``eps E deployed D vs base B (Δ: what it compares)``, or why there is no Δ."""
    head = (f"eps {r.eps_text} deployed {_pct(r.models['deployed'].value)} vs base "
            f"{_pct(r.models['base'].value) if 'base' in r.models else '–'}")
    if r.delta is None:
        return f"{head} ({'no like-for-like Δ' if not r.like else 'no Δ'})"
    return f"{head} ({_pp(r.delta)}" + (f": {r.compares})" if r.compares else ")")


def _covers(robust, r) -> str:
    """The attacks a COMBINED row ``r`` covers, by kind."""
    t, w, q = (_at([x for x in robust if x.threat == k], r) for k in ("transfer", "white-box", "query"))
    kinds = [f"the {'/'.join(c.upper() for c in t.components)} transfer sets (crafted on the base)" if t else None,
             f"the {'/'.join(c.upper() for c in w.components)} white-box sets (crafted on the compressed model)"
             if w else None,
             f"the query attack {', '.join(q.components)} on each runtime" if q else None]
    kinds = [k for k in kinds if k]
    return ", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else (kinds[0] if kinds else "every attack")


def worst_sentence(robust) -> str | None:
    """The per-sample worst case over every attack that ran at one eps (COMBINED: transfer and white-box sets,
    the query attack): the headline's robust accuracy, graded, naming the strongest attack each side faced and
    what its Δ compares, or why it has none (the two sides did not face the same kinds of attack)."""
    rows = [r for r in robust if r.threat == COMBINED and "deployed" in r.models]
    if not rows:
        return None
    shown = rows if len(rows) <= 3 else rows[-1:]
    last = shown[-1]
    strongest = "; ".join(f"{role} {STRENGTH[last.strongest[role]]}" for role in ("deployed", "base")
                          if role in last.strongest)
    unlike = next((r.note for r in reversed(shown) if not r.like and r.note), None)
    return (f"Robust accuracy against every attack (per-sample worst case over {_covers(robust, last)}, on the "
            f"{last.n} evaluation samples all ran on; {GRADES[last.grade]}; the strongest attack faced: {strongest}): "
            + "; ".join(_vs(r) for r in shown) + "." + (f" {unlike[0].upper()}{unlike[1:]}." if unlike else ""))


def _disagree(t, q) -> str | None:
    """What the transfer Δ and the query Δ at one eps say when they disagree, each Δ saying what it compares;
    never one figure against the other."""
    if t is None or t.delta is None or q.delta is None or not t.delta > 0 or not q.delta < t.delta:
        return None
    test = q.paired()
    p = f" (McNemar p {test.p_value:.3g})" if test is not None else ""
    said = (f"At eps {q.eps_text} the transfer sets ({t.compares}) say {_pp(t.delta)}; {q.compares}, "
            f"{_pp(q.delta)}{p}")
    if q.delta < 0 and test is not None and test.p_value < 0.05:
        said += ": under the query attack the deployed model is less robust than the base"
    else:
        said += ": neither shows the deployed model more robust than the base"
    b_t, b_q = t.models.get("base"), q.models.get("base")
    if b_t is not None and b_q is not None and b_t.value is not None and b_q.value is not None and b_q.value > b_t.value:
        said += (f"; the query attack is the weaker one on the base ({_pct(b_q.value)} standing, {_pct(b_t.value)} "
                 "under the sets crafted on it), so neither Δ bounds the deployed model's robustness: the worst "
                 "case over every attack does")
    return said + "."


def robust_sentences(robust, query_status: str | None = None) -> list[str]:
    """The worst case over every attack (worst_sentence), where the per-threat Δs disagree, then robust accuracy per
    threat (per-sample worst case) with its grade and what its Δ compares. ``query_status`` "not installed"
    (AuditReport): the transfer figures say in their sentence how to check them (UNCHECKED)."""
    out, parts, per_threat = [], [], []
    worst = worst_sentence(robust)
    for threat in ("transfer", "white-box", "query"):
        rows = [r for r in robust if r.threat == threat and "deployed" in r.models]
        if not rows:
            continue
        shown = rows if len(rows) <= 3 else rows[-1:]
        text = "; ".join(f"eps {r.eps_text} deployed {_pct(r.models['deployed'].value)} vs base "
                         f"{_pct(r.models['base'].value) if 'base' in r.models else '–'} ({_pp(r.delta)})"
                         for r in shown)
        grades = sorted({_grade(r) for r in shown})
        if threat == "transfer" and query_status == "not installed":
            text += UNCHECKED
        compares = f"; Δ: {shown[-1].compares}" if shown[-1].compares else ""
        parts.append(f"{threat} ({'; '.join(grades)}{compares}): {text}")
    if parts:
        per_threat.append(("Per threat model" if worst else "Robust accuracy")
                          + " (per-sample worst case over every attack at each eps): " + "; ".join(parts) + ".")
    transfer = [r for r in robust if r.threat == "transfer"]
    out += [x for x in (_disagree(_at(transfer, q), q) for q in robust if q.threat == "query") if x]
    return ([worst] if worst else []) + out + per_threat  # the headline's figure, what disagrees, details


def precision_sentence(report) -> str | None:
    """Which precision each model ran in: declared by the runtime, and observed where it is not the CPU provider."""
    parts = []
    for m in report.measurement.models:
        rec = getattr(m, "precision", None)
        if not rec:
            continue
        obs, text = rec.get("observed") or {}, f"{m.role} ({rec['model']} file) {rec['declared']}"
        if "max_rel_diff_vs_cpu" in obs and rec["model"] != "int8":
            reduced = obs["max_rel_diff_vs_cpu"] > FP32_TOLERANCE
            text += (f" (observed: {'REDUCED precision' if reduced else 'fp32'}, outputs within "
                     f"{obs['max_rel_diff_vs_cpu']:.0e} of the CPU provider's fp32)")
        parts.append(text)
    if not parts:
        return None
    providers = sorted({m.precision["provider"] for m in report.measurement.models if getattr(m, "precision", None)})
    return f"Precision that ran on {', '.join(providers)}: " + "; ".join(parts) + "."
