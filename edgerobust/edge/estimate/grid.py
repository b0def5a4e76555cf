"""The calibration grid: the kernels the bundles use, at the sizes pruning produces, each a tiny ONNX model.

Every grid point is one kernel (a kind of :data:`edgerobust.edge.estimate.kernels.KINDS`, a precision,
its channels, input size, window and stride) drawn at random, log-uniformly, from the ranges pruned
torchvision classifiers reach at 96-224 px: channels 8-512 for k×k convolutions (3 or 12 for a stem, on
inputs up to 230 px), 8-1280 for pointwise ones, input sizes 2-112, windows 3/5/7, strides 1/2. Channel counts are multiples of
8 above 8, as pruning with a channel rounding leaves them. One draw of sizes serves every precision, so
fp32 and int8 are timed on the same shapes.

:func:`micro_model` writes a point as an ONNX model (onnx.helper, opset 17) the way the bundles hold the
kernel: a float convolution followed by its Relu (fused by the runtime), an int8 one as a QDQ graph
(per-channel int8 weights, uint8 activations for the CPU, int8 for TensorRT) that onnxruntime fuses into
QLinearConv, an fp16 one on fp16 tensors. Torch-free: numpy and onnx.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

# Points drawn per kind (a full grid); ``scale`` in :func:`draw` shrinks it for a quick calibration.
POINTS = {"conv": 72, "pointwise": 48, "depthwise": 40, "linear": 16, "add": 20, "pool": 20, "memory": 28, "view": 6}
MAX_MACS = 2.5e8  # larger kernels take tens of ms each on a small CPU and teach the fit little more
_FLOAT = {"fp32": (TensorProto.FLOAT, np.float32), "fp16": (TensorProto.FLOAT16, np.float16)}
MEMORY_OPS = ("Transpose", "Concat", "Relu", "Sub", "QuantizeLinear", "DequantizeLinear", "Pad")


@dataclass(frozen=True)
class Point:
    """One kernel to time: ``c``/``cout`` channels (features of a linear layer), input ``h`` × ``h``,
    window ``k``, ``stride``; ``op`` picks the pool (MaxPool, AveragePool, GlobalAveragePool) or the
    memory op."""

    kind: str
    c: int
    cout: int = 0
    h: int = 1
    k: int = 1
    stride: int = 1
    op: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _channels(rng, lo: int, hi: int) -> int:
    v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return int(max(8, round(v / 8) * 8)) if v > 8 else int(max(lo, round(v)))


def _size(rng, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def _macs(p: Point) -> float:
    out = (p.h // p.stride) ** 2
    if p.kind == "depthwise":
        return p.c * out * p.k * p.k
    return p.c * p.cout * out * p.k * p.k


def _one(kind: str, rng) -> Point:
    if kind == "conv":
        stem = rng.random() < 0.12
        k = int(rng.choice([3, 3, 3, 3, 5, 7])) if not stem else int(rng.choice([3, 4, 7]))
        c = (3 if k != 4 else 12) if stem else _channels(rng, 8, 512)
        h = _size(rng, 32, 230) if stem else max(_size(rng, 4, 112), k)  # a stem sees the whole image
        return Point(kind, c, _channels(rng, 8, 512), h, k, int(rng.choice([1, 1, 2])))
    if kind == "pointwise":
        return Point(kind, _channels(rng, 8, 1280), _channels(rng, 8, 1280), _size(rng, 2, 112), 1,
                     int(rng.choice([1, 1, 1, 2])))
    if kind == "depthwise":
        k = int(rng.choice([3, 3, 5]))
        return Point(kind, _channels(rng, 8, 960), 0, max(_size(rng, 4, 112), k), k, int(rng.choice([1, 1, 2])))
    if kind == "linear":
        return Point(kind, _channels(rng, 32, 2048), _channels(rng, 10, 1000))
    if kind == "add":
        return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 2, 112))
    if kind == "pool":
        op = str(rng.choice(["MaxPool", "MaxPool", "GlobalAveragePool", "AveragePool"]))
        return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 4, 112), 3, 2 if op == "MaxPool" else 1, op)
    if kind == "memory":
        return Point(kind, _channels(rng, 3, 512), 0, _size(rng, 2, 112), op=str(rng.choice(MEMORY_OPS)))
    return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 1, 56), op="Reshape")


def draw(seed: int = 0, scale: float = 1.0, kinds: tuple[str, ...] = tuple(POINTS)) -> list[Point]:
    """The grid: ``POINTS[kind] * scale`` points per kind (at least 3), drawn reproducibly from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        n, got = max(3, int(round(POINTS[kind] * scale))), []
        while len(got) < n:
            p = _one(kind, rng)
            if _macs(p) <= MAX_MACS or kind not in ("conv", "pointwise", "depthwise"):
                got.append(p)
        out += got
    return out


# =============================================================================================
# the ONNX model of one point


class _Builder:
    """Nodes, initializers and graph inputs of one tiny model."""

    def __init__(self, dtype: str, signed: bool, seed: int = 0):
        self.dtype, self.signed = dtype, signed
        self.nodes, self.inits, self.inputs = [], [], []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def input(self, shape: list[int], elem: int) -> str:
        name = f"x{len(self.inputs)}"
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def float_type(self) -> tuple[int, type]:
        return _FLOAT.get(self.dtype, _FLOAT["fp32"])

    def qdq(self, x: str) -> str:
        """x (float) quantized to 8 bits and back: the activation pattern of a QDQ model."""
        zp = np.array(0, dtype=np.int8 if self.signed else np.uint8)
        scale, zero = self.const(np.array(0.05, np.float32), "s"), self.const(zp, "z")
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, scale, zero]), scale, zero])

    def weight(self, shape: list[int], axis: int = 0) -> str:
        """A weight: float, or per-channel int8 behind a DequantizeLinear for int8."""
        w = (self.rng.standard_normal(shape) * 0.05).astype(np.float32)
        if self.dtype != "int8":
            return self.const(w.astype(self.float_type()[1]), "w")
        q = self.rng.integers(-127, 128, shape).astype(np.int8)
        scale = self.const(np.full(shape[axis], 0.01, np.float32), "ws")
        zero = self.const(np.zeros(shape[axis], np.int8), "wz")
        return self.node("DequantizeLinear", [self.const(q, "wq"), scale, zero], axis=axis)

    def bias(self, n: int) -> str:
        if self.dtype != "int8":
            return self.const(np.zeros(n, self.float_type()[1]), "b")
        scale = self.const(np.full(n, 0.0005, np.float32), "bs")
        zero = self.const(np.zeros(n, np.int32), "bz")
        return self.node("DequantizeLinear", [self.const(np.zeros(n, np.int32), "bq"), scale, zero], axis=0)

    def activation_in(self, shape: list[int]) -> str:
        """The kernel's input: a graph input, quantized and dequantized for int8."""
        if self.dtype == "int8":
            return self.qdq(self.input(shape, TensorProto.FLOAT))
        return self.input(shape, self.float_type()[0])

    def model(self, out: str, elem: int | None = None) -> bytes:
        """The model ending in ``out``: dequantized back to float for int8 (as a QDQ model ends), or
        of type ``elem`` when given (a memory op, which has no QDQ around it)."""
        if elem is None:
            if self.dtype == "int8":
                out, elem = self.qdq(out), TensorProto.FLOAT
            else:
                elem = self.float_type()[0]
        graph = helper.make_graph(self.nodes, "kernel", self.inputs, [helper.make_tensor_value_info(out, elem, None)],
                                  self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()


def _conv(b: _Builder, p: Point) -> str:
    groups, cout = (p.c, p.c) if p.kind == "depthwise" else (1, p.cout)
    x = b.activation_in([1, p.c, p.h, p.h])
    pad = p.k // 2
    y = b.node("Conv", [x, b.weight([cout, p.c // groups, p.k, p.k]), b.bias(cout)], kernel_shape=[p.k, p.k],
               strides=[p.stride, p.stride], pads=[pad] * 4, group=groups)
    return y if b.dtype == "int8" else b.node("Relu", [y])


def _memory(b: _Builder, p: Point) -> tuple[str, int]:
    """A memory op on the point's tensor, at 8 bits for int8 (float in for QuantizeLinear); its output
    and the output's element type."""
    shape = [1, p.c, p.h, p.h]
    q_elem, q_np = (TensorProto.INT8, np.int8) if b.signed else (TensorProto.UINT8, np.uint8)
    f_elem = b.float_type()[0] if b.dtype != "int8" else TensorProto.FLOAT
    f_np = _FLOAT.get(b.dtype, _FLOAT["fp32"])[1]
    if p.op == "QuantizeLinear" or (b.dtype == "int8" and p.op in ("Relu", "Sub")):
        x = b.input(shape, TensorProto.FLOAT)
        return b.node("QuantizeLinear", [x, b.const(np.array(0.05, np.float32)), b.const(np.array(0, q_np))]), q_elem
    if p.op == "DequantizeLinear":
        x = b.input(shape, q_elem)
        return b.node("DequantizeLinear", [x, b.const(np.array(0.05, np.float32)), b.const(np.array(0, q_np))]), \
            TensorProto.FLOAT
    elem = q_elem if b.dtype == "int8" else f_elem
    x = b.input(shape, elem)
    if p.op == "Transpose":
        return b.node("Transpose", [x], perm=[0, 2, 3, 1]), elem
    if p.op == "Concat":
        return b.node("Concat", [x, x], axis=1), elem
    if p.op == "Pad":
        return b.node("Pad", [x, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))]), elem
    if p.op == "Sub":
        return b.node("Sub", [x, b.const(np.full([1, p.c, 1, 1], 0.5, f_np))]), elem
    return b.node("Relu", [x]), elem


def micro_model(p: Point, dtype: str, signed: bool = False) -> bytes:
    """The serialized ONNX model of one grid point at one precision (``signed``: int8 activations)."""
    b = _Builder(dtype, signed)
    if p.kind in ("conv", "pointwise", "depthwise"):
        return b.model(_conv(b, p))
    if p.kind == "linear":
        x = b.activation_in([1, p.c])
        return b.model(b.node("Gemm", [x, b.weight([p.cout, p.c]), b.bias(p.cout)], transB=1))
    if p.kind == "add":
        return b.model(b.node("Add", [b.activation_in([1, p.c, p.h, p.h]), b.activation_in([1, p.c, p.h, p.h])]))
    if p.kind == "pool":
        x = b.activation_in([1, p.c, p.h, p.h])
        if dtype == "int8":  # after an int8 convolution, as in a model: the runtime's channels-last int8 pool
            x = b.qdq(b.node("Conv", [x, b.weight([p.c, p.c, 1, 1]), b.bias(p.c)], kernel_shape=[1, 1]))
        if p.op == "GlobalAveragePool":
            return b.model(b.node("GlobalAveragePool", [x]))
        return b.model(b.node(p.op, [x], kernel_shape=[p.k, p.k], strides=[p.stride, p.stride], pads=[1, 1, 1, 1]))
    if p.kind == "memory":
        return b.model(*_memory(b, p))
    elem = b.float_type()[0] if dtype != "int8" else TensorProto.FLOAT
    x = b.input([1, p.c, p.h, p.h], elem)
    return b.model(b.node("Reshape", [x, b.const(np.array([1, -1], np.int64))]), elem)


def feeds(model_inputs, rng) -> dict:
    """Random inputs for a session's inputs (onnxruntime's NodeArg list)."""
    kinds = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8}
    out = {}
    for i in model_inputs:
        t = kinds.get(i.type, np.float32)
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        out[i.name] = (rng.integers(0, 100, shape).astype(t) if t in (np.uint8, np.int8)
                       else rng.random(shape, dtype=np.float32).astype(t))
    return out


def overhead_model(nodes: int) -> bytes:
    """A chain of ``nodes`` Relu on 16 floats: the runtime's cost of a run and of a node that does nothing."""
    b = _Builder("fp32", False)
    x = b.input([1, 16], TensorProto.FLOAT)
    for _ in range(nodes):
        x = b.node("Relu", [x])
    return b.model(x, TensorProto.FLOAT)


def residual_model() -> bytes:
    """conv -> relu -> conv -> add the first relu's output -> relu (a residual block): does the runtime
    fuse the residual sum into the second convolution?"""
    b = _Builder("fp32", False)
    x = b.input([1, 16, 8, 8], TensorProto.FLOAT)

    def conv(t: str) -> str:
        return b.node("Conv", [t, b.weight([16, 16, 3, 3]), b.bias(16)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    r = b.node("Relu", [conv(x)])
    return b.model(b.node("Relu", [b.node("Add", [conv(r), r])]))


def chain_model(k: int, c: int = 128, h: int = 8) -> bytes:
    """``k`` convolutions 3x3 of ``c`` channels on ``h`` x ``h`` one after the other (0.56 MiB of fp32 weights each
    at the defaults): the calibration's probe of how large a model's weights may grow before the caches no
    longer hold them from one inference to the next."""
    b = _Builder("fp32", False)
    x = b.input([1, c, h, h], TensorProto.FLOAT)
    for _ in range(k):
        x = b.node("Relu", [b.node("Conv", [x, b.weight([c, c, 3, 3]), b.bias(c)], kernel_shape=[3, 3], pads=[1] * 4)])
    return b.model(x)
