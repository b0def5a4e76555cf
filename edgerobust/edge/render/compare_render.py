"""A Comparison (:mod:`edgerobust.edge.compare`) in the terminal and as compare.html.

Both show the same four things: the devices (a fallback marked), latency and speedup per
device, accuracy per set per device, and the agreement of the deployed model between each pair
of devices with the most disputed samples. The common-corruption sets every report shares are
shown as one pooled row in the accuracy and the agreement tables, and one sentence per pair
naming the set where most answers differ (per set: compare.json). The page adds inline SVG
figures of the latency, the accuracy and the disagreement (:mod:`edgerobust.edge.render.svg`);
like report.html it fetches nothing. Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgerobust import ui
from edgerobust.edge.files.atomic import atomic_file
from edgerobust.edge.files.npzio import write_json
from edgerobust.edge.compare import Agreement, Comparison, PooledAgreement, to_json
from edgerobust.edge.render.speed_lines import ms
from edgerobust.edge.render.report_html import html_table, page
from edgerobust.edge.render.svg import SERIES, Chart, esc, figure, log_ticks, nice_ticks
from edgerobust.edge.render.tables import pct, pval


ESTIMATED_NOTE = ("Rows marked ESTIMATED are predicted from that device's calibration file (edgerobust calibrate), "
                  "with the band in brackets: estimates, not measurements, and left out of the figure.")


def _short(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "–"


def bundle_line(c: Comparison) -> str:
    b = c.bundle
    return (f"Bundle {b.get('name') or '?'}: the same deployed model ({_short(b.get('deployed_sha256'))}), base "
            f"({_short(b.get('base_sha256'))}) and eval set ({_short(b.get('eval_sha256'))}) in all "
            f"{len(c.devices)} reports.")


def device_name(c: Comparison, label: str) -> str:
    """The label, marked where the device's figures are not the profile's (fallback, another host)."""
    d = c.device(label)
    marks = (["FALLBACK"] if d.fallback else []) + ([] if d.host_matches_profile else ["not the profile's host"])
    return f"{label} ({', '.join(marks)})" if marks else label


def device_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    head = ["device", "host", "ran on", "deployed ran in", "audited (UTC)"]
    return head, [[device_name(c, d.label), d.host, ", ".join(p.replace("ExecutionProvider", "") for p in d.providers),
                   d.precision, d.created[:16].replace("T", " ")] for d in c.devices]


def latency_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """The measured devices, then the estimated ones (named ESTIMATED, the deployed p50 with its band)."""
    head = ["batch", "device", "base p50", "deployed p50", "speedup"]
    rows = sorted(c.latency, key=lambda x: (x.batch_size, [d.label for d in c.devices].index(x.device)))
    out = [[str(x.batch_size), device_name(c, x.device), ms(x.base_p50_ms), ms(x.deployed_p50_ms),
            "–" if x.speedup is None else f"{x.speedup:.2f}×"] for x in rows]
    for e in sorted(getattr(c, "estimated", ()), key=lambda e: e.batch_size):
        band = f" [{ms(e.deployed_low_ms)}–{ms(e.deployed_high_ms)}]" if e.deployed_low_ms and e.deployed_high_ms else ""
        out.append([str(e.batch_size), f"{e.device}: calibration {e.calibration}", ms(e.base_p50_ms),
                    ms(e.deployed_p50_ms) + band, "–" if e.speedup is None else f"{e.speedup:.2f}×"])
    return head, out


def pooled_label(c: Comparison) -> str:
    """The first cell of the pooled corruption row (its footnote: pooled_note)."""
    return f"corrupt ×{len(c.corruption.sets)}*"  # short: the agreement table's 8 columns fill 80 characters


def pooled_note(c: Comparison) -> str:
    k = len(c.corruption.sets)
    return (f"* {k} common-corruption set{'s' if k != 1 else ''} in every report, pooled: each eval row counts "
            f"once per set (rows repeat across sets), so no interval is given; per set: compare.json.")


def accuracy_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """A row per set: deployed accuracy (base in brackets) per device; the corruption sets pooled in one row."""
    labels = [d.label for d in c.devices]
    sets = [s for s in dict.fromkeys(a.set for a in c.accuracy) if not c.is_corruption(s)]
    by = {(a.set, a.device): a for a in c.accuracy}
    rows = []
    for name in sets:
        n = next(a.deployed.n for a in c.accuracy if a.set == name)
        rows.append([name, str(n)] + [f"{pct(by[name, lab].deployed, False)} ({pct(by[name, lab].base, False)})"
                                      for lab in labels])
    if c.corruption is not None:
        pool = {p.device: p for p in c.corruption.accuracy}
        rows.append([pooled_label(c), str(pool[labels[0]].deployed.n)] + [
            f"{pct(pool[lab].deployed, False)} ({pct(pool[lab].base, False)})" for lab in labels])
    return ["set", "n"] + [device_name(c, lab) for lab in labels], rows


def pairs(c: Comparison) -> list[tuple[str, str]]:
    return list(dict.fromkeys((a.a, a.b) for a in c.agreement))


def plain_groups(c: Comparison, a: str, b: str) -> list[Agreement]:
    """Devices a and b on every shared set but the corruption sets (those are pooled)."""
    return [g for g in c.agreement if (g.a, g.b) == (a, b) and not c.is_corruption(g.set)]


def pooled_agreement(c: Comparison, a: str, b: str) -> PooledAgreement | None:
    return next((p for p in c.corruption.agreement if (p.a, p.b) == (a, b)), None) if c.corruption else None


def agreement_rows(c: Comparison, a: str, b: str) -> tuple[list[str], list[list[str]]]:
    """A row per set, the corruption sets pooled in one row (no interval and no test: pooled_note)."""
    head = ["set", "n", "differ", "95% CI", "base differs", "A only right", "B only right", "McNemar p"]
    rows = [[g.set, str(g.n), pct(g.disagree, False), f"{100 * g.disagree.ci_low:.1f}–{100 * g.disagree.ci_high:.1f}",
             pct(g.base_disagree, False), str(g.mcnemar.only_a),
             str(g.mcnemar.only_b), pval(g.mcnemar.p_value)] for g in plain_groups(c, a, b)]
    p = pooled_agreement(c, a, b)
    if p is not None:
        rows.append([pooled_label(c), str(p.n), pct(p.disagree, False), "–", pct(p.base_disagree, False),
                     str(p.only_a), str(p.only_b), "–"])
    return head, rows


def corruption_line(c: Comparison, p: PooledAgreement) -> str:
    """One sentence over the shared corruption sets of one pair of devices."""
    k = len(c.corruption.sets)
    where = f"{k} corruption set{'s' if k != 1 else ''}"
    if p.worst is None:
        return f"Under {where} ({p.n} samples pooled) the deployed model gives the same answers on {p.a} and {p.b}."
    return (f"Under {where} the deployed model answers {p.disagree.k} of {p.n} pooled samples differently "
            f"({pct(p.disagree, False)}); most on {p.worst}: {pct(p.worst_disagree, False)} "
            f"(McNemar p {pval(p.worst_p_value)}); the base model differs on {p.base_disagree.k}.")


def left_out(c: Comparison) -> str:
    """The sets not in every report (or not the same file), corruption sets counted, not named ("" for none)."""
    k = len(c.corruption_left_out)
    named = [n for n in c.sets_left_out if n not in c.corruption_left_out]
    return ", ".join(named + ([f"{k} corruption set{'s' if k != 1 else ''}"] if k else []))


def agreement_line(groups: list[Agreement]) -> str:
    """One sentence over every set of one pair of devices."""
    if not groups:
        return "No set in common."
    a, b = groups[0].a, groups[0].b
    k, n, kb = sum(g.disagree.k for g in groups), sum(g.n for g in groups), sum(g.base_disagree.k for g in groups)
    if k == 0:
        head = f"The deployed model gives the same answer on {a} and {b} for all {n} samples"
    else:
        worst = max(groups, key=lambda g: g.disagree.value or 0)
        head = (f"The deployed model answers {k} of {n} samples differently on {a} and {b} "
                f"({100 * k / n:.1f}%; most on {worst.set}: {pct(worst.disagree, False)})")
    return f"{head}; the base model differs on {kb}."


def disputed_lines(g: Agreement) -> list[str]:
    return [f"#{d.index} (eval row {d.row}, label {d.label}): A says {d.pred[0]} (margin {d.margin[0]:.3g}), "
            f"B says {d.pred[1]} (margin {d.margin[1]:.3g})" for d in g.disputed]


def _table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    return ui.table(title, head, rows)


def render(c: Comparison, console: Console) -> None:
    """The comparison as terminal tables."""
    console.print(bundle_line(c), markup=False, highlight=False)
    for d in c.devices:
        if d.fallback:
            console.print(f"[bold yellow]WARNING: FALLBACK[/bold yellow] {escape(d.label)}: the deployed model ran on "
                          f"{escape(', '.join(d.providers))}, not on the profile's providers.", highlight=False)
    console.print(_table("Devices", *device_rows(c)))
    console.print(_table("Latency and speedup per device (p50)", *latency_rows(c)))
    if getattr(c, "estimated", ()):
        console.print(ESTIMATED_NOTE, markup=False, highlight=False)
    console.print(_table("Accuracy per set per device: deployed (base)", *accuracy_rows(c)))
    if c.corruption is not None:
        console.print(f"  {pooled_note(c)}", markup=False, highlight=False)
    for a, b in pairs(c):
        console.print(_table(f"Agreement of the deployed model: A = {a} vs B = {b}", *agreement_rows(c, a, b)))
        groups = plain_groups(c, a, b)
        console.print(f"  {agreement_line(groups)}", markup=False, highlight=False)
        if pooled_agreement(c, a, b) is not None:
            console.print(f"  {corruption_line(c, pooled_agreement(c, a, b))}", markup=False, highlight=False)
        for g in groups:
            if g.disputed:
                console.print(f"  {g.set}, most disputed (most confident first):", markup=False, highlight=False)
                for line in disputed_lines(g):
                    console.print(f"    {line}", markup=False, highlight=False)
    if left_out(c):
        console.print(f"  sets not in every report (or not the same file), left out: {left_out(c)}", markup=False, highlight=False)


# =============================================================================================
# compare.html


def _color(c: Comparison, label: str) -> str:
    return SERIES[[d.label for d in c.devices].index(label) % len(SERIES)]


def _hbars(title: str, rows: list[tuple[str, list[tuple[str, object, str]]]], xmax: float, xlabel: str) -> str:
    """Grouped horizontal bars of proportions with CIs: rows of (name, [(series, Proportion, color)])."""
    per = max(len(s) for _, s in rows)
    h = 0.8 / per
    c = Chart(title, (0, xmax), (len(rows), 0), xlabel=xlabel, width=640, right=52,
              height=70 + (12 + 14 * per) * len(rows) + 30, left=int(min(260, 14 + 6.3 * max(len(n) for n, _ in rows))))
    c.xticks(nice_ticks(0, xmax, 5))
    c.yticks([i + 0.5 for i in range(len(rows))], [n for n, _ in rows], grid=False)
    for i, (_, series) in enumerate(rows):
        for j, (name, p, color) in enumerate(series):
            if p.value is None:
                continue
            y0 = i + 0.1 + j * h
            c.rect(0, 100 * p.value, y0, y0 + h * 0.9, color, label=name, title=f"{name}: {pct(p)}")
            c.errbar(y0 + h * 0.45, 100 * p.ci_low, 100 * p.ci_high, "#000", horizontal=True, cap=2.5)
            c.text(100 * p.value, y0 + h * 0.45, f"{100 * p.value:.1f}%", dx=4, dy=3, size=9)
    return c.render()


def _latency_chart(c: Comparison) -> str:
    rows = [x for x in sorted(c.latency, key=lambda x: x.batch_size) if x.deployed_p50_ms and x.base_p50_ms]
    if not rows:
        return ""
    lo, hi = min(x.deployed_p50_ms for x in rows) * 0.5, max(x.base_p50_ms for x in rows) * 1.6
    ch = Chart("p50 latency per device and batch size", (lo, hi), (len(rows), 0), xlabel="milliseconds per batch "
               "(log scale)", xlog=True, width=700, right=104, height=70 + 34 * len(rows) + 30,
               left=int(min(300, 14 + 6.3 * max(len(f"batch {x.batch_size} · {x.device}") for x in rows))))
    ch.xticks(log_ticks(lo, hi))
    ch.yticks([i + 0.5 for i in range(len(rows))], [f"batch {x.batch_size} · {x.device}" for x in rows], grid=False)
    for i, x in enumerate(rows):
        ch.rect(lo, x.base_p50_ms, i + 0.12, i + 0.46, "#4d4d4d", label="base", title=f"base {ms(x.base_p50_ms)}")
        ch.rect(lo, x.deployed_p50_ms, i + 0.54, i + 0.88, _color(c, x.device), label=f"deployed on {x.device}",
                title=f"deployed {ms(x.deployed_p50_ms)}")
        if x.speedup:
            ch.parts.append(f'<text x="{ch.width - ch.right + 8}" y="{ch.y(i + 0.5) + 4:.1f}" font-size="11" '
                            f'font-weight="600">{x.speedup:.2f}× speedup</text>')
    return figure("Latency and speedup per device", [ch.render()],
                  "Grey: base; colored: the deployed model on each device. Speedup: base p50 / deployed p50.")


def _figures(c: Comparison) -> dict[str, str]:
    figs = {"latency": _latency_chart(c)}
    sets = [s for s in dict.fromkeys(a.set for a in c.accuracy) if not c.is_corruption(s)]
    by = {(a.set, a.device): a for a in c.accuracy}
    acc = [(s, [(d.label, by[s, d.label].deployed, _color(c, d.label)) for d in c.devices]) for s in sets]
    if acc:
        figs["accuracy"] = figure("Accuracy of the deployed model per set and device", [_hbars(
            "Deployed accuracy (95% Wilson CI)", acc, 100, "accuracy (%)")])
    panels = []
    for a, b in pairs(c):
        groups = plain_groups(c, a, b)
        top = max([100 * g.disagree.ci_high for g in groups] + [100 * g.base_disagree.ci_high for g in groups] + [1.0])
        panels.append(_hbars(f"{a} vs {b}", [(g.set, [("deployed", g.disagree, "#d62728"),
                                                        ("base", g.base_disagree, "#4d4d4d")]) for g in groups],
                             min(100.0, top * 1.15), "samples whose predicted class differs (%)"))
    if panels:
        figs["agreement"] = figure("Cross-runtime disagreement per set", panels,
                                   "The share of samples the two devices' models answer differently, with its 95% CI.")
    return figs


def to_html(c: Comparison) -> str:
    title = f"edgerobust compare: {c.bundle.get('name') or 'bundle'} on {', '.join(d.label for d in c.devices)}"
    figs = _figures(c)
    dh, drows = device_rows(c)
    parts = [f"<h1>{esc(title)}</h1>", f'<p class="finding">{esc(bundle_line(c))}</p>']
    parts += [f'<p class="warn strong">Warning: {esc(d.label)} fell back to {esc(", ".join(d.providers))}: its '
              f'figures are not the profiled device\'s.</p>' for d in c.devices if d.fallback]
    parts += ["<h2>Devices</h2>", html_table(dh, drows, row_class=["fallback" if d.fallback else "" for d in c.devices]),
              "<h2>Latency</h2>", figs.get("latency", ""), html_table(*latency_rows(c), left=2),
              f"<p class=meta>{esc(ESTIMATED_NOTE)}</p>" if getattr(c, "estimated", ()) else "",
              "<h2>Accuracy</h2>", figs.get("accuracy", ""), html_table(*accuracy_rows(c))]
    if c.corruption is not None:
        parts.append(f"<p class=meta>{esc(pooled_note(c))}</p>")
    parts += ["<h2>Cross-runtime agreement</h2>", figs.get("agreement", "")]
    for a, b in pairs(c):
        pool = pooled_agreement(c, a, b)
        parts += [f"<h3>A = {esc(a)} vs B = {esc(b)}</h3>",
                  f'<p class="finding">{esc(agreement_line(plain_groups(c, a, b)))}</p>',
                  f'<p class="finding">{esc(corruption_line(c, pool))}</p>' if pool else "",
                  html_table(*agreement_rows(c, a, b))]
        for g in plain_groups(c, a, b):
            if g.disputed:
                lis = "".join(f"<li>{esc(line)}</li>" for line in disputed_lines(g))
                parts.append(f"<p><b>{esc(g.set)}</b>, most disputed samples (most confident first):</p><ul>{lis}</ul>")
    parts.append("<p class=meta>McNemar p: exact test of the deployed model's correctness on A against B, paired by "
                 "sample. Margins: top-1 minus top-2 output of the deployed model on each device.</p>")
    if left_out(c):
        parts.append(f"<p class=meta>Left out (not in every report, or not the same file): {esc(left_out(c))}</p>")
    return page(title, parts)


def write_html(c: Comparison, out: str | os.PathLike) -> Path:
    """compare.json and compare.html into ``out`` (created); return the folder."""
    from edgerobust.errors import UsageError

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "compare.html") as tmp:
            tmp.write_text(to_html(c), encoding="utf-8")
        write_json(out / "compare.json", to_json(c))
    except OSError as exc:
        raise UsageError(f"Cannot write the comparison into '{out}': {exc.strerror or exc}.",
                         fix="Pass `out` naming a writable folder.") from exc
    return out
