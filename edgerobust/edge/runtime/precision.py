"""The precision a model really ran in: what the file holds, what the runtime was asked or documents,
and what its outputs show against onnxruntime's CPU provider.

A runtime can run a "fp32" model in less: OpenVINO's CPU plugin uses bf16 on CPUs with AVX512_BF16
or AMX when asked for speed, TensorRT takes fp16 for float layers with ``trt_fp16_enable``, Core ML
computes in fp16 on the GPU and the Neural Engine, QNN's NPU in fp16 with
``enable_htp_fp16_precision``. None of them tells onnxruntime's Python API what it chose, so each
model gets three facts (``ran_precision``):

* ``model``: what the ONNX file holds (fp32, fp16, or int8 QDQ with float layers between);
* ``declared``: what the provider was asked for, or its documented default, with the source;
* ``observed``: the same random inputs run on onnxruntime's CPU provider (fp32 arithmetic, the
  reference): the outputs' largest difference relative to the largest output, and top-1
  agreement. For a float model, a difference above ``FP32_TOLERANCE`` is reduced-precision
  arithmetic (bf16 differs by about 1e-3 to 1e-2, fp16 by about 1e-4 to 1e-3; fp32 kernels by
  about 1e-7 to 1e-6). For an int8 model the difference mixes int8 rounding with the float
  layers, so it is reported, not named. Skipped when the model runs on the CPU provider itself.

Torch-free: numpy, onnx and onnxruntime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgerobust.edge.runtime.providers import openvino_device

FP32_TOLERANCE = 1e-4  # relative: above it, a float model did not run in fp32 arithmetic
OBSERVE_ROWS = 8
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def model_precision(path: str | Path) -> str:
    """fp32, fp16 or int8 (QDQ): what the ONNX file's graph holds."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in m.graph.node}
    if ops & _QUANT_OPS:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
        return "fp16"
    return "fp32"


def declared_precision(provider: str, options: dict, model: str) -> tuple[str, str]:
    """What ``provider`` with ``options`` runs a ``model``-precision file in, and where that comes from.

    For an int8 file: "int8 where quantized; float layers <precision>"; else the float precision.
    """
    floats, source = _float_precision(provider, {k: str(v) for k, v in options.items()}, model)
    return (f"int8 where quantized; float layers {floats}" if model == "int8" else floats), source


def _float_precision(provider: str, o: dict, model: str) -> tuple[str, str]:
    if provider == "CPUExecutionProvider":
        return ("fp16 (some operators upcast to fp32)" if model == "fp16" else "fp32",
                "onnxruntime's CPU provider has no reduced-precision mode for fp32 models")
    if provider == "OpenVINOExecutionProvider":
        device = openvino_device(o).split(".")[0]
        hint = _load_config_hint(o.get("load_config"), device)
        if hint:
            return hint, f"OpenVINO load_config INFERENCE_PRECISION_HINT = {hint}"
        p = o.get("precision")
        if p:
            return ({"FP32": "fp32", "ACCURACY": "the model's own precision", "FP16": "fp16"}.get(p.upper(), p),
                    f"the OpenVINO provider's precision option ({p})")
        default = {"CPU": "fp32", "GPU": "fp16", "NPU": "fp16"}.get(device)
        if default:
            return default, f"the OpenVINO provider's default on {device} (documented; not read back)"
        return "unknown", f"OpenVINO on {device} does not say"
    if provider == "TensorrtExecutionProvider":
        return ("fp16 or fp32 per layer (TensorRT picks)" if _on(o.get("trt_fp16_enable")) else "fp32 or TF32",
                "TensorRT's trt_fp16_enable option; TF32 on Ampere and newer")
    if provider == "CUDAExecutionProvider":
        return "fp32 or TF32", "cuDNN may use TF32 on Ampere and newer unless use_tf32 = 0"
    if provider == "CoreMLExecutionProvider":
        if o.get("MLComputeUnits", "ALL") == "CPUOnly":
            return "fp32", "Core ML on the CPU only (MLComputeUnits = CPUOnly)"
        return ("fp16 on the GPU and Neural Engine, fp32 on the CPU",
                "Core ML's documented behaviour; it does not say which unit ran which layer")
    if provider == "QNNExecutionProvider":
        return ("fp16" if _on(o.get("enable_htp_fp16_precision")) else "fp32 (on the NPU only when quantized)",
                "QNN's enable_htp_fp16_precision option")
    if provider == "DmlExecutionProvider":
        return ("fp16" if model == "fp16" else "fp32"), "DirectML runs the model's own precision"
    return "unknown", f"{provider} does not say"


def _on(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _load_config_hint(raw: str | None, device: str) -> str | None:
    if not raw:
        return None
    try:
        cfg = json.loads(raw) if raw.lstrip().startswith("{") else json.loads(Path(raw).read_text())
    except (OSError, ValueError):
        return None
    hint = (cfg.get(device) or {}).get("INFERENCE_PRECISION_HINT") if isinstance(cfg, dict) else None
    return {"f32": "fp32", "f16": "fp16"}.get(str(hint).lower(), str(hint).lower()) if hint else None


def observe(session, reference, x: np.ndarray, batch: int | None = None) -> dict:
    """``session``'s outputs on ``x`` against ``reference``'s (both onnxruntime sessions), fed ``batch``
    rows at a time (default: all at once). Batch 1 keeps to a shape the measurement already ran: a
    TensorRT engine is not built again for a new batch size."""
    def outputs(sess) -> np.ndarray:
        name, b = sess.get_inputs()[0].name, batch or len(x)
        parts = [np.asarray(sess.run(None, {name: x[i:i + b]})[0], dtype=np.float64) for i in range(0, len(x), b)]
        return np.concatenate(parts)

    y, r = outputs(session), outputs(reference)
    scale = float(np.abs(r).max()) or 1.0
    rel = float(np.abs(y - r).max() / scale)
    agree = float((y.reshape(len(x), -1).argmax(1) == r.reshape(len(x), -1).argmax(1)).mean())
    return {"max_rel_diff_vs_cpu": rel, "top1_agreement_vs_cpu": agree, "rows": int(len(x))}


def verdict(model: str, obs: dict | None) -> str:
    """What the observation says of the arithmetic, in words."""
    if obs is None:
        return "not observed"
    rel = obs["max_rel_diff_vs_cpu"]
    if model == "int8":
        return (f"outputs within {rel:.1e} of the CPU provider's run of the same file (int8 rounding and the float "
                "layers together; not separable)")
    if rel <= FP32_TOLERANCE:
        return f"fp32 arithmetic: outputs within {rel:.1e} of the CPU provider's fp32"
    return (f"reduced precision: outputs differ from the CPU provider's fp32 by {rel:.1e} (as bf16/fp16 "
            "arithmetic does)")


def ran_precision(sessions: dict, rows: int = OBSERVE_ROWS) -> dict[str, dict]:
    """role -> {model, declared, declared_source, provider, observed, verdict} for opened sessions."""
    from edgerobust.edge.runtime.sessions import ort

    out = {}
    for role, s in sessions.items():
        if role.endswith("@resident"):
            continue
        model = model_precision(s.info.model)
        provider = s.info.providers[0] if s.info.providers else "CPUExecutionProvider"
        options = dict(next((o for p, o in s.plan.use if p == provider), {}))
        declared, source = declared_precision(provider, options, model)
        obs = None
        if provider != "CPUExecutionProvider":
            try:
                batch = s.input.shape[0] or 1  # a fixed batch axis, else batch 1
                shape = s.input.concrete(rows * batch)
                x = np.random.default_rng(0).random(shape, dtype=np.float32).astype(s.input.dtype)
                o = ort().SessionOptions()
                o.log_severity_level = 3
                ref = ort().InferenceSession(s.info.model, o, providers=["CPUExecutionProvider"])
                obs = observe(s.session, ref, x, batch)
            except Exception as exc:  # an odd model must not stop the audit: the record says why
                obs = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        out[role] = {"model": model, "provider": provider, "declared": declared, "declared_source": source,
                     "observed": obs,
                     "verdict": "the reference itself (onnxruntime's CPU provider)" if obs is None
                     else (obs["error"] if "error" in obs else verdict(model, obs))}
    return out


def precision_line(role: str, rec: dict) -> str:
    """One line for reports: ``deployed: int8 file on OpenVINOExecutionProvider, ...``."""
    return (f"{role}: {rec['model']} file on {rec['provider']}: {rec['declared']} ({rec['declared_source']}); "
            f"observed: {rec['verdict']}")
