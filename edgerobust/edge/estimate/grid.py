"""The calibration grid: the kernels the bundles use, at the sizes pruning produces, each a tiny ONNX model.

Every grid point is one kernel (a kind of :data:`edgerobust.edge.estimate.kernels.KINDS`, a precision,
its channels, input size, window and stride) drawn at random, log-uniformly, from the ranges pruned
torchvision classifiers reach at 96-224 px: channels 8-512 for k×k convolutions (3 or 12 for a stem, on
inputs up to 230 px), 8-1280 for pointwise ones, input sizes 2-112, windows 3/5/7, strides 1/2. Channel counts are multiples of
8 above 8, as pruning with a channel rounding leaves them; linear layers are a classifier's head (one row per
image) or a MatMul over 4-4096 rows per image (ConvNeXt's MLPs). A share of the points (BATCHED) is timed at a
batch of 8 images, the rest at one. One draw of sizes serves every precision, so fp32 and int8 are timed on
the same shapes.

:func:`micro_model` writes a point as an ONNX model (onnx.helper, opset 17) the way the bundles hold the
kernel: a float convolution followed by its Relu (fused by the runtime), an int8 one as a QDQ graph
(per-channel int8 weights, uint8 activations for the CPU, int8 for TensorRT) that onnxruntime fuses into
QLinearConv, an fp16 one on fp16 tensors. Torch-free: numpy and onnx.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from onnx import TensorProto

from edgerobust.edge.estimate.builder import Builder
from edgerobust.edge.estimate.moves import MOVE_POINTS, STEM_PADS, move_model, move_shape

# Points drawn per kind (a full grid); ``scale`` in :func:`draw` shrinks it for a quick calibration.
POINTS = {"conv": 72, "pointwise": 48, "depthwise": 40, "grouped": 32, "linear": 36, "add": 20, "pool": 16,
          "avgpool": 10, **MOVE_POINTS, "view": 6}
UNALIGNED = 0.25  # share of convolutions whose channels are not multiples of 8 (ShuffleNet's 58, 116, 232)
LATE = 0.15  # share of k×k and 1×1 convolutions from a network's last stages: their weights outweigh their work
MAX_MACS = 2.5e8  # larger kernels take tens of ms each on a small CPU and teach the fit little more
MAX_ELEMENTS = 6.5e6  # a tensor of more values (512 channels at 112 px) moves more than a pruned classifier's
BATCHED, BATCH = 0.3, 8  # share of points timed at a batch of BATCH images (the audit's), the rest at one
HEADS = 0.4  # share of linear points that multiply one row per image (a classifier's head); the others many rows


@dataclass(frozen=True)
class Point:
    """One kernel to time: ``c``/``cout`` channels (features of a linear layer), input ``h`` × ``h`` (a
    linear layer's rows per image), window ``k``, ``stride``; ``op`` picks the pool (MaxPool, AveragePool,
    GlobalAveragePool) or the memory op; ``n`` images in the batch; ``groups`` of a grouped convolution."""

    kind: str
    c: int
    cout: int = 0
    h: int = 1
    k: int = 1
    stride: int = 1
    op: str = ""
    n: int = 1
    groups: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _channels(rng, lo: int, hi: int, aligned: bool = True) -> int:
    v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if not aligned:  # even, not a multiple of 8: what a channel-blocked layout cannot take
        c = int(max(10, round(v / 2) * 2))
        return c + 2 if c % 8 == 0 else c
    return int(max(8, round(v / 8) * 8)) if v > 8 else int(max(lo, round(v)))


def _size(rng, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def _macs(p: Point) -> float:
    if p.kind == "linear":
        return p.n * p.h * p.c * p.cout
    out = (p.h // p.stride) ** 2
    if p.kind == "depthwise":
        return p.n * p.c * out * p.k * p.k
    return p.n * p.c * p.cout * out * p.k * p.k // p.groups


def _fits(p: Point) -> bool:
    """Is the point small enough to time in a calibration (see MAX_MACS, MAX_ELEMENTS)?"""
    if p.kind in ("conv", "pointwise", "depthwise", "grouped", "linear") and _macs(p) > MAX_MACS:
        return False
    return p.kind == "linear" or p.n * p.c * p.h * p.h * max(p.k if p.kind == "concat" else 1, 1) <= MAX_ELEMENTS


def _one(kind: str, rng) -> Point:
    aligned = rng.random() >= UNALIGNED
    if kind in ("conv", "pointwise") and rng.random() < LATE:  # a late stage: many channels, a few pixels
        hi = 512 if kind == "conv" else 1280
        return Point(kind, _channels(rng, 192, hi), _channels(rng, 192, hi), _size(rng, 2, 8), 3 if kind == "conv" else 1,
                     int(rng.choice([1, 1, 2])))
    if kind == "conv":
        stem = rng.random() < 0.12
        k = int(rng.choice([3, 3, 3, 3, 5, 7])) if not stem else int(rng.choice([3, 4, 7]))
        c = (3 if k != 4 else 12) if stem else _channels(rng, 8, 512, aligned)
        h = _size(rng, 32, 230) if stem else max(_size(rng, 4, 112), k)  # a stem sees the whole image
        return Point(kind, c, _channels(rng, 8, 512, aligned), h, k, int(rng.choice([1, 1, 2])))
    if kind == "pointwise":
        return Point(kind, _channels(rng, 8, 1280, aligned), _channels(rng, 8, 1280, aligned), _size(rng, 2, 112), 1,
                     int(rng.choice([1, 1, 1, 2])))
    if kind == "depthwise":
        k = int(rng.choice([3, 3, 5]))
        return Point(kind, _channels(rng, 8, 960, aligned), 0, max(_size(rng, 4, 112), k), k, int(rng.choice([1, 1, 2])))
    if kind == "grouped":  # RegNet's and ResNeXt's: 8-64 channels per group (pruning leaves odd widths), k×k
        width = int(rng.choice([8, 16, 16, 24, 32, 48, 64])) if aligned else int(rng.choice([5, 6, 10, 11, 12, 20]))
        c = width * max(2, int(round(_channels(rng, 16, 1024) / width)))
        return Point(kind, c, c, _size(rng, 2, 64), int(rng.choice([3, 3, 3, 1])), int(rng.choice([1, 1, 2])),
                     groups=c // width)
    if kind == "linear":
        if rng.random() < HEADS:
            return Point(kind, _channels(rng, 32, 2048), _channels(rng, 10, 1000))
        # a MatMul over every pixel (ConvNeXt's and transformers' MLPs): 4-4096 rows, as 2-64 px
        return Point(kind, _channels(rng, 16, 3072), _channels(rng, 16, 3072), _size(rng, 4, 4096))
    if kind == "add":
        return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 2, 112))
    if kind == "pool":
        op = str(rng.choice(["MaxPool", "MaxPool", "GlobalAveragePool"]))
        return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 4, 112), 3, 2 if op == "MaxPool" else 1, op)
    if kind == "avgpool":  # DenseNet's transitions (2×2, stride 2) and Inception's branches (3×3, stride 1)
        k = int(rng.choice([2, 3]))
        return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 4, 64), k, 2 if k == 2 else 1, "AveragePool")
    if kind in MOVE_POINTS:
        c, h = _channels(rng, 8, 512, aligned), _size(rng, 2, 112)
        k, stride, op = move_shape(kind, rng)
        if op == "Pad" and rng.random() < STEM_PADS:  # the int8 stem's: RGB, the whole image
            c, h = 3, _size(rng, 32, 230)
        return Point(kind, c, 0, h, k, stride, op)
    return Point(kind, _channels(rng, 8, 512), 0, _size(rng, 1, 56), op="Reshape")


def draw(seed: int = 0, scale: float = 1.0, kinds: tuple[str, ...] = tuple(POINTS)) -> list[Point]:
    """The grid: ``POINTS[kind] * scale`` points per kind (at least 3), drawn reproducibly from ``seed``; a
    share (BATCHED) of every kind but shape arithmetic and views at a batch of BATCH images."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        n, got = max(3, int(round(POINTS[kind] * scale))), []
        while len(got) < n:
            p = _one(kind, rng)
            if kind not in ("scalar", "view") and rng.random() < BATCHED:
                p = replace(p, n=BATCH)
            if _fits(p):
                got.append(p)
        out += got
    return out


# =============================================================================================
# the ONNX model of one point


def _conv(b: Builder, p: Point) -> str:
    groups, cout = (p.c, p.c) if p.kind == "depthwise" else (p.groups, p.cout)
    x = b.activation_in([p.n, p.c, p.h, p.h])
    pad = p.k // 2
    y = b.node("Conv", [x, b.weight([cout, p.c // groups, p.k, p.k]), b.bias(cout)], kernel_shape=[p.k, p.k],
               strides=[p.stride, p.stride], pads=[pad] * 4, group=groups)
    return y if b.dtype == "int8" else b.node("Relu", [y])


def _linear(b: Builder, p: Point) -> str:
    """A classifier's head (Gemm on one row per image), or a MatMul over ``p.h`` rows per image and its bias, as
    torch exports a Linear layer on a channels-last image (ConvNeXt's MLPs), its batch size dynamic as in a
    bundle (with every size fixed, the runtime fuses MatMul and bias into a Gemm between two Reshapes)."""
    if p.h == 1:
        return b.node("Gemm", [b.activation_in([p.n, p.c]), b.weight([p.cout, p.c]), b.bias(p.cout)], transB=1)
    y = b.node("MatMul", [b.activation_in(["N", 1, p.h, p.c]), b.weight([p.c, p.cout], axis=1)])
    bias = b.const(np.zeros(p.cout, b.float_type()[1]), "b")
    if b.dtype == "int8":  # the bias an activation of its own, as the quantizer leaves it: QLinearAdd
        y, bias = b.qdq(y), b.qdq(bias)
    return b.node("Add", [y, bias])


def micro_model(p: Point, dtype: str, signed: bool = False) -> bytes:
    """The serialized ONNX model of one grid point at one precision (``signed``: int8 activations)."""
    b = Builder(dtype, signed)
    if p.kind in ("conv", "pointwise", "depthwise", "grouped"):
        return b.model(_conv(b, p))
    if p.kind == "linear":
        return b.model(_linear(b, p))
    if p.kind == "add":
        return b.model(b.node("Add", [b.activation_in([p.n, p.c, p.h, p.h]), b.activation_in([p.n, p.c, p.h, p.h])]))
    if p.kind in ("pool", "avgpool"):
        x = b.activation_in([p.n, p.c, p.h, p.h])
        if dtype == "int8":  # after an int8 convolution, as in a model: the runtime's channels-last int8 pool
            x = b.qdq(b.node("Conv", [x, b.weight([p.c, p.c, 1, 1]), b.bias(p.c)], kernel_shape=[1, 1]))
        if p.op == "GlobalAveragePool":
            return b.model(b.node("GlobalAveragePool", [x]))
        pad = (p.k - 1) // 2
        return b.model(b.node(p.op, [x], kernel_shape=[p.k, p.k], strides=[p.stride, p.stride], pads=[pad] * 4))
    if p.kind in MOVE_POINTS:
        return b.model(*move_model(b, p))
    elem = b.float_type()[0] if dtype != "int8" else TensorProto.FLOAT
    x = b.input([p.n, p.c, p.h, p.h], elem)
    return b.model(b.node("Reshape", [x, b.const(np.array([p.n, -1], np.int64))]), elem)


def feeds(model_inputs, rng, batch: int = 1) -> dict:
    """Random inputs for a session's inputs (onnxruntime's NodeArg list), a dynamic leading size ``batch``."""
    kinds = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8}
    out = {}
    for i in model_inputs:
        t = kinds.get(i.type, np.float32)
        shape = [d if isinstance(d, int) and d > 0 else batch if j == 0 else 1 for j, d in enumerate(i.shape)]
        out[i.name] = (rng.integers(0, 100, shape).astype(t) if t in (np.uint8, np.int8)
                       else rng.random(shape, dtype=np.float32).astype(t))
    return out


def overhead_model(nodes: int) -> bytes:
    """A chain of ``nodes`` Relu on 16 floats: the runtime's cost of a run and of a node that does nothing."""
    b = Builder("fp32", False)
    x = b.input([1, 16], TensorProto.FLOAT)
    for _ in range(nodes):
        x = b.node("Relu", [x])
    return b.model(x, TensorProto.FLOAT)


def residual_model() -> bytes:
    """conv -> relu -> conv -> add the first relu's output -> relu (a residual block): does the runtime
    fuse the residual sum into the second convolution?"""
    b = Builder("fp32", False)
    x = b.input([1, 16, 8, 8], TensorProto.FLOAT)

    def conv(t: str) -> str:
        return b.node("Conv", [t, b.weight([16, 16, 3, 3]), b.bias(16)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    r = b.node("Relu", [conv(x)])
    return b.model(b.node("Relu", [b.node("Add", [conv(r), r])]))


def chain_model(k: int, c: int = 128, h: int = 8) -> bytes:
    """``k`` convolutions 3x3 of ``c`` channels on ``h`` x ``h`` one after the other (0.56 MiB of fp32 weights each
    at the defaults): the calibration's probe of how large a model's weights may grow before the caches no
    longer hold them from one inference to the next."""
    b = Builder("fp32", False)
    x = b.input([1, c, h, h], TensorProto.FLOAT)
    for _ in range(k):
        x = b.node("Relu", [b.node("Conv", [x, b.weight([c, c, 3, 3]), b.bias(c)], kernel_shape=[3, 3], pads=[1] * 4)])
    return b.model(x)
