"""Estimates and energy as text: every estimated figure labelled so, with its band, apart from the measured tables.

* the estimate (:mod:`edgerobust.edge.estimate.predict`): a headline sentence, a Markdown section and
  terminal lines, each saying "estimated" and for which calibrated device;
* energy (:mod:`edgerobust.edge.runtime.energy`): joules per inference next to the latency, or
  "energy: absent (reason)".

Torch-free.
"""
from __future__ import annotations

from edgerobust.edge.estimate.composed import BAND, key_parts, model_errors


def _ms(v: float | None) -> str:
    return "–" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _band(lo: float | None, hi: float | None, unit: str = "") -> str:
    return "" if lo is None or hi is None else f"[{_ms(lo)}–{_ms(hi)}{unit}]"


def _speed(s: dict | None) -> str:
    return "–" if not s else f"{s['p50']:.2f}× [{s['low']:.2f}–{s['high']:.2f}×]"


def _where(e) -> str:
    here = "this host is the calibrated one" if e.same_host else "not measured on this host"
    return f"{e.device}, calibrated {e.calibrated[:10]}; {here}"


def estimate_headline(e) -> str | None:
    """One sentence for the audit headline: the deployed model's estimated p50 and speedup on the device."""
    if e is None:
        return None
    dep = e.model("deployed") or (e.models[-1] if e.models else None)
    if dep is None or dep.p50_ms is None:
        return f"ESTIMATED on {e.profile}: none (see the estimate's warnings)."
    sp = e.speedup.get(dep.role)
    return (f"ESTIMATED on {e.profile} from its calibration (not a measurement): {dep.role} p50 {_ms(dep.p50_ms)} ms "
            f"{_band(dep.low_ms, dep.high_ms, ' ms')} at batch {dep.batch_size}"
            + (f", {_speed(sp)} faster than base" if sp else "")
            + ".")


def _batches(e) -> tuple[int, ...]:
    return tuple(getattr(e, "batch_sizes", None) or (e.batch_size,))


def estimate_rows(e) -> tuple[list[str], list[list[str]]]:
    several = len(_batches(e)) > 1
    head = (["batch"] if several else []) + ["model", "estimated p50 ms", "band ms", "estimated speedup", "kernels",
                                             "largest kinds (ms)"]
    rows = []
    for m in e.models:
        kinds = sorted(m.by_kind.items(), key=lambda kv: -kv[1])[:3]
        speed = (getattr(e, "speedups", None) or {}).get(str(m.batch_size), e.speedup if m.batch_size == e.batch_size
                                                          else {})
        rows.append(([str(m.batch_size)] if several else [])
                    + [m.role, _ms(m.p50_ms) if m.p50_ms is not None else f"none: no {', '.join(m.missing)} calibration",
                       _band(m.low_ms, m.high_ms), _speed(speed.get(m.role)) if m.role != "base" else "1",
                       str(m.kernels), ", ".join(f"{k} {_ms(v)}" for k, v in kinds)])
    return head, rows


def estimate_notes(e) -> list[str]:
    h = e.holdout
    worst = sorted((k for k, v in h.items() if v.get("n")), key=lambda k: h[k].get("within20", 1))[:3]
    notes = [f"Model: {e.model_form}. Band: {e.band}.",
             "Held-out kernels within ±20%: " + ", ".join(f"{k} {100 * h[k]['within20']:.0f}% (n={h[k]['n']})"
                                                         for k in sorted(h) if h[k].get("n")) + ".",
             f"Calibration: `{e.calibration}`" + (f" (sha256 `{e.calibration_sha256[:16]}…`)" if e.calibration_sha256 else "")
             + ". " + _batch_note(e)]
    if worst:
        notes.append("Least certain kinds: " + ", ".join(f"{k} (median |error| {100 * h[k]['median_abs']:.0f}%)"
                                                        for k in worst) + ".")
    return notes + [f"**Warning:** {w}" for w in e.warnings]


def _batch_note(e) -> str:
    sizes = _batches(e)
    if sizes == (1,):
        return "Batch size 1."
    return (f"Batch sizes {', '.join(map(str, sizes))}: the calibration times its kernels at batch 1 and some at batch "
            "8; each batch size is predicted from the same fits with its work, bytes and images, its band from the "
            "calibration's networks at the batch size nearest (checked against measurement in docs/estimate.md).")


def estimate_html(e, table, esc) -> list[str]:
    """The report.html section: the same table and notes as report.md, every figure labelled estimated;
    ``table(head, rows)`` and ``esc`` are the page's."""
    if e is None:
        return []
    head, rows = estimate_rows(e)
    return ([f"<h2>{esc(f'Estimated latency on {e.profile} (estimates, not measurements)')}</h2>",
             "<p class=meta>" + esc(f"Predicted from a calibration of {_where(e)}: every figure in this section is an "
                                    "estimate, with its band; the measured tables above are this host's.") + "</p>",
             table(head, rows), "<ul>"]
            + [f"<li>{esc(n.replace('**', '').replace('`', ''))}</li>" for n in estimate_notes(e)] + ["</ul>"])


def estimate_md(e, table) -> list[str]:
    """The report.md section; ``table(head, rows)`` renders a Markdown table."""
    if e is None:
        return []
    head, rows = estimate_rows(e)
    return (["", f"## Estimated latency on {e.profile} (estimates, not measurements)", "",
             f"Predicted from a calibration of {_where(e)}: every figure in this section is an **estimate**, "
             "with its band; the measured tables above are this host's.", "", table(head, rows), ""]
            + [f"- {n}" for n in estimate_notes(e)])


def estimate_terminal(e) -> tuple[str, list[str], list[list[str]], list[str]]:
    """(title, head, rows, notes) for a terminal table of the estimate."""
    head, rows = estimate_rows(e)
    return (f"ESTIMATED latency on {e.profile} at batch {', '.join(map(str, _batches(e)))} ({_where(e)})", head, rows,
            [n.replace("**", "").replace("`", "") for n in estimate_notes(e)])


def calibration_table(cal) -> tuple[str, list[str], list[list[str]], list[str]]:
    """(title, head, rows, notes) of a calibration: per kernel type, its points and its held-out error."""
    title = (f"Calibration of {cal.describe()}: {len(cal.samples)} kernels timed in {cal.seconds:.0f} s "
             f"({cal.timing} timing)")
    head = ["kernel", "fit / held out", "held-out median |error|", "within ±10%", "within ±20%"]
    rows = []
    for key, f in sorted(cal.fits.items()):
        h = f.get("holdout", {})
        n = h.get("n", 0)
        rows.append([key, f"{f['n_fit']} / {n}", f"{100 * h['median_abs']:.0f}%" if n else "–",
                     f"{100 * h['within10']:.0f}%" if n else "–", f"{100 * h['within20']:.0f}%" if n else "–"])
    rounds = getattr(cal, "fixed_rounds", ())
    spread = (f" (medians of {len(rounds)} measurements; the profiler's ranged {min(r[2] for r in rounds):.2f}-"
              f"{max(r[2] for r in rounds):.2f})" if len(rounds) > 1 and cal.profiler_us else "")
    notes = [f"run {cal.run_us:.1f} µs, node {cal.node_us:.2f} µs, profiler {cal.profiler_us:.2f} µs a node{spread}; "
             f"residual adds fused into convolutions: {'yes' if cal.fuses_add else 'no'}; NCHWc layout: "
             + (f"blocks of {cal.nchwc_block}" if getattr(cal, "nchwc_block", 0) else "none")]
    for key, pairs in sorted((getattr(cal, "composed", None) or {}).items()):
        e = model_errors(pairs)
        dtype, batch = key_parts(key)
        if e["n"]:
            notes.append(f"its own {e['n']} {dtype} networks{f' at batch {batch}' if batch != 1 else ''}, predicted vs measured: median {100 * e['median']:+.0f}%, "
                         f"{BAND[0]}th-{BAND[1]}th percentile {100 * e['low']:+.0f}% to {100 * e['high']:+.0f}%, within "
                         f"±10%: {100 * e['within10']:.0f}% (an estimate's band)")
    if cal.other_load is not None:
        notes.append(f"other processes used {100 * cal.other_load:.0f}% of the cores meanwhile"
                     + (" (the kernel times may be slow: calibrate again when the device is idle)"
                        if cal.other_load > 0.1 else ""))
    return title, head, rows, notes


# =============================================================================================
# energy


def energy_lines(m) -> list[str]:
    """Joules per inference of each model measured, or why there is none."""
    en = getattr(m, "energy", None)
    if en is None:
        return []
    if not en.available:
        return [f"energy: absent ({en.reason})"]
    idle = next((r.idle_watts for r in en.models if r.idle_watts is not None), None)
    per = ", ".join(f"{r.role} {r.joules_per_inference:.4g} J/inference" for r in en.models)
    return [f"energy ({en.source}, {en.domain}; {en.note}" + (f"; {idle:.1f} W idle" if idle is not None else "")
            + f", batch {en.models[0].batch_size if en.models else 1}): {per}"]
