"""Interleaved latency of several models in a fresh process whose sessions share one thread pool.

Run by :func:`edgerobust.edge.runtime.measure.measure_latency` when the profile's ``measure.isolation`` is
"pool": ``python -m edgerobust.edge.runtime._latencyprobe`` with a JSON spec on stdin (models {role: path},
providers, threads, graph level, arena/pattern, session config entries, the measure settings,
the batch sizes and input shapes, and "resident": {device, device_id, cuda_graph} when the
device-resident path is timed too, see :mod:`edgerobust.edge.runtime.resident`). onnxruntime's global thread pool must be set before the
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

    from edgerobust.edge.runtime import resident
    from edgerobust.edge.runtime.latency import interleaved_timings
    from edgerobust.edge.runtime.profile_schema import MeasureSettings

    _pybind_state.set_global_thread_pool_sizes(spec["intra_op_threads"], spec["inter_op_threads"])
    use = [(p, opts) for p, opts in spec["providers"]]
    sessions = {role: ort.InferenceSession(path, sess_options=resident.session_options(ort, spec, shared_pool=True),
                                           providers=[p for p, _ in use], provider_options=[o for _, o in use])
                for role, path in spec["models"].items()}
    settings = MeasureSettings(**{k: tuple(v) if k == "batch_sizes" else v for k, v in spec["settings"].items()})
    res = spec.get("resident")

    def graph(role: str):
        opts = resident.session_options(ort, spec, shared_pool=True)
        return resident.open_graph_session(ort, spec["models"][role], role, opts, use)

    rng = np.random.default_rng(0)
    out = {}
    for bs, shapes in spec["inputs"].items():
        runners, feeds = {}, {}
        for role, (name, shape, dtype) in shapes.items():
            feed = {name: rng.random(shape, dtype=np.float32).astype(dtype)}
            feeds[role] = (name, feed[name])
            runners[role] = (lambda s=sessions[role], f=feed: s.run(None, f))
        if res:
            runners.update(resident.resident_runners(ort, sessions, feeds, res["device"], res["device_id"],
                                                     graph if res["cuda_graph"] else None))
        t = interleaved_timings(runners, settings, lambda n, bs=bs: print(json.dumps({"round": bs}), flush=True))
        out[bs] = {role: v.tolist() for role, v in t.items()}
    print(json.dumps({"timings": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
