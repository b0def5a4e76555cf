"""The GEMM route: an exact rewrite that sends chosen int8 convolutions to onnxruntime's integer GEMM.

onnxruntime's CPU provider runs a QDQ convolution with symmetric int8 weights (every weight zero
point 0, compress's cpu preset) on its symmetric convolution kernel, which reads its input in
place (no im2col copy) with AVX-512 VNNI or AVX2 instructions. A convolution whose weights have a
nonzero zero point goes instead through im2col and the integer GEMM, which on a CPU with AMX
(Intel Xeon 4th generation and later) runs on the matrix tiles. Which is faster depends on the
GEMM's shape: profiled inside resnet18 0.5 + int8 on a 2-core Intel Xeon with AMX (onnxruntime
1.32.0, two threads; docs/benchmarks.md "The int8 forms on AMX"), the late 3x3 convolutions ran
1.1-1.7x faster on the GEMM route (256 channels at 7x7: 80 -> 53 us) and the early ones 0.6-0.9x
as fast (32 channels at 56x56: 83 -> 124 us: the im2col copy of a large image costs more than the
tiles save).

The rewrite keeps each chosen convolution's dequantized weights exactly: its int8 weights ``q``
(symmetric, in [-127, 127]) become ``q - 1`` with zero point -1, so ``(q - 1) - (-1) = q`` and
every integer product and sum is the same. With exact int32 accumulation (VNNI, AMX) the model's
outputs are the symmetric model's bit for bit; AVX2 without VNNI adds pairs of products in 16
bits (``vpmaddubsw``, which saturates) on both routes, in different pairs, so there a few outputs
may differ in their last bits: :func:`reroute_checked` compares on real inputs and keeps the
symmetric model when they disagree.

Chosen: convolutions without groups whose output has at most ``max_pixels`` pixels per image and
whose every output value sums at least ``min_k`` products (input channels x kernel area): the
late, weight-heavy layers. Torch-free.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

MAX_PIXELS = 256  # 16x16 and smaller outputs: where the GEMM route won on AMX (resnet18's last two stages at 224 px)
MIN_K = 128  # resnet18 0.5's 1x1 downsampling of 64 channels lost on the GEMM route at 14x14; of 128 at 7x7 it won


@dataclass(frozen=True)
class RouteRewrite:
    """The rewritten model (None when no convolution qualifies) and a sentence saying what was done or why not."""

    model: onnx.ModelProto | None
    note: str
    rerouted: int = 0


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def gemm_route(model: onnx.ModelProto, max_pixels: int = MAX_PIXELS, min_k: int = MIN_K) -> RouteRewrite:
    """A copy of the QDQ ``model`` with its chosen convolutions' weights written with zero point -1."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    shaped = onnx.shape_inference.infer_shapes(m)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(shaped.graph.value_info) + list(shaped.graph.output)}
    init = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    uses = collections.Counter(i for n in m.graph.node for i in n.input)
    done, skipped = 0, collections.Counter()
    for conv in (n for n in m.graph.node if n.op_type == "Conv"):
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[0] not in init \
                or dq.input[2] not in init:
            skipped["float or dynamic weights"] += 1
            continue
        q, zp = numpy_helper.to_array(init[dq.input[0]]), numpy_helper.to_array(init[dq.input[2]])
        out = dims.get(conv.output[0], [])
        pixels = int(np.prod(out[2:])) if len(out) == 4 and all(d > 0 for d in out[2:]) else 0
        k = int(np.prod(q.shape[1:])) if q.ndim == 4 else 0
        if q.dtype != np.int8 or np.any(zp != 0) or q.size == 0 or q.min() < -127:
            skipped["not symmetric int8"] += 1
        elif _group(conv) != 1:
            skipped["grouped or depthwise"] += 1
        elif not pixels or pixels > max_pixels or k < min_k:
            skipped["outside the rule"] += 1
        elif uses[dq.input[0]] > 1 or uses[dq.input[2]] > 1:
            skipped["weights shared"] += 1
        else:
            init[dq.input[0]].CopyFrom(numpy_helper.from_array((q.astype(np.int16) - 1).astype(np.int8), dq.input[0]))
            init[dq.input[2]].CopyFrom(numpy_helper.from_array(np.full(zp.shape, -1, np.int8), dq.input[2]))
            done += 1
    why = ", ".join(f"{n} {r}" for r, n in skipped.most_common())
    if not done:
        return RouteRewrite(None, f"GEMM route not applied: no convolution qualifies ({why or 'none in the graph'})")
    return RouteRewrite(m, f"GEMM route for {done} convolution(s) of at most {max_pixels} output pixels and at "
                           f"least {min_k} products per output" + (f" (left: {why})" if why else ""), done)


def reroute_checked(model: onnx.ModelProto, x: np.ndarray, max_pixels: int = MAX_PIXELS,
                    min_k: int = MIN_K) -> RouteRewrite:
    """:func:`gemm_route`, kept only if onnxruntime's outputs on ``x`` have the symmetric model's top-1 on
    every input; the note gives the largest output difference (0: bit for bit)."""
    from edgerobust.workstation.quantize.stem import model_logits

    try:
        done = gemm_route(model, max_pixels, min_k)
        if done.model is None:
            return done
        a, b = model_logits(model, x), model_logits(done.model, x)
    except Exception as e:  # a graph the rewrite did not foresee: the symmetric model stays, the note says why
        return RouteRewrite(None, f"GEMM route not applied: the rewrite failed ({type(e).__name__}: {e})")
    diff = float(np.abs(a - b).max())
    agree = float((a.argmax(1) == b.argmax(1)).mean()) if a.ndim == 2 else float(diff == 0)
    if agree < 1.0:
        return RouteRewrite(None, f"GEMM route not applied: it agreed with the symmetric model on {agree:.1%} of "
                                  f"{len(x)} inputs (largest output difference {diff:.3g})")
    exact = "outputs identical, bit for bit" if diff == 0 else f"largest output difference {diff:.3g}, same top-1"
    return RouteRewrite(done.model, f"{done.note}; checked on {len(x)} inputs: {exact}", done.rerouted)
