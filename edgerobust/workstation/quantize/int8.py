"""int8 with ONNX Runtime's quantization tools: static QDQ (per-channel weights, calibrated on the
calibration split, after ONNX Runtime's pre-processing) or dynamic (for Linear-heavy models).

torch-free: it works on ONNX files and numpy arrays.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgerobust import events
from edgerobust.errors import QualityGateError
from edgerobust.workstation.configs import QuantConfig

logger = logging.getLogger(__name__)

# Which compute layers stay fp32 (QuantConfig.keep_fp32, named in registries.KEEP_FP32). "auto" (the
# default) lets compress try AUTO_ORDER and keep the first choice whose accuracy drop passes the
# int8 gate (max_int8_drop): everything int8 is fastest (resnet18 at 224, pruned 0.5: 4.6x over
# fp32 with all layers int8, 2.6x with the first conv and its max-pool left in fp32), but the
# first layer sees raw pixels through few input channels and can lose the most accuracy
# (digits-cnn: 99.2% fp32 -> 94.7% with it quantized, 99.2% kept in fp32). quantize() on its own
# has no accuracy to check, so there "auto" means the first of AUTO_ORDER.
AUTO_ORDER = ("none", "first", "ends")
# QuantConfig.format: how static int8 is written: "qdq" (QuantizeLinear/DequantizeLinear pairs
# around float ops, which onnxruntime fuses into integer kernels when the session is built, and
# TensorRT reads) or "qoperator" (the integer ops themselves: QLinearConv, QLinearAdd...); "auto":
# the target's. QuantConfig.stem: the first convolution as written by ONNX Runtime ("plain"), or
# rewritten on space-to-depth input for onnxruntime's CPU int8 kernels
# (edgerobust.workstation.quantize.stem, same outputs; static QDQ for the CPU target only).


@dataclass(frozen=True)
class Int8Target:
    """A named choice of int8 types, with the reason it suits the target."""

    activation: str
    weight: str
    symmetric_activations: bool
    reason: str
    format: str = "qdq"


# Named presets carry their reason (STYLE.md 6).
TARGETS: dict[str, Int8Target] = {
    # x86 with AVX-512 VNNI / AVX2 and ARM CPUs: ONNX Runtime's fastest kernels take uint8
    # activations with int8 weights (U8S8); asymmetric activations keep ReLU outputs' full range.
    "cpu": Int8Target("uint8", "int8", False, "U8S8: the fast path of ONNX Runtime's CPU int8 kernels"),
    # TensorRT only supports symmetric int8 for activations and weights (S8S8, zero point 0).
    "tensorrt": Int8Target("int8", "int8", True, "S8S8 symmetric: what TensorRT's int8 path accepts"),
}


@dataclass
class QuantResult:
    mode: str
    calibration: str
    calib_samples: int
    qdq_nodes: int  # QuantizeLinear + DequantizeLinear (static) or DynamicQuantizeLinear / integer ops
    seconds: float
    stem: str = ""  # what the space-to-depth stem rewrite did, or why not ("" when not asked for)
    route: str = ""  # what the GEMM route rewrite did, or why not ("" when not asked for)


class ArrayReader:
    """ONNX Runtime's CalibrationDataReader over a numpy array, with a progress callback."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int = 32, advance=None):
        self.x, self.input_name, self.batch_size, self.advance = x, input_name, batch_size, advance
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.x):
            return None
        batch = self.x[self.pos:self.pos + self.batch_size]
        self.pos += len(batch)
        if self.advance:
            self.advance(len(batch))
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.pos = 0


def _kept_nodes(model: onnx.ModelProto, keep: str) -> list[str]:
    """Names of the compute nodes to leave in fp32."""
    ops = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    keep = AUTO_ORDER[0] if keep == "auto" else keep
    chosen = {"none": [], "first": ops[:1], "last": ops[-1:], "ends": ops[:1] + ops[-1:]}[keep]
    return [n.name for n in chosen if n.name]


def quantize(fp32_path: str | Path, out_path: str | Path, calib_x: np.ndarray, config: QuantConfig) -> QuantResult:
    """Quantize ``fp32_path`` to int8 at ``out_path``, calibrated on every sample of ``calib_x``.

    ``config.int8_target`` None is the CPU preset, ``config.stem`` None the plain stem and
    ``config.route`` None the symmetric route (what a target profile decides in compress:
    edgerobust.workstation.pipeline.target.resolve_target).
    """
    t0 = time.perf_counter()
    config = dataclasses.replace(config, int8_target=config.int8_target or "cpu", stem=config.stem or "plain",
                                 route=config.route or "symmetric")
    with _ort_quantizer_muted():
        return _quantize(fp32_path, out_path, calib_x, config, t0)


@contextlib.contextmanager
def _ort_quantizer_muted():
    """Mute ONNX Runtime's quantizer inside the block, and only it; everything is put back after.

    Its modules log chatty notes below ERROR ("failed to infer the type of tensor ...", "please use
    QuantFormat.QDQ ...") through the *root* logger (``logging.warning(...)``), and the first such
    call configures the root logger with a stderr handler (``logging.basicConfig``) for the rest of
    the process where the application has set none. So, for the block only: a filter on the root
    logger drops the records below ERROR logged from onnxruntime/quantization's own files (anyone
    else's pass untouched), a NullHandler stands in on a root logger without handlers so that
    basicConfig finds one and does nothing, and the ``onnxruntime.quantization`` logger (its named
    loggers' parent) is raised to ERROR. The root logger's level is never changed, and after the
    block its handlers and filters are what they were. Its percentile and entropy calibrators also
    ``print`` their progress on stdout, which would break a caller's JSON there: stdout is captured for
    the block (the process's sys.stdout, so another thread printing meanwhile is captured too) and
    logged at DEBUG.
    """
    import onnxruntime.quantization as ortq

    here = os.path.dirname(os.path.abspath(ortq.__file__)) + os.sep

    def not_ort_chatter(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not os.path.abspath(record.pathname).startswith(here)

    root, named = logging.getLogger(), logging.getLogger(ortq.__name__)
    stand_in = None if root.handlers else logging.NullHandler()
    named_level = named.level
    root.addFilter(not_ort_chatter)
    if stand_in is not None:
        root.addHandler(stand_in)
    named.setLevel(logging.ERROR)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        if printed.getvalue().strip():
            logger.debug("onnxruntime's quantizer printed: %s", printed.getvalue().strip())
        named.setLevel(named_level)
        if stand_in is not None:
            root.removeHandler(stand_in)
        root.removeFilter(not_ort_chatter)


def _quantize(fp32_path, out_path, calib_x: np.ndarray, config: QuantConfig, t0: float) -> QuantResult:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    target = TARGETS[config.int8_target]
    with tempfile.TemporaryDirectory() as td:
        pre = Path(td) / "pre.onnx"
        # Shape inference + graph optimizations (BN folding etc.) before quantization, as ORT recommends.
        # ONNX Runtime's shape inference writes scratch files (sym_shape_infer_temp.onnx, *.data) into
        # the current folder for large models: run it from the temporary folder, never the user's.
        fp32_abs, cwd = str(Path(fp32_path).resolve()), os.getcwd()
        os.chdir(td)
        try:
            try:
                quant_pre_process(fp32_abs, str(pre), skip_symbolic_shape=False)
            except Exception:  # symbolic shape inference gives up on some graphs (ViT's Reshapes)
                quant_pre_process(fp32_abs, str(pre), skip_symbolic_shape=True)
        finally:
            os.chdir(cwd)
        model = onnx.load(str(pre))
        exclude = _kept_nodes(model, config.keep_fp32)
        if config.mode == "dynamic":
            quantize_dynamic(str(pre), str(out_path), per_channel=config.per_channel, weight_type=QuantType.QInt8,
                             nodes_to_exclude=exclude)
            n_calib = 0
        else:
            x = calib_x
            n_calib = len(x)
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[config.calibration]
            extra = {"ActivationSymmetric": target.symmetric_activations, "WeightSymmetric": True}
            if config.calibration == "percentile":
                extra["CalibPercentile"] = 99.99
            input_name = model.graph.input[0].name
            with events.task(f"calibrate int8 ({config.calibration})", total=n_calib) as advance:
                reader = ArrayReader(x, input_name, advance=advance)
                fmt = target.format if config.format == "auto" else config.format
                quantize_static(str(pre), str(out_path), reader,
                                quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                                per_channel=config.per_channel, activation_type=qtype[target.activation],
                                weight_type=qtype[target.weight], calibrate_method=method,
                                nodes_to_exclude=exclude, extra_options=extra)
    stem = _stem(out_path, calib_x, config) if config.stem != "plain" else ""
    route = _route(out_path, calib_x, config) if config.route != "symmetric" else ""
    q = onnx.load(str(out_path))
    n_q = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                            "ConvInteger") for n in q.graph.node)
    if n_q == 0:
        raise QualityGateError("int8 quantization left the model without any quantized node.",
                               why="ONNX Runtime found no Conv/MatMul/Gemm it could quantize in this graph.",
                               fix="Leave `int8` off, or try `int8_mode` dynamic for Linear-heavy models.")
    return QuantResult(mode=config.mode, calibration=config.calibration if config.mode == "static" else "none",
                       calib_samples=n_calib, qdq_nodes=n_q, seconds=time.perf_counter() - t0, stem=stem,
                       route=route)


def _stem(out_path, calib_x: np.ndarray, config: QuantConfig) -> str:
    """Rewrite the stem of the int8 model at ``out_path`` in place when it applies and checks out; the note."""
    from edgerobust.workstation.quantize.stem import rewrite_checked

    return _rewrite(out_path, calib_x, config, "space-to-depth stem", rewrite_checked)


def _route(out_path, calib_x: np.ndarray, config: QuantConfig) -> str:
    """Send the late convolutions of the int8 model at ``out_path`` to the integer GEMM when it applies and
    checks out (edgerobust.workstation.quantize.route); the note."""
    from edgerobust.workstation.quantize.route import reroute_checked

    return _rewrite(out_path, calib_x, config, "GEMM route", reroute_checked)


def _rewrite(out_path, calib_x: np.ndarray, config: QuantConfig, what: str, checked) -> str:
    """``checked(model, inputs)`` (a rewrite compared with the model on up to 32 calibration inputs) applied in
    place to the static QDQ CPU-target int8 model at ``out_path``; its note, or why it does not apply."""
    fmt = TARGETS[config.int8_target].format if config.format == "auto" else config.format
    if config.mode != "static" or fmt != "qdq" or config.int8_target != "cpu":
        return (f"{what} not applied: it is written for static QDQ int8 on the CPU target "
                f"(here {config.mode}, {fmt}, {config.int8_target})")
    done = checked(onnx.load(str(out_path)), np.asarray(calib_x[:32], dtype=np.float32))
    if done.model is not None:
        onnx.save(done.model, str(out_path))
    return done.note
