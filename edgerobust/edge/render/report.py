"""Audit and measurement reports: versioned JSON, Markdown, and Rich tables for the terminal.

The reports are dataclasses (edgerobust.edge.audit.AuditReport, edgerobust.edge.runtime.measure.MeasureReport);
this module only serializes and renders them. ``write_report`` puts predictions.npz
(:mod:`edgerobust.edge.files.predictions`), report.html (:mod:`edgerobust.edge.render.report_html`), report.md and,
last, report.json in a new folder per run and never overwrites an earlier report.

Audit report versions: 1 had no ``host_check``, no ``BudgetCheck.evidence``, and a white-box
set's ``delta_accuracy`` compared base and deployed on the same white-box inputs. 2 adds the
host check, ``reference`` / ``delta_note`` on sets (the like-for-like Δ of edgerobust.edge.scores.scoring)
and ``summary.worst_robust`` / ``summary.headline``. 3 adds ``provenance`` (the sha256 of
every audited file, and how the bundle was made) and ``predictions`` (the file of per-sample
predictions and its sha256), which ``edgerobust compare`` needs. 4 adds the bundle's other precision
variants: ``deployed_variant``, ``variants`` (role -> precision), more models in ``measurement`` and
predictions.npz (roles named by precision, e.g. ``fp32``, ``fp16``) and ``variants`` on each set
(their scores on that set's inputs). 7 adds ``corruption``: the common-corruption sets replayed on every model
(edgerobust.edge.scores.corruption: accuracy per corruption and severity, CE, mCE, McNemar), null without them.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgerobust import ui
from edgerobust.edge.audit import AuditReport
from edgerobust.edge.files.atomic import atomic_dir, atomic_file, clean_stale
from edgerobust.edge.files.npzio import write_json
from edgerobust.errors import BundleError, UsageError
from edgerobust.edge.render.headline import headline, worst_per_threat
from edgerobust.edge.runtime.measure import MeasureReport
from edgerobust.edge.runtime.precision import precision_line
from edgerobust.edge.files.predictions import FILE as PREDICTIONS_FILE
from edgerobust.edge.files.predictions import KIND as PREDICTIONS_KIND
from edgerobust.edge.render.robust_table import robust_head, robust_md, robust_rows, sanity_lines
from edgerobust.edge.render.estimate_lines import energy_lines, estimate_md, estimate_terminal
from edgerobust.edge.render.corruption_lines import corruption_md, corruption_terminal
from edgerobust.edge.files.predictions import VERSION as PREDICTIONS_VERSION
from edgerobust.edge.files.predictions import save_predictions
from edgerobust.edge.render.speed_lines import (budget_lines, latency_title, noise_warnings, resident_head,
                                                resident_rows, resident_title, resource_lines, settings_line, speed_head,
                                                speed_rows)
from edgerobust.edge.runtime.gains import runtime_hint
from edgerobust.edge.runtime.resident import HOST_PATH
from edgerobust.edge.render.tables import COLUMNS_MD, robustness_table, sections
from edgerobust.edge.render.variant_table import fastest_lines, has_variants, variant_table

AUDIT_TYPE = "edgerobust.edge.audit-report"
MEASURE_TYPE = "edgerobust.edge.runtime.measure-report"
AUDIT_VERSION = 9  # 5: robust, sanity, query; 6: query_status, robust "transfer + query"; 7: corruption;
# 8: robust "every attack" (transfer, white-box and query; like, compares, strongest), no Δ unlike for unlike;
# 9: every corruption set's answers in predictions.npz (source "corruption") and its sha256 in provenance sets
MEASURE_VERSION = 1


# =============================================================================================
# JSON


def to_json(report: AuditReport | MeasureReport, predictions: dict | None = None) -> dict:
    """The report as {"_type", "_version", "_data"}; audit reports also carry a summary and
    ``predictions``: the record of the predictions file written beside it (None when not written)."""
    if isinstance(report, AuditReport):
        data = dataclasses.asdict(dataclasses.replace(report, predictions=None))
        data["predictions"] = predictions
        data["robust"] = [r.to_dict() for r in report.robust]
        data["corruption"] = report.corruption.to_dict() if report.corruption is not None else None
        hc = report.host_check
        data["summary"] = {"fallback": report.fallback, "budgets_passed": report.budgets_passed,
                           "host_matches_profile": report.host_matches_profile,
                           "host_mismatch": list(hc.mismatch) if hc else [],
                           "worst_robust": [dataclasses.asdict(w) for w in worst_per_threat(report.sets)],
                           "headline": headline(report)}
        return {"_type": AUDIT_TYPE, "_version": AUDIT_VERSION, "_data": data}
    data = dataclasses.asdict(report)
    data["summary"] = {"fallback": report.fallback}
    return {"_type": MEASURE_TYPE, "_version": MEASURE_VERSION, "_data": data}


def dumps(report: AuditReport | MeasureReport) -> str:
    return json.dumps(to_json(report), indent=2)


# =============================================================================================
# writing


REPORT_FILES = ("report.json", "report.md", "report.html", PREDICTIONS_FILE)


def check_out_dir(out: str | os.PathLike | None) -> None:
    """Refuse an ``out_dir`` folder that already holds a report, before any time is spent measuring."""
    if out is None:
        return
    out = Path(out)
    taken = [n for n in REPORT_FILES if (out / n).exists()]
    if taken:
        raise UsageError(f"'{out}' already holds a report ({', '.join(taken)}).",
                         why="edgerobust never overwrites an earlier report.",
                         fix="Choose another `out_dir`, or give none to get a new timestamped folder.")
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out_dir` '{out}' is a file, not a folder.", fix="Choose a folder for the report.")


def report_dir(report: AuditReport, out: str | os.PathLike | None = None) -> Path:
    """The folder this run's report goes to, not yet created (an explicit ``out`` may exist).

    Default ``<bundle>/reports/<profile>-<UTC timestamp>/`` (``-2``, ``-3``… when taken).
    An explicit ``out`` may exist but must not hold a report already.
    """
    try:
        if out is not None:
            check_out_dir(out)
            return Path(out)
        root = Path(report.bundle) if report.bundle else Path(report.model).parent
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = root / "reports" / f"{report.profile}-{stamp}"
        base.parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
            clean_stale(candidate)  # what a killed audit left under this name
            if not candidate.exists() and not list(candidate.parent.glob(f".{candidate.name}.tmp-*")):
                return candidate
        raise UsageError(f"Could not find a free report folder next to '{base}'.")
    except OSError as exc:
        raise _folder_error(exc) from exc


def _folder_error(exc: OSError) -> UsageError:
    return UsageError(f"Cannot create the report folder: {exc.strerror or exc}.", why=str(exc),
                      fix="Pass `out_dir` naming a writable folder (a bundle on read-only media needs one).")


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(report: AuditReport, out: str | os.PathLike | None = None) -> Path:
    """Write predictions.npz, report.html, report.md and report.json into a new folder; return it.

    The folder is written whole in a hidden temporary sibling and renamed into place, so a run
    killed at any moment leaves no half report (an explicit ``out`` that already holds other files
    is written in place instead, report.json last: a folder that holds it holds the whole report).
    """
    folder = report_dir(report, out)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # an empty folder given as `out_dir`: written as if absent
    if folder.exists():
        _write_files(folder, report)
        return folder
    try:
        with atomic_dir(folder) as tmp:
            _write_files(tmp, report)
    except BundleError as exc:
        if isinstance(exc.__cause__, OSError):
            raise _folder_error(exc.__cause__) from exc
        raise
    return folder


def _write_files(folder: Path, report: AuditReport) -> None:
    from edgerobust.edge.render.report_html import to_html

    record = None
    if report.predictions is not None:
        sha = save_predictions(folder / PREDICTIONS_FILE, report.predictions)
        record = {"file": PREDICTIONS_FILE, "sha256": sha, "kind": PREDICTIONS_KIND, "version": PREDICTIONS_VERSION,
                  "roles": list(report.predictions.roles), "sets": [s.name for s in report.predictions.sets]}
    data = to_json(report, record)
    _write_text(folder / "report.html", to_html(report, data))
    _write_text(folder / "report.md", to_markdown(report))
    write_json(folder / "report.json", data)


# =============================================================================================
# formatting helpers


def _host_line(report: AuditReport) -> str | None:
    hc = report.host_check
    if hc is None:
        return None
    if hc.matches:
        return f"- matches the profile's device: yes, as far as the profile states ({hc.host})"
    return f"- matches the profile's device: **no** ({'; '.join(hc.mismatch)})"


# =============================================================================================
# Markdown


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(report: AuditReport) -> str:
    m = report.measurement
    h = m.host
    out = [f"# edgerobust audit: {report.bundle_name or Path(report.model).name} on {report.profile}", "",
           headline(report), ""]
    for w in report.warnings:
        out.append(f"> **Warning:** {w}")
    if report.warnings:
        out.append("")
    out += robust_md(report, _md_table)
    out += ["## Robustness per set", "", COLUMNS_MD, ""]
    for title, sets in sections(report):
        head, rows, notes = robustness_table(sets, "md")
        out += [f"### {title[0].upper()}{title[1:]}", "", _md_table(head, rows), ""]
        out += [f"- {n}" for n in notes] + ([""] if notes else [])
    out += corruption_md(report, _md_table)
    hc, host_line = report.host_check, _host_line(report)
    out += ["## Speed", ""]
    if hc is not None and not hc.matches:
        line = hc.settings_line(report.profile)
        out += [f"**{line[0].upper()}{line[1:]}.**", ""]
    out += [settings_line(m), "", _md_table(speed_head(m), speed_rows(m)), ""]
    out += resident_md(m)
    out += [f"- **Warning:** {line}" for line in noise_warnings(m)]
    out += [f"- {line}" for line in resource_lines(m) + energy_lines(m) + [runtime_hint(m)] if line]
    out += [f"- precision, {precision_line(x.role, x.precision)}" for x in m.models if x.precision]
    out += _variants_md(report)
    out += estimate_md(report.estimate, _md_table)
    if report.budgets:
        out += ["", "## Budgets", ""] + [f"- {line}" for line, _ in budget_lines(report)]
    out += ["", "## Setup", "",
            f"- model: `{report.model}`", f"- baseline: `{report.baseline}`", f"- eval set: `{report.eval_set}`",
            f"- bundle verified: {'yes' if report.verified else 'no'}",
            f"- profile: {report.profile} ({report.profile_source})"
            + (f"; chosen automatically: {report.profile_reason}" if report.profile_reason else ""),
            f"- host: {h.cpu}, {h.cores} cores, {h.os}, Python {h.python}, onnxruntime {h.onnxruntime}",
            *([host_line] if host_line else []),
            f"- providers available: {', '.join(h.available_providers)}",
            f"- edgerobust {report.edgerobust_version}, {report.created}", *_provenance_md(report), ""]
    return "\n".join(out)


def _variants_md(report: AuditReport) -> list[str]:
    """The precision variants section: every model measured and replayed, and which is fastest."""
    if not has_variants(report):
        return []
    head, rows = variant_table(report)
    return (["", "## Precision variants", "",
             "Every variant of the pruned model in the bundle, timed in the same interleaved run as base and "
             "deployed and answering the same sets. Speedup is over the base, with the interval from both p50 "
             "intervals; worst transfer accuracy is the lowest over the sets crafted on the base.", "",
             _md_table(head, rows), ""] + [f"- {line}" for line in fastest_lines(report)])


def resident_md(m: MeasureReport) -> list[str]:
    """The device-resident path's table (IO binding), below the table from host memory; none when not measured."""
    head = resident_head(m)
    if not head:
        return []
    return [f"{resident_title(m)}; speedup over base on the same path:", "", _md_table(head, resident_rows(m)), ""]


def _provenance_md(report: AuditReport) -> list[str]:
    """The audited files by sha256 (what `edgerobust compare` matches) and the bundle's tool versions."""
    p = report.provenance
    if p is None:
        return []
    out = [f"- sha256: base `{p.base_sha256}`, deployed `{p.deployed_sha256}`, eval set `{p.eval_sha256}`"]
    corrupted = {s.name for s in report.corruption.sets} if report.corruption is not None else set()
    out += [f"- sha256 of {name}: `{sha}`" for name, sha in p.sets.items() if name not in corrupted]
    if corrupted & set(p.sets):  # one line, not one per set (they can be dozens)
        out.append(f"- sha256 of the {len(corrupted & set(p.sets))} corruption sets: in report.json (`provenance.sets`)")
    if p.tool:
        out.append("- bundle made with " + ", ".join(f"{k} {v}" for k, v in p.tool.items())
                   + (f" ({p.bundle_created})" if p.bundle_created else ""))
    if report.predictions is not None:
        out.append("- per-sample predictions of every model audited: `predictions.npz` (its sha256 is in report.json)")
    return out


# =============================================================================================
# Rich


def _table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    return ui.table(title, head, rows)


def render_measure(m: MeasureReport, console: Console, host_note: str | None = None, words=str) -> None:
    """Latency, size and memory in the terminal; ``host_note`` (e.g. "x86_64, 2 cores") when
    this host is not the profile's device; ``words`` rewrites config field names (the CLI's flags)."""
    if m.fallback:
        for model in m.models:
            if model.session.fallback:
                console.print(f"[bold yellow]WARNING: FALLBACK[/bold yellow] {escape(model.role)}: profile asked for "
                              f"{escape(', '.join(model.session.requested_providers))}; ran on "
                              f"{escape(', '.join(model.session.providers))}. Not the profiled device's numbers.")
    console.print(_table(f"{latency_title(m.profile, host_note)} (interleaved rounds, {HOST_PATH})",
                         speed_head(m, compact=True), speed_rows(m, compact=True)))
    if resident_head(m):
        console.print(_table(f"{resident_title(m)} (same rounds; speedup over base)", resident_head(m, compact=True),
                             resident_rows(m, compact=True)))
    for line in noise_warnings(m):
        console.print(f"[bold yellow]WARNING:[/bold yellow] {escape(line)}", highlight=False)
    for line in resource_lines(m) + energy_lines(m):
        console.print(f"  {line}", markup=False, highlight=False)
    for x in m.models:  # on the CPU provider the precision is the file's: said in report.md only
        if x.precision and x.precision["provider"] != "CPUExecutionProvider":
            console.print(f"  precision, {precision_line(x.role, x.precision)}", markup=False, highlight=False)
    if m.skipped_batch_sizes:
        console.print(f"  batch sizes skipped (fixed batch axis): {', '.join(map(str, m.skipped_batch_sizes))}")
    hint = runtime_hint(m)
    if hint:
        console.print(f"  [cyan]{escape(words(hint))}[/cyan]", highlight=False)


def render_estimate(e, console: Console) -> None:
    """The estimate's table and notes in the terminal, labelled as estimates."""
    title, head, rows, notes = estimate_terminal(e)
    console.print(_table(title, head, rows))
    for n in notes:
        console.print(f"  {n}", markup=False, highlight=False)


def render(report: AuditReport, console: Console, words=str) -> None:
    """The audit in the terminal: warnings, headline, robustness next to speed, budgets. ``words``
    rewrites the headline's config field names (the CLI passes its flag names)."""
    for w in report.warnings:
        style = "bold yellow" if w.startswith(("fallback", "host")) else "yellow"
        console.print(f"[{style}]WARNING:[/{style}] {escape(w)}", highlight=False)
    console.print(f"[bold]{escape(words(headline(report)))}[/bold]", highlight=False)
    # The full tables need about 125 columns; a narrower terminal gets the essentials, and the
    # 95% CIs and attack success rates stay in report.md / report.json.
    wide = console.width >= 125
    if report.robust:
        console.print(_table("Robust accuracy per threat and eps (per-sample worst case over every attack; "
                             "CIs in report.md)", robust_head(report), robust_rows(report, ci=False)))
    for line in sanity_lines(report):
        if not line.startswith("PASS"):
            console.print(f"  sanity {line}", markup=False, highlight=False)
    for title, sets in sections(report):
        head, rows, notes = robustness_table(sets, "wide" if wide else "narrow")
        where = "" if wide else "; CIs and ASR in report.md"
        console.print(_table(f"Robustness (base vs deployed{where}): {title}", head, rows))
        for n in notes:
            console.print(f"  {n}", markup=False, highlight=False)
    corr = corruption_terminal(report)
    if corr is not None:
        console.print(_table(*corr[:3]))
        for line in corr[3]:
            console.print(f"  {escape(line)}", highlight=False)
    hc = report.host_check
    mismatch = hc is not None and not hc.matches
    render_measure(report.measurement, console, hc.host if mismatch else None, words)
    if has_variants(report):
        head, rows = variant_table(report, full=wide)
        console.print(_table("Precision variants (same run; speedup over base"
                             + (" [95% interval])" if wide else "; intervals in report.md)"), head, rows))
        for line in fastest_lines(report):
            console.print(f"  {line.replace('**', '')}", markup=False, highlight=False)
    if report.estimate is not None:
        render_estimate(report.estimate, console)
    if report.budgets:
        console.print(f"[bold]Budgets ({escape(report.profile)}'s limits; this host's figures, not evidence for the "
                      "device):[/bold]" if mismatch else f"[bold]Budgets ({escape(report.profile)}):[/bold]", highlight=False)
        for line, passed in budget_lines(report):
            color = {True: "green", False: "red", None: "yellow"}[passed]
            console.print(f"  [{color}]{escape(line)}[/{color}]", highlight=False)
