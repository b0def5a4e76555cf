"""One trial of the budget search, cheap before dear: estimate, build, gate, score, time.

1. The latency lower bound before anything is built: the base's p50 (measured on this host, or
   predicted from ``estimate``'s calibration) scaled by the point's MACs, ``(1 - s)^2``, and by
   :data:`INT8_BEST` for int8. A point whose bound misses the budget is skipped (Optuna: pruned),
   with the reason.
2. The point is built through the sweep's content-addressed points (``edgerobust.research.sweep_points``),
   on the runner (this process or a Ray task): an identical point is reused, not rebuilt.
3. The clean gate (aim robust): the point's clean accuracy on the profile's session comes first; a
   point below the gate is not replayed against the attack sets (the sweep point stores its per-set
   scores when it is built, so the saving is the worst-case replay, not the build).
4. Robust accuracy as the audit counts it (:mod:`edgerobust.edge.scores.robust`): per sample, the worst
   case over every attack set, replayed on the profile's ONNX Runtime session, with a Wilson interval.
5. Latency: with the audit's interleaved method against the base on this host
   (:func:`edgerobust.research.sweep_eval.measure_speedups`), or predicted on the calibrated device
   with its band (:func:`edgerobust.edge.estimate.predict.predict_model`); the budget is checked
   against the band's upper edge. A ``min_speedup`` budget on this host is checked as the base's p50
   over the point's from that same interleaved run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.research.optimize import space as S
from edgerobust.research.optimize.report import fmt_latency

logger = logging.getLogger(__name__)

INT8_BEST = 0.25  # the most int8 has been seen to cut a CPU model's latency: the bound stays optimistic


@dataclass
class Context:
    """What every trial of one run reads: decided once by the search."""

    cfg: object  # OptimizeConfig
    out: Path
    shared: object  # sweep_points.Shared
    ev: object  # EvalSet
    base: object  # sweep_eval.Built
    base_latency: dict  # p50_ms, low_ms, high_ms, kind ("measured" | "estimated")
    base_clean: object  # Proportion
    base_robust: object  # Proportion
    budget_ms: float
    runner: object
    device: str
    calibration: object = None
    reference_robust: float | None = None
    records: dict = field(default_factory=dict)  # trial number -> record (this run's)


def worst_case(session, ev, clean_pred, adv_sets) -> object:
    """Per-sample worst-case robust accuracy of one session: a row is robust only when it is right
    clean and on every set (over the rows all the sets hold)."""
    from edgerobust.edge.scores.replay import predict
    from edgerobust.edge.scores.stats import proportion

    rows = np.arange(len(ev.y))
    for adv in adv_sets:
        rows = np.intersect1d(rows, adv.idx)
    ok = clean_pred[rows] == ev.y[rows]
    for adv in adv_sets:
        pos = {int(i): j for j, i in enumerate(adv.idx)}
        sel = np.array([pos[int(r)] for r in rows], dtype=np.int64)
        pred = predict(session, adv.x[sel], 256) if len(sel) else np.zeros(0, dtype=np.int64)
        ok &= pred == adv.y[sel]
    return proportion(int(ok.sum()), int(len(rows)))


def load_sets(ctx: Context) -> list:
    from edgerobust.edge.files.bundle import AdvSet

    return [AdvSet.load(ctx.out / rel) for rel in ctx.shared.transfer.values()]


def score(ctx: Context, path: Path, gate=None) -> tuple:
    """(clean, worst-case robust) accuracy of the ONNX model at ``path`` on the profile's session;
    robust is None, the sets not replayed, when ``gate(clean)`` says the point fails its gate."""
    from edgerobust.edge.audit import resolve_profile
    from edgerobust.edge.runtime.sessions import open_sessions
    from edgerobust.edge.scores.replay import predict
    from edgerobust.edge.scores.stats import accuracy

    prof, _ = resolve_profile(ctx.cfg.profile)
    # accuracy only with ``estimate`` (latency is predicted elsewhere); measured, the profile's own providers
    session = open_sessions({"model": path}, prof, allow_fallback=ctx.calibration is not None)["model"]
    clean_pred = predict(session, ctx.ev.x, 256)
    clean = accuracy(clean_pred, ctx.ev.y)
    if gate is not None and gate(clean):
        return clean, None
    return clean, worst_case(session, ctx.ev, clean_pred, load_sets(ctx))


def latency(ctx: Context, rel: str) -> dict:
    """The point's p50 at batch 1: measured against the base, or estimated with its band."""
    if ctx.calibration is not None:
        from edgerobust.edge.estimate.predict import predict_model

        m = predict_model(ctx.calibration, "model", ctx.out / rel)
        return {"kind": "estimated", "p50_ms": m.p50_ms, "low_ms": m.low_ms, "high_ms": m.high_ms,
                "missing": list(m.missing)}
    from edgerobust.research.sweep_eval import Built, measure_speedups

    probe = Built("point", "", 0.0, "", rel, 0, 0, 1.0)
    _, p50 = measure_speedups([ctx.base, probe], ctx.out, ctx.cfg.profile, ctx.cfg.latency_rounds)
    return {"kind": "measured", "p50_ms": p50["point"], "low_ms": None, "high_ms": None, "base_p50_ms": p50["base"]}


def lower_bound_ms(ctx: Context, p: dict) -> float:
    """An optimistic p50 before building: the base's (its band's low edge when estimated) x MACs x int8."""
    base = ctx.base_latency["low_ms"] or ctx.base_latency["p50_ms"]
    return base * (1 - p["sparsity"]) ** 2 * (INT8_BEST if p["precision"] == "int8" else 1.0)


def build(ctx: Context, p: dict) -> tuple[dict, bool]:
    """The point's record (built, or reused from disk) and whether it was reused."""
    from edgerobust.research.sweep import run_points
    from edgerobust.research.sweep_points import PointTask, point_key

    sc = S.sweep_config(p, ctx.cfg, ctx.out)
    v = sc.variants[0]
    task = PointTask(sc, v, ctx.shared, point_key(sc, v, ctx.shared), ctx.device)
    records, reused = run_points([task], ctx.runner)
    return {**records[0], "folder": task.folder}, bool(reused)


def evaluate(ctx: Context, p: dict, reference: bool = False) -> dict:
    """One trial's record: params, latency, clean and robust accuracy, feasible or not and why."""
    rec = {"params": p, "config": S.label(p), "reference": reference, "state": "complete"}
    bound = lower_bound_ms(ctx, p)
    rec["bound_ms"], rec["bound_kind"] = bound, ctx.base_latency["kind"]
    if not reference and bound > ctx.budget_ms:
        return {**rec, "state": "skipped", "feasible": False, "latency": None, "gate_failed": False,
                "why": f"its optimistic latency, {bound:.3g} ms (the base's x MACs{' x int8' if p['precision'] == 'int8' else ''}), "
                       f"already misses the budget of {ctx.budget_ms:.3g} ms: not built"}
    record, reused = build(ctx, p)
    model = next(m for m in record["models"] if m["precision"] == p["precision"])
    rec.update(reused=reused, model=model["path"], macs=model["macs"], macs_reduction=model["macs_reduction"])
    drop = lambda c: 100 * (ctx.base_clean.value - c.value)  # noqa: E731
    fails = None if reference or ctx.cfg.aim != "robust" else (lambda c: drop(c) > ctx.cfg.max_clean_drop)
    clean, robust = score(ctx, ctx.out / model["path"], gate=fails)
    rec.update(clean=clean, clean_drop=drop(clean), robust=robust)
    if robust is None:  # stopped at the clean gate, before the attack sets
        rec["why"] = (f"clean accuracy {100 * clean.value:.1f}% is {rec['clean_drop']:.1f} points below the base's, more "
                      f"than `max_clean_drop` {ctx.cfg.max_clean_drop:g}: not attacked")
    rec["latency"] = latency(ctx, model["path"])
    return judge(ctx, rec)


def judge(ctx: Context, rec: dict) -> dict:
    """Feasible or not, and why: the budget (against the band's upper edge when estimated), then the gate."""
    lat, cfg = rec["latency"], ctx.cfg
    check = lat["high_ms"] if lat["kind"] == "estimated" else lat["p50_ms"]
    if check is None:
        rec.update(feasible=False, gate_failed=False, over_budget=1.0, within_budget=False, why=f"the calibration lacks {', '.join(lat.get('missing') or ['a kernel'])}: no estimate")
        return rec
    rec["check_ms"] = check
    why, gate = [], []
    speedup = cfg.min_speedup is not None and lat["kind"] == "measured" and lat.get("base_p50_ms")
    if speedup:  # against the base measured in the same interleaved run, not the run's first base measurement
        rec["speedup"] = lat["base_p50_ms"] / lat["p50_ms"]
        rec["over_budget"] = cfg.min_speedup - rec["speedup"]
        if rec["over_budget"] > 0:
            why.append(f"{fmt_latency(lat)} is a speedup of {rec['speedup']:.3g}x over the base measured with it "
                       f"({lat['base_p50_ms']:.3g} ms measured), below `min_speedup` {cfg.min_speedup:g}")
    else:
        rec["over_budget"] = check - ctx.budget_ms
        if check > ctx.budget_ms:
            why.append(f"{fmt_latency(lat, edge=True)} misses the budget of {ctx.budget_ms:.3g} ms")
    rec["within_budget"] = rec["over_budget"] <= 0
    if rec.get("why"):
        gate.append(rec["why"])
    elif cfg.aim == "robust" and rec["clean_drop"] > cfg.max_clean_drop:
        gate.append(f"clean accuracy {rec['clean_drop']:.1f} points below the base's (gate {cfg.max_clean_drop:g})")
    elif cfg.aim == "speed" and ctx.reference_robust is not None and rec["robust"] is not None:
        drop = 100 * (ctx.reference_robust - rec["robust"].value)
        if drop > cfg.max_robust_drop:
            gate.append(f"robust accuracy {drop:.1f} points below the reference's (gate {cfg.max_robust_drop:g})")
    rec["gate_failed"] = bool(gate)
    why += gate
    rec["feasible"] = not why
    rec["why"] = "; ".join(why) or None
    return rec
