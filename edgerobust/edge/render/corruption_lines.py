"""The common-corruption section of an audit report: headline sentence, Markdown, terminal table, HTML with an
inline SVG of accuracy against severity per family (base dashed beside deployed solid).

Everything reads ``report.corruption`` (edgerobust.edge.scores.corruption.CorruptionReport; the metrics are
defined there) and says nothing when it is None. Torch-free.
"""
from __future__ import annotations

from edgerobust.edge.render.svg import SERIES, Chart, esc, figure, nice_ticks
from edgerobust.edge.scores.corruption import ALPHA, FEW_ERRORS

FAMILY_ORDER = ("noise", "blur", "weather", "digital", "camera")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _pp(d) -> str:
    return "–" if d is None else f"{100 * d:+.1f}".replace("-", "−")


def _p(m) -> str:
    return "–" if m is None else f"{m.p_value:.3g}"


def _q(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def deployed_label(report) -> str:
    return report.deployed_variant or "the deployed model"


def corruption_sentence(report) -> str | None:
    """One headline sentence: the worst loss that survives Holm's correction over every set, or that none
    does, and the mCE."""
    c = getattr(report, "corruption", None)
    if c is None or not c.sets:
        return None
    label = deployed_label(report)
    mce = c.mce.get("deployed")
    tail = (f"mCE {_pct(mce)} of the base's over {c.n_mce.get('deployed', 0)} corruptions"
            + (f", relative mCE {_pct(c.relative_mce.get('deployed'))}" if c.relative_mce.get("deployed") is not None
               else ""))
    w, m = c.worst, sum(1 for s in c.sets if s.mcnemar is not None)
    if w is not None:
        return (f"Common corruptions: {label} loses {-100 * w.delta:.1f} pp on {w.corruption} at severity {w.severity} "
                f"(p = {w.mcnemar.p_value:.2g}, Holm-adjusted over {m} sets: {w.p_adjusted:.2g}; "
                f"{_pct(w.models['deployed'].value)} vs base {_pct(w.models['base'].value)}); {tail}.")
    raw = [s for s in c.sets if s.delta is not None and s.delta < 0 and s.mcnemar is not None
           and s.mcnemar.p_value < ALPHA]
    why = (f" ({len(raw)} with uncorrected p < {ALPHA:g}, none after Holm's correction over {m} sets)" if raw
           else "")
    return (f"Common corruptions ({len(c.sets)} sets): no corruption loss of {label} against the base survives "
            f"Holm's correction (exact McNemar, Holm-adjusted p < {ALPHA:g}){why}; {tail}.")


def _variants(c) -> list[str]:
    return [r for r in c.roles if r not in ("base", "deployed")]


def set_rows(c) -> tuple[list[str], list[list[str]]]:
    """One row per set: accuracy of every model, Δ deployed − base, McNemar's p and its Holm-adjusted p."""
    others = _variants(c)
    head = ["corruption", "family", "severity", "base", "deployed", "Δ pp", "McNemar p", "Holm p"] + others
    rows = [[s.corruption, s.family, str(s.severity), _pct(s.models["base"].value), _pct(s.models["deployed"].value),
             _pp(s.delta) + (" *" if s.significant_loss else ""), _p(s.mcnemar), _q(s.p_holm)]
            + [_pct(s.models[r].value) for r in others] for s in c.sets]
    return head, rows


def error_rows(c) -> tuple[list[str], list[list[str]]]:
    """One row per corruption: CE and relative CE of every model but the base (whose CE is 100%)."""
    roles = [r for r in c.roles if r != "base"]
    head = (["corruption", "family", "severities", "base errors"] + [f"CE {r}" for r in roles]
            + [f"rel. CE {r}" for r in roles])
    rows = [[e.corruption, e.family, ",".join(map(str, e.severities)), str(e.base_errors)] + [_pct(e.ce[r]) for r in roles]
            + [_pct(e.relative_ce[r]) for r in roles] for e in c.corruptions]
    return head, rows


def summary_lines(c) -> list[str]:
    out = [f"mCE {r}: {_pct(c.mce[r])} over {c.n_mce[r]} corruptions; relative mCE {_pct(c.relative_mce[r])} over "
           f"{c.n_relative_mce[r]}" for r in c.roles if r != "base"]
    few = [e.corruption for e in c.corruptions if e.base_errors < FEW_ERRORS]
    if few:
        out.append(f"CE rests on fewer than {FEW_ERRORS} base errors (noisy; trust the McNemar p of each set instead) "
                   f"for: {', '.join(few)}")
    out += [f"left out here: {s['corruption']}" + (f" at severity {s['severity']}" if s.get("severity") else "")
            + f" ({s['reason']})" for s in c.skipped]
    out += [f"not implemented: {k} ({v})" for k, v in c.left_out.items()]
    return out


INTRO = ("Common corruptions and camera noise (ImageNet-C, Hendrycks & Dietterich 2019) made from the evaluation rows "
         "and replayed on every model. CE = Σ over severities of a model's error / the base's; mCE its mean over "
         "corruptions (the base is 100%); relative CE counts only the error a corruption adds to the clean error; "
         "n/a where the base's denominator is 0 (or ≤ 0 for relative CE). Δ = deployed − base on the same inputs, "
         f"p = exact McNemar; Holm p = p Holm-adjusted over every set (deployed vs base); * marks a loss with Holm p "
         f"< {ALPHA:g}.")


def corruption_md(report, md_table) -> list[str]:
    c = getattr(report, "corruption", None)
    if c is None:
        return []
    out = ["## Common corruptions", "", INTRO, ""]
    if c.sets:
        head, rows = set_rows(c)
        out += [md_table(head, rows), ""]
        head, rows = error_rows(c)
        out += [md_table(head, rows), ""]
    out += [f"- {line}" for line in summary_lines(c)]
    return out + [""]


def corruption_terminal(report) -> tuple[str, list[str], list[list[str]], list[str]] | None:
    """A compact table: a row per corruption, a column per severity ("base → deployed (Δ)"), CE."""
    c = getattr(report, "corruption", None)
    if c is None or not c.sets:
        return None
    sevs = sorted({s.severity for s in c.sets})
    head = ["corruption", "family"] + [f"s{k} base→deployed (Δ pp)" for k in sevs] + ["CE", "rel. CE"]
    rows = []
    for e in c.corruptions:
        by = {s.severity: s for s in c.sets if s.corruption == e.corruption}
        cells = [(f"{100 * by[k].models['base'].value:.1f}→{100 * by[k].models['deployed'].value:.1f} "
                  f"({_pp(by[k].delta)}{'*' if by[k].significant_loss else ''})") if k in by else "–" for k in sevs]
        rows.append([e.corruption, e.family] + cells + [_pct(e.ce.get("deployed")), _pct(e.relative_ce.get("deployed"))])
    title = (f"Common corruptions ({len(c.sets)} sets; accuracy % of base → {deployed_label(report)}; "
             f"* Holm-adjusted exact McNemar p < {ALPHA:g}; per-set p and variants in report.md)")
    return title, head, rows, summary_lines(c)


def corruption_figure(c) -> str:
    """Accuracy against severity, a panel per family: a colour per corruption, base dashed, deployed solid."""
    if c is None or not c.sets:
        return ""
    panels = []
    families = [f for f in FAMILY_ORDER if any(s.family == f for s in c.sets)]
    families += sorted({s.family for s in c.sets} - set(families))
    for fam in families:
        names = list(dict.fromkeys(s.corruption for s in c.sets if s.family == fam))
        ch = Chart(fam, (-0.2, 5.2), (0, 100), xlabel="severity (0 = clean)", ylabel="accuracy (%)", width=420,
                   height=300, top=46 + 14 * ((len(names) + 1) // 3))
        ch.xticks(list(range(6)), ["clean", "1", "2", "3", "4", "5"])
        ch.yticks(nice_ticks(0, 100, 5))
        for i, name in enumerate(names):
            group = sorted((s for s in c.sets if s.corruption == name), key=lambda s: s.severity)
            color = SERIES[i % len(SERIES)]
            for role, dash in (("base", True), ("deployed", False)):
                xs = [0] + [s.severity for s in group]
                ys = [100 * group[0].clean[role]] + [100 * s.models[role].value for s in group]
                ch.line(xs, ys, color, label=name if role == "deployed" else None, dash=dash)
        panels.append(ch.render())
    return figure("Accuracy under common corruptions, per family", panels,
                  "Solid: deployed; dashed: base (same colour, same corruption). Severity 0 is the clean accuracy on "
                  "the same rows.")


def corruption_html(report, html_table) -> list[str]:
    c = getattr(report, "corruption", None)
    if c is None:
        return []
    parts = ["<h2>Common corruptions</h2>", f"<p class=meta>{esc(INTRO)}</p>", corruption_figure(c)]
    if c.sets:
        head, rows = set_rows(c)
        parts.append(html_table(head, rows, left=2))
        head, rows = error_rows(c)
        parts.append(html_table(head, rows, left=2))
    parts += [f"<p class=meta>{esc(line)}</p>" for line in summary_lines(c)]
    return parts
