"""Interleaved latency of several models in a fresh process whose sessions share one thread pool.

Run by :func:`edgerobust.device.measure.measure_latency` when the profile's ``measure.isolation`` is
"pool": ``python -m edgerobust.device._latencyprobe`` with a JSON spec on stdin (models {role: path},
providers, threads, graph level, arena/pattern, session config entries, the measure settings,
the batch sizes and input shapes). onnxruntime's global thread pool must be set before the
process creates its first session, hence a fresh process: with one pool, the threads that
just ran model A are the ones that run model B, spinning between runs exactly as with one
model alone, and no idle session's threads compete for the cores. Prints one JSON line per
finished round ({"round": batch size}) and last {"timings": {batch size: {role: [seconds]}}}.
Imports numpy and onnxruntime only (never torch).
"""
from __future__ import annotations

import json
import sys


def main() -> int:
    spec = json.loads(sys.stdin.read())
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    from edgerobust.device.latency import interleaved_timings
    from edgerobust.device.profiles import MeasureSettings

    _pybind_state.set_global_thread_pool_sizes(spec["intra_op_threads"], spec["inter_op_threads"])
    sessions = {}
    for role, path in spec["models"].items():
        o = ort.SessionOptions()
        o.use_per_session_threads = False
        o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, spec["graph_optimization"])
        o.enable_cpu_mem_arena = spec["cpu_arena"]
        o.enable_mem_pattern = spec["memory_pattern"]
        o.log_severity_level = 3
        for key, value in spec["session_config"]:
            o.add_session_config_entry(key, value)
        sessions[role] = ort.InferenceSession(path, sess_options=o, providers=[p for p, _ in spec["providers"]],
                                              provider_options=[opts for _, opts in spec["providers"]])
    settings = MeasureSettings(**{k: tuple(v) if k == "batch_sizes" else v for k, v in spec["settings"].items()})
    rng = np.random.default_rng(0)
    out = {}
    for bs, shapes in spec["inputs"].items():
        runners = {}
        for role, (name, shape, dtype) in shapes.items():
            feed = {name: rng.random(shape, dtype=np.float32).astype(dtype)}
            runners[role] = (lambda s=sessions[role], f=feed: s.run(None, f))
        t = interleaved_timings(runners, settings, lambda n, bs=bs: print(json.dumps({"round": bs}), flush=True))
        out[bs] = {role: v.tolist() for role, v in t.items()}
    print(json.dumps({"timings": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
