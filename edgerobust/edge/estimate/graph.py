"""A model as the device's runtime rewrites it: its optimized graph, every tensor's size, the device's layout.

onnxruntime's CPU provider rewrites a model before it runs it. The hardware-independent passes ("basic",
"extended": constant folding, BatchNorm folded, Conv+activation fused, QDQ pairs fused into QLinearConv /
QLinearConcat / QGemm) are the same on every host; "all" adds the layout passes, which depend on the CPU:

* on x86, the NCHWc transformer runs convolutions, pools and residual adds in a channel-blocked layout
  (blocks of 8 or 16 channels, by the CPU's vector width), where a layer's channels allow it, and inserts
  ReorderInput / ReorderOutput nodes where a tensor enters or leaves that layout (before a transpose, a
  slice, a reshape, a linear layer, a convolution whose channels do not fit the blocks);
* on every CPU, int8 convolutions run channels-last, with Transpose nodes where a tensor changes layout.

:func:`nchwc_block` reads which block a host's runtime uses from its own optimized graph of a few tiny
depthwise convolutions (0: no NCHWc, as on ARM). The calibration records the device's; an estimate
rebuilds the device's graph here (:func:`device_graph`): at the device's level as this host optimizes it
when the blocks agree, else with the NCHWc transformer turned off, and then says which of the device's
layout changes it could not cost. :func:`tensor_shapes` gives every tensor's size at a batch size, from
onnx's shape inference and, where that leaves a size unknown (a Reshape whose target the graph computes
from Shape, as ShuffleNet's channel shuffle does), from one run of the model on zeros.

Torch-free: onnx, numpy and onnxruntime.
"""
from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edgerobust.errors import ModelLoadError

LEVELS = ("disable", "basic", "extended", "all")
_ORT_LEVEL = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
NCHWC = "NchwcTransformer"  # onnxruntime's name for the pass, as `disabled_optimizers` takes it
NCHWC_DOMAIN = "com.microsoft.nchwc"
_PROBE_CHANNELS = (4, 8, 12, 16, 24, 32, 48, 64)


def optimized(model: str | os.PathLike | bytes, level: str = "extended", disabled: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The model (a path or serialized bytes) after onnxruntime's graph optimization on this host's CPU
    provider at ``level``, with the passes named in ``disabled`` turned off."""
    from edgerobust.edge.runtime.sessions import ort

    rt = ort()
    level = level if level in LEVELS else "extended"
    with tempfile.TemporaryDirectory(prefix="edgerobust-kernels-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        o = rt.SessionOptions()
        o.graph_optimization_level = getattr(rt.GraphOptimizationLevel, _ORT_LEVEL[level])
        o.optimized_model_filepath = str(out)
        o.log_severity_level, o.intra_op_num_threads = 3, 1
        try:
            rt.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=o,
                                providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
        except Exception as exc:  # onnxruntime's own zoo of exceptions
            what = "the model" if isinstance(model, bytes) else f"'{model}'"
            raise ModelLoadError(f"onnxruntime cannot load {what} to split it into kernels.",
                                 why=f"{type(exc).__name__}: {str(exc)[:400]}",
                                 fix="Check that the file is a complete ONNX model this onnxruntime can run.") from exc
        return onnx.load(str(out))


def _depthwise(c: int) -> bytes:
    """conv 1x1 -> depthwise 3x3 on ``c`` channels -> relu: the probe of the NCHWc block."""
    w1 = numpy_helper.from_array(np.full([c, c, 1, 1], 0.01, np.float32), "w1")
    w2 = numpy_helper.from_array(np.full([c, 1, 3, 3], 0.01, np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[3, 3], pads=[1] * 4, group=c),
             helper.make_node("Relu", ["b"], ["y"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@functools.lru_cache(maxsize=4)
def nchwc_block(level: str = "all") -> int:
    """The channel block of this host's NCHWc layout at ``level`` (0: none): the greatest common divisor of
    the channel counts whose depthwise convolution the runtime moved into it."""
    if level != "all":
        return 0
    took = [c for c in _PROBE_CHANNELS
            if any(n.domain == NCHWC_DOMAIN and n.op_type == "Conv" and any(a.name == "group" and a.i == c
                                                                                  for a in n.attribute)
                   for n in optimized(_depthwise(c), "all").graph.node)]
    return math.gcd(*took) if took else 0


def device_graph(model: str | os.PathLike | bytes, level: str, block: int) -> tuple[onnx.ModelProto, str | None]:
    """(the model's graph as a device whose NCHWc block is ``block`` runs it at ``level``, None) when this host
    can rebuild it; else (the graph without the NCHWc pass, what is left out, in words)."""
    here = nchwc_block(level)
    if level != "all" or here == block:
        return optimized(model, level), None
    graph = optimized(model, level, (NCHWC,))
    if block == 0:
        return graph, None
    return graph, (f"the device runs convolutions in a channel-blocked layout (NCHWc, blocks of {block}) that this "
                   f"host's runtime {'does not have' if here == 0 else f'blocks by {here}'}: its layout changes "
                   "(ReorderInput, ReorderOutput) are not costed, and every convolution is costed as a blocked one, "
                   "also those whose channels the device's blocks cannot take")


def tensor_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, tuple[list[int], int]]:
    """Every tensor's (shape, element type) at ``batch``: onnx's shape inference, and where it leaves a size
    unknown, the sizes one run of the model on zeros gives (:func:`_run_shapes`)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        if i.name not in inits and len(dims) and not dims[0].dim_value:
            dims[0].dim_value = batch
    try:
        m = shape_inference.infer_shapes(m, strict_mode=False)
    except Exception:  # noqa: BLE001 - onnx raises its own InferenceError kinds; the run fills in
        pass
    out, unknown = {}, {}
    for v in (*m.graph.input, *m.graph.value_info, *m.graph.output):
        t = v.type.tensor_type
        dims = [d.dim_value if d.dim_value > 0 else None for d in t.shape.dim]
        if t.HasField("shape") and None not in dims:
            out[v.name] = (dims, t.elem_type)
        elif t.elem_type:
            unknown[v.name] = t.elem_type
    for node in m.graph.node:  # outputs inference gave no entry at all, typed as their first input
        for o in node.output:
            if o and o not in out and o not in unknown and node.input and node.input[0] in out:
                unknown[o] = out[node.input[0]][1]
    out.update(_run_shapes(m, {n: e for n, e in unknown.items() if n not in inits}, batch) if unknown else {})
    for t in m.graph.initializer:
        out[t.name] = (list(t.dims), t.data_type)
    return out


def _run_shapes(model: onnx.ModelProto, wanted: dict[str, int], batch: int) -> dict[str, tuple[list[int], int]]:
    """The shapes of the ``wanted`` tensors (name -> element type) from one run of the model on zeros at
    ``batch``, each made a graph output; {} where the model cannot run so (inference's sizes then stand)."""
    from edgerobust.edge.runtime.sessions import ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, e, None) for n, e in wanted.items() if n not in present)
    rt = ort()
    o = rt.SessionOptions()
    o.graph_optimization_level = rt.GraphOptimizationLevel.ORT_DISABLE_ALL
    o.log_severity_level, o.intra_op_num_threads = 3, 1  # no thread pool left spinning beside a measurement
    types = {v.name: v.type.tensor_type.elem_type for v in m.graph.input}
    try:
        sess = rt.InferenceSession(m.SerializeToString(), sess_options=o, providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros([d if isinstance(d, int) and d > 0 else batch if k == 0 else 1
                                  for k, d in enumerate(i.shape)], helper.tensor_dtype_to_np_dtype(types[i.name]))
                for i in sess.get_inputs()}
        got = sess.run(list(wanted), feed)
    except Exception:  # noqa: BLE001 - a model onnxruntime cannot run on zeros: inference's sizes stand
        return {}
    return {n: (list(np.shape(v)), wanted[n]) for n, v in zip(wanted, got)}


def node_attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def split_shapes(node: onnx.NodeProto, first: list[int], values: dict) -> list[list[int]] | None:
    """A Split's output shapes for an input of shape ``first``, from its sizes (an attribute, a constant input
    among ``values``: name -> integers, or equal parts), or None where the graph does not say them. The runtime
    moves a split after a channels-last int8 convolution onto the last axis, under names of its own that the
    original model's inference never saw."""
    a = node_attrs(node)
    axis = int(a.get("axis", 0)) % len(first)
    outs = list(node.output)
    given = len(node.input) > 1 and node.input[1]
    sizes = a.get("split") or (values.get(node.input[1]) if given else None)
    if sizes is None and given:
        return None  # sizes computed at run time
    if sizes is None:  # equal parts, the last one smaller where they do not divide (opset 18's num_outputs)
        part = -(-first[axis] // max(len(outs), 1))
        sizes = [part] * (len(outs) - 1) + [first[axis] - part * (len(outs) - 1)]
    if not outs or len(sizes) != len(outs) or sum(sizes) != first[axis] or min(sizes) <= 0:
        return None
    return [[int(v) if i == axis else d for i, d in enumerate(first)] for v in sizes]


def gathers(perm, rank: int = 0) -> bool:
    """Does a Transpose of permutation ``perm`` (none: the ``rank`` axes reversed, as ONNX reads a Transpose without
    one) run element by element? onnxruntime copies contiguous blocks where the innermost axis stays, and has fast
    paths where a single axis moves (NCHW to NHWC and back); any other permutation it gathers one element at a
    time, tens of times slower per byte: (0, 4, 3, 1, 2), which its transpose optimizer makes of a channel shuffle
    after a channels-last int8 convolution, took 250-290 µs for 74 KB on a 2-core AMD EPYC where a shuffle of
    that size takes about 5."""
    perm = [int(v) for v in perm] if perm else list(range(rank))[::-1]
    if len(perm) < 3 or perm[-1] == len(perm) - 1:
        return False
    return not any([v for v in perm if v != axis] == sorted(v for v in perm if v != axis) for axis in perm)
