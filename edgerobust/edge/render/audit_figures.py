"""The figures of an audit's report.html, as inline SVG (:mod:`edgerobust.edge.render.svg`).

* accuracy per set, base and deployed, with 95% Wilson intervals;
* accuracy against eps, one panel per attack whose sets share it (eps 0 is the clean set);
* latency per model and batch size: p50 to p90 box, p99 whisker, mean dot, speedup beside;
* file size and peak memory of each model against the profile's budgets.

Each function returns the HTML of one <figure>, or "" when there is nothing to draw.
Torch-free.
"""
from __future__ import annotations

from edgerobust.edge.render.svg import ROLE_COLORS, Chart, figure, log_ticks, nice_ticks

ROLES = ("base", "deployed")


def _label_margin(labels) -> int:
    return int(min(260, 14 + 6.3 * max((len(s) for s in labels), default=4)))


def accuracy_per_set(sets) -> str:
    """Horizontal bars: each model's accuracy on each set's inputs, with its 95% CI."""
    if not sets:
        return ""
    names = [s.name for s in sets]
    n = len(sets)
    c = Chart("Accuracy per set (95% Wilson CI)", (0, 100), (n, 0), xlabel="accuracy on the set's inputs (%)",
              height=70 + 34 * n + 30, width=640, left=_label_margin(names), right=48)
    c.xticks(nice_ticks(0, 100, 5))
    c.yticks([i + 0.5 for i in range(n)], names, grid=False)
    for i, s in enumerate(sets):
        for j, role in enumerate(ROLES):
            p = getattr(s, role).accuracy
            if p.value is None:
                continue
            y0, y1 = i + 0.12 + 0.38 * j, i + 0.46 + 0.38 * j
            c.rect(0, 100 * p.value, y0, y1, ROLE_COLORS[role], label=role,
                   title=f"{role} on {s.name}: {100 * p.value:.1f}% [{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]")
            c.errbar((y0 + y1) / 2, 100 * p.ci_low, 100 * p.ci_high, "#000", horizontal=True, cap=3)
            c.text(100 * p.value, (y0 + y1) / 2, f"{100 * p.value:.1f}%", dx=4, dy=-2, size=9)
    note = ("White-box sets: both models answer inputs crafted against the compressed model; "
            "the like-for-like Δ is in the table below.") if any(getattr(s, "whitebox", False) for s in sets) else ""
    return figure("Robust accuracy per set, base and deployed", [c.render()], note)


def _by_attack(sets) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in sets:
        if s.kind == "adversarial" and isinstance(s.attack.get("eps"), (int, float)):
            out.setdefault(str(s.attack.get("attack", "?")), []).append(s)
    return out


def accuracy_vs_eps(sets) -> str:
    """A panel per attack: accuracy against eps, a line per model (white-box sets dashed)."""
    clean = next((s for s in sets if s.kind == "clean"), None)
    attacks = _by_attack(sets)
    if not attacks:
        return ""
    panels = []
    for attack, group in attacks.items():
        eps_max = max(s.attack["eps"] for s in group)
        c = Chart(f"{attack.upper()}", (0, eps_max * 1.08 or 1), (0, 100), xlabel="eps (pixels in [0, 1]; 0 = clean)",
                  ylabel="accuracy (%)", width=430, height=290)
        ticks = sorted({(s.attack["eps"], s.attack.get("eps_text") or f"{s.attack['eps']:.3g}") for s in group})
        c.xticks([0] + [e for e, _ in ticks], ["clean"] + [t for _, t in ticks], rotate=True)
        c.yticks(nice_ticks(0, 100, 5))
        for source in dict.fromkeys(s.source for s in group):
            line = sorted((s for s in group if s.source == source), key=lambda s: s.attack["eps"])
            white = source.startswith("whitebox")
            for role in ROLES if not white else ("deployed",):
                pts = ([clean] if clean else []) + line
                xs = [0 if p.kind == "clean" else p.attack["eps"] for p in pts]
                accs = [getattr(p, role).accuracy for p in pts]
                label = f"{role}" + (f" ({source})" if white else "")
                c.line(xs, [100 * a.value if a.value is not None else None for a in accs], ROLE_COLORS[role],
                       label=label, dash=white)
                for x, a in zip(xs, accs):
                    if a.value is not None:
                        c.errbar(x, 100 * a.ci_low, 100 * a.ci_high, ROLE_COLORS[role], cap=3)
        panels.append(c.render())
    return figure("Accuracy against attack strength, per attack",
                  panels, "Transfer sets solid (crafted on the base); white-box sets dashed; whiskers: 95% CI.")


def latency(m) -> str:
    """Latency per model and batch size (p50–p90 box, p99 whisker, mean dot), speedup beside."""
    rows = []
    for i, bs in enumerate(b for b in m.settings.batch_sizes if b not in m.skipped_batch_sizes):
        for model in m.models:
            if i < len(model.latency):
                rows.append((bs, model.role, model.latency[i]))
    if not rows:
        return ""
    lo = min(r[2].p50_ms for r in rows) * 0.7
    hi = max(r[2].p99_ms for r in rows) * 1.5
    logx = hi / lo > 20
    n = len(rows)
    labels = [f"batch {bs} · {role}" for bs, role, _ in rows]
    c = Chart("Latency per model and batch size", (lo if logx else 0, hi), (n, 0), xlabel="milliseconds per batch"
              + (" (log scale)" if logx else ""), height=70 + 28 * n + 30, width=700, left=_label_margin(labels),
              xlog=logx, right=104)
    ticks = log_ticks(lo, hi) if logx else nice_ticks(0, hi, 6)
    c.xticks(ticks)
    c.yticks([i + 0.5 for i in range(n)], labels, grid=False)
    speed = {s.batch_size: s.p50 for s in m.speedup}
    for i, (bs, role, lat) in enumerate(rows):
        color = ROLE_COLORS.get(role, "#1f77b4")
        c.rect(lat.p50_ms, lat.p90_ms, i + 0.22, i + 0.78, color, label=f"{role}: p50–p90",
               title=f"{role} at batch {bs}: p50 {lat.p50_ms:.3g} ms, p90 {lat.p90_ms:.3g}, p99 {lat.p99_ms:.3g}")
        c.errbar(i + 0.5, lat.p90_ms, lat.p99_ms, color, horizontal=True, cap=5)
        x50 = c.x(lat.p50_ms)
        c.parts.append(f'<line x1="{x50:.1f}" y1="{c.y(i + 0.12):.1f}" x2="{x50:.1f}" y2="{c.y(i + 0.88):.1f}" '
                       'stroke="#000" stroke-width="2"/>')
        c.parts.append(f'<circle cx="{c.x(lat.mean_ms):.1f}" cy="{c.y(i + 0.5):.1f}" r="2.6" fill="#fff" '
                       f'stroke="#000"/>')
        if role == "deployed" and bs in speed:
            c.parts.append(f'<text x="{c.width - c.right + 8}" y="{c.y(i) + 3:.1f}" font-size="11" '
                           f'font-weight="600">{speed[bs]:.2f}× speedup</text>')
    runs = min(lat.runs for _, _, lat in rows)
    return figure("Latency distributions", [c.render()],
                  f"Box from p50 (black tick) to p90, whisker to p99, dot at the mean; at least {runs} timed runs "
                  "per model and batch size, interleaved. Speedup: base p50 / deployed p50.")


def _resource_panel(title: str, unit: str, values: list[tuple[str, float | None]], budget: float | None) -> str:
    known = [v for _, v in values if v is not None]
    top = max(known + ([budget] if budget else []), default=1.0) * 1.25 or 1.0
    c = Chart(title, (0, top), (len(values), 0), xlabel=unit, width=420, height=80 + 40 * len(values),
              left=_label_margin([r for r, _ in values]), right=24)
    c.xticks(nice_ticks(0, top, 4))
    c.yticks([i + 0.5 for i in range(len(values))], [r for r, _ in values], grid=False)
    for i, (role, v) in enumerate(values):
        if v is None:
            c.text(0, i + 0.5, "not measured", dx=4, dy=3, color="#888")
            continue
        c.rect(0, v, i + 0.2, i + 0.8, ROLE_COLORS.get(role, "#1f77b4"))
        c.text(v, i + 0.5, f"{v:.3g} {unit}", dx=4, dy=3)
    if budget is not None:
        c.vline(budget, "#ff7f0e", label=f"budget {budget:g} {unit}")
    return c.render()


def resources(m, budgets) -> str:
    """File size and peak memory of each model, with the profile's budgets for the deployed model."""
    limit = {b.name: b.limit for b in budgets}
    size = _resource_panel("Model file size", "MiB", [(x.role, x.size_mb) for x in m.models], limit.get("model_size_mb"))
    mem = _resource_panel("Peak memory (fresh process)", "MiB",
                          [(x.role, x.memory.peak_mb if x.memory else None) for x in m.models],
                          limit.get("peak_memory_mb"))
    return figure("Size and memory against the budgets", [size, mem],
                  "Budgets apply to the deployed model; peak memory is the resident set of a fresh process.")


def all_figures(report) -> list[str]:
    """Every figure of the page that has something to draw, in page order (robustness, then speed)."""
    figs = [accuracy_per_set(report.sets), accuracy_vs_eps(report.sets), latency(report.measurement),
            resources(report.measurement, report.budgets)]
    return [f for f in figs if f]

