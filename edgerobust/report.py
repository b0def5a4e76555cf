"""Audit and measurement reports: versioned JSON, Markdown, and Rich tables for the terminal.

The reports are dataclasses (edgerobust.audit.AuditReport, edgerobust.measure.MeasureReport);
this module only serializes and renders them. ``write_report`` puts report.json and
report.md in a new folder per run and never overwrites an earlier report.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .audit import AuditReport
from .bundle import write_json
from .errors import UsageError
from .measure import MeasureReport
from .stats import Proportion

AUDIT_TYPE = "edgerobust.audit-report"
MEASURE_TYPE = "edgerobust.measure-report"
VERSION = 1


# ---------------------------------------------------------------------------------------------
# JSON


def to_json(report: AuditReport | MeasureReport) -> dict:
    """The report as {"_type", "_version", "_data"}; audit reports also carry a summary."""
    data = dataclasses.asdict(report)
    if isinstance(report, AuditReport):
        data["summary"] = {"fallback": report.fallback, "budgets_passed": report.budgets_passed}
        return {"_type": AUDIT_TYPE, "_version": VERSION, "_data": data}
    data["summary"] = {"fallback": report.fallback}
    return {"_type": MEASURE_TYPE, "_version": VERSION, "_data": data}


def dumps(report: AuditReport | MeasureReport) -> str:
    return json.dumps(to_json(report), indent=2)


# ---------------------------------------------------------------------------------------------
# writing


def check_out_dir(out: str | os.PathLike | None) -> None:
    """Refuse an --out folder that already holds a report, before any time is spent measuring."""
    if out is None:
        return
    out = Path(out)
    taken = [n for n in ("report.json", "report.md") if (out / n).exists()]
    if taken:
        raise UsageError(f"'{out}' already holds a report ({', '.join(taken)}).",
                         why="edgerobust never overwrites an earlier report.",
                         fix="Choose another --out, or omit --out to get a new timestamped folder.")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file, not a folder.", fix="Choose a folder for the report.")


def report_dir(report: AuditReport, out: str | os.PathLike | None = None) -> Path:
    """Create and return a fresh folder for this run's report.

    Default ``<bundle>/reports/<profile>-<UTC timestamp>/`` (``-2``, ``-3``… when taken).
    An explicit ``out`` may exist but must not hold a report already.
    """
    try:
        if out is not None:
            check_out_dir(out)
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            return out
        root = Path(report.bundle) if report.bundle else Path(report.model).parent
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = root / "reports" / f"{report.profile}-{stamp}"
        base.parent.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise UsageError(f"Could not find a free report folder next to '{base}'.")
    except OSError as exc:
        raise UsageError(f"Cannot create the report folder: {exc.strerror or exc}.", why=str(exc),
                         fix="Pass --out DIR with a writable folder (a bundle on read-only media needs one).") from exc


def write_report(report: AuditReport, out: str | os.PathLike | None = None) -> Path:
    """Write report.json and report.md into a new folder; return the folder."""
    folder = report_dir(report, out)
    write_json(folder / "report.json", to_json(report))
    md = folder / "report.md"
    tmp = md.with_name(f".{md.name}.tmp-{os.getpid()}")
    tmp.write_text(to_markdown(report), encoding="utf-8")
    os.replace(tmp, md)
    return folder


# ---------------------------------------------------------------------------------------------
# formatting helpers


def pct(p: Proportion | None, ci: bool = True) -> str:
    if p is None or p.value is None:
        return "–"
    s = f"{100 * p.value:.1f}%"
    if ci:
        s += f" [{100 * p.ci_low:.1f}–{100 * p.ci_high:.1f}]"
    return s


def pp(delta: float | None) -> str:
    return "–" if delta is None else f"{100 * delta:+.1f} pp".replace("-", "−")


def pval(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1000:.1f} µs" if v < 0.1 else f"{v:.2f} ms"


def mib(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1024:.1f} KiB" if v < 1 else f"{v:.1f} MiB"


def headline(report: AuditReport) -> str:
    """One sentence: speedup next to the clean and the worst robust accuracy change."""
    parts = []
    sp = next((s for s in report.measurement.speedup if s.batch_size == 1), None) or \
        (report.measurement.speedup[0] if report.measurement.speedup else None)
    if sp:
        parts.append(f"{sp.p50:.2f}× speedup at batch {sp.batch_size} (p50)")
    clean = next((s for s in report.sets if s.kind == "clean"), None)
    if clean:
        parts.append(f"clean accuracy {pp(clean.delta_accuracy)}")
    adv = [s for s in report.sets if s.kind == "adversarial" and s.delta_accuracy is not None
           and getattr(s, "source", "transfer") == "transfer"]
    if adv:
        worst = min(adv, key=lambda s: s.delta_accuracy)
        parts.append(f"robust accuracy {pp(worst.delta_accuracy)} on {worst.name} (worst set)")
    white = [s for s in report.sets if str(getattr(s, "source", "")).startswith("whitebox")
             and s.deployed.accuracy.value is not None]
    if white:
        worst = min(white, key=lambda s: s.deployed.accuracy.value)
        parts.append(f"white-box robust accuracy {pct(worst.deployed.accuracy, ci=False)} on {worst.name} (worst)")
    return "Deployed vs base: " + ", ".join(parts) + "."


# Sections of the robustness tables, by SetResult.source: transfer and white-box sets are never mixed.
SECTIONS = (
    (("clean", "transfer"), "clean and transfer sets (crafted on the base model)"),
    (("whitebox-fp32",), "white-box fp32 sets (crafted on the pruned model itself)"),
    (("whitebox-int8",), "white-box int8 sets (crafted on an int8 simulation of the deployed model)"),
)


def sections(report: AuditReport) -> list[tuple[str, list]]:
    """(title, sets) per source present in the report, in SECTIONS order; unknown sources last."""
    known = {src for srcs, _ in SECTIONS for src in srcs}
    out = [(title, [s for s in report.sets if getattr(s, "source", "transfer") in srcs]) for srcs, title in SECTIONS]
    out.append(("other sets", [s for s in report.sets if getattr(s, "source", "transfer") not in known]))
    return [(t, sets) for t, sets in out if sets]


def _robustness_rows(report: AuditReport, compact: bool = False, ci: bool = True, sets=None) -> list[list[str]]:
    rows = []
    for s in (report.sets if sets is None else sets):
        asr = [pct(s.base.attack_success, ci=False), pct(s.deployed.attack_success, ci=False)]
        if compact:
            asr = [f"{asr[0]} → {asr[1]}" if s.kind == "adversarial" else "–"]
        rows.append([s.name, str(s.n), pct(s.base.accuracy, ci), pct(s.deployed.accuracy, ci), pp(s.delta_accuracy),
                     *asr, pct(s.transfer_success, ci=False), pct(s.flip_rate, ci=False),
                     pval(s.mcnemar.p_value)])
    return rows


_ROB_HEAD = ["set", "n", "base acc [95% CI]", "deployed acc [95% CI]", "Δ", "ASR base", "ASR deployed",
             "transfer", "flips", "McNemar p"]
_ROB_HEAD_COMPACT = ["set", "n", "base acc [95% CI]", "deployed acc [95% CI]", "Δ", "ASR base → dep.",
                     "transfer", "flips", "McNemar p"]


def _speed_rows(m: MeasureReport, compact: bool = False) -> list[list[str]]:
    rows = []
    for i, bs in enumerate(b for b in m.settings.batch_sizes if b not in m.skipped_batch_sizes):
        row = [str(bs)]
        for model in m.models:
            lat = model.latency[i]
            if compact:
                row += [ms(lat.p50_ms)]
            else:
                row += [ms(lat.p50_ms), f"{ms(lat.p90_ms)} / {ms(lat.p99_ms)}", f"{lat.cv:.2f}",
                        f"{lat.throughput_per_s:,.0f}"]
        if m.speedup:
            row.append(f"{m.speedup[i].p50:.2f}×")
        if compact:
            lat = m.models[-1].latency[i]
            row += [ms(lat.p99_ms), f"{lat.cv:.2f}", f"{lat.throughput_per_s:,.0f}"]
        rows.append(row)
    return rows


def _speed_head(m: MeasureReport, compact: bool = False) -> list[str]:
    head = ["batch"]
    for model in m.models:
        head += [f"{model.role} p50"] if compact else [
            f"{model.role} p50", f"{model.role} p90 / p99", f"{model.role} cv", f"{model.role} samples/s"]
    if m.speedup:
        head.append("speedup")
    if compact:
        last = m.models[-1].role
        head += [f"{last} p99", "cv", "samples/s"]
    return head


def _resource_lines(m: MeasureReport) -> list[str]:
    lines = []
    for model in m.models:
        mem = model.memory
        mem_s = (f"peak RSS {mib(mem.peak_mb)} at batch {mem.batch_size} ({mem.method}, fresh process)"
                 if mem else "peak memory not measured")
        lines.append(f"{model.role}: size {mib(model.size_mb)}, {mem_s}, session created in "
                     f"{model.session.creation_s * 1000:.0f} ms on {', '.join(model.session.providers)}")
    return lines


def _budget_lines(report: AuditReport) -> list[tuple[str, bool | None]]:
    out = []
    for b in report.budgets:
        mark = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[b.passed]
        value = "–" if b.value is None else f"{b.value:.4g} {b.unit}"
        out.append((f"{mark}  {b.name}: {value} (limit {b.limit:g} {b.unit})", b.passed))
    return out


# ---------------------------------------------------------------------------------------------
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
    out += ["## Robustness", "",
            "Accuracy with 95% Wilson intervals; Δ = deployed − base; ASR = attack success rate (share of "
            "clean-correct samples the set fools); transfer = share of base-fooling samples that also fool "
            "the deployed model; flips = share of samples where the two models disagree; McNemar p = exact "
            "test of deployed vs base correctness. Transfer sets are crafted on the base model; white-box "
            "sets on the compressed model itself, so base columns there are transfer in the other direction.", ""]
    for title, sets in sections(report):
        out += [f"### {title[0].upper()}{title[1:]}", "", _md_table(_ROB_HEAD, _robustness_rows(report, sets=sets)), ""]
    out += ["## Speed", "",
            f"Interleaved rounds: {m.settings.rounds}+ rounds × {m.settings.runs_per_round} runs after "
            f"{m.settings.warmup_runs} warmup runs.", "",
            _md_table(_speed_head(m), _speed_rows(m)), ""]
    out += [f"- {line}" for line in _resource_lines(m)]
    if report.budgets:
        out += ["", "## Budgets", ""] + [f"- {line}" for line, _ in _budget_lines(report)]
    out += ["", "## Setup", "",
            f"- model: `{report.model}`", f"- baseline: `{report.baseline}`", f"- eval set: `{report.eval_set}`",
            f"- bundle verified: {'yes' if report.verified else 'no'}",
            f"- profile: {report.profile} ({report.profile_source})"
            + (f"; chosen automatically: {report.profile_reason}" if report.profile_reason else ""),
            f"- host: {h.cpu}, {h.cores} cores, {h.os}, Python {h.python}, onnxruntime {h.onnxruntime}",
            f"- providers available: {', '.join(h.available_providers)}",
            f"- edgerobust {report.edgerobust_version}, {report.created}", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Rich


def _table(title: str, head: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(head):
        t.add_column(col, justify="left" if i == 0 else "right", overflow="fold", no_wrap=i == 0)
    for r in rows:
        t.add_row(*r)
    return t


def render_measure(m: MeasureReport, console: Console) -> None:
    if m.fallback:
        for model in m.models:
            if model.session.fallback:
                console.print(f"[bold yellow]WARNING: FALLBACK[/bold yellow] {model.role}: profile asked for "
                              f"{', '.join(model.session.requested_providers)}; ran on "
                              f"{', '.join(model.session.providers)}. Not the profiled device's numbers.")
    console.print(_table(f"Latency on {m.profile} (interleaved rounds)", _speed_head(m, compact=True),
                         _speed_rows(m, compact=True)))
    for line in _resource_lines(m):
        console.print(f"  {line}", highlight=False)
    if m.skipped_batch_sizes:
        console.print(f"  batch sizes skipped (fixed batch axis): {', '.join(map(str, m.skipped_batch_sizes))}")


def render(report: AuditReport, console: Console) -> None:
    """The audit in the terminal: warnings, headline, robustness next to speed, budgets."""
    for w in report.warnings:
        style = "bold yellow" if w.startswith("fallback") else "yellow"
        console.print(f"[{style}]WARNING:[/{style}] {w}", highlight=False)
    console.print(f"[bold]{headline(report)}[/bold]", highlight=False)
    # The full table needs about 125 columns; a narrower terminal gets the essentials, and the
    # 95% CIs and attack success rates stay in report.md / report.json.
    for title, sets in sections(report):
        rows = _robustness_rows(report, compact=True, ci=console.width >= 125, sets=sets)
        if console.width >= 125:
            console.print(_table(f"Robustness (base vs deployed): {title}", _ROB_HEAD_COMPACT, rows))
        else:
            keep = [0, 1, 2, 3, 4, 6, 7, 8]
            head = ["set", "n", "base", "deployed", "Δ", "transfer", "flips", "McNemar p"]
            console.print(_table(f"Robustness (base vs deployed; CIs and ASR in report.md): {title}", head,
                                 [[r[i] for i in keep] for r in rows]))
    render_measure(report.measurement, console)
    if report.budgets:
        console.print(f"[bold]Budgets ({report.profile}):[/bold]")
        for line, passed in _budget_lines(report):
            color = {True: "green", False: "red", None: "yellow"}[passed]
            console.print(f"  [{color}]{line}[/{color}]", highlight=False)
