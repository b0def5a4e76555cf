"""Plots and the self-contained HTML page of a sweep or a recipe (matplotlib, Agg backend).

Three kinds of figure, one file per threat (transfer / whitebox):

* ``acc_vs_eps_<threat>.png``: accuracy against eps, one panel per attack, one line per model
  (eps 0 is the clean set);
* ``robust_vs_macs_<threat>.png``: accuracy against the *realized* MACs reduction (measured on
  the pruned model, log scale) at one eps, one panel per attack (and one for clean), one line
  per (group, precision), each point labelled with the sparsity that was requested. Rounding
  can make two sparsities compress alike, so the x axis is what pruning did, not what was asked;
* ``robust_vs_speedup_<threat>.png``: robust accuracy against measured speedup at one eps, the
  Pareto front (no model both faster and more robust) highlighted.

With common-corruption sets (``corruptions``), two more: ``acc_vs_severity_corruption.png``
(accuracy against severity, a panel per corruption) and ``corruption_vs_speedup.png`` (accuracy
pooled over every corruption set against measured speedup, with its Pareto front).

Every plotting function returns the points it drew (key, x, y), and :func:`write_report`
stores them next to the data in the JSON, so a reader can check each drawn value against the
numbers. Over several seeds, points are means and error bars one standard deviation.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from edgerobust.edge.files.npzio import write_json
from edgerobust.edge.files.atomic import atomic_file
from edgerobust.errors import require
from edgerobust.research.corruption_axis import MEAN_EPS, MEAN_THREAT, THREAT
from edgerobust.research.points import Point, find, pct, to_json

PRECISION_STYLE = {"fp32": ("-", "o"), "int8": ("--", "s")}
BASE_COLOR = "black"


@dataclass(frozen=True)
class Drawn:
    """One value a figure shows: the point's key, and x and y as drawn (y in percent)."""

    key: str
    x: float
    y: float


@dataclass(frozen=True)
class Figure:
    file: str
    title: str
    points: tuple[Drawn, ...]


def _plt():
    mpl = require("matplotlib")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _attacks(points: list[Point], threat: str) -> list[str]:
    return list(dict.fromkeys(p.attack for p in points if p.threat == threat))


def _err(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _colors(names: list[str]) -> dict[str, object]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _panels(n: int, title: str, width: float = 4.6, height: float = 3.8):
    """A grid of at most two panels per row, so every figure has the same scale on the page."""
    plt = _plt()
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 2.8, height * rows + 0.4), squeeze=False,
                             sharey=True)
    fig.suptitle(title, fontsize=12)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _label(p: Point) -> str:
    return p.model


def plot_acc_vs_eps(points: list[Point], threat: str, path: Path, corruption: bool = False) -> Figure:
    """Accuracy (%) against eps, a panel per attack, a line per model; eps 0 is clean accuracy.
    ``corruption``: the common-corruption sets, a panel per corruption against its severity."""
    attacks = _attacks(points, threat)
    models = list(dict.fromkeys(p.model for p in points))
    colors = _colors([m for m in models if m != "base"])
    n_per_run = points[0].n if points else 0
    what = "corruption severity" if corruption else "attack strength"
    title = f"Accuracy against {what} ({threat} sets, n={n_per_run}" + _seeds_note(points) + ")"
    fig, axes = _panels(len(attacks), title)
    drawn: list[Drawn] = []
    for ax, attack in zip(axes, attacks):
        sets = find(points, threat=threat, attack=attack)
        eps_ticks = sorted({(p.eps, p.eps_text) for p in sets})
        for m in models:
            clean = find(points, model=m, threat="clean")
            line = sorted(clean + find(sets, model=m), key=lambda p: p.eps)
            if len(line) < 2:
                continue
            ref = line[-1]
            ls, mk = PRECISION_STYLE.get(ref.precision, ("-", "o"))
            color = BASE_COLOR if m == "base" else colors[m]
            xs, ys = [p.eps for p in line], [100 * p.accuracy for p in line]
            yerr = [_err(p.accuracy_std) or 0.0 for p in line] if any(p.accuracy_std for p in line) else None
            ax.errorbar(xs, ys, yerr=yerr, label=m, color=color, linestyle=ls, marker=mk, markersize=4,
                        linewidth=2.2 if m == "base" else 1.4, capsize=3)
            drawn.extend(Drawn(p.key, p.eps, 100 * p.accuracy) for p in line)
        ax.set_title(attack.replace("_", " ") if corruption else attack.upper(), fontsize=11)
        ax.set_xticks([0.0] + [e for e, _ in eps_ticks])
        ax.set_xticklabels(["clean"] + [t for _, t in eps_ticks], rotation=30, fontsize=9)
        ax.set_xlabel("severity (1 mildest, 5 strongest)" if corruption else "eps (pixel units, [0, 1] images)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    for ax in axes[::2]:
        ax.set_ylabel("accuracy (%)")
    _legend(fig, axes)
    _save(fig, path)
    return Figure(path.name, title, tuple(drawn))


def _legend(fig, axes) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False,
                   title="model")
    fig.tight_layout()


def _seeds_note(points: list[Point]) -> str:
    s = max((p.seeds for p in points), default=1)
    return f", mean ± sd over {s} seeds" if s > 1 else ""


def _lines(points: list[Point]) -> list[tuple[str, str]]:
    """(group, precision) of every line of the MACs-reduction plot, in first-seen order."""
    return list(dict.fromkeys((p.group, p.precision) for p in points if p.model != "base"))


def plot_robust_vs_macs(points: list[Point], threat: str, eps_text: str, path: Path) -> Figure:
    """Accuracy (%) against the realized MACs reduction at ``eps_text``: a panel for clean and per
    attack, a line per (group, precision), every point labelled with its requested sparsity; fp32
    lines start at the base (1x), int8 lines at the unpruned int8 model."""
    attacks = _attacks(points, threat)
    panels = [("clean", "clean", "0")] + [(a, threat, eps_text) for a in attacks]
    lines = _lines(points)
    colors = _colors([f"{g} {p}" for g, p in lines])
    title = f"Accuracy against realized MACs reduction at eps {eps_text} ({threat} sets{_seeds_note(points)})"
    fig, axes = _panels(len(panels), title)
    drawn: list[Drawn] = []
    for ax, (attack, th, et) in zip(axes, panels):
        at = find(points, threat=th, attack=attack, eps_text=et)
        for group, prec in lines:
            line = [p for p in at if p.group == group and p.precision == prec and p.model != "base"]
            if not any(p.sparsity == 0 for p in line):
                anchor = [p for p in at if p.sparsity == 0 and p.precision == prec
                          and (p.model == "base" or prec == "int8")]
                line = anchor[:1] + line
            line.sort(key=lambda p: (p.macs_reduction, p.sparsity))
            if not line:
                continue
            ls, mk = PRECISION_STYLE.get(prec, ("-", "o"))
            label = f"{group} {prec}".strip()
            yerr = [_err(p.accuracy_std) or 0.0 for p in line] if any(p.accuracy_std for p in line) else None
            ax.errorbar([p.macs_reduction for p in line], [100 * p.accuracy for p in line], yerr=yerr, label=label,
                        color=colors[f"{group} {prec}"], linestyle=ls, marker=mk, markersize=5, capsize=3)
            for p in line:
                if p.sparsity > 0:
                    ax.annotate(f"s={p.sparsity:g}", (p.macs_reduction, 100 * p.accuracy), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=colors[f"{group} {prec}"])
            drawn.extend(Drawn(p.key, p.macs_reduction, 100 * p.accuracy) for p in line)
        base = find(at, model="base")
        if base:
            ax.plot([1.0], [100 * base[0].accuracy], marker="*", markersize=13, color=BASE_COLOR, linestyle="none",
                    label="base (unpruned fp32)", zorder=5)
            drawn.append(Drawn(base[0].key, 1.0, 100 * base[0].accuracy))
        ax.set_title("clean" if attack == "clean" else f"{attack.upper()} eps {eps_text}", fontsize=11)
        _log_x(ax)
        ax.set_xlabel("MACs reduction, realized (x fewer than the base; labels: requested sparsity)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[::2]:
        ax.set_ylabel("accuracy (%)")
    _legend(fig, axes)
    _save(fig, path)
    return Figure(path.name, title, tuple(drawn))


def _log_x(ax) -> None:
    """A log x axis labelled in plain multiples (1x, 2x, 5x, 10x, ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ticks = [m * 10 ** k for k in range(-1, 5) for m in (1, 2, 5) if lo <= m * 10 ** k <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_front(pts: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (higher is better), by x."""
    front = []
    for i, (x, y) in enumerate(pts):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(pts) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: pts[i][0])


def plot_robust_vs_speedup(points: list[Point], threat: str, eps_text: str, path: Path, ylabel: str = "robust accuracy",
                           title: str = "") -> Figure:
    """Robust accuracy (%) at ``eps_text`` against measured speedup, a panel per attack, with the
    Pareto front drawn as a thick line through its models."""
    attacks = _attacks(points, threat)
    lines = _lines(points)
    colors = _colors([f"{g} {p}" for g, p in lines])
    title = title or (f"Robust accuracy at eps {eps_text} against measured speedup (batch 1; {threat} sets"
                      f"{_seeds_note(points)})")
    fig, axes = _panels(len(attacks), title, width=5.2, height=4.2)
    drawn: list[Drawn] = []
    for ax, attack in zip(axes, attacks):
        at = find(points, threat=threat, attack=attack, eps_text=eps_text)
        xy = [(p.speedup, 100 * p.accuracy) for p in at]
        front = pareto_front(xy)
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color="orange", linewidth=6, alpha=0.45,
                solid_capstyle="round", label="Pareto front", zorder=1)
        for i, p in enumerate(at):
            _, mk = PRECISION_STYLE.get(p.precision, ("-", "o"))
            color = BASE_COLOR if p.model == "base" else colors[f"{p.group} {p.precision}"]
            label = "base" if p.model == "base" else f"{p.group} {p.precision}".strip()
            ax.errorbar([p.speedup], [100 * p.accuracy], xerr=[p.speedup_std] if p.speedup_std else None,
                        yerr=[_err(p.accuracy_std)] if p.accuracy_std else None, marker="*" if p.model == "base" else mk,
                        markersize=12 if p.model == "base" else 7, color=color, linestyle="none", capsize=3,
                        label=label, zorder=3, markeredgecolor="black" if i in front else color)
            drawn.append(Drawn(p.key, p.speedup, 100 * p.accuracy))
            if i in front:
                ax.annotate(p.model, (p.speedup, 100 * p.accuracy), textcoords="offset points", xytext=(5, 5),
                            fontsize=8)
        ax.set_title(f"{attack.upper()} eps {eps_text}" if threat != MEAN_THREAT else "all corruptions, pooled",
                     fontsize=11)
        ax.set_xlabel("speedup over the base (p50 latency ratio)")
        ax.grid(alpha=0.3)
        ax.set_ylim(-3, 103)
    for ax in axes[::2]:
        ax.set_ylabel(f"{ylabel} (%)")
    _legend(fig, axes)
    _save(fig, path)
    return Figure(path.name, title, tuple(drawn))


def make_figures(folder: Path, points: list[Point], focus_eps: str) -> list[Figure]:
    """Every figure for these points, written into ``folder``."""
    threats = [t for t in ("transfer", "whitebox") if any(p.threat == t for p in points)]
    figs = []
    for t in threats:
        figs.append(plot_acc_vs_eps(points, t, folder / f"acc_vs_eps_{t}.png"))
        figs.append(plot_robust_vs_macs(points, t, focus_eps, folder / f"robust_vs_macs_{t}.png"))
        figs.append(plot_robust_vs_speedup(points, t, focus_eps, folder / f"robust_vs_speedup_{t}.png"))
    if any(p.threat == THREAT for p in points):
        figs.append(plot_acc_vs_eps(points, THREAT, folder / "acc_vs_severity_corruption.png", corruption=True))
        figs.append(plot_robust_vs_speedup(
            points, MEAN_THREAT, MEAN_EPS, folder / "corruption_vs_speedup.png", ylabel="corruption accuracy",
            title=f"Accuracy under common corruptions (pooled over the sets) against measured speedup (batch 1"
                  f"{_seeds_note(points)})"))
    return figs


# =============================================================================================
# the page


PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}
.finding{background:#f3f7ff;border-left:4px solid #3367d6;padding:8px 12px;margin:8px 0}
img{max-width:100%;border:1px solid #eee;margin:8px 0}
table{border-collapse:collapse;font-size:.85em;width:100%}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 6px;text-align:right}
th{background:#fafafa;position:sticky;top:0}td.l,th.l{text-align:left}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(points: list[Point]) -> str:
    head = ["model", "group", "sparsity (requested)", "precision", "set", "eps", "n", "seeds", "accuracy",
            "attack success", "speedup", "MACs reduction (realized)"]
    rows = []
    for p in points:
        acc = pct(p.accuracy, p.accuracy_std)
        if p.ci_low is not None and p.ci_high is not None:
            acc += f" [{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]"
        speed = f"{p.speedup:.2f}x" + (f" ± {p.speedup_std:.2f}" if p.speedup_std is not None else "")
        cells = [p.model, p.group or "", f"{p.sparsity:g}", p.precision,
                 "clean" if p.threat == "clean" else f"{p.attack} ({p.threat})",
                 "" if p.threat == "clean" else p.eps_text, str(p.n), str(p.seeds), acc,
                 pct(p.attack_success) if p.attack_success is not None else "", speed, f"{p.macs_reduction:.2f}x"]
        rows.append("<tr>" + "".join(f'<td{" class=l" if i < 2 or i == 4 else ""}>{html.escape(c)}</td>'
                                     for i, c in enumerate(cells)) + "</tr>")
    ths = "".join(f'<th{" class=l" if i < 2 or i == 4 else ""}>{html.escape(h)}</th>' for i, h in enumerate(head))
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(title: str, subtitle: str, findings: list[str], figures: list[Figure], folder: Path,
                points: list[Point], notes: list[str] = ()) -> str:
    """One page with everything inline: no file, font, script or style is fetched."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
             f"<style>{PAGE_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f'<p class=meta>{html.escape(subtitle)}</p><h2>Findings</h2>']
    parts += [f'<p class=finding>{html.escape(f)}</p>' for f in findings] or ["<p>No finding could be computed.</p>"]
    for note in notes:
        parts.append(f"<p class=meta>{html.escape(note)}</p>")
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        parts.append(f"<div>{_img(folder / fig.file)}</div>")
    parts.append("<h2>Numbers</h2><p class=meta>Accuracy: mean ± sample sd over seeds, or with one seed the "
                 "Wilson 95% interval in brackets. Attack success: among samples the model gets right clean, the "
                 "share it gets wrong on the set. Speedup: base p50 latency / model p50 latency at batch 1, "
                 "interleaved in one run.</p>")
    parts.append(_table(points))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: Path, title: str, points: list[Point], data: dict, focus_eps: str, kind: str,
                 json_name: str = "sweep.json", subtitle: str = "", notes: list[str] = ()) -> dict:
    """Figures, ``json_name`` (data + every drawn point) and report.html into ``folder``; returns the data."""
    folder = Path(folder)
    figs = make_figures(folder, points, focus_eps)
    data = dict(data)
    data["plots"] = [asdict(f) for f in figs]
    write_json(folder / json_name, to_json(kind, data))
    if not subtitle:
        n = points[0].n if points else 0
        subtitle = f"{len(points)} points; {n} evaluation samples per run; focus eps {focus_eps}."
    page = render_html(title, subtitle, data.get("findings", []), figs, folder, points, list(notes))
    with atomic_file(folder / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return data

