"""One trial of the budget search, cheap before dear: bound, build, derive, gate, time, halve, score.

1. A lower bound on latency before anything is built, for uniform pruning: the base's p50 (measured
   on this host, or the low edge of its predicted band) x the MACs uniform pruning leaves at most,
   ``(1 - s)^2``, x :data:`REDUCED_BEST` for int8 and fp16. A point whose bound misses the budget
   is skipped (Optuna: pruned), with the reason. Global and MRS ratios may cut some layers far more
   than ``s``: no bound holds before pruning, so those points are always built.
2. The pruned, fine-tuned fp32 model is a content-addressed sweep point
   (:mod:`edgerobust.research.sweep_points`), built on the runner (this process or a Ray task) and
   reused when drawn again; the trial's precision is derived from it (:mod:`.derive`).
3. The clean gate (aim robust) first: a point below it, or an fp16 model below compress's fp16
   agreement gate, is not replayed against the attack sets.
4. Latency: measured with the audit's interleaved method against the base on this host
   (:func:`edgerobust.research.sweep_eval.measure_speedups`), or predicted on the calibrated device
   with its band (:func:`edgerobust.edge.estimate.predict.predict_model`), the budget checked against
   the band's upper edge; a ``min_speedup`` budget measured here is the base's p50 over the point's
   from that same interleaved run.
5. Robust accuracy as the audit counts it: per sample, the worst case over every attack set,
   replayed on the profile's ONNX Runtime session, with a Wilson interval. With halving, on a fixed
   subset of rows first (:func:`first_rung`): a point over the budget stops there, and ``halt`` (the
   search's Optuna pruner) may stop a point that is worse than the best one on those rows.
6. With ``corruptions``, a point scored on every row also gets its accuracy pooled over the
   common-corruption sets (:mod:`edgerobust.research.corruption_axis`): aim corruption's objective.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerobust.edge.files.npzio import json_shape_error
from edgerobust.research.optimize import space as S
from edgerobust.research.optimize.report import fmt_latency

logger = logging.getLogger(__name__)

REDUCED_BEST = 0.25  # the most int8 (or fp16) has been seen to cut a model's latency: the bound stays optimistic
FIRST_RUNG_MIN = 64  # rows of the first rung (halving): a quarter of the evaluation rows, at least this many
_NUM, _OPT = (int, float), (int, float, type(None))
_ACC = (type(None), {"value": _OPT, "ci_low": _OPT, "ci_high": _OPT, "k": _OPT, "n": _OPT})
RECORD_SHAPE = {  # a trial's record as a rerun reads it back from the study: the ranking, the front, the report
    "config": str, "why": (type(None), str), "halved": (type(None), str), "check_ms": _OPT, "bound_ms": _OPT,
    "speedup": _OPT, "clean": _ACC, "robust": _ACC, "corruption": _ACC,
    "latency": (type(None), {"kind": str, "p50_ms": _OPT, "low_ms": _OPT, "high_ms": _OPT, "base_p50_ms": _OPT}),
    "params": (type(None), {"sparsity": _NUM, "ratios": str, "round_to": int, "mode": str, "epochs": int,
                            "precision": str, "calibration": str, "keep_fp32": str})}


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
    plan: object  # the profile's TargetPlan (int8 preset, stem, runtime)
    precisions: tuple = ()
    calibration: object = None
    reference_robust: float | None = None
    rows: np.ndarray | None = None  # the rows every set holds, in the seeded order halving reads them
    sets: list = field(default_factory=list)
    corruption_sets: list = field(default_factory=list)  # loaded once from shared.corruptions
    base_corruption: object = None  # Proportion (no interval) or None without corruption sets


def record_error(rec) -> str | None:
    """Where a trial record read back from the study departs from what :func:`evaluate` writes and the search
    reads (``record.robust.value``), or None. A number that is not finite is a damage too."""
    bad = json_shape_error(rec, RECORD_SHAPE, "record")
    if bad or "config" not in rec:
        return bad or "record.config"
    try:
        json.dumps(rec, allow_nan=False)
    except ValueError:
        return "record, with a number that is not finite,"
    lat, timed, feasible = rec.get("latency") or {}, rec.get("check_ms") is not None, bool(rec.get("feasible"))
    need = ["latency.low_ms", "latency.high_ms"] * (lat.get("kind") == "estimated" and lat.get("p50_ms") is not None)
    need += ["latency.kind", "latency.p50_ms", "clean.value"] * timed + ["check_ms", "robust.value"] * feasible
    need += ["robust.n"] * bool(rec.get("halved")) + [f"{k}.value" for k in ("robust", "corruption") if timed and rec.get(k)]
    need += [f"{k}.ci_high" for k in ("clean", "robust", "corruption") if (rec.get(k) or {}).get("ci_low") is not None]
    int8 = (rec.get("params") or {}).get("precision") == "int8"
    need += [f"params.{k}" for k in ("sparsity", "ratios", "round_to", "mode", "epochs", "precision")
             + ("calibration", "keep_fp32") * int8] * feasible  # what the chosen one is compressed again with
    for path in need:
        v = rec
        for key in path.split("."):
            v = v.get(key) if isinstance(v, dict) else None
        if v is None:
            return f"record.{path}"
    return None


def integrity_check(db: Path) -> None:
    """SQLite's own check of a study's storage (a damaged page or index is found here, not by a write in a
    trial); ValueError where it finds one."""
    import contextlib
    import sqlite3

    if db.is_file():
        with contextlib.closing(sqlite3.connect(db)) as con:
            found = con.execute("PRAGMA integrity_check").fetchall()
        if found != [("ok",)]:
            raise ValueError(f"SQLite's integrity check says {'; '.join(str(r[0]) for r in found[:3])[:300]}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def stored_error(study, trials) -> str | None:
    """What of a study read back the search, or Optuna's sampler and pruner, cannot use (a damaged study.db), or
    None; ValueError where a stored parameter is not of its own distribution's kind."""
    if len(study.directions) != 1:
        return "its study holds no single objective"
    seen: dict = {}
    for t in trials:
        if "record" in t.user_attrs and (e := record_error(t.user_attrs["record"])):
            return f"trial {t.number}'s {e} is not what the search writes"
        if not all(map(_number, t.constraints.values())):
            return f"trial {t.number} holds constraints that are not numbers"
        if not all(isinstance(k, int) and _number(v) for k, v in t.intermediate_values.items()):
            return f"trial {t.number} holds first-rung outcomes that are not numbers by row"
        if t.state.name == "COMPLETE" and (len(t.values or ()) != 1 or not _number(t.values[0])):
            return f"trial {t.number} holds no single objective value"
        for name, dist in t.distributions.items():
            dist.to_internal_repr(t.params[name])  # ValueError where the value is not of the distribution's kind
            if seen.setdefault(name, dist) != dist:
                return f"trial {t.number} holds a parameter '{name}' unlike the other trials'"
    return None


def load_sets(ctx: Context) -> list:
    """The transfer sets, loaded once; ``ctx.rows``: the rows all of them hold, in a seeded order."""
    if not ctx.sets:
        from edgerobust.edge.files.bundle import AdvSet

        ctx.sets = [AdvSet.load(ctx.out / rel) for rel in ctx.shared.transfer.values()]
        rows = np.arange(len(ctx.ev.y))
        for adv in ctx.sets:
            rows = np.intersect1d(rows, adv.idx)
        ctx.rows = np.random.default_rng(ctx.cfg.prepare.seed).permutation(rows)
    return ctx.sets


def first_rung(ctx: Context) -> int:
    """How many of ``ctx.rows`` halving scores first: a quarter, at least FIRST_RUNG_MIN (all: no halving)."""
    n = len(ctx.rows)
    if not ctx.cfg.halving or ctx.cfg.aim != "robust":
        return n
    return min(n, max(FIRST_RUNG_MIN, -(-n // 4)))


def robust_on(ctx: Context, session, clean_pred: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row, robust or not: right on the clean sample and on every set (the worst case)."""
    from edgerobust.edge.scores.replay import predict

    ok = clean_pred[rows] == ctx.ev.y[rows]
    for adv in load_sets(ctx):
        pos = {int(i): j for j, i in enumerate(adv.idx)}
        sel = np.array([pos[int(r)] for r in rows], dtype=np.int64)
        pred = predict(session, adv.x[sel], 256) if len(sel) else np.zeros(0, dtype=np.int64)
        ok &= pred == adv.y[sel]
    return ok


def open_model(ctx: Context, path: Path):
    """(the profile's session on ``path``, its clean predictions, clean accuracy)."""
    from edgerobust.edge.audit import resolve_profile
    from edgerobust.edge.runtime.sessions import open_sessions
    from edgerobust.edge.scores.replay import predict
    from edgerobust.edge.scores.stats import accuracy

    prof, _ = resolve_profile(ctx.cfg.profile)
    # accuracy only with ``estimate`` (latency is predicted elsewhere); measured, the profile's own providers
    session = open_sessions({"model": path}, prof, allow_fallback=ctx.calibration is not None)["model"]
    clean_pred = predict(session, ctx.ev.x, 256)
    return session, clean_pred, accuracy(clean_pred, ctx.ev.y)


def score(ctx: Context, path: Path) -> tuple:
    """(clean, worst-case robust, pooled corruption or None) accuracy of the ONNX model at ``path`` on every row."""
    from edgerobust.edge.scores.stats import proportion

    session, clean_pred, clean = open_model(ctx, path)
    load_sets(ctx)
    ok = robust_on(ctx, session, clean_pred, ctx.rows)
    return clean, proportion(int(ok.sum()), len(ok)), corruption(ctx, session)


def corruption(ctx: Context, session):
    """The session's accuracy pooled over the search's corruption sets; None without them."""
    from edgerobust.research import corruption_axis as C

    if not ctx.shared.corruptions:
        return None
    if not ctx.corruption_sets:
        ctx.corruption_sets = C.load(ctx.out, ctx.shared.corruptions)
    return C.pooled(ctx.corruption_sets, C.replay(session, ctx.corruption_sets))


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


def lower_bound_ms(ctx: Context, p: dict) -> float | None:
    """An optimistic p50 before building a uniform point (None for global and MRS ratios: no bound)."""
    if p["ratios"] != "uniform":
        return None
    base = ctx.base_latency["low_ms"] or ctx.base_latency["p50_ms"]
    return base * (1 - p["sparsity"]) ** 2 * (REDUCED_BEST if p["precision"] in ("int8", "fp16") else 1.0)


def build(ctx: Context, p: dict) -> tuple[dict, bool]:
    """The point's fp32 record (built, or reused from disk) and whether it was reused."""
    from edgerobust.research.sweep import run_points
    from edgerobust.research.sweep_points import PointTask, point_key

    sc = S.sweep_config(p, ctx.cfg, ctx.out)
    v = sc.variants[0]
    task = PointTask(sc, v, ctx.shared, point_key(sc, v, ctx.shared), ctx.device)
    records, reused = run_points([task], ctx.runner)
    return {**records[0], "folder": task.folder}, bool(reused)


def evaluate(ctx: Context, p: dict, halt=None) -> dict:
    """One trial's record: params, latency, clean and robust accuracy, feasible or not and why.
    ``halt(rows, ok)``: after the first rung, the reason to stop this point there, or None."""
    from edgerobust.research.optimize.derive import derive

    rec = {"params": p, "config": S.label(p), "state": "complete"}
    bound = lower_bound_ms(ctx, p)
    rec["bound_ms"], rec["bound_kind"] = bound, ctx.base_latency["kind"]
    if bound is not None and bound > ctx.budget_ms:
        return {**rec, "state": "skipped", "feasible": False, "latency": None, "gate_failed": False,
                "why": f"its optimistic latency, {bound:.3g} ms (the base's x MACs"
                       f"{' x ' + p['precision'] if p['precision'] != 'fp32' else ''}), already misses the budget "
                       f"of {ctx.budget_ms:.3g} ms: not built"}
    record, reused = build(ctx, p)
    fp32 = record["models"][0]
    d = derive(ctx, fp32["path"], p)
    rec.update(reused=reused, model=d["path"], macs=fp32["macs"], macs_reduction=fp32["macs_reduction"])
    return measure(ctx, rec, ctx.out / d["path"], halt=halt, fp16_agreement=d["fp16_agreement"])


def measure(ctx: Context, rec: dict, path: Path, halt=None, fp16_agreement: float | None = None,
            reference: bool = False) -> dict:
    """Clean accuracy (and the gates), latency, then robust accuracy (halved when asked), judged."""
    from edgerobust.edge.scores.stats import proportion
    from edgerobust.workstation.quantize.variants import FP16_MIN_AGREEMENT

    session, clean_pred, clean = open_model(ctx, path)
    drop = 100 * (ctx.base_clean.value - clean.value)
    rec.update(clean=clean, clean_drop=drop, robust=None)
    if fp16_agreement is not None and fp16_agreement < FP16_MIN_AGREEMENT:
        rec["why"] = (f"fp16 gives fp32's top-1 answer on {100 * fp16_agreement:.1f}% of the samples, below "
                      f"compress's fp16 gate ({100 * FP16_MIN_AGREEMENT:.0f}%): not attacked")
    elif not reference and ctx.cfg.aim != "speed" and drop > ctx.cfg.max_clean_drop:
        rec["why"] = (f"clean accuracy {100 * clean.value:.1f}% is {drop:.1f} points below the base's, more "
                      f"than `max_clean_drop` {ctx.cfg.max_clean_drop:g}: not attacked")
    rec["latency"] = latency(ctx, path.relative_to(ctx.out).as_posix())
    if rec.get("why") is None:
        load_sets(ctx)
        n0 = len(ctx.rows) if reference else first_rung(ctx)
        ok = robust_on(ctx, session, clean_pred, ctx.rows[:n0])
        stop = None
        if n0 < len(ctx.rows):
            over = budget(ctx, rec["latency"])[1]
            stop = ("no latency estimate (the calibration lacks a kernel)" if over is None
                    else f"over the budget: robust accuracy from the first {n0} of {len(ctx.rows)} rows only"
                    if over > 0
                    else halt(ctx.rows[:n0], ok) if halt is not None else None)
            if stop is None:
                ok = np.concatenate([ok, robust_on(ctx, session, clean_pred, ctx.rows[n0:])])
        rec.update(robust=proportion(int(ok.sum()), len(ok)), robust_n=len(ok), halved=stop,
                   corruption=corruption(ctx, session) if stop is None else None)
    return judge(ctx, rec)


def budget(ctx: Context, lat: dict) -> tuple[float | None, float | None, float | None]:
    """(the figure compared with the budget, how far over it (> 0: missed), the speedup) of a latency."""
    check = lat["high_ms"] if lat["kind"] == "estimated" else lat["p50_ms"]
    if check is None:
        return None, None, None
    if ctx.cfg.min_speedup is not None and lat["kind"] == "measured" and lat.get("base_p50_ms"):
        speedup = lat["base_p50_ms"] / lat["p50_ms"]  # against the base measured in the same interleaved run
        return check, ctx.cfg.min_speedup - speedup, speedup
    return check, check - ctx.budget_ms, None


def judge(ctx: Context, rec: dict) -> dict:
    """Feasible or not, and why: the budget (against the band's upper edge when estimated), then the gate."""
    lat, cfg = rec["latency"], ctx.cfg
    check, over, speedup = budget(ctx, lat)
    if check is None:
        rec.update(feasible=False, gate_failed=False, over_budget=1.0, within_budget=False,
                   why=f"the calibration lacks {', '.join(lat.get('missing') or ['a kernel'])}: no estimate")
        return rec
    rec.update(check_ms=check, over_budget=over, within_budget=over <= 0)
    why, gate = [], []
    if speedup is not None:
        rec["speedup"] = speedup
        if over > 0:
            why.append(f"{fmt_latency(lat)} is a speedup of {speedup:.3g}x over the base measured with it "
                       f"({lat['base_p50_ms']:.3g} ms measured), below `min_speedup` {cfg.min_speedup:g}")
    elif over > 0:
        why.append(f"{fmt_latency(lat, edge=True)} misses the budget of {ctx.budget_ms:.3g} ms")
    if rec.get("why"):
        gate.append(rec["why"])
    elif cfg.aim != "speed" and rec["clean_drop"] > cfg.max_clean_drop:
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
