"""The space-to-depth stem (edgerobust.workstation.quantize.stem): real quantization, real onnxruntime sessions."""
from __future__ import annotations

import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerobust.edge.runtime.host import cpu_isa
from edgerobust.workstation.quantize.stem import space_to_depth_stem
from edgerobust.workstation.configs import QuantConfig
from edgerobust.workstation.quantize.int8 import quantize
from onnx_models import EXACT_HOST, images, logits, stem_model

def both(tmp_path, **kw):
    """The model quantized plain and with the stem rewrite: (plain path, rewritten path, rewrite's note)."""
    fp32 = stem_model(tmp_path / "fp32.onnx", **{k: v for k, v in kw.items() if k != "config"})
    calib = images(32, kw.get("channels", 3), kw.get("size", (32, 32)))
    cfg = {"keep_fp32": "none", **kw.get("config", {})}
    quantize(fp32, tmp_path / "plain.onnx", calib, QuantConfig(**cfg))
    r = quantize(fp32, tmp_path / "s2d.onnx", calib, QuantConfig(stem="space-to-depth", **cfg))
    return tmp_path / "plain.onnx", tmp_path / "s2d.onnx", r.stem


@pytest.mark.parametrize("channels,kernel,pad", [(3, 7, 3), (1, 7, 3), (3, 3, 1)], ids=["rgb-7x7", "gray-7x7", "rgb-3x3"])
def test_the_rewritten_stem_computes_the_plain_int8_model(tmp_path, channels, kernel, pad):
    fp32 = stem_model(tmp_path / "fp32.onnx", channels=channels, kernel=kernel, pad=pad)
    quantize(fp32, tmp_path / "plain.onnx", images(32, channels), QuantConfig(keep_fp32="none"))
    plain = onnx.load(str(tmp_path / "plain.onnx"))
    done = space_to_depth_stem(plain)
    kk = (kernel + 1) // 2
    assert done.note == (f"space-to-depth stem: stem {kernel}x{kernel}/2 on {channels} channels (32x32) -> "
                         f"{kk}x{kk}/1 on 16 channels of 2x2 blocks")
    g = done.model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 2  # the stem and the 3x3: no convolution added
    assert inits[producer[convs[0].input[1]].input[0]].shape == (8, 16, kk, kk)  # 4 channels x 4 phases
    assert {a.name: helper.get_attribute_value(a) for a in convs[0].attribute}["strides"] == [1, 1]
    # The same function on any host: ONNX's reference evaluator runs both graphs in float
    # (summation order differs, so a requantization can round the other way: a step at most).
    from onnx.reference import ReferenceEvaluator

    def reference(m):  # its quantize ops start at opset 19, the same for uint8/int8 as 13-17
        m = onnx.ModelProto.FromString(m.SerializeToString())
        next(o for o in m.opset_import if o.domain in ("", "ai.onnx")).version = 19
        return ReferenceEvaluator(m)

    x = images(3, channels, seed=5)
    a, b = (reference(m).run(None, {"input": x})[0] for m in (plain, done.model))
    assert np.abs(a - b).max() <= 0.02 * np.abs(a).max()
    # onnxruntime: with int32 accumulation (VNNI, ARM) the very same bits, at any batch size.
    if EXACT_HOST:
        onnx.save(done.model, str(tmp_path / "s2d.onnx"))
        for batch in (1, 5):
            x = images(batch, channels, seed=7 + batch)
            np.testing.assert_array_equal(logits(tmp_path / "plain.onnx", x), logits(tmp_path / "s2d.onnx", x))


def test_compress_keeps_the_rewrite_only_when_onnxruntime_agrees(tmp_path, monkeypatch):
    plain, s2d, note = both(tmp_path)
    rewritten = any(n.name.startswith("edgerobust_s2d_") for n in onnx.load(str(s2d)).graph.node)
    if EXACT_HOST:
        assert rewritten and note.endswith("checked on 32 inputs: outputs identical to the plain int8 model's, "
                                           "bit for bit")
    else:  # AVX2's saturating 16-bit pair sums may differ after the re-layout: either outcome, said so
        assert rewritten == note.startswith("space-to-depth stem: stem 7x7/2"), note
    # a rewrite that fails leaves the plain model and says why
    import edgerobust.workstation.quantize.stem as stem

    def broken(model):
        raise ValueError("no such node")

    monkeypatch.setattr(stem, "space_to_depth_stem", broken)
    r = quantize(tmp_path / "fp32.onnx", tmp_path / "again.onnx", images(8),
                 QuantConfig(keep_fp32="none", stem="space-to-depth"))
    assert r.stem == "space-to-depth stem not applied: the rewrite failed (ValueError: no such node)"
    assert not any(n.name.startswith("edgerobust_s2d_") for n in onnx.load(str(tmp_path / "again.onnx")).graph.node)


def test_the_stem_reads_each_2x2_block_as_channels(tmp_path):
    """What the rewritten stem convolves: the padded quantized input, each 2x2 block's values as channels."""
    plain, _, _ = both(tmp_path)
    m = space_to_depth_stem(onnx.load(str(plain))).model  # the rewrite itself, whatever the host's check says
    producer = {o: n for n in m.graph.node for o in n.output}
    stem = next(n for n in m.graph.node if n.op_type == "Conv")
    blocks = producer[stem.input[0]].input[0]  # the stem's input DQ reads the re-laid-out uint8 tensor
    pad = next(n for n in m.graph.node if n.op_type == "Pad")
    m.graph.output.extend([helper.make_tensor_value_info(blocks, TensorProto.UINT8, None),
                           helper.make_tensor_value_info(pad.output[0], TensorProto.UINT8, None)])
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    _, got, padded = s.run(None, {"input": images(2)})
    assert padded.shape == (2, 4, 38, 38) and got.shape == (2, 16, 19, 19)
    zp = padded[0, 3, 0, 0]
    assert (padded[:, 3] == zp).all() and (padded[:, :, :3] == zp).all()  # pad value: the zero point
    for bh in range(2):
        for bw in range(2):
            np.testing.assert_array_equal(got[:, (2 * bh + bw) * 4:(2 * bh + bw + 1) * 4], padded[:, :, bh::2, bw::2])


@pytest.mark.parametrize("kw,why", [
    (dict(kernel=1, pad=0), "square kernels of 3x3 and up"),
    (dict(stride=1), "needs stride 2"),
    (dict(channels=8), "more than 4 input channels"),
    (dict(size=(31, 31)), "not of even size"),
    (dict(config=dict(keep_fp32="first")), "is not quantized (kept in fp32)"),
    (dict(config=dict(format="qoperator")), "static QDQ int8 on the CPU target"),
    (dict(config=dict(int8_target="tensorrt")), "static QDQ int8 on the CPU target"),
], ids=["1x1", "stride-1", "8-channels", "odd-size", "stem-in-fp32", "qoperator", "tensorrt"])
def test_where_it_does_not_apply_the_model_is_left_as_quantized(tmp_path, kw, why):
    plain, s2d, note = both(tmp_path, **kw)
    assert note.startswith("space-to-depth stem not applied") and why in note, note
    a, b = onnx.load(str(plain)), onnx.load(str(s2d))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]


def test_an_input_without_fixed_height_and_width_is_left_alone(tmp_path):
    plain, _, _ = both(tmp_path)
    m = onnx.load(str(plain))
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    done = space_to_depth_stem(m)
    assert done.model is None and "height and width are not fixed" in done.note


def test_a_plain_quantization_records_no_stem_note(tmp_path):
    fp32 = stem_model(tmp_path / "fp32.onnx")
    r = quantize(fp32, tmp_path / "q.onnx", images(8), QuantConfig(keep_fp32="none"))  # stem None: plain
    assert r.stem == ""
    r = quantize(fp32, tmp_path / "q.onnx", images(8), QuantConfig(keep_fp32="none", stem="plain"))
    assert r.stem == ""
    with pytest.raises(Exception, match="Unknown `int8_stem` 's2d'"):
        QuantConfig(stem="s2d")


def test_a_fixed_batch_and_initializers_listed_as_inputs(tmp_path):
    """Older exporters list initializers among the graph inputs and fix the batch at 1: the rewrite
    removes the replaced weights from both, and the check runs one input at a time."""
    from edgerobust.workstation.quantize.stem import rewrite_checked

    plain, _, _ = both(tmp_path)
    m = onnx.load(str(plain))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in m.graph.initializer)
    done = rewrite_checked(m, images(4))
    if EXACT_HOST:
        assert done.model is not None and done.note.endswith("checked on 4 inputs: outputs identical to the plain "
                                                             "int8 model's, bit for bit"), done.note
    if done.model is not None:
        names = {i.name for i in done.model.graph.initializer}
        assert {i.name for i in done.model.graph.input} - {"input"} <= names  # no input left without its value
        s = ort.InferenceSession(done.model.SerializeToString(), providers=["CPUExecutionProvider"])
        assert s.run(None, {"input": images(1)})[0].shape == (1, 10)
