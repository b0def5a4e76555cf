"""Peak memory of a fresh process that loads one ONNX model and runs it; prints one JSON line.

Run as ``python -m edgerobust.edge.runtime._memprobe '<json spec>'`` by :func:`edgerobust.edge.runtime.measure.measure_memory`.
The spec holds: model, providers ([[name, options], ...]), intra_op_threads,
inter_op_threads, graph_optimization, cpu_arena, memory_pattern, session_config ({key: value}
for ``add_session_config_entry``), input_name, input_shape (with the batch size filled in),
input_dtype, runs, and gpu_memory / device_id. It imports only numpy and onnxruntime (never
torch), so the number is what the model costs on a device, not what this toolkit's parent
process holds.

GPU memory (``gpu_memory``, or a CUDA/TensorRT session): NVML (``pynvml``, from the
``nvidia-ml-py`` package: ``pip install 'edgerobust[gpu]'``) is sampled every few ms while the
model loads and runs, and the largest ``usedGpuMemory`` NVML reports for this process is the
peak. When it cannot be read, ``gpu_method`` says why (NVML missing, no process memory visible,
a Jetson, whose GPU shares the CPU's memory and has no per-process NVML figures).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import threading

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
JETSON = ("Jetson: memory is unified (the GPU shares the CPU's RAM) and NVML reports no per-process GPU "
          "memory; the peak RSS is what was measured (CUDA allocations through nvmap may not all show in it)")
NO_PROCESS = ("NVML sees no process memory for this process (in a container NVML may not see its pid; "
              "on a Jetson memory is shared with the CPU, and RSS is what was measured)")


def _status_kib(key: str) -> int | None:
    """A ``key:`` line of /proc/self/status (Linux), in KiB: VmHWM (peak resident set) or VmRSS (now)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _vm_hwm_kib() -> int | None:
    return _status_kib("VmHWM")


def _rss_kib() -> int | None:
    return _status_kib("VmRSS")


def _peak_kib() -> tuple[int, str]:
    hwm = _vm_hwm_kib()
    if hwm is not None:
        return hwm, "VmHWM"
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and KiB on Linux/BSD.
    return (r // 1024 if sys.platform == "darwin" else r), "ru_maxrss"


def is_jetson() -> bool:
    return platform.machine() == "aarch64" and os.path.exists("/etc/nv_tegra_release")


class GpuMemory:
    """This process's peak device memory, sampled through NVML every ``interval_s`` until stopped.

    ``peak_mb`` stays None when it cannot be read, and ``why`` says why; ``method`` says how it was.
    """

    def __init__(self, pid: int | None = None, interval_s: float = 0.005):
        self.pid, self.interval_s = pid or os.getpid(), interval_s
        self.peak_bytes: int | None = None
        self.samples = 0
        self.why: str | None = None
        self._nvml, self._handles, self._stop, self._thread = None, [], threading.Event(), None

    def start(self) -> "GpuMemory":
        if is_jetson():
            self.why = JETSON
            return self
        try:
            import pynvml
        except ImportError:
            self.why = "nvidia-ml-py not installed (pip install 'edgerobust[gpu]'); GPU memory not measured"
            return self
        try:
            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # pynvml.NVMLError and its many subclasses
            self.why = f"NVML unavailable ({type(exc).__name__}: {exc}); GPU memory not measured"
            return self
        self._nvml = pynvml
        try:
            self.sample()
        except Exception as exc:  # NotSupported / NoPermission (MIG slices, containers): RSS only
            self.why = f"NVML cannot list this process's GPU memory ({type(exc).__name__}: {exc}); not measured"
            try:
                pynvml.nvmlShutdown()
            except Exception:  # noqa: S110 - already failing; the reason above is what the report says
                pass
            self._nvml = None
            return self
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def sample(self) -> None:
        """Add one reading: this pid's usedGpuMemory summed over the GPUs NVML lists."""
        total, seen = 0, False
        for h in self._handles:
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(h):
                if proc.pid == self.pid and proc.usedGpuMemory is not None:
                    total, seen = total + int(proc.usedGpuMemory), True
        self.samples += 1
        if seen:
            self.peak_bytes = max(self.peak_bytes or 0, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as exc:  # a failing NVML call ends sampling, with the reason kept
                self.why = f"NVML failed while sampling ({type(exc).__name__}: {exc})"
                return

    def stop(self) -> tuple[float | None, str | None]:
        """(peak MiB or None, how it was read or why not)."""
        if self._nvml is None:
            return None, self.why
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.sample()
            self._nvml.nvmlShutdown()
        except Exception as exc:
            self.why = self.why or f"NVML failed ({type(exc).__name__}: {exc})"
        if self.peak_bytes is None:
            return None, self.why or NO_PROCESS
        return self.peak_bytes / (1 << 20), f"NVML usedGpuMemory of this process, max of {self.samples} samples"


def _session(ort, spec: dict):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["intra_op_threads"]
    opts.inter_op_num_threads = spec["inter_op_threads"]
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, spec["graph_optimization"])
    opts.enable_cpu_mem_arena = bool(spec.get("cpu_arena", True))
    opts.enable_mem_pattern = bool(spec.get("memory_pattern", True))
    opts.log_severity_level = 3
    for key, value in dict(spec.get("session_config") or {}).items():
        opts.add_session_config_entry(key, value)
    names = [p[0] for p in spec["providers"]]
    options = [p[1] for p in spec["providers"]]
    return opts, ort.InferenceSession(spec["model"], sess_options=opts, providers=names, provider_options=options)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    import numpy as np
    import onnxruntime as ort

    before_kib = _rss_kib()
    gpu_wanted = bool(spec.get("gpu_memory")) or any(p[0] in GPU_PROVIDERS for p in spec["providers"])
    gpu = GpuMemory().start() if gpu_wanted else None
    opts, sess = _session(ort, spec)
    rng = np.random.default_rng(0)
    x = rng.random(spec["input_shape"], dtype=np.float32).astype(spec["input_dtype"])
    for _ in range(spec["runs"]):
        sess.run(None, {spec["input_name"]: x})
    peak, method = _peak_kib()
    gpu_peak, gpu_method = gpu.stop() if gpu else (None, None)
    print(json.dumps({"peak_kib": peak, "before_model_kib": before_kib, "method": method,
                      "providers": sess.get_providers(), "pid": os.getpid(),
                      "torch_loaded": "torch" in sys.modules, "gpu_peak_mb": gpu_peak, "gpu_method": gpu_method,
                      "applied": {"cpu_arena": opts.enable_cpu_mem_arena, "memory_pattern": opts.enable_mem_pattern,
                                  "session_config": {k: opts.get_session_config_entry(k)
                                                     for k in dict(spec.get("session_config") or {})}}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
