"""The GEMM route (edgerobust.workstation.quantize.route): real quantization, real onnxruntime sessions."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgerobust.workstation.configs import QuantConfig
from edgerobust.workstation.quantize.int8 import quantize
from edgerobust.workstation.quantize.route import gemm_route, reroute_checked

from onnx_models import EXACT_HOST, images, logits, stem_model


def quantized(tmp_path, **kw):
    fp32 = stem_model(tmp_path / "fp32.onnx", **kw)
    quantize(fp32, tmp_path / "sym.onnx", images(32, size=kw.get("size", (32, 32))), QuantConfig(keep_fp32="none"))
    return tmp_path / "sym.onnx"


def weight_zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    return [init[n.input[2]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in convs]


def test_rerouted_convolutions_keep_their_integers_and_outputs(tmp_path):
    sym = quantized(tmp_path)  # stem 7x7 on 3 channels at 16x16 out (147 products), then 3x3 on 8 (72 products)
    model = onnx.load(str(sym))
    done = gemm_route(model)
    assert done.rerouted == 1 and "1 convolution" in done.note and "1 outside the rule" in done.note
    zps = weight_zero_points(done.model)
    assert sorted(int(np.unique(z)[0]) for z in zps) == [-1, 0]
    # the dequantized weights are the symmetric model's, exactly
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in done.model.graph.initializer}
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert len(changed) == 2  # the stem's weights and zero point
    w = next(k for k in changed if before[k].ndim == 4)
    assert np.array_equal(after[w].astype(np.int16) + 1, before[w].astype(np.int16))
    path = tmp_path / "gemm.onnx"
    onnx.save(done.model, str(path))
    x = images(16)
    a, b = logits(sym, x), logits(path, x)
    if EXACT_HOST:  # int32 accumulation on both routes: the same bits
        assert np.array_equal(a, b)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    assert "QLinearConv" in _optimized_ops(path)


def _optimized_ops(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(path) + ".opt.onnx"
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node}


def test_the_rule_chooses_by_output_pixels_and_products(tmp_path):
    model = onnx.load(str(quantized(tmp_path)))
    assert gemm_route(model, max_pixels=255).model is None  # the stem's 16x16 output is 256 pixels
    every = gemm_route(model, max_pixels=1 << 30, min_k=0)
    assert every.rerouted == 2
    nothing = gemm_route(model, min_k=148)
    assert nothing.model is None and "no convolution qualifies" in nothing.note and "2 outside the rule" in nothing.note


def test_float_grouped_and_dynamic_convolutions_are_left(tmp_path):
    fp32 = onnx.load(str(stem_model(tmp_path / "fp32.onnx")))
    assert "2 float or dynamic weights" in gemm_route(fp32).note
    model = onnx.load(str(quantized(tmp_path)))
    for n in model.graph.node:
        if n.op_type == "Conv" and n.name == "stem":
            n.attribute.append(onnx.helper.make_attribute("group", 1))
    assert gemm_route(model).rerouted == 1  # group 1 written out is still no groups


def test_the_checked_rewrite_keeps_only_an_agreeing_model(tmp_path, monkeypatch):
    model = onnx.load(str(quantized(tmp_path)))
    x = images(8)
    done = reroute_checked(model, x)
    assert done.model is not None and "checked on 8 inputs" in done.note
    if EXACT_HOST:
        assert "bit for bit" in done.note
    import edgerobust.workstation.quantize.stem as stem

    real = stem.model_logits
    monkeypatch.setattr(stem, "model_logits", lambda m, xs: real(m, xs) * (1 if m is model else -1))
    refused = reroute_checked(model, x)
    assert refused.model is None and "agreed with the symmetric model on" in refused.note


def test_quantize_writes_the_route_it_is_asked_for(tmp_path):
    fp32 = stem_model(tmp_path / "fp32.onnx")
    r = quantize(fp32, tmp_path / "g.onnx", images(32), QuantConfig(keep_fp32="none", route="gemm-late"))
    assert r.route.startswith("GEMM route for 1 convolution") and "checked on 32 inputs" in r.route
    assert sorted(int(np.unique(z)[0]) for z in weight_zero_points(onnx.load(str(tmp_path / "g.onnx")))) == [-1, 0]
    plain = quantize(fp32, tmp_path / "s.onnx", images(32), QuantConfig(keep_fp32="none"))
    assert plain.route == ""  # symmetric: nothing asked, nothing said
    trt = quantize(fp32, tmp_path / "t.onnx", images(32),
                   QuantConfig(keep_fp32="none", route="gemm-late", int8_target="tensorrt"))
    assert trt.route.startswith("GEMM route not applied") and "tensorrt" in trt.route
