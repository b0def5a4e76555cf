"""The space-to-depth stem, an experiment of issue 10: an exact rewrite of a CNN's first convolution
for the CPU int8 path. Not shipped: measured in the same interleaved run against the plain int8
model (``edgerobust profile``, AMD EPYC AVX-512 VNNI, 2 threads), it was 1.04-1.05x faster on
resnet18 0.5 at batch 1 but 0.92x at batch 8, and 0.93-0.95x (batch 1) / 0.80-0.83x (batch 8) on
mobilenet_v2 0.5: the float Pad, SpaceToDepth and the 12-channel transpose to channels-last cost
more than the faster stem saves. benchmarks/ceiling.py prints its row next to the others.

A classifier's stem convolves few input channels (RGB: 3) with a large, strided kernel: resnet's
7x7 stride 2 reads K = 3 * 7 * 7 = 147 values per output, in 49 runs of 3. ONNX Runtime's int8
convolution works on channels-last tiles and is slow on so few channels: on a pruned resnet18
(0.5, int8, AVX-512 VNNI, batch 1) the stem took 26% of the run while holding 6% of the MACs.

The rewrite turns ``Conv(k x k, stride 2, pad p)`` on C channels into ``Pad(p)`` ->
``SpaceToDepth(2)`` -> ``Conv(ceil(k/2) x ceil(k/2), stride 1)`` on 4C channels, with the kernel
re-laid out (zero-padded to an even size, each 2x2 phase becoming a channel). The result is the
same function, exactly: every output sums the same products. When the graph normalizes its input
(``Sub(mean)`` then ``Div(std)``, as edgerobust exports) the division is folded into the new
kernel's weights, which is exact too (zero padding stays zero after a division). The Pad and
SpaceToDepth run in float before the first QuantizeLinear (they are left out of quantization).

Applicable when the first Conv reads the model input (through that Sub/Div at most), has stride 2,
no dilation, one group, symmetric padding, at most 4 input channels and a fixed input height and
width whose padded sizes are even; otherwise :func:`space_to_depth_stem` says why not and leaves
the model alone. Torch-free.

    python benchmarks/stem_s2d.py MODEL_FP32.onnx OUT_INT8.onnx CALIB.npz   # rewrite, check, quantize
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

STEM_NODES = ("edgerobust_stem_pad", "edgerobust_stem_s2d")  # float nodes quantization must leave alone
MAX_CHANNELS = 4


@dataclass(frozen=True)
class StemRewrite:
    """What the rewrite did (``model`` set) or why it did not (``model`` None)."""

    model: onnx.ModelProto | None
    note: str


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _const(graph, name: str) -> np.ndarray | None:
    init = next((i for i in graph.initializer if i.name == name), None)
    return None if init is None else numpy_helper.to_array(init)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _input_hw(graph, name: str) -> tuple[int, int] | None:
    vi = next((i for i in graph.input if i.name == name), None)
    if vi is None:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    return (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None


def _chain(graph):
    """(first Conv, the Sub before it or None, the Div before it or None), or a reason string."""
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    if len(inputs) != 1:
        return "the model has more than one input"
    x = next(iter(inputs))
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs:
        return "the model has no Conv"
    conv, sub, div = convs[0], None, None
    src = next((n for n in graph.node if conv.input[0] in n.output), None)
    if src is not None and src.op_type == "Div" and _const(graph, src.input[1]) is not None:
        div, src = src, next((n for n in graph.node if src.input[0] in n.output), None)
    if src is not None and src.op_type == "Sub" and _const(graph, src.input[1]) is not None:
        sub, src = src, None
    head = sub or div or conv
    if head.input[0] != x or src is not None:
        return "the first Conv does not read the model input (only a Sub/Div normalization may come between)"
    for node in (sub, div):
        if node is not None and len(_consumers(graph, node.output[0])) != 1:
            return "the normalization's output feeds more than the first Conv"
    return conv, sub, div, x


def _check(graph, conv, x) -> str | tuple:
    """The stem's shape (k, p, C) or why it cannot be rewritten."""
    a = _attrs(conv)
    w = _const(graph, conv.input[1])
    if w is None or w.ndim != 4:
        return "the first Conv's weights are not a constant 4-D tensor"
    out_c, c, kh, kw = w.shape
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "the first Conv uses auto_pad"
    if list(a.get("strides", [1, 1])) != [2, 2]:
        return f"the first Conv has stride {list(a.get('strides', [1, 1]))}, not 2"
    if list(a.get("dilations", [1, 1])) != [1, 1] or a.get("group", 1) != 1:
        return "the first Conv is dilated or grouped"
    if kh != kw or len(set(pads)) != 1:
        return "the first Conv's kernel or padding is not square and symmetric"
    if c > MAX_CHANNELS:
        return f"the first Conv reads {c} channels (the rewrite helps at most {MAX_CHANNELS})"
    if sum(1 for n in graph.node if conv.input[1] in n.input) != 1:
        return "the first Conv's weights are shared with another node"
    hw = _input_hw(graph, x)
    if hw is None:
        return "the input height and width are not fixed"
    p = pads[0]
    if any((d + 2 * p) % 2 for d in hw):
        return f"the padded input ({hw[0] + 2 * p}x{hw[1] + 2 * p}) is not of even size"
    return kh, p, c


def _phase_kernel(w: np.ndarray) -> np.ndarray:
    """(O, C, k, k) -> (O, 4C, ceil(k/2), ceil(k/2)): channel (by * 2 + bx) * C + c holds phase (by, bx)."""
    out_c, c, k, _ = w.shape
    k2 = (k + 1) // 2
    padded = np.zeros((out_c, c, 2 * k2, 2 * k2), w.dtype)
    padded[:, :, :k, :k] = w
    phases = [padded[:, :, by::2, bx::2] for by in range(2) for bx in range(2)]
    return np.concatenate(phases, axis=1)  # SpaceToDepth's channel order: (by, bx, c)


def space_to_depth_stem(model: onnx.ModelProto) -> StemRewrite:
    """The model with its stem rewritten (see the module docstring), or None and the reason."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    found = _chain(g)
    if isinstance(found, str):
        return StemRewrite(None, found)
    conv, sub, div, x = found
    shape = _check(g, conv, x)
    if isinstance(shape, str):
        return StemRewrite(None, shape)
    k, p, c = shape
    w = _const(g, conv.input[1])
    folded = False
    if div is not None:
        d = _const(g, div.input[1]).astype(np.float64)
        if d.size in (1, c) and np.all(d != 0):
            w = (w / d.reshape(1, -1, 1, 1)).astype(w.dtype)
            folded = True
    weights = next(i for i in g.initializer if i.name == conv.input[1])
    weights.CopyFrom(numpy_helper.from_array(_phase_kernel(w), conv.input[1]))
    pads = f"{STEM_NODES[0]}_pads"
    g.initializer.append(numpy_helper.from_array(np.array([0, 0, p, p, 0, 0, p, p], np.int64), pads))
    src = (sub.output[0] if sub is not None else x) if folded else conv.input[0]
    new = [helper.make_node("Pad", [src, pads], [f"{STEM_NODES[0]}_out"], mode="constant", name=STEM_NODES[0]),
           helper.make_node("SpaceToDepth", [f"{STEM_NODES[0]}_out"], [f"{STEM_NODES[1]}_out"], blocksize=2,
                            name=STEM_NODES[1])]
    conv.input[0] = f"{STEM_NODES[1]}_out"
    k2 = (k + 1) // 2
    del conv.attribute[:]
    conv.attribute.extend([helper.make_attribute("kernel_shape", [k2, k2]), helper.make_attribute("strides", [1, 1]),
                           helper.make_attribute("pads", [0, 0, 0, 0]), helper.make_attribute("dilations", [1, 1]),
                           helper.make_attribute("group", 1)])
    nodes = [n for n in g.node if not (folded and n is div)]
    at = nodes.index(conv)
    nodes[at:at] = new
    del g.node[:]
    g.node.extend(nodes)
    if folded:
        used = {i for n in g.node for i in n.input}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
    onnx.checker.check_model(m)
    name = conv.name or "the first Conv"
    return StemRewrite(m, f"space-to-depth: {name} {k}x{k}/2 on {c} channels -> {k2}x{k2}/1 on {4 * c}"
                          + (" (the input normalization's Div folded into its weights)" if folded else ""))


def max_difference(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray) -> float:
    """The largest |output difference| of two models on ``x``, relative to the largest |output| (onnxruntime, CPU)."""
    import onnxruntime as ort

    outs = []
    for m in (a, b):
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x})[0])
    return float(np.abs(outs[0] - outs[1]).max() / max(float(np.abs(outs[0]).max()), 1e-12))


def quantize_with_stem(fp32: "Path", out: "Path", calib_x: np.ndarray) -> str:
    """Rewrite the stem of ``fp32`` (checked exact on 8 calibration inputs), then quantize it with
    edgerobust's static QDQ recipe, leaving the float Pad/SpaceToDepth out; return the rewrite's note."""
    import tempfile
    from pathlib import Path

    import edgerobust.workstation.quantize as q

    model = onnx.load(str(fp32))
    done = space_to_depth_stem(model)
    if done.model is None:
        raise ValueError(f"no rewrite: {done.note}")
    diff = max_difference(model, done.model, calib_x[:8].astype(np.float32))
    assert diff < 1e-4, f"the rewrite is not exact: relative difference {diff:.2e}"
    kept = q._kept_nodes
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "s2d.onnx"
        onnx.save(done.model, str(src))
        q._kept_nodes = lambda m, keep: list(kept(m, keep)) + list(STEM_NODES)
        try:
            q.quantize(src, out, calib_x, q.QuantConfig(calib_samples=16, keep_fp32="none", format="qdq"))
        finally:
            q._kept_nodes = kept
    return done.note


if __name__ == "__main__":
    import sys
    from pathlib import Path

    calib = np.load(sys.argv[3])["x"]
    print(quantize_with_stem(Path(sys.argv[1]), Path(sys.argv[2]), calib))
