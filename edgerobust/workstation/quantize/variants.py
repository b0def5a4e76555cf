"""Precision variants of the pruned model (fp32, fp16, int8) and which one is deployed as model.onnx.

The deployed variant follows the target runtime (edgerobust.workstation.pipeline.target: the target
profile's first execution provider):

- CPU: int8 (ONNX Runtime's u8s8/VNNI kernels) when made, else fp32 (fp16 is emulated on CPUs);
- TensorRT: int8 with the explicit-QDQ preset (int8 target tensorrt) when made, else fp16, else fp32;
- CUDA without TensorRT: never int8 QDQ (its Q/DQ nodes fall back to the CPU, with memory copies
  around each); fp16 or fp32, whichever is faster on this workstation's GPU when ONNX Runtime
  sees one, else fp16 when made;
- OpenVINO (CPU, GPU, NPU), Core ML, QNN and DirectML: the order in PREFERENCE, with its reason
  (measured or reasoned); when this workstation has the runtime and its device, the fastest
  variant made, measured here.

Without a target profile: int8 when made, else fp32 (the CPU rule). The choice and its reason go into
the manifest (``deployment``); every variant stays in the bundle as model_<precision>.onnx.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgerobust.errors import QualityGateError

FP16_MIN_AGREEMENT = 0.99  # top-1 agreement of fp16 with fp32 on the eval split


@dataclass(frozen=True)
class Deployment:
    variant: str  # fp32, fp16 or int8
    target: str  # cpu, tensorrt, cuda
    reason: str
    profile: str | None = None
    timings_ms: dict | None = None  # fp16/fp32 p50 on this workstation's GPU, when measured

    def to_dict(self) -> dict:
        return {"variant": self.variant, "target": self.target, "reason": self.reason, "profile": self.profile,
                "timings_ms": self.timings_ms}


def convert_fp16(fp32_path: Path, out: Path) -> Path:
    """An fp16 copy of the ONNX model with float32 inputs and outputs (onnxconverter-common)."""
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    half = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(half)
    onnx.save(half, str(out))
    return out


def fp16_gate(fp32_logits: np.ndarray, fp16_logits: np.ndarray, min_agreement: float = FP16_MIN_AGREEMENT) -> float:
    """Top-1 agreement of fp16 with fp32; QualityGateError below ``min_agreement``."""
    agree = float((fp16_logits.argmax(1) == fp32_logits.argmax(1)).mean())
    if agree < min_agreement:
        raise QualityGateError(
            f"The fp16 model agrees with fp32 on {agree:.2%} of {len(fp32_logits)} samples; at least "
            f"{min_agreement:.0%} is required. No bundle was written.",
            why="Some activations or weights overflow or lose too much precision in half precision.",
            fix="Leave `fp16` off (deploy fp32 or int8), or check for very large activations (unnormalized inputs).")
    return agree


# Per target runtime: the variants in order of preference, why, and whether the order was measured.
# A runtime at hand on this workstation (its provider in this onnxruntime, its device present) is
# measured instead: the fastest variant made is deployed (_provider_timer).
PREFERENCE = {
    "cpu": (("int8", "fp32"), "int8 (ONNX Runtime's u8s8/VNNI kernels; measured in benchmarks/speed.py), else fp32 "
                              "(fp16 is emulated on CPUs)"),
    "tensorrt": (("int8", "fp16", "fp32"), "int8 (TensorRT's explicit-QDQ int8), else fp16, else fp32"),
    "openvino-cpu": (("int8", "fp32"), "int8 (OpenVINO runs QDQ with its own int8 kernels; measured on an AMD EPYC "
                                       "with onnxruntime-openvino 1.24.1), else fp32"),
    "openvino-gpu": (("int8", "fp16", "fp32"), "int8 (OpenVINO's GPU plugin runs QDQ in int8), else fp16, else fp32; "
                                               "reasoned, not measured: no Intel GPU was at hand"),
    "openvino-npu": (("int8", "fp16", "fp32"), "int8 (the NPU's native precision with fp16), else fp16, else fp32; "
                                               "reasoned, not measured: no Intel NPU was at hand"),
    "coreml": (("fp32", "fp16"), "fp32, which Core ML itself runs in fp16 on the GPU and Neural Engine; never int8 QDQ: "
                                 "QuantizeLinear/DequantizeLinear are not among the CoreML provider's operators, so an "
                                 "int8 graph would be cut into Core ML pieces with CPU work between them; reasoned, not "
                                 "measured: no Mac was at hand"),
    "qnn": (("int8", "fp16", "fp32"), "int8 (the Hexagon NPU runs quantized models; float ones only in fp16), else "
                                      "fp16, else fp32; reasoned, not measured: no Snapdragon laptop was at hand"),
    "directml": (("fp16", "fp32"), "fp16 (DirectML's fast path on GPUs) when made (`fp16`), else fp32; int8 QDQ is not "
                                   "assumed faster on GPUs through DirectML; reasoned, not measured: no Windows GPU was "
                                   "at hand"),
}


def choose(made: dict[str, Path], target: str, profile: str | None = None,
           gpu_timer: Callable[[Path], float] | None | str = "auto") -> Deployment:
    """The variant to deploy among ``made`` (precision -> ONNX file) for ``target``, with the reason.

    ``gpu_timer`` times a model on the target's runtime on this workstation ("auto": ONNX Runtime's
    CUDA provider for ``cuda``, the profile's first provider for OpenVINO, Core ML, QNN and DirectML
    targets, when this onnxruntime has it and its device; None: nothing to measure on).
    """
    where = f"the profile {profile}" if profile else "no target profile (the CPU rule)"
    if target == "cuda":
        halves = [v for v in ("fp16", "fp32") if v in made]
        timer = _cuda_timer() if gpu_timer == "auto" else gpu_timer
        if timer is not None and len(halves) == 2:
            t = {v: timer(made[v]) for v in halves}
            best = min(t, key=t.get)
            return Deployment(best, target, f"{where} runs the CUDA provider without TensorRT, where int8 QDQ falls "
                                            f"back to the CPU; {best} was faster on this workstation's GPU "
                                            f"({', '.join(f'{k} {v:.3f} ms' for k, v in t.items())} p50, batch 1)",
                              profile, t)
        pick = halves[0]
        why = "fp16 when made (no GPU here to measure on)" if pick == "fp16" else "fp32 (no fp16 made: `fp16`)"
        return Deployment(pick, target, f"{where} runs the CUDA provider without TensorRT, where int8 QDQ falls "
                                        f"back to the CPU: {why}", profile)
    order, why = PREFERENCE[target]
    candidates = [v for v in order if v in made] or ["fp32"]
    if target not in ("cpu", "tensorrt") and len(candidates) > 1:
        timer = _provider_timer(profile) if gpu_timer == "auto" else gpu_timer
        if timer is not None:
            t = {v: timer(made[v]) for v in candidates}
            best = min(t, key=t.get)
            return Deployment(best, target, f"{where} runs {target}, which this workstation has: {best} was the "
                                            f"fastest measured here ({', '.join(f'{k} {v:.3f} ms' for k, v in t.items())} "
                                            "p50, batch 1)", profile, t)
    pick = candidates[0]
    return Deployment(pick, target, f"{where} targets {target}, where the rule is {why}", profile)


def _cuda_timer() -> Callable[[Path], float] | None:
    """A batch-1 p50 timer on ONNX Runtime's CUDA provider, or None when this host has none."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    return _timer(ort, "CUDAExecutionProvider", {})


def _provider_timer(profile: str | None) -> Callable[[Path], float] | None:
    """A batch-1 p50 timer on the profile's first provider with its options, when this workstation has
    that provider and its device; else None."""
    if profile is None:
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from edgerobust.edge.runtime.profiles import load_profile
    from edgerobust.edge.runtime.providers import device_gap

    first = load_profile(profile).providers[0]
    if first.name not in ort.get_available_providers() or device_gap(first.name, dict(first.options)):
        return None
    return _timer(ort, first.name, {k: str(v) for k, v in first.options.items()})


def _timer(ort, provider: str, options: dict) -> Callable[[Path], float]:
    def p50_ms(path: Path, runs: int = 200) -> float:
        o = ort.SessionOptions()
        o.log_severity_level = 3
        sess = ort.InferenceSession(str(path), o, providers=[(provider, options), "CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        for _ in range(20):
            sess.run(None, {inp.name: x})
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, {inp.name: x})
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return p50_ms
