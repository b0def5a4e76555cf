"""The speed and resource lines of the audit's reports (terminal, report.md, report.html): latency
tables with their intervals, how latency was measured, sizes, memory and budgets. torch-free."""
from __future__ import annotations

from edgerobust.edge.audit import AuditReport
from edgerobust.edge.runtime.measure import PROCESS_SPREAD, MeasureReport, process_speedups
from edgerobust.edge.runtime.resident import HOST_PATH, path_label


def ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1000:.1f} µs" if v < 0.1 else f"{v:.2f} ms"


def mib(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v * 1024:.1f} KiB" if v < 1 else f"{v:.1f} MiB"


MAIN_ROLES = ("base", "deployed", "model")


def main_models(m: MeasureReport) -> list:
    """The models of the main speed table: base and deployed (or the one model); the bundle's other
    precision variants, when the audit measured them, have their own table (edgerobust.edge.render.variant_table)."""
    return [model for model in m.models if model.role in MAIN_ROLES] or list(m.models)


def speed_rows(m: MeasureReport, compact: bool = False) -> list[list[str]]:
    rows = []
    for i, bs in enumerate(b for b in m.settings.batch_sizes if b not in m.skipped_batch_sizes):
        row = [str(bs)]
        for model in main_models(m):
            lat = model.latency[i]
            if compact:
                row += [ms(lat.p50_ms)]
            else:
                row += [f"{ms(lat.p50_ms)} [{ms(lat.p50_ci_low_ms)}–{ms(lat.p50_ci_high_ms)}]",
                        f"{ms(lat.p90_ms)} / {ms(lat.p99_ms)}", f"{lat.cv:.2f}", f"{lat.throughput_per_s:,.0f}"]
        if m.speedup:
            sp = m.speedup[i]
            row.append(f"{sp.p50:.2f}×" if compact else f"{sp.p50:.2f}× [{sp.p50_low:.2f}–{sp.p50_high:.2f}]")
        if compact:
            lat = main_models(m)[-1].latency[i]
            row += [ms(lat.p99_ms), f"{lat.cv:.2f}", f"{lat.throughput_per_s:,.0f}"]
        rows.append(row)
    return rows


def speed_head(m: MeasureReport, compact: bool = False) -> list[str]:
    head = ["batch"]
    for model in main_models(m):
        head += [f"{model.role} p50"] if compact else [
            f"{model.role} p50 [95% CI]", f"{model.role} p90 / p99", f"{model.role} cv", f"{model.role} samples/s"]
    if m.speedup:
        head.append("speedup")
    if compact:
        last = main_models(m)[-1].role
        head += [f"{last} p99", "cv", "samples/s"]
    return head


def settings_line(m: MeasureReport) -> str:
    """How the latency was measured, in one sentence (the settings the profile gave)."""
    st = m.settings
    # what really ran (the sessions' isolation), not only what the profile asked: one model is timed
    # alone in this process, and "pool" becomes "park" with allow_spinning = false or an affinity
    iso = m.models[0].session.isolation if m.models else st.isolation
    n = max((len(lat.process_p50_ms) for model in m.models for lat in model.latency), default=0)
    fresh = f"in {n} fresh processes one after another (runs pooled), each" if n > 1 else "in a fresh process"
    one = len(m.models) == 1
    how = {"pool": f"One model, timed {fresh.removesuffix(', each')}" if one else
                   f"Models timed in turn, {fresh} with its sessions sharing one thread pool (no cross-talk "
                   "between the models)",
           "park": "Models timed in turn, with each session's threads parked between runs",
           "none": "Models timed in turn, with idle sessions' threads left spinning (cross-talk possible)",
           "alone": "One model, timed alone in this process"}.get(iso, f"Models timed in turn ({iso})")
    line = f"{how}: at least {st.rounds} rounds of {st.runs_per_round}+ runs after {st.warmup_runs} warmup runs"
    if st.min_seconds:
        line += f", at least {st.min_seconds:g} s of timed runs per model and batch size"
    if st.ci_target:
        line += f", until each p50's 95% interval is within ±{100 * st.ci_target:g}%"
    if st.max_seconds:
        line += f" (at most {st.max_seconds:g} s)"
    line += ". p50 [95% CI] from order statistics; the speedup interval pairs the two p50 intervals."
    if _resident_models(m):
        line += (f" Two paths per model, timed in the same rounds: {HOST_PATH} (numpy in, numpy out each run; "
                 f"the first table) and {path_label(st.cuda_graph)} (the input copied to the device once, the "
                 "outputs bound there; the second table).")
    else:
        line += f" Timed {HOST_PATH} (numpy in, numpy out each run)."
    if m.other_load is not None:
        line += (f" Other processes used {100 * m.other_load:.0f}% of the cores meanwhile"
                 + (": the figures are noisier than on an idle host." if m.other_load > 0.1 else "."))
    return line


def _resident_models(m: MeasureReport) -> list:
    """Base and deployed (or the one model) on the device-resident path; the other variants' figures
    are in the variants table."""
    return [model for model in main_models(m) if getattr(model, "resident_latency", ())]


def resident_head(m: MeasureReport, compact: bool = False) -> list[str]:
    """The device-resident table's columns (empty when that path was not measured)."""
    models = _resident_models(m)
    if not models:
        return []
    head = ["batch"]
    for model in models:
        head += [f"{model.role} p50"] if compact else [f"{model.role} p50 [95% CI]", f"{model.role} samples/s"]
    head += [f"{role} speedup" for role in m.resident_speedup if role in MAIN_ROLES]
    return head


def resident_rows(m: MeasureReport, compact: bool = False) -> list[list[str]]:
    """The device-resident path per batch size: each model's p50, and each model's speedup over base."""
    models = _resident_models(m)
    rows = []
    for i, lat0 in enumerate(models[0].resident_latency if models else ()):
        row = [str(lat0.batch_size)]
        for model in models:
            lat = model.resident_latency[i]
            row += [ms(lat.p50_ms)] if compact else [
                f"{ms(lat.p50_ms)} [{ms(lat.p50_ci_low_ms)}–{ms(lat.p50_ci_high_ms)}]", f"{lat.throughput_per_s:,.0f}"]
        for sp in (v[i] for role, v in m.resident_speedup.items() if role in MAIN_ROLES):
            row.append(f"{sp.p50:.2f}×" if compact else f"{sp.p50:.2f}× [{sp.p50_low:.2f}–{sp.p50_high:.2f}]")
        rows.append(row)
    return rows


def resident_title(m: MeasureReport) -> str:
    return f"Latency {path_label(m.settings.cuda_graph)}"


def _gpu_memory(mem) -> str:
    if getattr(mem, "gpu_peak_mb", None) is not None:
        return f", peak GPU memory {mib(mem.gpu_peak_mb)} ({mem.gpu_method})"
    return f", GPU memory not measured: {mem.gpu_method}" if getattr(mem, "gpu_method", None) else ""


def resource_lines(m: MeasureReport) -> list[str]:
    lines = []
    for model in m.models:
        mem = model.memory
        mem_s = (f"peak RSS {mib(mem.peak_mb)} at batch {mem.batch_size} ({mem.method}, fresh process){_gpu_memory(mem)}"
                 if mem else "peak memory not measured")
        lines.append(f"{model.role}: size {mib(model.size_mb)}, {mem_s}, session created in "
                     f"{model.session.creation_s * 1000:.0f} ms on {', '.join(model.session.providers)}")
    return lines


def budget_lines(report: AuditReport) -> list[tuple[str, bool | None]]:
    out = []
    for b in report.budgets:
        mark = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[b.passed]
        value = "–" if b.value is None else f"{b.value:.4g} {b.unit}"
        line = f"{mark}  {b.name}: {value} (limit {b.limit:g} {b.unit})"
        out.append((line if b.evidence else f"{line}, not evidence for the device", b.passed))
    return out


def latency_title(report_profile: str, host_note: str | None) -> str:
    if host_note:
        return f"Latency of {report_profile}'s settings on this host ({host_note}), not on the device"
    return f"Latency on {report_profile}"


def noise_warnings(m: MeasureReport) -> list[str]:
    """Said next to the latency figures when they cannot be trusted as they stand: a busy host, or a
    speedup whose 95% interval is wide (report.md has every interval)."""
    out = []
    if m.other_load is not None and m.other_load > 0.1:
        out.append(f"other processes used {100 * m.other_load:.0f}% of the cores while latency was measured: "
                   "the figures are this busy host's, noisier and slower than an idle one's.")
    batches = [b for b in m.settings.batch_sizes if b not in m.skipped_batch_sizes]
    for bs, sp in zip(batches, m.speedup or []):
        lo, hi = sp.p50_low, sp.p50_high
        if lo > 0 and hi / lo > 1.5:
            out.append(f"the batch-{bs} speedup {sp.p50:.2f}× is uncertain: its 95% interval is {lo:.2f}–{hi:.2f}×.")
    return out + process_warnings(m, batches)


def process_warnings(m: MeasureReport, batches: list[int]) -> list[str]:
    """When the fresh probe processes (measure.processes) disagree on what is reported: the speedup in
    each process (base and deployed), else each process's p50 (one model)."""
    out = []
    for i, bs in enumerate(batches):
        sps = process_speedups(m, bs)
        if sps:
            if m.speedup and max(sps) / min(sps) > PROCESS_SPREAD:
                out.append(f"the batch-{bs} speedup was {', '.join(f'{v:.2f}×' for v in sps)} in the {len(sps)} "
                           f"fresh probe processes (the pooled figure is {m.speedup[i].p50:.2f}×): this host runs the "
                           "models at more than one speed from process to process (cache placement, neighbours on "
                           "a shared machine).")
            continue
        for model in m.models:
            pp = model.latency[i].process_p50_ms if i < len(model.latency) else ()
            if len(pp) > 1 and min(pp) > 0 and max(pp) / min(pp) > PROCESS_SPREAD:
                out.append(f"the {model.role} model's p50 at batch {bs} differed between the {len(pp)} probe processes "
                           f"({', '.join(f'{v:.3g}' for v in pp)} ms): this host runs it at more than one speed from "
                           "process to process (cache placement, neighbours on a shared machine); the figures pool "
                           "every run.")
    return out
