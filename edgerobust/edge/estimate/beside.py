"""Estimated devices beside measured ones: the rows `compare` adds for the estimates its reports carry.

An audit run with a calibration file (``estimate``) predicts the bundle's latency on that device; `compare`
shows each such device next to the audited ones, its name marked ESTIMATED, its deployed p50 with the band,
and never mixed into the measured latency rows. One estimate per calibration file and batch size, from the
first report that carries it. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EstimatedLatency:
    """A device predicted, not measured: from the calibration ``calibration`` (its sha256's start, or its path),
    carried by the report in ``report``."""

    device: str
    batch_size: int
    base_p50_ms: float | None
    deployed_p50_ms: float | None
    deployed_low_ms: float | None
    deployed_high_ms: float | None
    speedup: float | None
    calibration: str
    report: str


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v > 0 else None


def estimated_rows(reports: list[tuple[str, dict]]) -> tuple[EstimatedLatency, ...]:
    """The estimates in the reports (folder, report.json's data), one row per calibration and batch size."""
    out, seen = [], set()
    for folder, data in reports:
        e = data.get("estimate")
        if not isinstance(e, dict) or not isinstance(e.get("models"), list):
            continue
        cal = str(e.get("calibration_sha256") or "")[:16] or str(e.get("calibration", "?"))
        speed = e.get("speedups") if isinstance(e.get("speedups"), dict) else {}
        for m in e["models"]:
            if not isinstance(m, dict) or m.get("role") != "deployed":
                continue
            b = m.get("batch_size", e.get("batch_size", 1))
            if not isinstance(b, int) or (cal, b) in seen:
                continue
            seen.add((cal, b))
            base = next((x for x in e["models"] if isinstance(x, dict) and x.get("role") == "base"
                         and x.get("batch_size", b) == b), {})
            sp = (speed.get(str(b)) or (e.get("speedup") if b == e.get("batch_size", 1) else None) or {})
            sp = sp.get("deployed") if isinstance(sp, dict) else None
            out.append(EstimatedLatency(f"{e.get('profile', '?')} (ESTIMATED)", b, _num(base.get("p50_ms")),
                                        _num(m.get("p50_ms")), _num(m.get("low_ms")), _num(m.get("high_ms")),
                                        _num(sp.get("p50")) if isinstance(sp, dict) else None, cal, folder))
    return tuple(out)
