"""Tiny ONNX models, one kernel each, written as the bundles hold that kernel: the calibration's material.

:class:`Builder` collects nodes, weights and inputs and writes the model (onnx.helper, opset 17): float
tensors for fp32 and fp16, and for int8 a QDQ graph (per-channel int8 weights, 8-bit activations, uint8
for the CPU and int8 for TensorRT) that onnxruntime fuses into its integer kernels. Torch-free: numpy and
onnx.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

FLOAT = {"fp32": (TensorProto.FLOAT, np.float32), "fp16": (TensorProto.FLOAT16, np.float16)}
IN_SCALE, W_SCALE = 0.05, 0.01  # an activation's scale unless given, and every int8 weight's


class Builder:
    """Nodes, initializers and graph inputs of one tiny model."""

    def __init__(self, dtype: str, signed: bool, seed: int = 0):
        self.dtype, self.signed = dtype, signed
        self.nodes, self.inits, self.inputs = [], [], []
        self.rng = np.random.default_rng(seed)
        self.n = 0
        self.scales: dict[str, float] = {}  # each dequantized activation's scale, by tensor name

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n_{out}", **attrs))
        return out

    def multi(self, op: str, inputs: list[str], outputs: int, **attrs) -> list[str]:
        """A node with several outputs (Split)."""
        outs = [self.name("t") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"n_{outs[0]}", **attrs))
        return outs

    def input(self, shape: list, elem: int) -> str:
        name = f"x{len(self.inputs)}"
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def float_type(self) -> tuple[int, type]:
        return FLOAT.get(self.dtype, FLOAT["fp32"])

    def qdq(self, x: str, scale: float = IN_SCALE) -> str:
        """x (float) quantized to 8 bits and back: the activation pattern of a QDQ model."""
        zp = np.array(0, dtype=np.int8 if self.signed else np.uint8)
        s, zero = self.const(np.array(scale, np.float32), "s"), self.const(zp, "z")
        out = self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, zero]), s, zero])
        self.scales[out] = scale
        return out

    def weight(self, shape: list[int], axis: int = 0) -> str:
        """A weight: float, or per-channel int8 behind a DequantizeLinear for int8."""
        w = (self.rng.standard_normal(shape) * 0.05).astype(np.float32)
        if self.dtype != "int8":
            return self.const(w.astype(self.float_type()[1]), "w")
        q = self.rng.integers(-127, 128, shape).astype(np.int8)
        scale = self.const(np.full(shape[axis], W_SCALE, np.float32), "ws")
        zero = self.const(np.zeros(shape[axis], np.int8), "wz")
        return self.node("DequantizeLinear", [self.const(q, "wq"), scale, zero], axis=axis)

    def bias(self, n: int, x: str | None = None) -> str:
        """A bias of ``n`` zeros: float, or int32 for int8 at the scale a quantizer gives it (the scale of the
        layer's input ``x`` times the weights': onnxruntime fuses the layer into its integer kernel only then)."""
        if self.dtype != "int8":
            return self.const(np.zeros(n, self.float_type()[1]), "b")
        scale = self.const(np.full(n, self.scales.get(x, IN_SCALE) * W_SCALE, np.float32), "bs")
        zero = self.const(np.zeros(n, np.int32), "bz")
        return self.node("DequantizeLinear", [self.const(np.zeros(n, np.int32), "bq"), scale, zero], axis=0)

    def activation_in(self, shape: list[int], scale: float = IN_SCALE) -> str:
        """The kernel's input: a graph input, quantized (at ``scale``) and dequantized for int8."""
        if self.dtype == "int8":
            return self.qdq(self.input(shape, TensorProto.FLOAT), scale)
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


