"""Shared helpers of the benchmark harness: the profile, per-round statistics, child processes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgerobust.edge.runtime.latency import interleaved_timings
from edgerobust.edge.runtime.profiles import load_profile
from edgerobust.edge.runtime.profile_schema import DeviceProfile

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
    """edgerobust.edge.runtime.latency.interleaved_timings, reshaped to (rounds, runs_per_round) milliseconds."""
    t = interleaved_timings(runners, settings)
    k = settings.runs_per_round
    return {name: 1e3 * v.reshape(-1, k) for name, v in t.items()}


def batch1_rounds(sessions: dict, settings) -> dict[str, np.ndarray]:
    """Per-round batch-1 timings of opened sessions (name -> OpenSession), each fed one random input."""
    rng = np.random.default_rng(0)
    runners = {}
    for name, s in sessions.items():
        feed = {s.input.name: rng.random(s.input.concrete(1), dtype=np.float32)}
        runners[name] = (lambda sess=s.session, f=feed: sess.run(None, f))
    return interleaved_rounds(runners, settings)


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


def bare_options(threads: int, config: dict | None = None):
    """onnxruntime SessionOptions as a plain script would set them: ``threads`` intra-op threads, one
    inter-op thread, all graph optimizations, and any session config entries given."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    return so


def bare_session(path: Path, threads: int, config: dict | None = None, options=None):
    """A bare onnxruntime session on the CPU provider (``bare_options`` unless ``options`` is given)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), options or bare_options(threads, config), providers=["CPUExecutionProvider"])


ALONE = r"""
import json, sys, time
import numpy as np
from edgerobust.edge.runtime.host import OtherLoad
from edgerobust.edge.runtime.profiles import load_profile
from edgerobust.edge.runtime.sessions import open_session
spec = json.loads(sys.argv[1])
profile = load_profile(spec["profile"])
s = open_session(spec["model"], "model", profile)
x = np.random.default_rng(0).random(s.input.concrete(spec["batch_size"]), dtype=np.float32).astype(s.input.dtype)
feed = {s.input.name: x}
for _ in range(spec["warmup"]):
    s.session.run(None, feed)
meter = OtherLoad().start()
t, t0 = [], time.perf_counter()
while time.perf_counter() - t0 < spec["seconds"]:
    a = time.perf_counter(); s.session.run(None, feed); t.append(time.perf_counter() - a)
print(json.dumps({"p50_ms": 1e3 * float(np.median(t)), "runs": len(t), "other_load": meter.stop(),
                  "config_entries": s.info.config_entries}))
"""


def alone_p50(model: Path, profile: str | Path, seconds: float = 3.0, warmup: int = 20, batch_size: int = 1) -> dict:
    """One model alone in a fresh process, built from the profile: 20 warmup runs, then ``seconds``
    of back-to-back runs; its p50 (ms), run count and the other processes' CPU share meanwhile."""
    spec = {"model": str(model), "profile": str(profile), "seconds": seconds, "warmup": warmup,
            "batch_size": batch_size}
    out = subprocess.run([sys.executable, "-c", ALONE, json.dumps(spec)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def other_load_now(seconds: float = 1.0) -> float | None:
    """The share of all cores other processes use right now (Linux)."""
    from edgerobust.edge.runtime.host import OtherLoad

    meter = OtherLoad().start()
    time.sleep(seconds)
    return meter.stop()


def wait_quiet(limit: float = 0.15, max_wait_s: float = 0.0, log=lambda m: print(m, flush=True)) -> float | None:
    """Wait (up to ``max_wait_s``) until other processes use under ``limit`` of the cores; the last reading."""
    t0 = time.perf_counter()
    load = other_load_now()
    waited = False
    while load is not None and load > limit and time.perf_counter() - t0 < max_wait_s:
        waited = True
        time.sleep(2)
        load = other_load_now()
    if waited:
        log(f"  (waited {time.perf_counter() - t0:.0f} s for quiet; other processes now use {load:.0%} of the cores)")
    return load


def isa_line() -> str:
    """The host's ISA class (amx, vnni, avx2: what decides int8 kernel speed) with the CPU flags it is read
    from, as every benchmark table carries it: ``ISA vnni (avx2/fma/avx512f/avx512bw/avx512_vnni/...)``."""
    from edgerobust.edge.runtime.host import cpu_isa

    isa = cpu_isa()
    return f"ISA {isa_class(isa)} ({'/'.join(isa) or 'no listed flags'})"


def isa_class(isa: tuple[str, ...]) -> str:
    """amx, vnni (AVX-512 or AVX VNNI), avx2 or other; edgerobust.edge.runtime.gains.isa_class where it exists."""
    try:
        from edgerobust.edge.runtime.gains import isa_class as classify
    except ImportError:  # an edgerobust without runtime gains: the same rule
        flags = set(isa)
        return ("amx" if "amx_int8" in flags else "vnni" if flags & {"avx512_vnni", "avx_vnni"} else
                "avx2" if "avx2" in flags else "other")
    return classify(isa)
