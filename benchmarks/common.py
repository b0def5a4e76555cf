"""Shared helpers of the benchmark harness: the profile, per-round statistics, child processes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgerobust.measure import interleaved_timings
from edgerobust.profiles import DeviceProfile, load_profile

HERE = Path(__file__).resolve().parent
PROFILE_PATH = HERE / "bench-2threads.toml"


def bench_profile(quick: bool = False) -> DeviceProfile:
    p = load_profile(PROFILE_PATH)
    if quick:
        m = dataclasses.replace(p.measure, rounds=4, max_rounds=4, runs_per_round=10, warmup_runs=5)
        p = dataclasses.replace(p, measure=m)
    return p


def spread(values) -> dict:
    """Median with min and max: what every figure of the harness reports."""
    v = np.asarray(list(values), dtype=np.float64)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def interleaved_rounds(runners: dict, settings) -> dict[str, np.ndarray]:
    """edgerobust.measure.interleaved_timings, reshaped to (rounds, runs_per_round) milliseconds."""
    t = interleaved_timings(runners, settings)
    k = settings.runs_per_round
    return {name: 1e3 * v.reshape(-1, k) for name, v in t.items()}


def round_ratios(num: np.ndarray, den: np.ndarray) -> dict:
    """Per-round median(num) / median(den): the spread of a ratio across interleaved rounds."""
    return spread(np.median(num, axis=1) / np.median(den, axis=1))


CHILD = r"""
import json, resource, subprocess, sys, time
cmd = json.loads(sys.argv[1])
t0 = time.perf_counter()
p = subprocess.run(cmd, capture_output=True, text=True)
wall = time.perf_counter() - t0
print(json.dumps({"rc": p.returncode, "wall_s": wall,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "stdout_tail": p.stdout[-2000:], "stderr_tail": p.stderr[-2000:]}))
"""


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd`` under a fresh watcher: wall time and the peak RSS of its largest process."""
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cmd)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def now() -> float:
    return time.perf_counter()
