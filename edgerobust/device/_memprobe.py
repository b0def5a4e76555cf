"""Peak memory of a fresh process that loads one ONNX model and runs it; prints one JSON line.

Run as ``python -m edgerobust.device._memprobe '<json spec>'`` by :func:`edgerobust.device.measure.measure_memory`.
The spec holds: model, providers ([[name, options], ...]), intra_op_threads,
inter_op_threads, graph_optimization, input_name, input_shape (with the batch size filled
in), input_dtype, runs. It imports only numpy and onnxruntime (never torch), so the number
is what the model costs on a device, not what this toolkit's parent process holds.
"""
from __future__ import annotations

import json
import os
import resource
import sys


def _vm_hwm_kib() -> int | None:
    """Peak resident set size from /proc (Linux), in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_kib() -> tuple[int, str]:
    hwm = _vm_hwm_kib()
    if hwm is not None:
        return hwm, "VmHWM"
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and KiB on Linux/BSD.
    return (r // 1024 if sys.platform == "darwin" else r), "ru_maxrss"


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    import numpy as np
    import onnxruntime as ort

    before_kib = _rss_kib()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["intra_op_threads"]
    opts.inter_op_num_threads = spec["inter_op_threads"]
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, spec["graph_optimization"])
    opts.log_severity_level = 3
    names = [p[0] for p in spec["providers"]]
    options = [p[1] for p in spec["providers"]]
    sess = ort.InferenceSession(spec["model"], sess_options=opts, providers=names, provider_options=options)
    rng = np.random.default_rng(0)
    x = rng.random(spec["input_shape"], dtype=np.float32).astype(spec["input_dtype"])
    for _ in range(spec["runs"]):
        sess.run(None, {spec["input_name"]: x})
    peak, method = _peak_kib()
    print(json.dumps({"peak_kib": peak, "before_model_kib": before_kib, "method": method,
                      "providers": sess.get_providers(), "pid": os.getpid(),
                      "torch_loaded": "torch" in sys.modules}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
