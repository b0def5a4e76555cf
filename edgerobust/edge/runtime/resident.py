"""The device-resident latency path: each model timed as a GPU deployment runs it, next to the path
from host memory.

* **From host memory** (``session.run(None, {name: numpy})``): every run copies the input to
  the device and the outputs back, as an app that hands numpy arrays to onnxruntime does.
* **Device-resident** (``measure.device_resident``): IO binding. The input is copied to the device
  once (``OrtValue.ortvalue_from_numpy(x, "cuda", device_id)``), the outputs are preallocated
  there and bound, and each run is ``session.run_with_iobinding`` followed by
  ``synchronize_outputs`` (the work is finished when the timer stops). On a CPU provider the
  device is "cpu": the same code path, nothing to gain, which is how it is tested without a GPU.
* **CUDA graphs** (``measure.cuda_graph``): a separate session per model and batch size with
  CUDA's ``enable_cuda_graph`` / TensorRT's ``trt_cuda_graph_enable``; a graph is captured for
  fixed shapes and addresses, so each batch size gets a fresh session, captured in untimed
  runs before the timing starts.

Used in this process by :mod:`edgerobust.edge.runtime.measure` and in the "pool" probe process by
:mod:`edgerobust.edge.runtime._latencyprobe`. Torch-free: numpy, and the onnxruntime module it is handed.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from edgerobust.errors import ModelLoadError
from edgerobust.edge.runtime.profile_schema import GPU_PROVIDERS
from edgerobust.edge.runtime.sessions import ORT_LEVEL

SUFFIX = "@resident"
HOST_PATH = "from host memory"


def resident_key(role: str) -> str:
    """The key of a model's device-resident series among the latency results."""
    return f"{role}{SUFFIX}"


def path_label(cuda_graph: bool) -> str:
    return "device-resident (IO binding, CUDA graph)" if cuda_graph else "device-resident (IO binding)"


def binding_device(providers: Sequence[str], use: Sequence[tuple[str, Mapping]]) -> tuple[str, int]:
    """Where IO binding puts the tensors: ("cuda", device_id) when the session's first provider is
    CUDA or TensorRT, else ("cpu", 0)."""
    first = providers[0] if providers else "CPUExecutionProvider"
    if first in GPU_PROVIDERS:
        return "cuda", int(dict(use).get(first, {}).get("device_id", 0))
    return "cpu", 0


def graph_providers(use: Sequence[tuple[str, Mapping]]) -> list[tuple[str, dict]]:
    """The providers with CUDA graphs switched on for the first one (CUDA: enable_cuda_graph,
    TensorRT: trt_cuda_graph_enable). Only the first: onnxruntime refuses CUDA's graph capture
    when TensorRT has taken nodes, and TensorRT captures its own engines' graphs."""
    key = {"CUDAExecutionProvider": "enable_cuda_graph", "TensorrtExecutionProvider": "trt_cuda_graph_enable"}
    return [(name, {**dict(opts), key[name]: "1"} if i == 0 and name in key else dict(opts))
            for i, (name, opts) in enumerate(use)]


def session_spec(info) -> dict:
    """The session settings of a :class:`~edgerobust.edge.runtime.sessions.SessionInfo` as plain JSON."""
    return {"intra_op_threads": info.intra_op_threads, "inter_op_threads": info.inter_op_threads,
            "graph_optimization": ORT_LEVEL[info.graph_optimization], "cpu_arena": info.cpu_arena,
            "memory_pattern": info.memory_pattern, "session_config": [list(e) for e in info.config_entries]}


def session_options(ort, spec: Mapping, shared_pool: bool = False):
    """onnxruntime.SessionOptions from :func:`session_spec`'s keys (``shared_pool``: the global thread pool)."""
    o = ort.SessionOptions()
    if shared_pool:
        o.use_per_session_threads = False
    else:
        o.intra_op_num_threads = spec["intra_op_threads"]
        o.inter_op_num_threads = spec["inter_op_threads"]
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, spec["graph_optimization"])
    o.enable_cpu_mem_arena = spec["cpu_arena"]
    o.enable_mem_pattern = spec["memory_pattern"]
    o.log_severity_level = 3
    entries = spec["session_config"]
    for key, value in (entries.items() if isinstance(entries, Mapping) else entries):
        o.add_session_config_entry(key, value)
    return o


def open_graph_session(ort, path: str, role: str, options, use: Sequence[tuple[str, Mapping]]):
    """A session with CUDA graphs on; a clear error when onnxruntime refuses (e.g. nodes off the GPU)."""
    providers = graph_providers(use)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=[n for n, _ in providers],
                                    provider_options=[o for _, o in providers])
    except Exception as exc:  # onnxruntime raises its own zoo
        raise ModelLoadError(f"onnxruntime cannot run the {role} model '{path}' with CUDA graphs.",
                             why=f"{type(exc).__name__}: {str(exc).strip()[:500]}",
                             fix="CUDA graphs need every node on the GPU provider and fixed shapes; set "
                                 "measure.cuda_graph = false in the profile.") from exc


def bind(ort, sess, role: str, input_name: str, x: np.ndarray, like: Sequence[np.ndarray], device: str,
         device_id: int, untimed_runs: int = 1) -> Callable[[], None]:
    """A runner for one model on the device-resident path: input and outputs bound on ``device`` once.

    ``like``: the outputs of one run from host memory (their shapes and dtypes). The untimed runs
    check the binding and, with CUDA graphs, capture the graph before any run is timed. The
    runner's ``outputs`` attribute holds the bound output OrtValues.
    """
    try:
        binding = sess.io_binding()
        xv = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, device_id)
        binding.bind_ortvalue_input(input_name, xv)
        outs = [ort.OrtValue.ortvalue_from_shape_and_type(list(y.shape), y.dtype.type, device, device_id) for y in like]
        for meta, yv in zip(sess.get_outputs(), outs):
            binding.bind_ortvalue_output(meta.name, yv)

        def run(sess=sess, binding=binding, keep=(xv, outs)) -> None:
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()

        run.outputs = outs  # the bound outputs, readable with .numpy() (for checks, not for timing)
        for _ in range(untimed_runs):
            run()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"The {role} model cannot run device-resident (IO binding on {device}:{device_id}).",
                             why=f"{type(exc).__name__}: {str(exc).strip()[:500]}",
                             fix="Set measure.device_resident = false in the profile to time it from host memory only.") from exc
    return run


def resident_runners(ort, sessions: Mapping[str, object], feeds: Mapping[str, tuple[str, np.ndarray]], device: str,
                     device_id: int, open_graph: Callable[[str], object] | None = None) -> dict[str, Callable[[], None]]:
    """``{role@resident: runner}`` for every session; ``open_graph(role)`` gives a fresh CUDA-graph
    session for the role (None: bind the host path's own session)."""
    out = {}
    for role, sess in sessions.items():
        name, x = feeds[role]
        like = sess.run(None, {name: x})
        target = open_graph(role) if open_graph else sess
        out[resident_key(role)] = bind(ort, target, role, name, x, like, device, device_id,
                                       untimed_runs=3 if open_graph else 1)
    return out
