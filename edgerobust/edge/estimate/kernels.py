"""A model as the device runs it: the device's optimized graph, split into kernels with their sizes.

``extract(path, level, block=...)`` rebuilds the graph the device's onnxruntime runs (the CPU provider at
the calibrated profile's level, with the device's channel-blocked NCHWc layout where this host can rebuild
it: :mod:`edgerobust.edge.estimate.graph`), then walks it and gives one :class:`Kernel` per node: its kind,
precision, multiply-accumulates and bytes moved, with every tensor's size at the batch size asked for.

Kinds (what the calibration times and the fit predicts; :data:`KINDS`):

* compute: ``conv`` (k×k, k > 1), ``pointwise`` (1×1), ``depthwise`` (one group per channel), ``grouped`` (several
  channels per group, as RegNet's: the runtime loops over the groups), ``linear`` (Gemm, MatMul, their int8
  forms); with an NCHWc layout, a convolution whose channels do not fit the blocks runs in plain NCHW, far
  slower per MAC: ``conv-nchw``, ``pointwise-nchw``, ``depthwise-nchw``, ``grouped-nchw``;
* ``add`` (two tensors of one size: a residual), ``pool`` (max, global average), ``avgpool`` (a windowed average,
  as DenseNet's transitions: int8's QLinearAveragePool runs far slower per byte than a max pool);
* data movement, each timed as the runtime runs it: ``concat`` (Concat; QLinearConcat requantizes each input
  to the output's scale), ``slice`` (Slice, Split, Gather), ``transpose`` (channel shuffles and the int8
  layout changes; ``transpose-gather``: one the runtime runs element by element), ``reorder`` (NCHWc),
  ``quantize`` (QuantizeLinear, DequantizeLinear), ``norm`` (an unfused BatchNormalization,
  LayerNormalization), ``elementwise`` (activations, a broadcast scale as squeeze-excite multiplies, arithmetic),
  ``resize`` (upsampling), ``memory`` (pad, cast and the rest); ``scalar`` (shape arithmetic: a few integers,
  its cost the node's), ``view`` (reshape, flatten: no data).

Torch-free: onnx and onnxruntime.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgerobust.edge.estimate.graph import NCHWC_DOMAIN, device_graph, gathers, split_shapes, tensor_shapes
from edgerobust.edge.estimate.graph import node_attrs as _attrs
from edgerobust.errors import ModelLoadError

COMPUTE = ("conv", "pointwise", "depthwise", "grouped")
KINDS = (*COMPUTE, *(f"{k}-nchw" for k in COMPUTE), "linear", "add", "pool", "avgpool", "concat", "slice",
         "transpose", "transpose-gather", "reorder", "quantize", "norm", "elementwise", "resize", "memory", "scalar", "view")
WEIGHTED = (*COMPUTE, *(f"{k}-nchw" for k in COMPUTE), "linear")  # kinds with weights: timed with cold caches too
MOVES = ("concat", "slice", "transpose", "transpose-gather", "reorder", "quantize", "norm", "elementwise", "resize", "memory")
DTYPES = ("fp32", "fp16", "int8")
# Where a convolution's weight is among its inputs, per runtime op.
CONV_OPS = {"Conv": 1, "FusedConv": 1, "NhwcFusedConv": 1, "QLinearConv": 3, "ConvInteger": 1}
LINEAR_OPS = {"Gemm": 1, "MatMul": 1, "FusedGemm": 1, "FusedMatMul": 1, "QGemm": 3, "QLinearMatMul": 3,
              "MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1}
ADD_OPS = ("Add", "QLinearAdd", "Sum")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "QLinearGlobalAveragePool",
            "QLinearAveragePool", "NhwcMaxPool")
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
MOVE_OPS = {"Concat": "concat", "QLinearConcat": "concat", "Slice": "slice", "Split": "slice", "Gather": "slice",
            "Transpose": "transpose", "ReorderInput": "reorder", "ReorderOutput": "reorder",
            "QuantizeLinear": "quantize", "DequantizeLinear": "quantize", "DynamicQuantizeLinear": "quantize",
            "BatchNormalization": "norm", "LayerNormalization": "norm", "InstanceNormalization": "norm",
            "GroupNormalization": "norm", "SimplifiedLayerNormalization": "norm", "Pad": "memory",
            "Resize": "resize", "Upsample": "resize", "Cast": "memory", "Expand": "memory", "Tile": "memory",
            "SpaceToDepth": "memory", "DepthToSpace": "memory"}
SCALAR_OPS = ("Shape", "Size", "ConstantOfShape", "Range")
SCALAR_MAX = 64  # elements in and out at most: a node of shape arithmetic
INT8_OPS = ("QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
            "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean")
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh")
_SIZE = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.INT8: 1,
         TensorProto.UINT8: 1, TensorProto.INT32: 4, TensorProto.INT64: 8, TensorProto.BOOL: 1}


@dataclass(frozen=True)
class Kernel:
    """One node of the device's graph: what the calibration times and the fit predicts.

    ``macs``: multiply-accumulates (0 for kinds without); ``bytes_in``/``bytes_out``: activations read
    and written; ``bytes_w``: weights read; ``k``/``stride``: the window of a convolution or pool;
    ``cin``/``cout``: channels (features of a linear layer); ``pixels``: output height × width × batch;
    ``batch``: the model's batch size (images), each of which a kernel runs over with a cost of its own;
    ``groups``: a convolution's groups; a concatenation's inputs are its ``k``.
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
    batch: int = 1
    groups: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


# ============================================================================================= the runtime's graph


def _n(shape) -> int:
    return int(math.prod(shape)) if shape else 0


class _Walk:
    """Shapes and element sizes of the optimized graph's tensors, from the original model's inference,
    then filled in node by node where fused nodes made new tensors."""

    def __init__(self, graph: onnx.GraphProto, shapes: dict, float_dtype: str, block: int = 0):
        self.block = block  # the device's NCHWc block: a plain convolution there is a "-nchw" kind
        self.shapes = dict(shapes)
        self.inits = {t.name: (list(t.dims), t.data_type) for t in graph.initializer}
        self.values = {t.name: numpy_helper.to_array(t).reshape(-1).tolist() for t in graph.initializer
                       if t.data_type == TensorProto.INT64 and len(t.dims) == 1 and 0 < t.dims[0] <= 8}
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
    if node.op_type in INT8_OPS:  # its activations are 8-bit whatever name they took over from the float graph
        return 1
    ins = walk.activations(node)
    return walk.size(ins[0], walk.float_size) if ins else walk.float_size


def _dtype(node: onnx.NodeProto, walk: _Walk) -> str:
    return "int8" if node.op_type in INT8_OPS or _esize(node, walk) == 1 else walk.float_dtype


def _conv(node: onnx.NodeProto, walk: _Walk, esize: int) -> Kernel:
    a = _attrs(node)
    w = walk.shape(node.input[CONV_OPS[node.op_type]]) or [0, 0, 1, 1]
    x = walk.shape(node.input[0]) or [1, 0, 0, 0]
    last = bool(a.get("channels_last"))
    if last:
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
        outs = y[1:-1] if last else y[2:]
    n = max(x[0], 1)
    walk.set(node.output[0], [n, *outs, cout] if last else [n, cout, *outs], walk.shapes.get(node.input[0], (None, 0))[1])
    pixels, kk = n * _n(outs), _n(ks)
    # one input channel per group is depthwise (NCHWc pads the channels to its blocks: 728 runs as 736)
    kind = ("depthwise" if groups > 1 and cin_g == 1 else "grouped" if groups > 1  # depthwise: any channel multiplier
            else "pointwise" if kk == 1 else "conv")
    if walk.block and node.domain != NCHWC_DOMAIN and node.op_type in ("Conv", "FusedConv"):
        kind += "-nchw"
    wsize = 1 if node.op_type in INT8_OPS else walk.size(node.input[CONV_OPS[node.op_type]], esize)
    return Kernel(kind, _dtype(node, walk), node.op_type, macs=float(cout * pixels * cin_g * kk),
                  bytes_in=float(n * cin * _n(spatial) * esize), bytes_out=float(cout * pixels * esize),
                  bytes_w=float(_n(w) * wsize), k=int(max(ks)), stride=int(max(strides)), cin=int(cin),
                  cout=int(cout), pixels=int(pixels), name=node.name, groups=groups)


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
    last = bool(a.get("channels_last")) or node.op_type == "NhwcMaxPool"
    if last:
        x = [x[0], x[-1], *x[1:-1]]
    if node.op_type.startswith(("Global", "QLinearGlobal")):
        outs, k, stride = [1] * len(x[2:]), int(max(x[2:] or [1])), 1
    else:
        ks = a.get("kernel_shape") or [1]
        strides = a.get("strides") or [1] * len(ks)  # absent: 1 along every axis (a 2-D pool without strides)
        pads = a.get("pads") or [0] * (2 * len(ks))
        outs = [max((s + pads[i] + pads[i + len(ks)] - k) // strides[i] + 1, 1) for i, (s, k) in enumerate(zip(x[2:], ks))]
        k, stride = int(max(ks)), int(max(strides))
    n = max(x[0], 1)
    walk.set(node.output[0], [n, *outs, x[1]] if last else [n, x[1], *outs], walk.shapes.get(node.input[0], (None, 0))[1])
    pixels = n * _n(outs)
    kind = "avgpool" if node.op_type in ("AveragePool", "QLinearAveragePool") and _n(outs) > 1 else "pool"
    return Kernel(kind, _dtype(node, walk), node.op_type, macs=float(x[1] * pixels * k * k),
                  bytes_in=float(_n(x) * esize), bytes_out=float(x[1] * pixels * esize), k=k, stride=stride,
                  cin=int(x[1]), cout=int(x[1]), pixels=int(pixels), name=node.name)


def _reshaped(first: list[int], target: list[int]) -> list[int] | None:
    """A Reshape's output for a constant target (0 keeps the input's size, -1 takes the rest), as the runtime
    writes around the Gemm it fuses from a MatMul and its bias."""
    dims = [first[i] if v == 0 and i < len(first) else int(v) for i, v in enumerate(target)]
    known = math.prod(d for d in dims if d != -1)
    if dims.count(-1) > 1 or known <= 0:
        return None
    return [_n(first) // known if d == -1 else d for d in dims]


def _out_shape(node: onnx.NodeProto, walk: _Walk, first: list[int] | None) -> list[int] | None:
    """The output's shape where the graph does not say it: kept by element-wise ops and reorders (ReorderOutput
    with its own channel count, channels last if asked; ReorderInput from channels last), a transpose's
    permutation, a concatenation's sum."""
    a, op = _attrs(node), node.op_type
    if op == "Reshape" and first is not None and len(node.input) > 1 and node.input[1] in walk.values:
        return _reshaped(first, walk.values[node.input[1]])
    if first is None or op in VIEW_OPS + ("Pad", "Resize", "Upsample", "Expand", "Tile") + SCALAR_OPS:
        return None
    if op == "ReorderOutput" and len(first) == 4:
        c = int(a.get("channels", first[1]))
        return [first[0], *first[2:], c] if a.get("channels_last") else [first[0], c, *first[2:]]
    if op == "ReorderInput" and len(first) == 4 and a.get("channels_last"):  # NHWC in (after ConvNeXt's LayerNorm)
        return [first[0], first[-1], *first[1:-1]]
    if op == "Transpose":
        perm = a.get("perm") or list(range(len(first)))[::-1]
        return [first[i] for i in perm] if len(perm) == len(first) else None
    if op in ("Concat", "QLinearConcat"):
        names = node.input[2::3] if op == "QLinearConcat" else node.input
        ins = [s for s in map(walk.shape, names) if s is not None and len(s) == len(first)]
        axis = int(a.get("axis", 1)) % len(first)
        return [sum(s[axis] for s in ins) if i == axis else d for i, d in enumerate(first)] if ins else None
    if op in ("Slice", "Split", "Gather") or op.startswith(("Reduce", "QLinearReduce", "ArgM")):
        return None  # their sizes come from the graph or the run; a guess would be wrong
    shapes = [walk.shape(i) for i in walk.activations(node)]
    try:  # an element-wise op broadcasts: squeeze-excite's gate [n, c, 1, 1] may come first, the tensor second
        return list(np.broadcast_shapes(*(tuple(s) for s in shapes if s is not None)))
    except ValueError:
        return first


def _moves(node: onnx.NodeProto, walk: _Walk, kind: str) -> Kernel:
    """A kernel whose time is the data it moves: add, data movement, scalar and view kinds."""
    ins = walk.activations(node) or list(node.input[:1])  # a weight dequantized at every run: its data moves
    esize = _esize(node, walk)
    first = walk.shape(ins[0]) if ins else None
    for o, shape in zip(node.output, (node.op_type == "Split" and first and split_shapes(node, first, walk.values)) or ()):
        walk.set(o, shape, walk.shapes.get(ins[0], (None, 0))[1])  # a split's every output, as the runtime moved it
    out = walk.shape(node.output[0]) if node.output else None
    if out is None:
        out = _out_shape(node, walk, first)
        if out is not None:
            walk.set(node.output[0], out, TensorProto.UINT8 if node.op_type in INT8_OPS
                     else walk.shapes.get(ins[0], (None, 0))[1])
    b_in = sum(walk.nbytes(i, esize) for i in ins)
    b_out = sum(walk.nbytes(o, esize) for o in node.output if o)
    if not b_out and out is not None:
        b_out = float(_n(out) * esize)
    shapes = [walk.shape(t) for t in (*ins, *(o for o in node.output if o))]
    tiny = None not in shapes and sum(map(_n, shapes)) <= SCALAR_MAX  # every size known, and a few numbers in all
    if kind not in ("add", "view") and (node.op_type in SCALAR_OPS or tiny):
        kind = "scalar"
    if kind == "add" and (len(ins) != 2 or walk.shape(ins[0]) != walk.shape(ins[1])):
        kind = "elementwise"  # a bias, or a broadcast as a squeeze-excite scale: not a residual sum
    kind = "transpose-gather" if kind == "transpose" and gathers(_attrs(node).get("perm"), len(first or ())) else kind
    dtype = "int8" if kind == "quantize" else _dtype(node, walk)
    return Kernel(kind, dtype, node.op_type, bytes_in=b_in, bytes_out=b_out, pixels=_n(out or first or []),
                  name=node.name, k=len(node.input[2::3] if node.op_type == "QLinearConcat" else node.input)
                  if kind == "concat" else 1)


def kernel_of(node: onnx.NodeProto, walk: _Walk) -> Kernel:
    """The kernel one node of the device's graph runs."""
    esize = _esize(node, walk)
    if node.op_type in CONV_OPS:
        return _conv(node, walk, esize)
    if node.op_type in LINEAR_OPS:
        return _linear(node, walk, esize)
    if node.op_type in POOL_OPS:
        return _pool(node, walk, esize)
    if node.op_type in ADD_OPS:
        return _moves(node, walk, "add")
    return _moves(node, walk, "view" if node.op_type in VIEW_OPS else MOVE_OPS.get(node.op_type, "elementwise"))


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
        convs = [i for i in node.input if i in producer and producer[i][1].kind in COMPUTE
                 and consumers.get(i) == 1]
        if not convs:
            continue
        drop.add(node.name or node.output[0])
        after = [n for n in graph.node if node.output[0] in n.input]
        if len(after) == 1 and after[0].op_type in ACTIVATIONS and consumers.get(node.output[0]) == 1:
            drop.add(after[0].name or after[0].output[0])
    return [k for n, k in zip(graph.node, kernels) if (n.name or n.output[0]) not in drop]


def load(model: str | os.PathLike | bytes) -> onnx.ModelProto:
    """The ONNX model (a path or serialized bytes), or the project's error."""
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    model = Path(model)
    if not model.is_file():
        raise ModelLoadError(f"The model '{model}' does not exist.", fix="Check the path.")
    try:
        return onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # a truncated or foreign file: onnx's DecodeError and friends
        raise ModelLoadError(f"'{model}' is not an ONNX model.", why=str(exc)[:300]) from exc


def _images(model: onnx.ModelProto, shapes: dict, batch: int) -> int:
    """The batch size the model runs at: its first input's leading size (fixed, as a calibration model's), or
    ``batch``."""
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name not in inits and shapes.get(i.name) and shapes[i.name][0]:
            return max(int(shapes[i.name][0][0]), 1)
    return max(batch, 1)


def extract(model: str | os.PathLike | bytes, level: str = "all", fuses_add: bool = False, block: int | None = None,
            batch: int = 1) -> tuple[Kernel, ...]:
    """The kernels of one model (a path or serialized bytes) at ``batch``, in graph order, as the device's
    onnxruntime CPU provider runs them.

    ``level``: the profile's graph optimization level; ``block``: the device's NCHWc block (0: none; None:
    this host's, as on the device itself); ``fuses_add``: the device fuses a float residual add into the
    convolution before it, which is dropped here where the rebuilt graph still has it (:func:`fuse_adds`).
    What of the device's graph this host cannot rebuild is in :func:`extract_noting`.
    """
    return extract_noting(model, level, fuses_add, block, batch)[0]


def extract_noting(model: str | os.PathLike | bytes, level: str = "all", fuses_add: bool = False,
                   block: int | None = None, batch: int = 1) -> tuple[tuple[Kernel, ...], str | None]:
    """(:func:`extract`'s kernels, what of the device's graph could not be rebuilt here, in words, or None)."""
    from edgerobust.edge.estimate.graph import nchwc_block

    original = load(model)
    block = nchwc_block(level) if block is None else block
    opt, note = device_graph(model, level, block)
    shapes = tensor_shapes(original, batch)
    walk = _Walk(opt.graph, shapes, float_dtype(original), block if note is None else 0)
    images = _images(original, shapes, batch)
    kernels = [replace(kernel_of(node, walk), batch=images) for node in opt.graph.node]
    if fuses_add and level == "all" and not any(n.domain == NCHWC_DOMAIN for n in opt.graph.node):
        kernels = fuse_adds(opt.graph, kernels)
    return tuple(kernels), note
