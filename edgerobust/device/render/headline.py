"""The audit's one-paragraph verdict: speedup, clean accuracy, and the worst case per threat model.

The worst case of a threat model is its set with the lowest deployed robust accuracy (not the
smallest Δ): what an attacker of that kind achieves at best. Threat models: **transfer** (sets
crafted on the base model, replayed on the deployed one) and **white-box** (sets crafted on the
compressed model itself, when the bundle has them). Each worst case carries its Δ as defined in
:mod:`edgerobust.device.scores.scoring` (both sides face the same attack), or why it has none. When this host
is not the profile's device, the headline says so first. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgerobust.device.scores.sanity import OVERLAP
from edgerobust.device.runtime.precision import FP32_TOLERANCE

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
        from edgerobust.device.runtime.measure import PROCESS_SPREAD, process_speedups

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
    from edgerobust.device.render.variant_table import better_variant, slower_than_base

    out += [line for line in (slower_than_base(report), better_variant(report), precision_sentence(report)) if line]
    robust = tuple(getattr(report, "robust", ()) or ())
    worst = worst_per_threat(report.sets)
    if robust:
        out += robust_sentences(robust)
    elif not worst:
        out.append("Robustness not audited: no adversarial sets (the warning says how to add them).")
    else:
        out.append("Worst case per threat model (the set where the deployed model scores lowest): "
                   + "; ".join(_worst_text(w) for w in worst) + ".")
    failed = [c.name for c in getattr(report, "sanity", ()) if c.passed is False]
    if failed:
        out.append(f"SANITY CHECKS FAILED ({', '.join(failed)}): the robust accuracies above are upper bounds at best "
                   "(see the warnings).")
    from edgerobust.device.render.estimate_lines import estimate_headline

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


def robust_sentences(robust) -> list[str]:
    """Robust accuracy per threat (per-sample worst case), with its grade, and what contradicts what."""
    out, parts = [], []
    for threat in ("transfer", "white-box", "query"):
        rows = [r for r in robust if r.threat == threat and "deployed" in r.models]
        if not rows:
            continue
        shown = rows if len(rows) <= 3 else rows[-1:]
        text = "; ".join(f"eps {r.eps_text} deployed {_pct(r.models['deployed'].value)} vs base "
                         f"{_pct(r.models['base'].value) if 'base' in r.models else '–'} ({_pp(r.delta)})"
                         for r in shown)
        grades = sorted({_grade(r) for r in shown})
        parts.append(f"{threat} ({'; '.join(grades)}): {text}")
    if parts:
        out.append("Robust accuracy (per-sample worst case over every attack at each eps): " + "; ".join(parts) + ".")
    transfer = {(r.norm, r.eps): r for r in robust if r.threat == "transfer"}
    for q in (r for r in robust if r.threat == "query"):
        t = transfer.get((q.norm, q.eps))
        if t is None or t.delta is None or q.delta is None or not t.delta > 0 > q.delta:
            continue
        test = q.paired()
        if test is not None and test.p_value < 0.05:
            out.append(f"The transfer sets flatter the deployed model at eps {q.eps_text}: they say "
                       f"{_pp(t.delta)} against the base, but queried directly on this runtime it is "
                       f"{_pp(q.delta)} (McNemar p {test.p_value:.3g}), less robust than the base; trust the "
                       "query figure.")
        else:
            out.append(f"At eps {q.eps_text} the transfer sets say {_pp(t.delta)} against the base, the query attack "
                       f"on this runtime {_pp(q.delta)}"
                       + (f" (McNemar p {test.p_value:.3g})" if test is not None else "")
                       + ": neither shows the deployed model more robust than the base.")
    return out


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
