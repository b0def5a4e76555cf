"""Data movement as kernels: the calibration grid's concatenations, slices, shuffles, layout changes, casts.

A network is not only its convolutions. ShuffleNet splits, concatenates and shuffles channels between
every pair of them; DenseNet concatenates every layer's input; squeeze-excite multiplies by a broadcast
scale; an int8 model quantizes and dequantizes at every float island. Each of these is timed here as a
kernel of its own kind (:data:`edgerobust.edge.estimate.kernels.KINDS`), at the shapes pruned networks
have (channels 8-512, multiples of 8 and, a quarter of them, not; 2-112 px), written as a bundle holds
it (for int8, between QuantizeLinear/DequantizeLinear pairs, which the runtime fuses as it does in a
model: QLinearConcat of inputs at scales of their own, a slice on 8-bit data, QLinearMul, and a Pad on the
quantized values, as the int8 stem pads its input). Layout
changes the runtime inserts itself (NCHWc reorders, the int8 channels-last transposes) need no points of
their own: they are timed where they occur, around the convolutions of the grid. A shuffle the runtime
rewrites onto a channels-last tensor, which it then gathers element by element, has points of its own
(the transpose points' "gather").

Torch-free: numpy and onnx.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from edgerobust.edge.estimate.builder import IN_SCALE, Builder

# Points drawn per kind (a full grid), and the ops each kind's points draw from at random (Pad twice as often as
# Cast: an int8 `memory` fit has only the Pads to learn from, Cast running in float; a "gather" transpose twice as
# often as each other transpose, for a fit of its own (kernels' transpose-gather); GELU twice, each point five
# nodes as ConvNeXt's; LayerNormalization twice: BatchNormalization also comes from other points' models). Enough
# elementwise and norm points that their ops get fits of their own (edgerobust.edge.estimate.fit.PER_OP).
MOVE_POINTS = {"concat": 16, "slice": 12, "transpose": 24, "elementwise": 48, "norm": 14, "quantize": 12, "memory": 12,
               "resize": 6, "scalar": 4}
MOVE_OPS = {"concat": ("Concat",), "slice": ("Slice", "Split"), "transpose": ("shuffle", "nhwc", "nchw", "gather", "gather"),
            "elementwise": ("Scale", "Mul", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Relu", "Div", "Erf", "Gelu",
                            "Gelu"),
            "norm": ("BatchNormalization", "LayerNormalization", "LayerNormalization"),
            "quantize": ("QuantizeLinear", "DequantizeLinear"),
            "memory": ("Pad", "Pad", "Cast"), "resize": ("Resize",), "scalar": ("Shape",)}
_CONCAT_INPUTS = (2, 2, 3, 4, 6, 12, 24, 48)  # DenseNet concatenates every earlier layer's output: 25-49
STEM_PADS = 0.4  # share of Pad points shaped as the int8 space-to-depth stem pads its input: 3 channels, a whole image


def move_shape(kind: str, rng) -> tuple[int, int, str]:
    """(k, stride, op) of a data-movement point: ``k`` is a concatenation's number of inputs."""
    return int(rng.choice(_CONCAT_INPUTS)) if kind == "concat" else 1, 1, str(rng.choice(MOVE_OPS[kind]))


def pad_model(b: Builder, p) -> tuple[str, int | None]:
    """A Pad: on float values for fp32 and fp16; for int8 on the quantized values themselves, padded with the zero
    point, as the int8 space-to-depth stem pads its input (:mod:`edgerobust.workstation.quantize.stem`): 3
    channels padded to 4 and 3 px a side for a 7×7 stem, else 1 px a side (a DQ -> Pad -> Q pattern would run
    in float and is not what an int8 bundle holds)."""
    shape = [p.n, p.c, p.h, p.h]
    side, extra = (3, -p.c % 4) if p.c < 4 else (1, 0)
    pads = _const(b, [0, 0, side, side, 0, extra, side, side])
    if b.dtype != "int8":
        return b.node("Pad", [b.activation_in(shape), pads]), None
    _, scale, zero = _quantizer(b)
    q = b.node("QuantizeLinear", [b.input(shape, TensorProto.FLOAT), scale, zero])
    return b.node("DequantizeLinear", [b.node("Pad", [q, pads, zero], mode="constant"), scale, zero]), TensorProto.FLOAT


def _const(b: Builder, values, dtype=np.int64) -> str:
    return b.const(np.array(values, dtype))


def _quantizer(b: Builder) -> tuple[int, str, str]:
    """(the 8-bit element type, a scale, a zero point) of a quantized tensor: int8 for TensorRT, else uint8."""
    q_elem, q_np = (TensorProto.INT8, np.int8) if b.signed else (TensorProto.UINT8, np.uint8)
    return q_elem, b.const(np.array(IN_SCALE, np.float32)), b.const(np.array(0, q_np))


def move_model(b: Builder, p) -> tuple[str, int | None]:
    """The point's op on a [n, c, h, h] tensor (the input quantized for int8); its output and the output's
    element type (None: as :meth:`Builder.model` ends any model)."""
    shape = [p.n, p.c, p.h, p.h]
    if p.kind == "quantize":
        q_elem, scale, zero = _quantizer(b)
        if p.op == "QuantizeLinear":
            return b.node("QuantizeLinear", [b.input(shape, TensorProto.FLOAT), scale, zero]), q_elem
        return b.node("DequantizeLinear", [b.input(shape, q_elem), scale, zero]), TensorProto.FLOAT
    if p.kind == "concat":  # each input at a scale of its own, as a quantizer leaves them: requantized to the output's
        return b.node("Concat", [b.activation_in(shape, 0.045 + 0.01 * j) for j in range(max(p.k, 2))], axis=1), None
    if p.kind == "memory" and p.op == "Pad":
        return pad_model(b, p)
    if p.kind == "scalar":  # shape arithmetic, as ShuffleNet's exported channel shuffle computes its reshape
        x = b.activation_in(["N", p.c, p.h, p.h])
        s = b.node("Shape", [x])
        dims = [b.node("Gather", [s, _const(b, i)], axis=0) for i in range(4)]
        dims[1] = b.node("Div", [dims[1], _const(b, 2)])
        dims = [b.node("Unsqueeze", [d, _const(b, [0])]) for d in dims]
        target = b.node("Concat", [dims[0], _const(b, [2]), *dims[1:]], axis=0)
        return b.node("Reshape", [x, target]), None
    x = b.activation_in(shape)
    if p.kind == "slice":
        if p.op == "Split":
            return b.multi("Split", [x, _const(b, [p.c // 2, p.c - p.c // 2])], 2, axis=1)[1], None
        return b.node("Slice", [x, _const(b, [p.c // 2]), _const(b, [p.c]), _const(b, [1])]), None
    if p.kind == "transpose":
        if p.op == "shuffle":  # ShuffleNet's channel shuffle: two groups swapped
            g = b.node("Reshape", [x, _const(b, [p.n, 2, p.c // 2, p.h, p.h])])
            t = b.node("Transpose", [g], perm=[0, 2, 1, 3, 4])
            return b.node("Reshape", [t, _const(b, shape)]), None
        if p.op == "gather":  # a channel shuffle of a channels-last tensor, as the runtime rewrites one after an int8
            g = b.node("Reshape", [x, _const(b, [p.n, p.h, p.h, 2, p.c // 2])])  # convolution: element by element
            return b.node("Transpose", [g], perm=[0, 4, 3, 1, 2]), None
        return b.node("Transpose", [x], perm=[0, 2, 3, 1] if p.op == "nhwc" else [0, 3, 1, 2]), None
    if p.kind == "norm":
        f_np = b.float_type()[1]
        if p.op == "LayerNormalization":  # ConvNeXt's: over the channels of a channels-last tensor
            t = b.node("Transpose", [x], perm=[0, 2, 3, 1])
            return b.node("LayerNormalization", [t, b.const(np.ones(p.c, f_np)), b.const(np.zeros(p.c, f_np))],
                          axis=-1), None
        stats = [b.const(np.full(p.c, v, f_np)) for v in (1.0, 0.0, 0.0, 1.0)]
        return b.node("BatchNormalization", [x, *stats]), None
    if p.kind == "resize":  # nearest, twice the size: a feature pyramid's or a decoder's upsampling
        return b.node("Resize", [x, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest"), None
    if p.kind == "memory":
        return b.node("Cast", [b.node("Cast", [x], to=TensorProto.FLOAT16)], to=b.float_type()[0]), None
    return _elementwise(b, p, x), None


def _elementwise(b: Builder, p, x: str) -> str:
    f_np = b.float_type()[1]
    if p.op == "Scale":  # squeeze-excite: the tensor times a per-channel scale computed from it
        return b.node("Mul", [x, b.node("Sigmoid", [b.node("GlobalAveragePool", [x])])])
    if p.op == "Mul":
        return b.node("Mul", [x, b.activation_in([p.n, p.c, p.h, p.h])])
    if p.op == "Div":
        return b.node("Div", [x, b.const(np.array(1.414, f_np))])
    if p.op == "Clip":
        return b.node("Clip", [x, b.const(np.array(0, f_np)), b.const(np.array(6, f_np))])
    if p.op == "Gelu":  # as torch exports it: x * (1 + erf(x / sqrt 2)) * 0.5; the runtime fuses it in float, and an
        # int8 model keeps Div and Erf in float and the rest on quantized values, as the quantizer leaves ConvNeXt
        q = b.qdq if b.dtype == "int8" else (lambda t: t)
        erf = b.node("Erf", [b.node("Div", [x, b.const(np.array(1.4142135, f_np))])])
        plus = q(b.node("Add", [q(erf), q(b.const(np.array(1.0, f_np)))]))
        return b.node("Mul", [q(b.node("Mul", [x, plus])), q(b.const(np.array(0.5, f_np)))])
    return b.node(p.op, [x])
