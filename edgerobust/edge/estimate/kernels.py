"""A model as the runtime runs it: onnxruntime's optimized graph, split into kernels with their sizes.

``extract(path)`` lets onnxruntime optimize the model (the CPU provider, at the profile's level capped at
"extended": constant folding, BatchNorm folded into convolutions, Conv+Relu fused, int8 QDQ pairs fused
into QLinearConv / QLinearAdd / QGemm; the hardware-specific layout passes of "all" are left to the
device, whose own fusions the calibration records), then walks the optimized graph and gives one
:class:`Kernel` per node: its kind, precision, multiply-accumulates and bytes moved, with the sizes from
onnx's shape inference on the original model at batch 1 (and from the weights where a fused node made
a new tensor).

Kinds (what the calibration times and the fit predicts): ``conv`` (k×k, k > 1), ``pointwise`` (1×1),
``depthwise`` (one group per input channel), ``linear`` (Gemm, MatMul and their int8 forms), ``add``,
``pool`` (max, average, global), ``memory`` (everything whose time is the bytes it moves: transposes,
element-wise ops, quantize/dequantize, padding, concatenation) and ``view`` (reshape, flatten: no data
moved). Torch-free: onnx and onnxruntime.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, shape_inference

from edgerobust.errors import ModelLoadError

KINDS = ("conv", "pointwise", "depthwise", "linear", "add", "pool", "memory", "view")
DTYPES = ("fp32", "fp16", "int8")
# Where a convolution's weight is among its inputs, per runtime op.
CONV_OPS = {"Conv": 1, "FusedConv": 1, "NhwcFusedConv": 1, "QLinearConv": 3, "ConvInteger": 1}
LINEAR_OPS = {"Gemm": 1, "MatMul": 1, "FusedGemm": 1, "FusedMatMul": 1, "QGemm": 3, "QLinearMatMul": 3,
              "MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1}
ADD_OPS = ("Add", "QLinearAdd", "Sum")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "QLinearGlobalAveragePool",
            "QLinearAveragePool", "NhwcMaxPool")
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
INT8_OPS = ("QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool")
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh")
_SIZE = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.INT8: 1,
         TensorProto.UINT8: 1, TensorProto.INT32: 4, TensorProto.INT64: 8, TensorProto.BOOL: 1}
_LEVELS = ("disable", "basic", "extended")
_ORT_LEVEL = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}


@dataclass(frozen=True)
class Kernel:
    """One node of the optimized graph at batch 1: what the calibration times and the fit predicts.

    ``macs``: multiply-accumulates (0 for kinds without); ``bytes_in``/``bytes_out``: activations read
    and written; ``bytes_w``: weights read; ``k``/``stride``: the window of a convolution or pool;
    ``cin``/``cout``: channels (features of a linear layer); ``pixels``: output height × width.
    """

    kind: str
    dtype: str
    op: str
    macs: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    bytes_w: float = 0.0
    k: int = 1
    stride: int = 1
    cin: int = 0
    cout: int = 0
    pixels: int = 0
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# =============================================================================================
# the runtime's graph


def optimized(model: str | os.PathLike | bytes, level: str = "extended") -> onnx.ModelProto:
    """The model (a path or serialized bytes) after onnxruntime's own graph optimization on the CPU
    provider, at ``level`` capped at "extended" (the hardware-independent passes)."""
    from edgerobust.edge.runtime.sessions import ort

    rt = ort()
    level = level if level in _LEVELS else "extended"
    with tempfile.TemporaryDirectory(prefix="edgerobust-kernels-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        o = rt.SessionOptions()
        o.graph_optimization_level = getattr(rt.GraphOptimizationLevel, _ORT_LEVEL[level])
        o.optimized_model_filepath = str(out)
        o.log_severity_level = 3
        try:
            rt.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=o,
                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own zoo of exceptions
            what = "the model" if isinstance(model, bytes) else f"'{model}'"
            raise ModelLoadError(f"onnxruntime cannot load {what} to split it into kernels.",
                                 why=f"{type(exc).__name__}: {str(exc)[:400]}",
                                 fix="Check that the file is a complete ONNX model this onnxruntime can run.") from exc
        return onnx.load(str(out))


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int], int]]:
    """Every tensor's (shape, element type) that onnx's shape inference finds at batch 1."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        if i.name not in inits and len(dims) and not dims[0].dim_value:
            dims[0].dim_value = 1
    try:
        m = shape_inference.infer_shapes(m, strict_mode=False)
    except Exception:  # onnx raises its own InferenceError kinds; the walk falls back to the weights
        pass
    out = {}
    for v in (*m.graph.input, *m.graph.value_info, *m.graph.output):
        t = v.type.tensor_type
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim]
        if t.HasField("shape"):
            out[v.name] = (dims, t.elem_type)
    for t in m.graph.initializer:
        out[t.name] = (list(t.dims), t.data_type)
    return out


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _n(shape) -> int:
    return int(math.prod(shape)) if shape else 0


class _Walk:
    """Shapes and element sizes of the optimized graph's tensors, from the original model's inference,
    then filled in node by node where fused nodes made new tensors."""

    def __init__(self, graph: onnx.GraphProto, shapes: dict, float_dtype: str):
        self.shapes = dict(shapes)
        self.inits = {t.name: (list(t.dims), t.data_type) for t in graph.initializer}
        self.shapes.update(self.inits)
        self.float_size = 2 if float_dtype == "fp16" else 4
        self.float_dtype = float_dtype

    def shape(self, name: str) -> list[int] | None:
        s = self.shapes.get(name)
        return s[0] if s else None

    def size(self, name: str, default: int) -> int:
        s = self.shapes.get(name)
        return _SIZE.get(s[1], default) if s and s[1] else default

    def nbytes(self, name: str, default: int) -> float:
        shape = self.shape(name)
        return float(_n(shape) * self.size(name, default)) if shape is not None else 0.0

    def activations(self, node: onnx.NodeProto) -> list[str]:
        return [i for i in node.input if i and i not in self.inits]

    def set(self, name: str, shape: list[int], elem: int) -> None:
        if name and name not in self.shapes:
            self.shapes[name] = (list(shape), elem)


def _esize(node: onnx.NodeProto, walk: _Walk) -> int:
    """Bytes per element of the node's first activation (1 for the int8 ops' quantized tensors)."""
    ins = walk.activations(node)
    default = 1 if node.op_type in INT8_OPS else walk.float_size
    return walk.size(ins[0], default) if ins else default


def _dtype(node: onnx.NodeProto, walk: _Walk) -> str:
    return "int8" if node.op_type in INT8_OPS or _esize(node, walk) == 1 else walk.float_dtype


def _conv(node: onnx.NodeProto, walk: _Walk, esize: int) -> Kernel:
    a = _attrs(node)
    w = walk.shape(node.input[CONV_OPS[node.op_type]]) or [0, 0, 1, 1]
    x = walk.shape(node.input[0]) or [1, 0, 0, 0]
    if a.get("channels_last"):
        x = [x[0], x[-1], *x[1:-1]]
    cout, cin_g, ks = w[0], w[1], w[2:] or [1]
    groups = int(a.get("group", 1))
    cin = x[1] if len(x) > 1 else cin_g * groups
    strides = a.get("strides") or [1] * len(ks)
    pads = a.get("pads") or [0] * (2 * len(ks))
    dil = a.get("dilations") or [1] * len(ks)
    spatial = x[2:] or [1]
    outs = [max((s + pads[i] + pads[i + len(ks)] - dil[i] * (k - 1) - 1) // strides[i] + 1, 1)
            for i, (s, k) in enumerate(zip(spatial, ks))]
    y = walk.shape(node.output[0])
    if y and len(y) == len(x):
        outs = y[1:-1] if a.get("channels_last") else y[2:]
    walk.set(node.output[0], [1, cout, *outs], walk.shapes.get(node.input[0], (None, 0))[1])
    pixels, kk = _n(outs), _n(ks)
    kind = ("depthwise" if groups > 1 and groups == cin else "pointwise" if kk == 1 and groups == 1 else "conv")
    wsize = 1 if node.op_type in INT8_OPS else walk.size(node.input[CONV_OPS[node.op_type]], esize)
    return Kernel(kind, _dtype(node, walk), node.op_type, macs=float(cout * pixels * cin_g * kk),
                  bytes_in=float(cin * _n(spatial) * esize), bytes_out=float(cout * pixels * esize),
                  bytes_w=float(_n(w) * wsize), k=int(max(ks)), stride=int(max(strides)), cin=int(cin),
                  cout=int(cout), pixels=int(pixels), name=node.name)


def _linear(node: onnx.NodeProto, walk: _Walk, esize: int) -> Kernel:
    a = _attrs(node)
    x = walk.shape(node.input[0]) or [1, 0]
    w = walk.shape(node.input[LINEAR_OPS[node.op_type]]) or [0, 0]
    k_in, n_out = (w[-1], w[-2]) if a.get("transB") else (w[-2], w[-1]) if len(w) >= 2 else (x[-1], 0)
    rows = max(_n(x) // max(x[-1], 1), 1)
    walk.set(node.output[0], [*x[:-1], n_out], walk.shapes.get(node.input[0], (None, 0))[1])
    wsize = 1 if node.op_type in INT8_OPS else walk.size(node.input[LINEAR_OPS[node.op_type]], esize)
    return Kernel("linear", _dtype(node, walk), node.op_type, macs=float(rows * k_in * n_out),
                  bytes_in=float(rows * k_in * esize), bytes_out=float(rows * n_out * esize),
                  bytes_w=float(k_in * n_out * wsize), cin=int(k_in), cout=int(n_out), pixels=int(rows),
                  name=node.name)


def _pool(node: onnx.NodeProto, walk: _Walk, esize: int) -> Kernel:
    a = _attrs(node)
    x = walk.shape(node.input[0]) or [1, 0, 1, 1]
    if a.get("channels_last") or node.op_type == "NhwcMaxPool":
        x = [x[0], x[-1], *x[1:-1]]
    if node.op_type.startswith(("Global", "QLinearGlobal")):
        outs, k, stride = [1] * len(x[2:]), int(max(x[2:] or [1])), 1
    else:
        ks, strides = a.get("kernel_shape") or [1], a.get("strides") or [1]
        pads = a.get("pads") or [0] * (2 * len(ks))
        outs = [max((s + pads[i] + pads[i + len(ks)] - k) // strides[i] + 1, 1) for i, (s, k) in enumerate(zip(x[2:], ks))]
        k, stride = int(max(ks)), int(max(strides))
    walk.set(node.output[0], [1, x[1], *outs], walk.shapes.get(node.input[0], (None, 0))[1])
    pixels = _n(outs)
    return Kernel("pool", _dtype(node, walk), node.op_type, macs=float(x[1] * pixels * k * k),
                  bytes_in=float(_n(x) * esize), bytes_out=float(x[1] * pixels * esize), k=k, stride=stride,
                  cin=int(x[1]), cout=int(x[1]), pixels=int(pixels), name=node.name)


def _elementwise(node: onnx.NodeProto, walk: _Walk, kind: str) -> Kernel:
    ins = walk.activations(node)
    esize = _esize(node, walk)
    first = walk.shape(ins[0]) if ins else None
    out = walk.shape(node.output[0]) if node.output else None
    if out is None and first is not None and node.op_type not in VIEW_OPS + ("Transpose", "Concat", "Pad"):
        walk.set(node.output[0], first, walk.shapes.get(ins[0], (None, 0))[1])
        out = first
    b_in = sum(walk.nbytes(i, esize) for i in ins)
    b_out = sum(walk.nbytes(o, esize) for o in node.output if o)
    if not b_out and out is not None:
        b_out = float(_n(out) * esize)
    return Kernel(kind, _dtype(node, walk), node.op_type, bytes_in=b_in, bytes_out=b_out, pixels=_n(out or first or []),
                  name=node.name)


def kernel_of(node: onnx.NodeProto, walk: _Walk) -> Kernel:
    """The kernel one node of the optimized graph runs."""
    esize = _esize(node, walk)
    if node.op_type in CONV_OPS:
        return _conv(node, walk, esize)
    if node.op_type in LINEAR_OPS:
        return _linear(node, walk, esize)
    if node.op_type in POOL_OPS:
        return _pool(node, walk, esize)
    if node.op_type in ADD_OPS:
        return _elementwise(node, walk, "add")
    return _elementwise(node, walk, "view" if node.op_type in VIEW_OPS else "memory")


def float_dtype(model: onnx.ModelProto) -> str:
    """fp16 when the model's convolution or matmul weights are fp16, else fp32."""
    weights = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        idx = CONV_OPS.get(node.op_type, LINEAR_OPS.get(node.op_type))
        if idx is not None and len(node.input) > idx and weights.get(node.input[idx]) == TensorProto.FLOAT16:
            return "fp16"
    return "fp32"


def fuse_adds(graph: onnx.GraphProto, kernels: list[Kernel]) -> list[Kernel]:
    """Drop a float Add whose input comes from a convolution used only by it, and the activation after
    it: what onnxruntime's CPU provider does at "all" (the residual sum and its Relu run inside the
    convolution: NCHWc's Sum input on x86, FusedConv's Z input elsewhere). The calibration records
    whether the device does it (``Calibration.fuses_add``)."""
    consumers: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    producer = {o: (n, k) for n, k in zip(graph.node, kernels) for o in n.output}
    drop: set[str] = set()
    for node, k in zip(graph.node, kernels):
        if node.op_type != "Add" or k.dtype == "int8":
            continue
        convs = [i for i in node.input if i in producer and producer[i][1].kind in ("conv", "pointwise", "depthwise")
                 and consumers.get(i) == 1]
        if not convs:
            continue
        drop.add(node.name or node.output[0])
        after = [n for n in graph.node if node.output[0] in n.input]
        if len(after) == 1 and after[0].op_type in ACTIVATIONS and consumers.get(node.output[0]) == 1:
            drop.add(after[0].name or after[0].output[0])
    return [k for n, k in zip(graph.node, kernels) if (n.name or n.output[0]) not in drop]


def extract(model: str | os.PathLike | bytes, level: str = "all", fuses_add: bool = False) -> tuple[Kernel, ...]:
    """The kernels of one model (a path or serialized bytes) at batch 1, in graph order, as onnxruntime's
    CPU provider fuses them.

    ``level``: the profile's graph optimization level (capped at "extended"); ``fuses_add``: also drop
    the float residual adds the device fuses into convolutions (see :func:`fuse_adds`).
    """
    if isinstance(model, bytes):
        original = onnx.load_from_string(model)
    else:
        model = Path(model)
        if not model.is_file():
            raise ModelLoadError(f"The model '{model}' does not exist.", fix="Check the path.")
        try:
            original = onnx.load(str(model), load_external_data=False)
        except Exception as exc:  # a truncated or foreign file: onnx's DecodeError and friends
            raise ModelLoadError(f"'{model}' is not an ONNX model.", why=str(exc)[:300]) from exc
    opt = optimized(model, level)
    walk = _Walk(opt.graph, _shapes(original), float_dtype(original))
    kernels = [kernel_of(node, walk) for node in opt.graph.node]
    if fuses_add and level == "all":
        kernels = fuse_adds(opt.graph, kernels)
    return tuple(kernels)
