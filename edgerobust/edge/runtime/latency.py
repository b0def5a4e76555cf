"""Latency of one or more models, timed in interleaved rounds until the median is known well enough.

* **Interleaved rounds**: after warmup, round r gives each model one *turn* of timed runs, in
  the given order when r is even and reversed when odd, so slow drift (clocks, heat,
  background load) hits every model alike.
* **No cross-talk**: with one thread pool per session, the idle model's worker threads, still
  spinning after its last run, take cores from the model being timed (resnet18 on 2 cores:
  the idle base session's threads burned 24% of the wall time during the deployed model's
  turns, and the deployed p50 came out 1.7x its p50 alone). The caller isolates the sessions
  (``measure.isolation``: one shared pool in a fresh process, or parked threads; see
  :mod:`edgerobust.edge.runtime.sessions`), and ``switch_warmup_runs`` untimed runs at the start of each
  turn bring the model's weights back into cache.
* **Long enough**: every model's turn lasts about as long (``turn_seconds``, or
  ``runs_per_round`` runs of the slowest model; estimated from warmup), so fast and slow
  models collect measured time at the same pace.
  Rounds go on until every model has ``min_seconds`` of measured runs at this batch size and
  the 95% confidence interval of every model's p50 is within ``±ci_target`` of it, and stop at
  ``max_rounds`` or when a model reaches ``max_seconds``.
* The p50's interval is distribution-free: order statistics of the sorted runs at the ranks
  ``n/2 ± z·sqrt(n)/2`` (the binomial test of the median, normal approximation).

Torch-free: imports numpy only.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgerobust.edge.runtime.profile_schema import MeasureSettings

CI_LEVEL = 0.95


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model at one batch size, over every measured run.

    ``p50_ci_low_ms``/``p50_ci_high_ms`` bound the p50 at ``ci_level``, widened to every probe
    process's own p50 when the runs came from several (``process_p50_ms``): the order-statistic
    interval of pooled runs knows nothing of the process-to-process variation. ``measured_s`` is
    the time spent in timed runs and ``rounds`` the interleaved rounds they came from.
    """

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    throughput_per_s: float
    p50_ci_low_ms: float = float("nan")
    p50_ci_high_ms: float = float("nan")
    ci_level: float = CI_LEVEL
    measured_s: float = 0.0
    rounds: int = 0
    # the p50 in each fresh probe process when the runs came from several (measure.processes)
    process_p50_ms: tuple[float, ...] = ()

    @property
    def p50_ci_halfwidth(self) -> float:
        """Half the p50's interval relative to the p50 (0.02 = ±2%)."""
        return (self.p50_ci_high_ms - self.p50_ci_low_ms) / (2 * self.p50_ms) if self.p50_ms > 0 else math.inf


def median_ci(samples, level: float = CI_LEVEL) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: two order statistics of the samples."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("no samples")
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    half = z * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 1)      # 1-based ranks
    hi = min(int(math.ceil(n / 2 + half)) + 1, n)
    return float(x[lo - 1]), float(x[hi - 1])


def ci_halfwidth(samples, level: float = CI_LEVEL) -> float:
    """Half the median's confidence interval, relative to the median."""
    lo, hi = median_ci(samples, level)
    med = float(np.median(samples))
    return (hi - lo) / (2 * med) if med > 0 else math.inf


def summarize(times_s, batch_size: int, rounds: int = 0, process_p50_ms: tuple[float, ...] = ()) -> LatencyStats:
    """Percentiles (linear interpolation), the p50's interval, mean, std, cv, samples/s."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no timings to summarize")
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    lo, hi = median_ci(ms)
    if len(process_p50_ms) > 1:  # runs pooled from several processes: the interval covers each one's p50 too
        lo, hi = min(lo, *process_p50_ms), max(hi, *process_p50_ms)
    return LatencyStats(batch_size=batch_size, runs=int(ms.size), p50_ms=p50, p90_ms=p90, p99_ms=p99,
                        mean_ms=mean, std_ms=std, cv=std / mean if mean > 0 else 0.0,
                        throughput_per_s=batch_size * 1e3 / mean if mean > 0 else 0.0,
                        p50_ci_low_ms=lo, p50_ci_high_ms=hi, ci_level=CI_LEVEL,
                        measured_s=float(ms.sum() / 1e3), rounds=rounds, process_p50_ms=tuple(process_p50_ms))


def turn_lengths(warmup_s: dict[str, float], settings: MeasureSettings) -> dict[str, int]:
    """Timed runs per turn, so that every model's turn lasts about as long.

    A turn lasts ``turn_seconds`` or ``runs_per_round`` runs of the slowest model, whichever is
    longer; every model runs at least ``runs_per_round`` times (and at most 100 times that).
    """
    k = settings.runs_per_round
    if settings.turn_seconds <= 0 or not warmup_s or min(warmup_s.values()) <= 0:
        return {name: k for name in warmup_s}
    turn = max(settings.turn_seconds, k * max(warmup_s.values()))
    return {name: max(k, min(math.ceil(turn / per_run), 100 * k)) for name, per_run in warmup_s.items()}


def enough(r: int, times: dict[str, list[float]], settings: MeasureSettings) -> bool:
    """The stopping rule: has the measurement run long enough (or hit its caps)?"""
    spent = [sum(v) for v in times.values()]
    if r >= settings.max_rounds or (settings.max_seconds > 0 and max(spent) >= settings.max_seconds):
        return True
    if r < settings.rounds or min(spent) < settings.min_seconds:
        return False
    if settings.ci_target > 0:
        return all(ci_halfwidth(v) <= settings.ci_target for v in times.values())
    return True


def _warmup(runners: dict[str, Callable[[], object]], n: int) -> dict[str, float]:
    """Run each runner ``n`` times; the median seconds per run (0 when n is 0)."""
    per_run = {}
    for name, run in runners.items():
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            run()
            t.append(time.perf_counter() - t0)
        per_run[name] = float(np.median(t)) if t else 0.0
    return per_run


def interleaved_timings(runners: dict[str, Callable[[], object]], settings: MeasureSettings,
                        advance: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Warm up every runner, then time them in alternating-order rounds; seconds per run."""
    order = list(runners)
    lengths = turn_lengths(_warmup(runners, settings.warmup_runs), settings)
    times: dict[str, list[float]] = {name: [] for name in order}
    r = 0
    while not enough(r, times, settings):
        for name in (order if r % 2 == 0 else order[::-1]):
            run, acc = runners[name], times[name]
            for _ in range(settings.switch_warmup_runs if len(order) > 1 else 0):
                run()
            for _ in range(lengths[name]):
                t0 = time.perf_counter()
                run()
                acc.append(time.perf_counter() - t0)
        r += 1
        if advance:
            advance(1)
    return {name: np.asarray(v) for name, v in times.items()}
