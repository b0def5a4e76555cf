"""The space-to-depth stem: an exact rewrite of an int8 QDQ model's first convolution, for the CPU.

onnxruntime's int8 convolution on x86 has a fast path that reads its input in place (an indirect
convolution, no im2col copy), but only for input channel counts that are multiples of 4. A
classifier's stem convolves 3 channels (RGB) with a strided kernel, so it takes the slow path: on
resnet18 pruned 0.5 + int8 (AMD EPYC, AVX-512 VNNI, batch 1) the 7x7 stride-2 stem took 26% of
the run for 12% of the MACs.

The rewrite, on the quantized graph::

    Q(x) -> DQ -> Conv(k x k, stride 2, pad p, C channels)

becomes::

    Q(x) -> Pad(p on each side, channels up to C4 = a multiple of 4, with the zero point)
         -> Transpose to channels-last -> Reshape -> Transpose -> Reshape   (each 2x2 block -> 4*C4 channels)
         -> Transpose back -> DQ -> Conv(ceil(k/2) x ceil(k/2), stride 1, no pad, 4 * C4 channels)

The space-to-depth only moves quantized values (its middle Transpose swaps two axes over runs of
2 * C4 bytes, which onnxruntime does fast; the last one cancels against the transpose onnxruntime
puts before its channels-last int8 convolution). The convolution holds the stem's own int8
weights re-laid out: the kernel zero-padded to an even size, each 2x2 phase of it a group of C4
channels. Every output sums the same integer products as before, so with exact int32
accumulation (VNNI, ARM dot products) the model's outputs are the plain int8 model's, bit for bit.
AVX2 without VNNI adds pairs of products in 16 bits first (``vpmaddubsw``, which saturates), and
the pairs differ after the re-layout: there a few outputs can differ in their last bits.
:func:`rewrite_checked` compares the two models on real inputs and keeps the plain one if they
disagree.

Measured against the plain int8 model, interleaved (AMD EPYC, AVX-512 VNNI; docs/benchmarks.md, "The CPU int8
ceiling"): resnet18 0.5 + int8 (7x7 stem) 1.14-1.15x faster at batch 1 (1.16x with one thread)
and 1.09-1.19x at batch 8; mobilenet_v2 0.5 + int8 (3x3 stem) 1.04-1.07x at batch 1 (1.08x with
one thread) and 0.96-1.04x at batch 8. An earlier form that did the space-to-depth with a one-hot
2x2/2 int8 convolution gained 1.04-1.11x on resnet18. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# 7x7 (resnet's stem) and 3x3 (mobilenet_v2's) measured faster; a 1x1 stride-2 "stem" has no
# im2col to save.
MIN_KERNEL = 3
MAX_CHANNELS = 4
MIN_OPSET = 13  # Pad with its pads as an input, per-axis DequantizeLinear
PREFIX = "edgerobust_s2d_"


@dataclass(frozen=True)
class StemRewrite:
    """The rewritten model (None when the rewrite does not apply) and a sentence saying what was done or why not."""

    model: onnx.ModelProto | None
    note: str


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _stem_parts(model: onnx.ModelProto):
    """(conv, input DQ, weight DQ, constants) of the first Conv, or the reason it cannot be rewritten."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        return f"the model's opset is {opset}; the rewrite writes opset-{MIN_OPSET} operators"
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    conv = next((n for n in g.node if n.op_type == "Conv"), None)
    if conv is None:
        return "the model has no QDQ Conv (QOperator format, or no convolution)"
    dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
    if dq_x is None or dq_x.op_type != "DequantizeLinear" or dq_w is None or dq_w.op_type != "DequantizeLinear":
        return f"the first Conv ({conv.name}) is not quantized (kept in fp32)"
    if len(dq_x.input) < 3 or len(dq_w.input) < 3 or "" in (dq_x.input[2], dq_w.input[2]):
        return f"the first Conv's quantization has no explicit zero point ({conv.name})"
    if any(n not in inits for n in (dq_x.input[1:3] + dq_w.input[0:3])):
        return f"the first Conv's quantization parameters are not constants ({conv.name})"
    c = {k: numpy_helper.to_array(inits[n]) for k, n in
         (("x_scale", dq_x.input[1]), ("x_zp", dq_x.input[2]), ("w", dq_w.input[0]), ("w_zp", dq_w.input[2]))}
    if c["x_scale"].size != 1 or c["x_zp"].size != 1:
        return "the first Conv's input is quantized per channel"
    if c["w"].dtype != np.int8 or np.any(c["w_zp"] != 0):
        return "the first Conv's weights are not symmetric int8"
    return conv, dq_x, dq_w, c


def _geometry(model: onnx.ModelProto, conv, w: np.ndarray):
    """(channels, kernel, pad, height, width) of a stem the rewrite takes, or the reason it does not."""
    a = _attrs(conv)
    _, ch, kh, kw = w.shape
    pads = list(a.get("pads", [0, 0, 0, 0]))
    stride = "x".join(str(v) for v in a.get("strides", [1, 1]))
    what = f"{conv.name or 'the first Conv'} ({kh}x{kw}, stride {stride}, {ch} channels)"
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or a.get("group", 1) != 1:
        return f"{what} uses auto_pad or groups"
    if list(a.get("strides", [1, 1])) != [2, 2] or any(d != 1 for d in a.get("dilations", [1, 1])):
        return f"{what}: the rewrite needs stride 2 and no dilation"
    if kh != kw or kh < MIN_KERNEL:
        return f"{what}: the rewrite pays only for square kernels of {MIN_KERNEL}x{MIN_KERNEL} and up"
    if ch > MAX_CHANNELS:
        return f"{what}: more than {MAX_CHANNELS} input channels take onnxruntime's fast path already"
    if len(set(pads)) != 1:
        return f"{what} pads unevenly"
    fresh = onnx.ModelProto()
    fresh.CopyFrom(model)
    del fresh.graph.value_info[:]  # infer from the graph's input, not from shapes recorded earlier
    inferred = onnx.shape_inference.infer_shapes(fresh)
    shapes = {v.name: v.type.tensor_type.shape
              for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    shape = shapes.get(conv.input[0])
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in shape.dim] if shape is not None else []
    if len(dims) != 4 or not dims[2] or not dims[3]:
        return f"{what}: its input height and width are not fixed"
    p, h, wd = pads[0], dims[2], dims[3]
    if (h + 2 * p) % 2 or (wd + 2 * p) % 2:
        return f"{what}: its padded input ({h + 2 * p}x{wd + 2 * p}) is not of even size"
    return ch, kh, p, h, wd


def _phase_weights(w: np.ndarray, c4: int) -> np.ndarray:
    """[O, C, k, k] int8 -> [O, 4*c4, k2, k2]: channel (2*bh + bw)*c4 + c, tap (a, b) holds w[o, c, 2a+bh, 2b+bw]."""
    o, ch, k, _ = w.shape
    ke = k + k % 2
    padded = np.zeros((o, c4, ke, ke), np.int8)
    padded[:, :ch, :k, :k] = w
    out = np.zeros((o, 4 * c4, ke // 2, ke // 2), np.int8)
    for bh in range(2):
        for bw in range(2):
            out[:, (2 * bh + bw) * c4:(2 * bh + bw + 1) * c4] = padded[:, :, bh::2, bw::2]
    return out


def space_to_depth_stem(model: onnx.ModelProto) -> StemRewrite:
    """The rewrite of ``model``'s stem (a new ModelProto; ``model`` is left alone), or why it does not apply."""
    parts = _stem_parts(model)
    if isinstance(parts, str):
        return StemRewrite(None, f"space-to-depth stem not applied: {parts}")
    conv, dq_x, dq_w, c = parts
    geo = _geometry(model, conv, c["w"])
    if isinstance(geo, str):
        return StemRewrite(None, f"space-to-depth stem not applied: {geo}")
    ch, k, p, h, wd = geo
    c4 = -(-ch // 4) * 4
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    conv = next(n for n in g.node if n.op_type == "Conv")
    name = lambda s: PREFIX + s  # noqa: E731
    zp = c["x_zp"].reshape(())
    hs, ws = (h + 2 * p) // 2, (wd + 2 * p) // 2
    g.initializer.extend([
        numpy_helper.from_array(np.array([0, 0, p, p, 0, c4 - ch, p, p], np.int64), name("pads")),
        numpy_helper.from_array(zp, name("pad_value")),
        numpy_helper.from_array(np.array([0, hs, 2, ws, 2 * c4], np.int64), name("rows_shape")),
        numpy_helper.from_array(np.array([0, hs, ws, 4 * c4], np.int64), name("blocks_shape")),
        numpy_helper.from_array(_phase_weights(c["w"], c4), name("weight")),
    ])
    xs, xz = dq_x.input[1], dq_x.input[2]
    node = helper.make_node
    new = [  # the quantized input, re-laid out: values are moved, never computed
        node("Pad", [dq_x.input[0], name("pads"), name("pad_value")], [name("padded")], name=name("pad"),
             mode="constant"),
        node("Transpose", [name("padded")], [name("nhwc")], name=name("to_nhwc"), perm=[0, 2, 3, 1]),
        node("Reshape", [name("nhwc"), name("rows_shape")], [name("rows")], name=name("rows")),
        node("Transpose", [name("rows")], [name("blocks")], name=name("blocks"), perm=[0, 1, 3, 2, 4]),
        node("Reshape", [name("blocks"), name("blocks_shape")], [name("s2d_nhwc")], name=name("s2d_nhwc")),
        node("Transpose", [name("s2d_nhwc")], [name("s2d_q")], name=name("to_nchw"), perm=[0, 3, 1, 2]),
        node("DequantizeLinear", [name("s2d_q"), xs, xz], [name("s2d_dq")], name=name("s2d_dq")),
        node("DequantizeLinear", [name("weight")] + list(dq_w.input[1:]), [name("weight_dq")],
             name=name("weight_dq"), axis=_attrs(dq_w).get("axis", 1)),
    ]
    conv.input[0], conv.input[1] = name("s2d_dq"), name("weight_dq")
    kk = (k + k % 2) // 2
    del conv.attribute[:]
    conv.attribute.extend([helper.make_attribute("kernel_shape", [kk, kk]), helper.make_attribute("strides", [1, 1]),
                           helper.make_attribute("pads", [0, 0, 0, 0])])
    nodes = list(g.node)
    at = nodes.index(conv)
    del g.node[:]
    g.node.extend(nodes[:at] + new + nodes[at:])
    del g.value_info[:]  # shapes of the rewritten tensors changed; onnxruntime infers them again
    _drop_replaced(g, (dq_x.output[0], dq_w.output[0]))
    onnx.checker.check_model(m)
    return StemRewrite(m, f"space-to-depth stem: {conv.name or 'the first Conv'} {k}x{k}/2 on {ch} channels "
                          f"({h}x{wd}) -> {kk}x{kk}/1 on {4 * c4} channels of 2x2 blocks")


def _uses(g) -> set[str]:
    """Every tensor name a node of ``g`` reads (subgraphs of If/Loop included) or ``g`` outputs."""
    used = {o.name for o in g.output}
    for n in g.node:
        used.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used |= _uses(sub)
    return used


def _drop_replaced(g, outputs: tuple[str, ...]) -> None:
    """Remove the nodes producing ``outputs`` (the stem's old input and weight DQs) when nothing reads
    them any more, then the initializers (and graph inputs of the same name) only they read."""
    used = _uses(g)
    freed: list[str] = []
    for n in list(g.node):
        if any(o in outputs for o in n.output) and not any(o in used for o in n.output):
            g.node.remove(n)
            freed += [i for i in n.input if i]
    used = _uses(g)
    dead = {i for i in freed if i not in used}
    for field in (g.initializer, g.input):
        keep = [v for v in field if v.name not in dead]
        del field[:]
        field.extend(keep)


def model_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """``model``'s outputs on ``x`` from onnxruntime's CPU provider, in its fixed batch where it has one."""
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)  # a fixed batch: its size
    return np.concatenate([s.run(None, {inp.name: x[i:i + step]})[0] for i in range(0, len(x) - step + 1, step)])


def rewrite_checked(model: onnx.ModelProto, x: np.ndarray, min_agreement: float = 0.99) -> StemRewrite:
    """:func:`space_to_depth_stem`, kept only if onnxruntime's outputs on ``x`` agree with the plain
    model's: the same top-1 on at least ``min_agreement`` of the inputs (with fewer than 100 inputs,
    on every one). The note gives the largest difference (0: bit for bit)."""
    try:
        done = space_to_depth_stem(model)
        if done.model is None:
            return done
        a, b = model_logits(model, x), model_logits(done.model, x)
        diff = float(np.abs(a - b).max())
        # top-1 where the output is (batch, classes); any other output must match exactly
        agree = float((a.argmax(1) == b.argmax(1)).mean()) if a.ndim == 2 else float(diff == 0)
    except Exception as e:  # a graph the rewrite did not foresee: the plain model stays, the note says why
        return StemRewrite(None, f"space-to-depth stem not applied: the rewrite failed ({type(e).__name__}: {e})")
    if agree < min_agreement:
        return StemRewrite(None, f"space-to-depth stem not applied: it agreed with the plain int8 model on "
                                 f"{agree:.1%} of {len(x)} inputs (largest output difference {diff:.3g})")
    exact = ("outputs identical to the plain int8 model's, bit for bit" if diff == 0
             else f"largest output difference {diff:.3g}, same top-1 on {agree:.1%}")
    return StemRewrite(done.model, f"{done.note}; checked on {len(x)} inputs: {exact}")
