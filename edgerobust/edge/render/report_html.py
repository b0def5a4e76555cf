"""An audit's report.html: one self-contained page a team can open anywhere.

The page holds the headline, the warnings (a fallback first and in red), the robustness
figures and tables (every set, base and deployed, with 95% CIs; accuracy against eps where
sets share an attack), latency distributions with the speedup, size and memory against the
budgets, and the provenance (sha256 of every audited file, the workstation's tool versions,
this host). Figures are inline SVG (:mod:`edgerobust.edge.render.audit_figures`): nothing is fetched, no
script runs. The page helpers here (:func:`page`, :func:`html_table`) also build compare.html.
Torch-free, matplotlib-free.
"""
from __future__ import annotations

import re
from pathlib import Path

from edgerobust.edge.render import audit_figures
from edgerobust.edge.render.corruption_lines import corruption_html
from edgerobust.edge.render.estimate_lines import estimate_html
from edgerobust.edge.render.headline import headline
from edgerobust.edge.render.variant_table import fastest_lines, has_variants, variant_table
from edgerobust.edge.render.speed_lines import (budget_lines, latency_title, noise_warnings, resident_head,
                                                resident_rows, resource_lines, settings_line, speed_head, speed_rows)
from edgerobust.edge.render.svg import esc
from edgerobust.edge.render.tables import COLUMNS_MD, robustness_table, sections

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#222;line-height:1.45;padding:0 16px}
h1{font-size:1.55em;margin-bottom:2px}h2{font-size:1.2em;margin-top:30px;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:18px 0 6px}.meta{color:#666;font-size:.88em}
.finding{background:#f3f7ff;border-left:4px solid #3367d6;padding:8px 12px;margin:10px 0;font-weight:500}
.warn{background:#fff8e1;border-left:4px solid #f0a800;padding:6px 12px;margin:6px 0}
.warn.strong{background:#fdecea;border-left-color:#d62728;font-weight:600}
figure.fig{margin:14px 0}figcaption{font-weight:600;margin-bottom:4px}figcaption .meta{font-weight:400}
.panels{display:flex;flex-wrap:wrap;gap:10px}.panels svg{border:1px solid #eee;max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.84em;margin:6px 0}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#fafafa}td.l,th.l{text-align:left}code{font-size:.92em;word-break:break-all}
.pass{color:#1a7f37}.fail{color:#c62828;font-weight:600}.nm{color:#a66f00}
tr.fallback td{background:#fdecea}
"""


def page(title: str, parts: list[str]) -> str:
    """A complete HTML document: inline CSS, no script, nothing fetched."""
    return "\n".join([f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>",
                      f"<style>{CSS}</style></head><body>", *parts, "</body></html>"])


def inline_md(text: str) -> str:
    """Escape ``text`` and keep its **bold** and `code`."""
    s = esc(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"\*(.+?)\*", r"<i>\1</i>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def html_table(head: list[str], rows: list[list[str]], left: int = 1, row_class: list[str] | None = None) -> str:
    """A table whose first ``left`` columns are left-aligned; cells are escaped."""
    def cell(tag: str, i: int, v: str) -> str:
        return f'<{tag}{" class=l" if i < left else ""}>{esc(v)}</{tag}>'

    ths = "".join(cell("th", i, h) for i, h in enumerate(head))
    trs = []
    for k, r in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        trs.append(f"<tr{cls}>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def _columns_help() -> str:
    items, out = [], []
    for line in COLUMNS_MD.splitlines()[1:]:
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
        elif line.strip():
            out.append(f"<p>{inline_md(line)}</p>")
    lis = "".join(f"<li>{inline_md(i)}</li>" for i in items)
    return f"<details><summary>What each column compares</summary><ul>{lis}</ul>{''.join(out)}</details>"


def _warnings(report) -> list[str]:
    out = []
    for w in report.warnings:
        strong = w.startswith(("fallback", "host"))
        out.append(f'<p class="warn{" strong" if strong else ""}">Warning: {esc(w)}</p>')
    return out


def _robustness(report, figs: list[str]) -> list[str]:
    parts = ["<h2>Robustness</h2>", *figs]
    for title, sets in sections(report):
        head, rows, notes = robustness_table(sets, "md")
        parts += [f"<h3>{esc(title[0].upper() + title[1:])}</h3>", html_table(head, rows)]
        parts += [f"<p class=meta>{esc(n)}</p>" for n in notes]
    parts.append(_columns_help())
    return parts


def _speed(report, figs: list[str]) -> list[str]:
    m, hc = report.measurement, report.host_check
    note = hc.host if hc is not None and not hc.matches else None
    parts = [f"<h2>{esc(latency_title(report.profile, note))}</h2>", *figs,
             f"<p class=meta>{esc(settings_line(m))}</p>", html_table(speed_head(m), speed_rows(m))]
    if resident_head(m):
        parts += ["<h3>Device-resident path (IO binding)</h3>", html_table(resident_head(m), resident_rows(m))]
    parts += [f'<p class="warn">Latency warning: {esc(line)}</p>' for line in noise_warnings(m)]
    parts += [f"<p class=meta>{esc(line)}</p>" for line in resource_lines(m)]
    if m.skipped_batch_sizes:
        parts.append(f"<p class=meta>Batch sizes skipped (fixed batch axis): "
                     f"{esc(', '.join(map(str, m.skipped_batch_sizes)))}</p>")
    if has_variants(report):
        head, rows = variant_table(report)
        parts += ["<h2>Precision variants (same run, same sets)</h2>", html_table(head, rows, left=2)]
        parts += [f"<p>{inline_md(line)}</p>" for line in fastest_lines(report)]
    return parts


def _deployed(m):
    """The deployed model's measurement (the one model of a single-model report)."""
    return m.model("deployed") or m.models[-1]


def _budgets(report, figs: list[str]) -> list[str]:
    parts = ["<h2>Size, memory and budgets</h2>", *figs]
    cls = {True: "pass", False: "fail", None: "nm"}
    parts += [f'<p class="{cls[passed]}">{esc(line)}</p>' for line, passed in budget_lines(report)]
    if not report.budgets:
        parts.append(f"<p class=meta>The profile {esc(report.profile)} sets no budget.</p>")
    return parts


def provenance_rows(report, data: dict) -> list[list[str]]:
    """(what, value) rows: the audited files by sha256, the bundle's record, this host."""
    p, h = report.provenance, report.measurement.host
    rows = [["bundle", f"{report.bundle_name or '–'} ({report.bundle or 'no bundle'}); verified: "
                       f"{'yes' if report.verified else 'no'}"]]
    if p is not None:
        rows += [["bundle created", p.bundle_created or "–"], ["manifest sha256", p.manifest_sha256 or "–"],
                 ["base sha256", f"{p.base_sha256}  {Path(report.baseline).name}"],
                 ["deployed sha256", f"{p.deployed_sha256}  {Path(report.model).name}"],
                 ["eval set sha256", f"{p.eval_sha256}  {Path(report.eval_set).name}"]]
        rows += [[f"set {name} sha256", sha] for name, sha in p.sets.items()]
        if p.source:
            rows.append(["source model", f"{p.source.get('path', '–')} (sha256 {p.source.get('sha256', '–')})"])
        if p.compression:
            rows.append(["compression", ", ".join(f"{k} {v}" for k, v in p.compression.items())])
        if p.tool:
            rows.append(["bundle made with", ", ".join(f"{k} {v}" for k, v in p.tool.items())])
    pred = data.get("_data", {}).get("predictions") or {}
    if pred:
        rows.append(["per-sample predictions", f"{pred['file']} sha256 {pred['sha256']}"])
    rows += [["host", f"{h.cpu}, {h.cores} cores, {h.machine}, {h.os}"],
             ["audited with", f"edgerobust {report.edgerobust_version}, Python {h.python}, onnxruntime {h.onnxruntime}"],
             ["providers available", ", ".join(h.available_providers)],
             ["profile", f"{report.profile} ({report.profile_source})"
                         + (f"; chosen automatically: {report.profile_reason}" if report.profile_reason else "")],
             ["report created", report.created]]
    return rows


def to_html(report, data: dict) -> str:
    """report.html of an AuditReport; ``data`` is its JSON (to_json) with the predictions record."""
    title = f"edgerobust audit: {report.bundle_name or Path(report.model).name} on {report.profile}"
    m = report.measurement
    figs = {"acc": audit_figures.accuracy_per_set(report.sets), "eps": audit_figures.accuracy_vs_eps(report.sets),
            "lat": audit_figures.latency(m), "res": audit_figures.resources(m, report.budgets)}
    parts = [f"<h1>{esc(title)}</h1>",
             f"<p class=meta>{esc(report.created)} · {esc(m.host.cpu)} ({m.host.cores} cores) · "
             f"providers used: {esc(', '.join(_deployed(m).session.providers) if m.models else '–')}</p>",
             f'<p class="finding">{esc(headline(report))}</p>', *_warnings(report)]
    parts += _robustness(report, [f for f in (figs["acc"], figs["eps"]) if f])
    parts += corruption_html(report, html_table)
    parts += _speed(report, [figs["lat"]] if figs["lat"] else [])
    parts += _budgets(report, [figs["res"]])
    parts += estimate_html(getattr(report, "estimate", None), html_table, esc)
    parts += ["<h2>Provenance</h2>", html_table(["what", "value"], provenance_rows(report, data), left=2),
              "<p class=meta>Written by edgerobust audit. Everything on this page is inline: it opens offline.</p>"]
    return page(title, parts)
