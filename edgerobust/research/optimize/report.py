"""The search's outputs: OUT/pareto.json (every trial) and OUT/report.html (latency against robust
accuracy, clean accuracy as the marks' size, the budget line, measured and estimated points apart),
and the closing line. The SVG is drawn with :class:`edgerobust.edge.render.svg.Chart`, inline, torch-free.
"""
from __future__ import annotations

import html
from pathlib import Path

from edgerobust.edge.files.atomic import atomic_file
from edgerobust.edge.files.npzio import write_json
from edgerobust.edge.render.svg import Chart, esc, nice_ticks
from edgerobust.research.plots import PAGE_CSS, pareto_front
from edgerobust.research.points import to_json

PARETO_TYPE = "edgerobust.research.optimize"


def axis(aim: str) -> str:
    """The record key the aim's accuracy axis reads: the pooled corruption accuracy for aim corruption."""
    return "corruption" if aim == "corruption" else "robust"


def front(trials: list[dict], aim: str = "robust") -> set[int]:
    """Trial numbers on the latency x accuracy front (lower latency, higher robust, or corruption, accuracy)."""
    k = axis(aim)
    timed = [t for t in trials if t.get("check_ms") is not None and t.get(k)]
    idx = pareto_front([(-t["check_ms"], t[k]["value"]) for t in timed])
    return {timed[i]["number"] for i in idx}


def write_outputs(result, cfg) -> None:
    """pareto.json and report.html into ``result.out`` (each written whole)."""
    out = Path(result.out)
    on_front = front(result.trials, cfg.aim)
    trials = [dict(t, front=t["number"] in on_front) for t in sorted(result.trials, key=lambda t: t["number"])]
    table = trials + ([result.reference] if result.reference else [])
    from edgerobust.configio import to_dict

    data = {"config": to_dict(cfg), "budget_ms": result.budget_ms, "aim": cfg.aim, "base": result.base,
            "latency": result.latency_kind, "trials": trials, "reference": result.reference,
            "chosen": result.chosen, "audited": result.audited, "not_chosen_after_audit": result.tried,
            "closing": closing_line(result), "seconds": result.seconds}
    write_json(out / "pareto.json", to_json(PARETO_TYPE, data))
    with atomic_file(out / "report.html") as tmp:
        tmp.write_text(_page(result, cfg, table), encoding="utf-8")


def _pct(p: dict | None) -> str:
    if not p or p.get("value") is None:
        return "-"
    if p.get("ci_low") is None:  # pooled over corruption sets: rows repeat, no interval
        return f"{100 * p['value']:.1f}%"
    return f"{100 * p['value']:.1f}% [{100 * p['ci_low']:.1f}, {100 * p['ci_high']:.1f}]"


def fmt_latency(lat: dict | None, edge: bool = False, bound_ms: float | None = None, bound_kind: str | None = None) -> str:
    """Every latency the search prints, naming its kind: ``0.4 ms (measured)``, ``0.4 ms (estimated, band
    0.3-0.5 ms)``, with ``edge`` (the figure the budget is compared with) ``0.5 ms (estimated: the band upper
    edge; p50 0.4 ms, band 0.3-0.5 ms)``, and unbuilt ``≥ 0.1 ms (bound from the measured base, not built)``."""
    if not lat or lat.get("p50_ms") is None:
        if bound_ms is None:
            return "-"
        return f"≥ {bound_ms:.3g} ms (bound from the {bound_kind or 'measured'} base, not built)"
    if lat.get("kind") != "estimated":
        return f"{lat['p50_ms']:.3g} ms (measured)"
    band = f"band {lat['low_ms']:.3g}-{lat['high_ms']:.3g} ms"
    if edge:
        return f"{lat['high_ms']:.3g} ms (estimated: the band upper edge; p50 {lat['p50_ms']:.3g} ms, {band})"
    return f"{lat['p50_ms']:.3g} ms (estimated, {band})"


def _lat(t: dict) -> str:
    return fmt_latency(t.get("latency"), bound_ms=t.get("bound_ms"), bound_kind=t.get("bound_kind"))


def closing_line(result) -> str:
    """The chosen config, its latency, clean and robust accuracy with intervals (the rebuilt bundle's,
    scored as the trials were), and its gain over the reference."""
    c, ref = result.chosen, result.reference
    if c is None:
        return "no point met the budget"
    a = result.audited or {}
    audited = f"; its full audit: {fmt_latency(a, edge=True)}" if a.get("p50_ms") is not None else ""
    if a.get("speedup") is not None:
        audited += f", {a['speedup']:.3g}x the base's speed"
    clean, robust = a.get("clean") or c["clean"], a.get("worst_case") or c["robust"]
    corr = a.get("corruption") or c.get("corruption")
    whose = "the rebuilt bundle's " if a.get("worst_case") else ""
    k = axis(result.aim)
    mine, what = (corr, "corruption accuracy") if k == "corruption" else (robust, "robust accuracy")
    gain = ""
    if c.get("reference"):
        gain = "; no trial beat the reference point"
    elif ref and ref.get(k) and mine:
        d = 100 * (mine["value"] - ref[k]["value"])
        gain = f"; {d:+.1f} points {what} over the reference ({ref['config']}: {_pct(ref[k])}, {_lat(ref)})"
    elif ref and ref.get("why") and not ref.get(k):
        gain = f"; no reference to compare with ({ref['why']})"
    which = "the reference point" if c.get("reference") else f"trial {c['number']}"
    pooled = f", under common corruptions {_pct(corr)} (pooled over the sets)" if corr else ""
    return (f"chosen: {c['config']} ({which}): {_lat(c)} (budget {result.budget_ms:.3g} ms){audited}; "
            f"{whose}clean {_pct(clean)}, robust (worst case over the sets) {_pct(robust)}{pooled}{gain}")


def _robust_cell(t: dict) -> str:
    if t.get("halved"):
        return f"{_pct(t.get('robust'))} (first {t['robust']['n']} rows)"
    return _pct(t.get("robust"))


def _svg(result, trials: list[dict]) -> str:
    k = axis(result.aim)
    timed = [t for t in trials if t.get("check_ms") is not None and t.get(k)]
    xs = [t["latency"]["p50_ms"] for t in timed] + [result.budget_ms]
    hi = max(xs) * 1.15 if xs else 1.0
    what = "corruption accuracy (pooled)" if k == "corruption" else "robust accuracy (worst case)"
    ch = Chart(f"Latency against {what.split(' (')[0]}", (0.0, hi), (0.0, 1.0), xlabel="p50 latency at batch 1 (ms)",
               ylabel=what, width=640, height=380)
    ch.xticks(nice_ticks(0.0, hi))
    ch.yticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ch.vline(result.budget_ms, "#d62728", label=f"budget {result.budget_ms:.3g} ms")
    cleans = [t["clean"]["value"] for t in timed]
    lo = min(cleans, default=0.0)
    span = (max(cleans, default=1.0) - lo) or 1.0
    for t in timed:
        lat, r = t["latency"], t[k]
        color = "#2ca02c" if t.get("feasible") else "#999999"
        if lat["kind"] == "estimated":  # a hollow mark with its band
            ch.errbar(r["value"], lat["low_ms"], lat["high_ms"], color, horizontal=True)
        size = 3 + 6 * (t["clean"]["value"] - lo) / span  # clean accuracy, from the lowest plotted to the highest
        fill = "none" if lat["kind"] == "estimated" else color
        ch.parts.append(f'<circle cx="{ch.x(lat["p50_ms"]):.1f}" cy="{ch.y(r["value"]):.1f}" r="{size:.1f}" '
                        f'fill="{fill}" stroke="{color}" stroke-width="1.5"><title>{esc(t["config"])}</title></circle>')
        if t.get("reference") or (result.chosen and not t.get("reference") and t["number"] == result.chosen["number"]):
            ch.text(lat["p50_ms"], r["value"], "reference" if t.get("reference") else "chosen", dx=8, dy=-6)
    ch.legend_items += [("feasible", "#2ca02c", False), ("infeasible", "#999999", False)]
    return ch.render()


def _page(result, cfg, trials: list[dict]) -> str:
    kind = "estimated on the calibrated device (hollow marks, with their band)" if result.latency_kind == "estimated" \
        else "measured on this host with the audit's interleaved method (filled marks)"
    rows = "".join(
        f"<tr><td>{'reference' if t.get('reference') else t['number']}</td><td>{html.escape(t['config'])}</td>"
        f"<td>{html.escape(_lat(t))}</td><td>{_pct(t.get('clean'))}</td><td>{_robust_cell(t)}</td>"
        + (f"<td>{_pct(t.get('corruption'))}</td>" if cfg.corruptions else "") +
        f"<td>{'yes' if t.get('feasible') else 'no'}{' (front)' if t.get('front') else ''}</td>"
        f"<td>{html.escape(t.get('why') or '')}</td></tr>" for t in trials)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Budget search</title><style>{PAGE_CSS}</style>"
            f"</head><body><h1>Budget search of {html.escape(Path(str(cfg.prepare.model)).name)}</h1>"
            f"<p class=meta>aim {cfg.aim}; budget {result.budget_ms:.3g} ms p50 on {html.escape(cfg.profile)}; latency "
            f"{kind}; mark size: clean accuracy; {len(result.trials)} trials and the reference point (not a trial).</p>"
            f"<p class=finding>{html.escape(closing_line(result))}</p>"
            f"<div>{_svg(result, trials)}</div><h2>Trials</h2><table><tr><th>trial</th><th>config</th><th>latency</th>"
            f"<th>clean</th><th>robust</th>{'<th>corruptions (pooled)</th>' if cfg.corruptions else ''}<th>feasible</th>"
            f"<th>why not</th></tr>{rows}</table>"
            f"<p class=meta>A robust figure marked <em>first N rows</em> is from the first rung only: the point was "
            f"over the budget, or worse than the best point on those rows, and was not scored on the rest.</p>"
            f"</body></html>")
