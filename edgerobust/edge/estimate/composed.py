"""Whole networks the calibration times as networks: how far a sum of kernels is from a model's time on the device.

A kernel timed alone is not a kernel inside a model: between layers the caches, the threads and the layout
changes behave otherwise. The calibration therefore also builds a few small random networks from the blocks
real classifiers are made of (a residual pair of 3×3 convolutions, an inverted residual with its depthwise
convolution, a ShuffleNet unit with its split, concatenation and channel shuffle, a DenseNet block whose
layers each normalize the concatenation of every earlier output (a BatchNormalization no convolution
absorbs), a squeeze-excite scale, a RegNet block with its grouped convolution; a stage begins with a strided
convolution or, a third of the time, DenseNet's transition: a normalization, a 1×1 convolution and a 2×2
average pool), at the sizes pruning leaves (8-256 channels, a quarter of them not multiples of 8, 16-96 px).
An int8 network is written as a quantizer leaves a model: every tensor between two nodes quantized and
dequantized (data movement at its input's scale, every other activation at a scale of its own), each bias at
its input's scale times its weights', so that onnxruntime runs every layer on its integer kernels, as it
runs a bundle's. It builds each network in each precision the calibration times, at batch 1 and half as many
at a batch of 8, measures each one's wall time with the profile's sessions, and predicts it from the fits
like any model. The errors of those predictions, per precision and batch size, are the model-level error an
estimate carries: its band (:func:`edgerobust.edge.estimate.predict.predict_model`). None of these networks
is a torchvision model.

Torch-free: numpy and onnx.
"""
from __future__ import annotations

import re

import numpy as np

from edgerobust.edge.estimate.builder import IN_SCALE, Builder
from edgerobust.edge.estimate.grid import BATCH

BLOCKS = ("basic", "inverted", "shuffle", "dense", "se", "grouped")
NETWORKS = 24  # per precision at batch 1 (and half as many at a batch of BATCH, the grid's): about 1 min on 2 cores
BAND = (5, 95)  # percentiles of the networks' errors that bound an estimate


class _Net:
    """One random network being written: its builder, current tensor and its channels and size."""

    def __init__(self, b: Builder, x: str, c: int, h: int, n: int = 1):
        self.b, self.x, self.c, self.h, self.n = b, x, c, h, n

    def act(self, y: str, relu: bool = True) -> str:
        """An activation after a layer: Relu, then quantized to 8 bits and back in an int8 network."""
        y = self.b.node("Relu", [y]) if relu else y  # a scale per tensor, as a quantizer leaves a model
        return self.b.qdq(y, 0.03 + 0.005 * (self.b.n % 7)) if self.b.dtype == "int8" else y

    def same(self, y: str, x: str) -> str:
        """A data-movement node's output ``y`` (split, reshape, transpose) quantized in an int8 network at its
        input ``x``'s scale, as a quantizer leaves every tensor between two nodes."""
        return self.b.qdq(y, self.b.scales.get(x, IN_SCALE)) if self.b.dtype == "int8" else y

    def norm(self, x: str, c: int) -> str:
        """DenseNet's pre-activation: BatchNormalization and Relu on a concatenation, where no convolution before it
        can absorb the normalization: it stays a node of its own (float between dequantize and quantize in int8)."""
        f = self.b.float_type()[1]
        ones, zeros = self.b.const(np.ones(c, f)), self.b.const(np.zeros(c, f))
        return self.act(self.b.node("BatchNormalization", [x, ones, zeros, zeros, ones], epsilon=1e-5))

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> str:
        w = self.b.weight([cout, cin // groups, k, k])
        return self.act(self.b.node("Conv", [x, w, self.b.bias(cout, x)], kernel_shape=[k, k], strides=[stride] * 2,
                                    pads=[k // 2] * 4, group=groups), relu)


def _block(net: _Net, kind: str, rng) -> None:
    b, x, c = net.b, net.x, net.c
    if kind == "basic":
        y = net.conv(net.conv(x, c, c, 3), c, c, 3, relu=False)
        net.x = net.act(b.node("Add", [y, x]))
    elif kind == "inverted":
        e = c * int(rng.choice([2, 4]))
        y = net.conv(net.conv(net.conv(x, c, e, 1), e, e, 3, groups=e), e, c, 1, relu=False)
        net.x = net.act(b.node("Add", [y, x]), relu=False)
    elif kind == "shuffle" and c % 4 == 0:
        half = c // 2
        left, right = (net.same(y, x) for y in b.multi("Split", [x, b.const(np.array([half, half], np.int64))], 2,
                                                            axis=1))
        right = net.conv(net.conv(net.conv(right, half, half, 1), half, half, 3, groups=half, relu=False), half, half, 1)
        cat = net.act(b.node("Concat", [left, right], axis=1), relu=False)
        g = net.same(b.node("Reshape", [cat, b.const(np.array([net.n, 2, half, net.h, net.h], np.int64))]), cat)
        t = net.same(b.node("Transpose", [g], perm=[0, 2, 1, 3, 4]), g)
        net.x = net.same(b.node("Reshape", [t, b.const(np.array([net.n, c, net.h, net.h], np.int64))]), t)
    elif kind == "dense":  # each layer reads every earlier output concatenated, as torchvision's DenseNet
        grow, outs = int(rng.choice([8, 16, 32])), [x]
        for _ in range(int(rng.integers(2, 5))):
            cat = net.act(b.node("Concat", outs, axis=1), relu=False) if len(outs) > 1 else x
            cin = c + grow * (len(outs) - 1)
            outs.append(net.conv(net.conv(net.norm(cat, cin), cin, 2 * grow, 1), 2 * grow, grow, 3, relu=False))
        net.x, net.c = net.act(b.node("Concat", outs, axis=1), relu=False), c + grow * (len(outs) - 1)
    elif kind == "grouped" and c % 2 == 0:  # RegNet's: 1×1, a grouped 3×3 (2-16 channels per group), 1×1, residual
        groups = c // next(w for w in (16, 8, 4, 2) if c % w == 0 and c > w)
        y = net.conv(net.conv(net.conv(x, c, c, 1), c, c, 3, groups=groups), c, c, 1, relu=False)
        net.x = net.act(b.node("Add", [y, x]))
    else:  # squeeze-excite: a per-channel scale from the pooled tensor
        s = max(c // 4, 8)
        p = net.act(b.node("GlobalAveragePool", [x]), relu=False)
        gate = net.act(b.node("Sigmoid", [net.conv(net.conv(p, c, s, 1), s, c, 1, relu=False)]), relu=False)
        net.x = net.act(b.node("Mul", [x, gate]), relu=False)


def composed_model(seed: int, dtype: str, signed: bool = False, batch: int = 1) -> bytes:
    """One random network (see the module docstring) as a serialized ONNX model at ``batch`` images."""
    rng = np.random.default_rng(seed)
    b = Builder(dtype, signed, seed)
    aligned = rng.random() >= 0.25
    c = int(rng.choice([16, 24, 32, 48, 64] if aligned else [20, 28, 44, 58]))
    h = int(rng.choice([32, 48, 64, 96, 128]))
    x = b.activation_in([batch, 3, h, h])
    net = _Net(b, x, 3, h, batch)
    net.x, net.c, net.h = net.conv(x, 3, c, 3, stride=2), c, h // 2
    for stage in range(int(rng.integers(2, 4))):
        if stage and rng.random() < 1 / 3:  # DenseNet's transition: normalization, 1×1 convolution, 2×2 average pool
            cout = min(net.c, 256 if aligned else 250)
            pooled = b.node("AveragePool", [net.conv(net.norm(net.x, net.c), net.c, cout, 1, relu=False)],
                            kernel_shape=[2, 2], strides=[2, 2])
            net.x, net.c, net.h = net.act(pooled, relu=False), cout, net.h // 2
        elif stage:
            cout = min(net.c * 2, 256 if aligned else 250)
            net.x, net.c, net.h = net.conv(net.x, net.c, cout, 3, stride=2), cout, (net.h + 1) // 2
        for _ in range(int(rng.integers(1, 4))):
            _block(net, str(rng.choice(BLOCKS)), rng)
    pooled = net.act(b.node("GlobalAveragePool", [net.x]), relu=False)
    flat = net.same(b.node("Flatten", [pooled]), pooled)
    return b.model(b.node("Gemm", [flat, b.weight([10, net.c]), b.bias(10, flat)], transB=1))


def model_errors(pairs) -> dict:
    """The networks' relative errors (predicted / measured - 1): their number, median and BAND percentiles."""
    e = np.array([p / m - 1 for p, m in pairs if m > 0 and p > 0], dtype=np.float64)
    if e.size == 0:
        return {"n": 0}
    return {"n": int(e.size), "low": float(np.percentile(e, BAND[0])), "median": float(np.median(e)),
            "high": float(np.percentile(e, BAND[1])), "within10": float(np.mean(np.abs(e) <= 0.1))}


def composed_key(dtype: str, batch: int) -> str:
    """The key of a precision's networks at a batch size in a calibration's ``composed``: "int8", "int8/8"."""
    return dtype if batch == 1 else f"{dtype}/{batch}"


def key_parts(key: str) -> tuple[str, int]:
    """(precision, batch size) of a ``composed`` key: :func:`composed_key` read back (see :func:`is_key`)."""
    dtype, _, batch = key.partition("/")
    return dtype, int(batch) if batch else 1


def is_key(key) -> bool:
    """Is ``key`` one :func:`composed_key` writes (a precision, and a batch size of 2 or more)?"""
    return isinstance(key, str) and re.fullmatch(r"[a-z0-9]+(/([2-9]|[1-9][0-9]{1,4}))?", key) is not None


def time_composed(dtypes, predict, measure, signed: bool = False, scale: float = 1.0) -> dict:
    """{precision: [[predicted ms, measured ms], ...]} for ``NETWORKS * scale`` networks (at least 2) per precision
    at batch 1, and under "precision/8" (:func:`composed_key`) half as many at a batch of 8 (the audit's):
    ``predict(model)`` gives the estimate from the calibration's fits (None: it cannot), ``measure(model)`` the
    wall time (ms) on the profile's sessions."""
    out = {}
    count = max(2, round(NETWORKS * min(scale, 1.0)))
    for dtype in dtypes:
        for batch, networks in ((1, count), (BATCH, max(2, count // 2))):
            pairs = []
            for seed in range(networks):
                model = composed_model(seed, dtype, signed, batch)
                predicted = predict(model)
                if predicted is not None:
                    pairs.append([round(predicted, 5), round(measure(model), 5)])
            out[composed_key(dtype, batch)] = pairs
    return out
