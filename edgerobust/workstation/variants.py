"""Precision variants of the pruned model (fp32, fp16, int8) and which one is deployed as model.onnx.

The deployed variant follows the target runtime (edgerobust.workstation.target: the target
profile's first execution provider):

- CPU: int8 (ONNX Runtime's u8s8/VNNI kernels) when made, else fp32 (fp16 is emulated on CPUs);
- TensorRT: int8 with the explicit-QDQ preset (int8 target tensorrt) when made, else fp16, else fp32;
- CUDA without TensorRT: never int8 QDQ (its Q/DQ nodes fall back to the CPU, with memory copies
  around each); fp16 or fp32, whichever is faster on this workstation's GPU when ONNX Runtime
  sees one, else fp16 when made.

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


def choose(made: dict[str, Path], target: str, profile: str | None = None,
           gpu_timer: Callable[[Path], float] | None | str = "auto") -> Deployment:
    """The variant to deploy among ``made`` (precision -> ONNX file) for ``target``, with the reason.

    ``gpu_timer`` times a model on this workstation's GPU ("auto": ONNX Runtime's CUDA provider
    when there is one; None: no GPU to measure on).
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
    for v in ("int8", "fp16", "fp32") if target == "tensorrt" else ("int8", "fp32"):
        if v in made:
            what = {"int8": "int8 (fastest where the provider has int8 kernels)", "fp16": "fp16 (no int8 made)",
                    "fp32": "fp32 (no int8 made)" if target == "cpu" else "fp32 (no int8 or fp16 made)"}[v]
            return Deployment(v, target, f"{where} targets {'TensorRT' if target == 'tensorrt' else 'the CPU'}: "
                                         f"{what}", profile)
    raise AssertionError("fp32 is always made")


def _cuda_timer() -> Callable[[Path], float] | None:
    """A batch-1 p50 timer on ONNX Runtime's CUDA provider, or None when this host has none."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None

    def p50_ms(path: Path, runs: int = 200) -> float:
        sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
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
