"""Every precision variant an audit measured, side by side, and which one is fastest on this device.

A bundle holds the pruned model in each precision it was made in (model_fp32.onnx, model_fp16.onnx,
model_int8.onnx; one of them is model.onnx, the deployed one). Which is fastest depends on the
device's runtime: int8 on a CPU with VNNI, fp16 or fp32 on a CUDA GPU without TensorRT (where
int8 QDQ nodes fall back to the CPU). The audit times them all in one interleaved run with the
base, replays every set through each, and this module says which is fastest per batch size,
whether that is the deployed one, and when the deployed model is slower than the base.

"Fastest" is said only when the runner-up is slower beyond both p50 intervals and by at least 5%;
otherwise the two are too close to call on this run. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgerobust.edge.runtime.latency import LatencyStats
from edgerobust.edge.runtime.measure import MeasureReport, Speedup, speedups
from edgerobust.edge.scores.stats import Proportion


PRACTICAL = 1.05  # p50s closer than 5% are too close to call, however tight their intervals


@dataclass(frozen=True)
class VariantRow:
    """One measured model: its role, precision, file, size, latency, speedup over base and accuracy."""

    role: str
    label: str
    precision: str | None
    path: str
    size_mb: float
    latency: tuple[LatencyStats, ...]
    speedup: tuple[Speedup, ...]
    clean: Proportion | None
    worst: Proportion | None  # lowest accuracy over the transfer sets (all models answer the same inputs)
    worst_set: str | None
    resident: tuple[LatencyStats, ...] = ()  # device-resident path (IO binding), when the profile measures it
    resident_speedup: tuple[Speedup, ...] = ()


@dataclass(frozen=True)
class Fastest:
    """The fastest model at one batch size. ``ties``: the models whose p50 interval overlaps its own
    (too close to call on this run); ``deployed_ratio``: deployed p50 / fastest p50, and
    ``deployed_clear`` whether their intervals are apart."""

    batch_size: int
    role: str
    label: str
    p50_ms: float
    ties: tuple[str, ...]
    deployed_ratio: float | None
    deployed_clear: bool


def _label(role: str, report) -> str:
    if role == "base":
        return "base (fp32)"
    if role == "deployed":
        v = getattr(report, "deployed_variant", None)
        return f"deployed ({v})" if v else "deployed"
    return role


def _scores(report, role: str, s) -> Proportion | None:
    if role in ("base", "deployed"):
        return getattr(s, role).accuracy
    v = s.variants.get(role)
    return v.accuracy if v is not None else None


def variant_rows(report) -> list[VariantRow]:
    """One row per model the audit measured: base, deployed, then the other variants."""
    m: MeasureReport = report.measurement
    clean = next((s for s in report.sets if s.kind == "clean"), None)
    transfer = [s for s in report.sets if s.kind == "adversarial" and s.source == "transfer"]
    rows = []
    for model in m.models:
        accs = [(s.name, _scores(report, model.role, s)) for s in transfer]
        accs = [(n, a) for n, a in accs if a is not None and a.value is not None]
        worst = min(accs, key=lambda t: t[1].value) if accs else (None, None)
        rows.append(VariantRow(
            role=model.role, label=_label(model.role, report),
            precision="fp32" if model.role == "base" else report.variants.get(model.role),
            path=model.path, size_mb=model.size_mb, latency=model.latency, speedup=speedups(m, model.role),
            clean=_scores(report, model.role, clean) if clean else None, worst=worst[1], worst_set=worst[0],
            resident=tuple(getattr(model, "resident_latency", ()) or ()),
            resident_speedup=tuple((getattr(m, "resident_speedup", None) or {}).get(model.role, ()))))
    return rows


def fastest(report, batch_size: int, resident: bool = False) -> Fastest | None:
    """The model with the lowest p50 at ``batch_size``, those too close to call, and the deployed one against it;
    ``resident``: on the device-resident path instead of from host memory."""
    cands = []
    for row in variant_rows(report):
        lat = next((t for t in (row.resident if resident else row.latency) if t.batch_size == batch_size), None)
        if lat is not None:
            cands.append((lat, row))
    if not cands:
        return None
    cands.sort(key=lambda c: c[0].p50_ms)
    best, row = cands[0]

    def apart(lat: LatencyStats) -> bool:  # slower than the best beyond its interval and by PRACTICAL or more
        return best.p50_ci_high_ms < lat.p50_ci_low_ms and lat.p50_ms > PRACTICAL * best.p50_ms

    ties = tuple(r.label for lat, r in cands[1:] if not apart(lat))
    dep = next((lat for lat, r in cands if r.role == "deployed"), None)
    return Fastest(batch_size, row.role, row.label, best.p50_ms, ties,
                   None if dep is None else dep.p50_ms / best.p50_ms, dep is not None and dep is not best and apart(dep))


def has_variants(report) -> bool:
    """Whether the audit measured more than base and deployed."""
    return len(report.measurement.models) > 2


def _batches(m: MeasureReport) -> list[int]:
    return [b for b in m.settings.batch_sizes if b not in m.skipped_batch_sizes]


def slower_than_base(report) -> str | None:
    """A sentence when the deployed model is not faster than the base at batch 1 (or the first size)."""
    sp = next((s for s in report.measurement.speedup if s.batch_size == 1), None) or \
        (report.measurement.speedup[0] if report.measurement.speedup else None)
    if sp is None or sp.p50 >= 1:
        return None
    if sp.p50_high < 1:
        return (f"The deployed model is SLOWER than the base on this device at batch {sp.batch_size}: "
                f"{sp.p50:.2f}× (95% interval {sp.p50_low:.2f}–{sp.p50_high:.2f}×).")
    return (f"The deployed model is no faster than the base on this device at batch {sp.batch_size}: "
            f"{sp.p50:.2f}× (95% interval {sp.p50_low:.2f}–{sp.p50_high:.2f}× includes 1).")


def better_variant(report, min_ratio: float = 1.1) -> str | None:
    """A sentence when the fastest of the bundle's other variants beats the deployed one at batch 1 (or the
    first size) by at least ``min_ratio`` with the two p50 intervals apart (the base is not a variant)."""
    batches = _batches(report.measurement)
    if not has_variants(report) or not batches:
        return None
    bs = 1 if 1 in batches else batches[0]
    rows = {r.role: r for r in variant_rows(report)}

    def at(r: VariantRow) -> LatencyStats | None:
        return next((t for t in r.latency if t.batch_size == bs), None)

    dep = at(rows["deployed"])
    others = [(at(r), r) for role, r in rows.items() if role not in ("base", "deployed") and at(r) is not None]
    if dep is None or not others:
        return None
    lat, row = min(others, key=lambda c: c[0].p50_ms)
    ratio = dep.p50_ms / lat.p50_ms
    if ratio < min_ratio or not lat.p50_ci_high_ms < dep.p50_ci_low_ms:
        return None
    sp = next((s for s in row.speedup if s.batch_size == bs), None)
    dsp = next((s for s in rows["deployed"].speedup if s.batch_size == bs), None)
    return (f"The bundle's {row.role} variant ({Path(row.path).name}) is {ratio:.2f}× faster here than the deployed "
            f"{report.deployed_variant or 'model'}: {sp.p50:.2f}× the base against {dsp.p50:.2f}× at batch {bs}. "
            "Deploy it on this device, or compress again with this device's profile as the target.")


def has_resident(report) -> bool:
    return any(getattr(m, "resident_latency", ()) for m in report.measurement.models)


def fastest_lines(report) -> list[str]:
    """Per batch size (and path, when the device-resident one was measured too): which model is fastest on
    this device and whether it is the deployed one."""
    paths = ((False, "from host memory, "), (True, "device-resident, ")) if has_resident(report) else ((False, ""),)
    return [line for resident, where in paths for line in _fastest_lines(report, resident, where)]


def _fastest_lines(report, resident: bool, where: str) -> list[str]:
    out = []
    for bs in _batches(report.measurement):
        f = fastest(report, bs, resident)
        if f is None:
            continue
        head = f"{where}batch {bs}"
        tie = f", with {', '.join(f.ties)} too close to call (within 5% or p50 intervals overlapping)" if f.ties else ""
        if f.role == "deployed":
            out.append(f"{head}: the deployed model is the fastest ({f.p50_ms:.3g} ms p50){tie}.")
        elif not f.deployed_clear:
            out.append(f"{head}: {f.label} is the fastest ({f.p50_ms:.3g} ms p50){tie}.")
        else:
            out.append(f"{head}: **{f.label}** is the fastest ({f.p50_ms:.3g} ms p50){tie}; the deployed "
                       f"model takes {f.deployed_ratio:.2f}× as long.")
    return out


def _pct(p: Proportion | None) -> str:
    return "–" if p is None or p.value is None else f"{100 * p.value:.1f}%"


def variant_table(report, full: bool = True) -> tuple[list[str], list[list[str]]]:
    """Head and rows: per model, file, size, p50 and speedup per batch size, clean and worst transfer
    accuracy. ``full=False`` (a narrow terminal): no file, size, intervals or set name."""
    from edgerobust.edge.render.speed_lines import mib, ms

    batches = _batches(report.measurement)
    if full:
        head = ["model", "file", "size"] + [h for bs in batches for h in (f"p50 b{bs}", f"speedup b{bs}")] + \
            ["clean acc", "worst transfer acc"]
    else:
        head = ["model"] + [h for bs in batches for h in (f"b{bs} p50", f"b{bs} ×")] + ["clean", "worst adv"]
    res = has_resident(report)
    if res:  # the device-resident path (IO binding) beside the host-memory one
        head[-2:-2] = [h for bs in batches for h in (f"resident p50 b{bs}", f"resident × b{bs}")]
    rows = []
    for r in variant_rows(report):
        row = [r.label] + ([Path(r.path).name, mib(r.size_mb)] if full else [])
        for bs in batches:
            lat = next((t for t in r.latency if t.batch_size == bs), None)
            sp = next((s for s in r.speedup if s.batch_size == bs), None)
            speed = "–" if sp is None else f"{sp.p50:.2f}×" + (f" [{sp.p50_low:.2f}–{sp.p50_high:.2f}]" if full else "")
            row += [ms(lat.p50_ms) if lat else "–", "1" if r.role == "base" else speed]
        if res:
            for bs in batches:
                lat = next((t for t in r.resident if t.batch_size == bs), None)
                sp = next((s for s in r.resident_speedup if s.batch_size == bs), None)
                row += [ms(lat.p50_ms) if lat else "–", "1" if r.role == "base" else
                        ("–" if sp is None else f"{sp.p50:.2f}×")]
        worst = _pct(r.worst) + (f" ({r.worst_set})" if full else "") if r.worst_set else "–"
        rows.append(row + [_pct(r.clean), worst])
    return head, rows
