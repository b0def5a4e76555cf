"""The chosen bundle: the best feasible trial compressed into an ordinary bundle, audited in full,
and only then renamed to OUT/best/; the next candidate when its audit misses the budget.

The bundle is built by :func:`edgerobust.workstation.compress.compress` for the profile with the
trial's pruning, fine-tuning and int8 settings and the search's attack sets (crafted on the base, as
the points were scored), its deployed model the trial's precision (``deploy``), and audited by
:func:`edgerobust.edge.audit.audit` on the search's profile (and calibration, with ``estimate``),
exactly as ``edgerobust audit`` would. Its model.onnx is also scored as the trials were (every row,
worst case over the search's sets): the closing line's accuracy is the rebuilt model's, not the trial's.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil

from edgerobust.errors import QualityGateError
from edgerobust.research.optimize import space as S
from edgerobust.research.optimize.trial import score

logger = logging.getLogger(__name__)

CANDIDATES = 3  # full audits tried before the search says no bundle met the budget


def ranked(records: list[dict], aim: str) -> list[dict]:
    """The feasible records (trials, and the reference point), best first: aim robust by robust accuracy
    (then latency), corruption by the pooled corruption accuracy (then latency), speed by latency. A trial halving stopped at its first rung is left out: it was found
    worse than the best trial there, and its figure is from those rows only."""
    ok = [r for r in records if r.get("feasible") and not r.get("halved")]
    if aim == "robust":
        return sorted(ok, key=lambda r: (-r["robust"]["value"], r["check_ms"]))
    if aim == "corruption":
        return sorted([r for r in ok if r.get("corruption")], key=lambda r: (-r["corruption"]["value"], r["check_ms"]))
    return sorted(ok, key=lambda r: (r["check_ms"], -r["robust"]["value"]))


def choose(ctx, records: list[dict]) -> tuple[dict | None, dict | None, list[str]]:
    """(the chosen record, what its full audit measured, the candidates whose audit missed)."""
    missed: list[str] = []
    tmp = ctx.out / ".best-candidate"
    for rec in ranked(records, ctx.cfg.aim)[:CANDIDATES]:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            try:
                _compress(ctx, rec, tmp)
            except QualityGateError as exc:  # rebuilt, a gate (fp16 agreement, the reference's) may fail: the next
                logger.warning(f"{rec['config']}: compressing it again failed a quality gate ({exc}); trying the "
                               f"next candidate")
                missed.append(rec["config"])
                continue
            audited = _audit(ctx, tmp)
            clean, robust, corr = score(ctx, tmp / "model.onnx")  # the rebuilt model, scored as the trials were
            audited.update(clean=dataclasses.asdict(clean), worst_case=dataclasses.asdict(robust),
                           corruption=dataclasses.asdict(corr) if corr is not None else None)
            miss = _misses(ctx, audited)
            if miss:
                logger.warning(f"{rec['config']}: {miss}; trying the next candidate")
                missed.append(rec["config"])
                continue
            best = ctx.out / "best"
            shutil.rmtree(best, ignore_errors=True)
            tmp.rename(best)
        finally:  # a candidate that missed, or a compress or audit that raised, leaves nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
        audited["bundle"] = str(best)
        return rec, audited, missed
    return None, None, missed


def _misses(ctx, audited: dict) -> str | None:
    """Why a candidate's full audit rejects it, or None: the host is not the profile's device (measured),
    or the budget is missed (a speedup budget: the audit's own deployed speedup at batch 1)."""
    from edgerobust.research.optimize.report import fmt_latency

    if not audited.get("host_matches", True):
        return "its full audit says this host is not the profile's device, so its latency is no evidence for it"
    if audited["check_ms"] is None:
        return "its full audit has no latency for it"
    if ctx.cfg.min_speedup is not None and audited["kind"] == "measured":
        sp = audited.get("speedup")
        if sp is None or sp < ctx.cfg.min_speedup:
            return (f"its full audit measured a speedup of {sp if sp is None else f'{sp:.3g}x'} at batch 1, below "
                    f"`min_speedup` {ctx.cfg.min_speedup:g}")
        return None
    if audited["check_ms"] > ctx.budget_ms:
        return f"its full audit gives {fmt_latency(audited, edge=True)}, over the budget of {ctx.budget_ms:.3g} ms"
    return None


def clear_best(out) -> None:
    """Remove a previous run's ``best/`` when this run chose nothing (and say so)."""
    best = out / "best"
    if best.exists():
        shutil.rmtree(best)
        logger.warning(f"removed {best}: a previous run's choice, which no longer meets this run's budget and gates")


def _compress(ctx, rec: dict, out) -> None:
    """The candidate's bundle into ``out``: a trial's settings, or the reference's (compress's defaults)."""
    from edgerobust.workstation.compress import compress
    from edgerobust.workstation.configs import CompressConfig

    if rec.get("reference"):
        from edgerobust.research.optimize.reference import compress_config

        compress(dataclasses.replace(compress_config(ctx, out), attacks=tuple(ctx.cfg.attacks), name="best",
                                     **_corruptions(ctx)))
        return
    p = rec["params"]
    v = S.variant(p, ctx.cfg)
    prepare = dataclasses.replace(ctx.shared.prepare, device=ctx.device)
    quant = {"quant": S.quant(p, ctx.plan)} if p["precision"] == "int8" else {}
    compress(CompressConfig(prepare, prune=v.prune, finetune=v.finetune, **quant, int8=p["precision"] == "int8",
                            fp16=p["precision"] == "fp16", deploy=p["precision"], target=ctx.cfg.profile,
                            attacks=tuple(ctx.cfg.attacks), out=out, name="best", max_prune_drop=None,
                            max_int8_drop=None, min_int8_agreement=None, overwrite=True, **_corruptions(ctx)))


def _corruptions(ctx) -> dict:
    """The search's corruption sets, made into the chosen bundle too (the same seed and rows: the same bytes)."""
    return {"corruptions": ctx.cfg.corruptions, "corruption_severities": ctx.cfg.corruption_severities}


def _audit(ctx, bundle) -> dict:
    """The full audit of ``bundle``: its deployed p50 at batch 1 (or the estimate's band), robust accuracy."""
    from edgerobust.edge.audit import AuditConfig, audit

    report = audit(AuditConfig(model=bundle / "model.onnx", profile=ctx.cfg.profile,
                               allow_fallback=ctx.cfg.estimate is not None,
                               show_progress=False, measure_memory=False, variants=False,
                               estimate=ctx.cfg.estimate, out_dir=bundle / "reports" / "optimize-audit"))
    robust = {f"{r.threat} {r.eps_text}": dataclasses.asdict(r.models["deployed"])
              for r in report.robust if "deployed" in r.models}
    if ctx.cfg.estimate is not None:
        m = report.estimate.model("deployed") if report.estimate is not None else None
        return {"kind": "estimated", "p50_ms": m and m.p50_ms, "low_ms": m and m.low_ms, "high_ms": m and m.high_ms,
                "check_ms": m and m.high_ms, "robust": robust}
    lat = report.measurement.model("deployed").latency_at(1)
    p50 = lat.p50_ms if lat is not None else None
    sp = next((s.p50 for s in report.measurement.speedup if s.batch_size == 1), None)
    return {"kind": "measured", "p50_ms": p50, "check_ms": p50, "robust": robust, "speedup": sp,
            "host_matches": report.host_matches_profile}


def closest_error(result) -> QualityGateError:
    """One message: no point met the budget, and which came closest (the fastest point found)."""
    timed = [r for r in result.trials + ([result.reference] if result.reference else []) if r.get("check_ms") is not None]
    if not timed:
        return QualityGateError(f"No point met the budget of {result.budget_ms:.3g} ms p50: none was built.",
                                fix="Raise the budget, or widen the search space (`space`).")
    from edgerobust.research.optimize.report import fmt_latency

    fast = min(timed, key=lambda r: r["check_ms"])
    which = "the reference point" if fast.get("reference") else f"trial {fast['number']}"
    runs = f"runs at {fmt_latency(fast['latency'], edge=True)}"
    if fast.get("speedup") is not None:
        runs += f", {fast['speedup']:.3g}x the base's speed"
    if fast.get("within_budget", fast["check_ms"] <= result.budget_ms):  # every such point failed the accuracy gate
        gate = "`max_robust_drop`" if result.aim == "speed" else "`max_clean_drop`"
        return QualityGateError(
            f"No point met the budget of {result.budget_ms:.3g} ms p50 and the accuracy gate. The fastest found, "
            f"{fast['config']} ({which}), {runs} but fails the gate.", why=fast.get("why"),
            fix=f"Loosen {gate}, allow more fine-tuning (`space`), or run more `trials`.")
    tried = f" The full audit of {', '.join(result.tried)} missed it." if result.tried else ""
    return QualityGateError(
        f"No point met the budget of {result.budget_ms:.3g} ms p50. The fastest found, {fast['config']} "
        f"({which}), {runs}.{tried}",
        why=fast.get("why") or "Its audit missed the budget.",
        fix="Raise the budget, allow higher sparsity (`space`), or run more `trials`.")
