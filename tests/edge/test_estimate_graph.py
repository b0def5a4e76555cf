"""The device's graph as the estimate rebuilds it: sizes the graph computes at run time, the NCHWc layout and its
reorders, convolutions whose channels the layout cannot take, data movement as kernels of their own, batch
sizes, and the warnings where something is not costed. Real onnxruntime sessions on tiny models."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerobust.edge.estimate.builder import Builder
from edgerobust.edge.estimate.calibrate import load_calibration
from edgerobust.edge.estimate.graph import nchwc_block
from edgerobust.edge.estimate.grid import Point, draw, micro_model
from edgerobust.edge.estimate.kernels import KINDS, extract, extract_noting
from edgerobust.edge.estimate.predict import EstimateConfig, estimate

HERE = nchwc_block("all")  # 16 on AVX-512, 8 on AVX2, 0 where onnxruntime has no NCHWc (ARM)


def _model(nodes, inits, x_shape, path):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _w(name, *shape):
    return numpy_helper.from_array((np.random.default_rng(0).standard_normal(shape) * 0.1).astype(np.float32), name)


def shuffle_net(path, c=16):
    """conv -> ShuffleNet's channel shuffle, its reshape targets computed from Shape at run time (as torch exports
    x.size() with a dynamic batch) -> conv: onnx's shape inference cannot size what follows the first Reshape."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Shape", ["a"], ["s"])]
    for i in range(4):
        nodes += [helper.make_node("Gather", ["s", f"i{i}"], [f"g{i}"], axis=0),
                  helper.make_node("Unsqueeze", [f"g{i}", "zero"], [f"u{i}"])]
    nodes += [helper.make_node("Div", ["g1", "two"], ["half"]), helper.make_node("Unsqueeze", ["half", "zero"], ["uh"]),
              helper.make_node("Concat", ["u0", "two1", "uh", "u2", "u3"], ["t5"], axis=0),
              helper.make_node("Reshape", ["a", "t5"], ["r5"]),
              helper.make_node("Transpose", ["r5"], ["tr"], perm=[0, 2, 1, 3, 4]),
              helper.make_node("Concat", ["u0", "minus1", "u2", "u3"], ["t4"], axis=0),
              helper.make_node("Reshape", ["tr", "t4"], ["b"]),
              helper.make_node("Conv", ["b", "w2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    inits = [_w("w1", c, 3, 3, 3), _w("w2", c, c, 3, 3), i64("zero", [0]), i64("two", 2), i64("two1", [2]),
             i64("minus1", [-1]), *(i64(f"i{i}", i) for i in range(4))]
    return _model(nodes, inits, ["n", 3, 8, 8], path)


def depthwise_net(path, c):
    """conv 1x1 -> depthwise 3x3 on ``c`` channels."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "w2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4, group=c)]
    return _model(nodes, [_w("w1", c, c, 1, 1), _w("w2", c, 1, 3, 3)], ["n", c, 8, 8], path)


def test_sizes_the_graph_computes_at_run_time_are_read_from_a_run(tmp_path):
    ks = extract(shuffle_net(tmp_path / "s.onnx"), "extended")
    convs = [k for k in ks if k.kind == "conv"]
    assert [(k.cin, k.cout, k.pixels) for k in convs] == [(3, 16, 64), (16, 16, 64)]  # not 1 pixel, 1 channel
    assert convs[1].macs == 16 * 16 * 9 * 64
    shuffle = next(k for k in ks if k.op == "Transpose")
    assert shuffle.kind == "transpose" and shuffle.bytes_in == shuffle.bytes_out == 16 * 64 * 4
    kinds = {k.op: k.kind for k in ks}
    assert kinds["Shape"] == kinds["Gather"] == kinds["Div"] == "scalar" and kinds["Reshape"] == "view"


def test_batch_multiplies_the_work_and_the_bytes(tmp_path):
    path = shuffle_net(tmp_path / "s.onnx")
    one, eight = extract(path, "extended"), extract(path, "extended", batch=8)
    assert [k.kind for k in one] == [k.kind for k in eight]
    for a, b in zip(one, eight):
        assert (b.macs, b.bytes_in, b.bytes_out) == (8 * a.macs, 8 * a.bytes_in, 8 * a.bytes_out) or a.kind in ("scalar", "view")
        assert b.bytes_w == a.bytes_w


@pytest.mark.skipif(HERE == 0, reason="this host's onnxruntime has no NCHWc layout")
def test_the_nchwc_layout_is_rebuilt_as_the_device_runs_it(tmp_path):
    path = depthwise_net(tmp_path / "d.onnx", 64)
    ks, note = extract_noting(path, "all", block=HERE)
    assert note is None and [k.kind for k in ks] == ["reorder", "pointwise", "depthwise", "reorder"]
    assert ks[0].op == "ReorderInput" and ks[-1].op == "ReorderOutput" and ks[0].bytes_in == 64 * 64 * 4
    plain, note = extract_noting(path, "all", block=0)  # a device without it (ARM): no reorders, nothing left out
    assert note is None and [k.kind for k in plain] == ["pointwise", "depthwise"]
    other, note = extract_noting(path, "all", block=HERE * 2)  # a device this host cannot rebuild: said
    assert "not costed" in note and f"blocks of {HERE * 2}" in note and [k.kind for k in other] == ["pointwise",
                                                                                                     "depthwise"]


@pytest.mark.skipif(HERE == 0, reason="this host's onnxruntime has no NCHWc layout")
def test_channels_the_layout_cannot_take_run_plain_and_are_their_own_kind(tmp_path):
    ks = extract(depthwise_net(tmp_path / "d.onnx", 58), "all", block=HERE)
    assert [k.kind for k in ks] == ["pointwise-nchw", "depthwise-nchw"] and ks[1].cin == 58
    assert all(k.kind in KINDS for k in ks)


def test_every_grid_point_is_a_model_the_runtime_splits_into_known_kinds():
    points = draw(0, scale=0.05)
    assert {p.kind for p in points} >= {"concat", "slice", "transpose", "quantize", "norm", "elementwise", "scalar",
                                        "resize", "memory"}
    for p in points:
        for dtype in ("fp32", "int8"):
            ks = extract(micro_model(p, dtype), "all")
            assert ks and all(k.kind in KINDS for k in ks)
            assert any(k.kind.removesuffix("-nchw") == p.kind for k in ks) or (dtype, p.kind) == (
                "int8", "elementwise")  # a Relu the int8 graph folds away


def test_builder_names_every_node_so_the_profiler_can_be_read():
    b = Builder("fp32", False)
    x = b.input([1, 4], TensorProto.FLOAT)
    m = onnx.load_from_string(b.model(b.node("Relu", [x])))
    assert all(n.name for n in m.graph.node)


@pytest.fixture(scope="module")
def tiny_calibration(tiny_calibration_file):
    return load_calibration(tiny_calibration_file[0])  # conftest: `calibrate` on a 0.05 grid, one pass


@pytest.mark.slow  # a tiny calibration of this host
def test_a_calibration_times_data_movement_and_layout_changes(tiny_calibration):
    cal = tiny_calibration
    keys = set(cal.fits)
    assert {"concat/fp32", "slice/fp32", "transpose/int8", "quantize/int8", "norm/fp32", "scalar/fp32"} <= keys
    assert cal.nchwc_block == HERE and (HERE == 0 or "reorder/fp32" in keys)  # timed around the grid's convolutions
    assert all(s.cold_us is None for s in cal.samples if s.kind in ("reorder", "quantize", "transpose"))


@pytest.mark.slow  # a tiny calibration of this host
def test_what_the_calibration_cannot_cost_is_named_and_the_band_is_finite(tiny_calibration, tmp_path):
    import dataclasses

    path = shuffle_net(tmp_path / "s.onnx")
    e = estimate(EstimateConfig(tiny_calibration, {"base": path}, batch=8))
    m = e.model("base")
    assert e.batch_size == 8 and m.batch_size == 8 and np.isfinite(m.high_ms) and m.low_ms <= m.p50_ms <= m.high_ms
    one = estimate(EstimateConfig(tiny_calibration, {"base": path})).model("base")
    assert m.p50_ms > one.p50_ms  # eight images cost more than one
    fits = {k: v for k, v in tiny_calibration.fits.items() if not k.startswith("transpose/")}
    e = estimate(EstimateConfig(dataclasses.replace(tiny_calibration, fits=fits), {"base": path}))
    assert e.model("base").uncosted == ("transpose fp32 (uncosted)",)
    assert any("transpose fp32 (uncosted)" in w and "lower bound" in w for w in e.warnings)
    if HERE:
        e = estimate(EstimateConfig(dataclasses.replace(tiny_calibration, nchwc_block=HERE * 2), {"base": path}))
        assert any("not costed" in w and "lower bound" in w for w in e.warnings)
    with pytest.raises(Exception, match="batch size"):
        EstimateConfig(tiny_calibration, {"base": path}, batch=0)


@pytest.mark.slow  # a tiny calibration of this host
def test_the_calibrations_own_networks_are_whole_models_and_give_the_band(tiny_calibration, tmp_path):
    import dataclasses

    from edgerobust.edge.estimate.composed import composed_model, model_errors

    for seed in range(4):  # blocks of real classifiers: convolutions, and data movement between them
        kinds = {k.kind for k in extract(composed_model(seed, "int8"), "all")}
        assert {"conv", "linear", "quantize"} <= kinds
    assert {len(p) for p in tiny_calibration.composed.values()} == {2} and set(tiny_calibration.composed) == {
        "fp32", "int8", "fp32/8", "int8/8"}  # a tiny calibration times two per precision and batch: too few for a band
    assert {k.batch for k in extract(composed_model(0, "fp32", batch=8), "all")} == {8}
    path = shuffle_net(tmp_path / "s.onnx")
    assert estimate(EstimateConfig(tiny_calibration, {"base": path})).model("base").band_from == "kernels"
    pairs = [[1.0, m] for m in (0.8, 0.9, 1.0, 1.0, 1.1, 1.25)]  # predicted 1 ms; measured 0.8-1.25 ms
    cal = dataclasses.replace(tiny_calibration, composed={"fp32": pairs, "int8": pairs})
    m = estimate(EstimateConfig(cal, {"base": path})).model("base")
    e = model_errors(pairs)
    assert m.band_from == "networks fp32" and e["n"] == 6 and e["low"] < 0 < e["high"]
    assert m.low_ms == pytest.approx(m.p50_ms / (1 + e["high"])) and m.high_ms == pytest.approx(m.p50_ms / (1 + e["low"]))
    slow = [[1.0, 2 * m] for m in (0.8, 0.9, 1.0, 1.0, 1.1, 1.25)]  # at batch 8 the networks ran twice as long
    cal = dataclasses.replace(tiny_calibration, composed={"fp32": pairs, "fp32/8": slow})
    at8 = estimate(EstimateConfig(cal, {"base": path}, batch=8)).model("base")
    assert at8.band_from == "networks fp32/8" and at8.high_ms > 1.5 * at8.p50_ms
    at4 = estimate(EstimateConfig(cal, {"base": path}, batch=4)).model("base")  # nearer 8 than 1, in ratio
    assert at4.band_from == "networks fp32/8"


@pytest.mark.slow  # a tiny calibration of this host
def test_linear_layers_over_many_rows_are_said_to_be_extrapolated(tiny_calibration, tmp_path):
    """ConvNeXt's MLPs multiply every pixel's channels: the grid's go to 4096 rows per image (64 px), not 5000."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = _model(nodes, [_w("w", 64, 32)], [1, 5000, 64], tmp_path / "mlp.onnx")
    e = estimate(EstimateConfig(tiny_calibration, {"base": path}))
    assert e.model("base").linear_rows == 5000
    assert any("5000 rows" in w and "extrapolated" in w and "uncertain" in w for w in e.warnings)
    inside = _model(nodes, [_w("w", 64, 32)], [1, 1024, 64], tmp_path / "mlp32.onnx")  # 32 px: inside the grid
    assert not [w for w in estimate(EstimateConfig(tiny_calibration, {"base": inside})).warnings if "rows" in w]
    head = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_w("w", 64, 32)], [1, 64], tmp_path / "h.onnx")
    head_warnings = estimate(EstimateConfig(tiny_calibration, {"base": head})).warnings
    assert not [w for w in head_warnings if "rows" in w]  # a classifier's head: one row


@pytest.mark.parametrize("batch_dim", [1, "N"])
def test_an_mlp_over_every_pixel_keeps_its_rows_whether_or_not_the_runtime_fuses_its_bias(tmp_path, batch_dim):
    """ConvNeXt's Linear on a channels-last image: MatMul + bias. With every size fixed onnxruntime fuses the two into
    a Gemm between two Reshapes; with a dynamic batch it keeps the MatMul. Either way 8 x 256 rows are multiplied."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    b = numpy_helper.from_array(np.zeros(32, np.float32), "b")
    path = _model(nodes, [_w("w", 64, 32), b], [batch_dim, 16, 16, 64], tmp_path / "mlp.onnx")
    ks = extract(path, "all", batch=8)
    (lin,) = [k for k in ks if k.kind == "linear"]
    assert (lin.pixels, lin.cin, lin.cout, lin.batch) == (8 * 256 if batch_dim == "N" else 256, 64, 32,
                                                          8 if batch_dim == "N" else 1)
    assert lin.macs == lin.pixels * 64 * 32
    assert all(k.batch == lin.batch for k in ks)


@pytest.mark.skipif(not HERE, reason="this host's onnxruntime has no NCHWc layout")
def test_a_convolution_after_a_channels_last_layernorm_is_sized_as_nchw(tmp_path):
    """ConvNeXt's downsampling: permute -> LayerNorm over channels -> permute back -> Conv 2x2 stride 2. On an
    NCHWc host the runtime reads the channels-last tensor straight into its blocked layout (ReorderInput with
    channels_last): the convolution sees 16 channels on 8x8 pixels, not 8 channels on 8x16."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["t", "g", "b"], ["n"], axis=-1),
             helper.make_node("Transpose", ["n"], ["u"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["u", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    inits = [numpy_helper.from_array(np.ones(16, np.float32), "g"), numpy_helper.from_array(np.zeros(16, np.float32), "b"),
             _w("w", 32, 16, 2, 2)]
    ks = extract(_model(nodes, inits, ["N", 16, 8, 8], tmp_path / "down.onnx"), "all")
    assert "ReorderInput" in {k.op for k in ks}
    (conv,) = [k for k in ks if k.kind == "conv"]
    assert (conv.cin, conv.cout, conv.pixels, conv.k, conv.stride) == (16, 32, 16, 2, 2)  # 4x4 out
    assert conv.macs == 32 * 16 * 16 * 4


def test_the_grid_times_a_share_of_its_points_at_a_batch_of_8_and_mlps_over_many_rows():
    pts = draw()
    batched = [p for p in pts if p.n == 8]
    assert 0.2 < len(batched) / len(pts) < 0.4 and {p.kind for p in batched} >= {"conv", "depthwise", "concat"}
    assert not [p for p in pts if p.n != 1 and p.kind in ("scalar", "view")]
    rows = [p.h for p in pts if p.kind == "linear"]
    assert min(rows) == 1 and max(rows) > 1000
    p = next(p for p in batched if p.kind == "linear" and p.h > 1)
    ks = extract(micro_model(p, "fp32"), "all", batch=p.n)
    assert [k.op for k in ks if k.kind == "linear"] == ["MatMul"] and ks[0].pixels == p.n * p.h


def test_a_broadcast_takes_the_larger_shape_whichever_input_comes_first():
    """Squeeze-excite in an int8 model: QLinearMul(gate [1, c, 1, 1], x [1, c, 8, 8]), a tensor the runtime made
    (no shape in the original graph); the convolution after it sees 8x8 pixels, not one."""
    b = Builder("int8", False)
    x = b.activation_in([1, 16, 8, 8])
    gate = b.qdq(b.node("Sigmoid", [b.qdq(b.node("GlobalAveragePool", [x]))]))
    y = b.qdq(b.node("Mul", [gate, x]))
    model = b.model(b.node("Conv", [y, b.weight([16, 16, 1, 1]), b.bias(16)], kernel_shape=[1, 1]))
    ks = extract(model, "all")
    conv = next(k for k in ks if k.kind == "pointwise")
    assert conv.pixels == 64 and conv.macs == 16 * 16 * 64
    assert [k.op for k in ks if k.kind == "elementwise"] == ["QLinearMul"]


@pytest.mark.parametrize("dtype,op", [("fp32", None), ("int8", "QLinearConv")])
def test_a_grouped_convolution_is_its_own_kind_with_its_groups(dtype, op):
    """RegNet's 3x3 with 16 channels per group: not a dense k×k (a loop over 5 small convolutions), not depthwise."""
    b = Builder(dtype, False)
    y = b.node("Conv", [b.activation_in([1, 80, 8, 8]), b.weight([80, 16, 3, 3]), b.bias(80)], kernel_shape=[3, 3],
               pads=[1] * 4, group=5)
    (k,) = [k for k in extract(b.model(y), "all", block=HERE) if k.kind.startswith("grouped")]
    assert k.groups == 5 and k.cin == 80 and k.cout == 80 and k.macs == 80 * 16 * 9 * 64
    assert op is None or k.op == op


def test_a_depthwise_convolution_with_a_channel_multiplier_stays_depthwise():
    b = Builder("fp32", False)  # one input channel per group, two outputs each
    y = b.node("Conv", [b.activation_in([1, 16, 8, 8]), b.weight([32, 1, 3, 3]), b.bias(32)], kernel_shape=[3, 3],
               pads=[1] * 4, group=16)
    (k,) = [k for k in extract(b.model(y), "all", block=HERE) if "conv" not in k.kind and k.macs]
    assert k.kind.startswith("depthwise") and k.macs == 32 * 9 * 64


@pytest.mark.parametrize("dtype,op", [("fp32", "AveragePool"), ("int8", "QLinearAveragePool")])
def test_a_windowed_average_pool_is_not_costed_as_a_max_pool(dtype, op):
    p = Point("avgpool", 64, 0, 16, 2, 2, "AveragePool")  # DenseNet's transition
    ks = [k for k in extract(micro_model(p, dtype), "all") if k.kind in ("pool", "avgpool")]
    assert [(k.kind, k.op, k.pixels, k.cin) for k in ks] == [("avgpool", op, 64, 64)]
    glob = Point("pool", 64, 0, 16, 3, 1, "GlobalAveragePool")
    assert [k.kind for k in extract(micro_model(glob, dtype), "all") if "pool" in k.kind] == ["pool"]
    b = Builder(dtype, False)  # AvgPool2d(7) on 7x7, as older exports write a global average
    whole = b.model(b.node("AveragePool", [b.activation_in([1, 64, 7, 7])], kernel_shape=[7, 7]))
    assert [k.kind for k in extract(whole, "all") if "pool" in k.kind] == ["pool"]


def test_a_concatenation_counts_its_inputs_and_int8_requantizes_each():
    p = Point("concat", 16, 0, 8, 12)  # DenseNet: every earlier layer's output
    for dtype in ("fp32", "int8"):
        (k,) = [k for k in extract(micro_model(p, dtype), "all") if k.kind == "concat"]
        assert k.k == 12 and k.bytes_out == 12 * 16 * 64 * (4 if dtype == "fp32" else 1)
    m = onnx.load_from_string(micro_model(p, "int8"))
    inits = {t.name: float(numpy_helper.to_array(t)) for t in m.graph.initializer if t.name.startswith("s")}
    made = {o: n for n in m.graph.node for o in n.output}
    (cat,) = [n for n in m.graph.node if n.op_type == "Concat"]
    (out,) = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == cat.output[0]]
    scales = [inits[made[i].input[1]] for i in cat.input]
    # a scale per input, none the output's, as a quantizer leaves a model: QLinearConcat requantizes every one
    assert len(set(scales)) == 12 and inits[out.input[1]] not in scales


def test_the_grid_has_grouped_convolutions_and_windowed_average_pools():
    pts = draw()
    grouped = [p for p in pts if p.kind == "grouped"]
    assert len(grouped) >= 20 and all(p.c == p.cout and p.c % p.groups == 0 and 1 < p.groups < p.c for p in grouped)
    assert {p.c // p.groups for p in grouped} >= {8, 16, 32, 64}
    assert {(p.k, p.stride) for p in pts if p.kind == "avgpool"} == {(2, 2), (3, 1)}
    assert max(p.k for p in pts if p.kind == "concat") == 48


def test_a_kind_a_small_grid_did_not_draw_takes_a_faster_stand_in_and_is_said():
    from edgerobust.edge.estimate.predict import uncosted_warning
    from edgerobust.edge.estimate.sumup import fit_key

    fits = {"conv/int8": {}, "pool/fp32": {}, "grouped/fp32": {}, "concat/fp32": {}}
    assert fit_key(fits, "grouped", "int8") == ("conv/int8", "grouped as conv")
    assert fit_key(fits, "avgpool", "fp32") == ("pool/fp32", "avgpool as pool")
    assert fit_key(fits, "grouped-nchw", "fp32") == ("grouped/fp32", "grouped-nchw as grouped")
    assert fit_key(fits, "grouped", "fp32") == ("grouped/fp32", None)
    assert fit_key(fits, "avgpool", "int8") == (None, None)  # nothing near: the precision is missing, said so
    assert fit_key(fits, "concat", "int8") == ("concat/fp32", "concat int8 as fp32")

    class M:
        role, p50_ms, layout = "deployed", 1.0, None
        uncosted = ("concat int8 as fp32", "grouped as conv")

    line = uncosted_warning(M())
    assert "grouped as conv" in line and "concat int8" not in line and "lower bound" in line


def test_the_grid_times_an_int8_pad_on_quantized_values_as_the_int8_stem_runs_it():
    pads = [p for p in draw(0) if p.kind == "memory" and p.op == "Pad"]
    assert any(p.c == 3 and p.h >= 32 for p in pads) and any(p.c > 3 for p in pads)  # stem-shaped and inner ones
    stem = Point("memory", 3, 0, 64, op="Pad")
    [pad] = [k for k in extract(micro_model(stem, "int8"), "all") if k.kind == "memory"]
    assert (pad.dtype, pad.op) == ("int8", "Pad")  # on uint8 values, not dequantized, padded and quantized again
    assert (pad.bytes_in, pad.bytes_out) == (3 * 64 * 64, 4 * 70 * 70)  # 3 channels padded to 4, 3 px a side
    [pad] = extract(micro_model(stem, "fp32"), "all")
    assert (pad.kind, pad.dtype, pad.bytes_out) == ("memory", "fp32", 4 * 4 * 70 * 70)


def test_the_grid_times_gelu_and_layer_norms_as_convnext_runs_them_often_enough_for_fits_of_their_own():
    pts = draw(0)
    from edgerobust.edge.estimate.fit import OP_POINTS

    assert sum(p.op == "Gelu" for p in pts) >= OP_POINTS and sum(p.op == "LayerNormalization" for p in pts) >= OP_POINTS
    gelu = Point("elementwise", 64, 0, 16, op="Gelu")
    fp32 = extract(micro_model(gelu, "fp32"), "all")
    assert [(k.kind, k.op) for k in fp32] == [("elementwise", "Gelu")]  # torch's five nodes, fused into one
    int8 = [(k.kind, k.op) for k in extract(micro_model(gelu, "int8"), "all") if k.kind == "elementwise"]
    # a quantized ConvNeXt's GELU: Div and Erf in float, the add and the two products on quantized values
    assert sorted(int8) == sorted([("elementwise", op) for op in ("Div", "Erf", "QLinearAdd", "QLinearMul",
                                                                  "QLinearMul")])


def test_the_calibrations_int8_networks_run_on_integer_kernels_as_a_bundle_does():
    """A quantizer leaves every tensor quantized and each bias at its input's scale times its weights': onnxruntime
    then runs every layer on its integer kernels. A network that left a split's outputs or a bias at another scale
    ran float convolutions on weights dequantized at every run, which no bundle does, and its error widened the band
    of every int8 estimate."""
    from edgerobust.edge.estimate.composed import composed_model
    from edgerobust.edge.estimate.kernels import WEIGHTED

    kinds = set()
    for seed in range(24):
        kernels = extract(composed_model(seed, "int8"), "all")
        assert {k.dtype for k in kernels if k.kind in WEIGHTED} == {"int8"}, seed
        kinds |= {k.kind for k in kernels}
    assert {"concat", "transpose", "norm"} <= kinds  # ShuffleNet's and DenseNet's blocks are there


def test_a_bias_is_quantized_at_its_inputs_scale_times_its_weights():
    b = Builder("int8", False)
    x = b.qdq(b.input([1, 8, 4, 4], TensorProto.FLOAT), 0.04)
    bias = b.bias(8, x)
    node = next(n for n in b.nodes if n.output[0] == bias)
    scale = next(i for i in b.inits if i.name == node.input[1])
    assert numpy_helper.to_array(scale).tolist() == pytest.approx([0.04 * 0.01] * 8)


def test_a_split_after_a_channels_last_int8_convolution_is_sized():
    """onnxruntime moves a split after a channels-last int8 convolution onto the last axis and names its outputs
    anew: the original model's inference never saw them. Unsized, every kernel after it (the shuffle unit's
    convolutions, its concatenation and channel shuffle) was costed as an empty one, and the calibration's int8
    networks with a shuffle unit were predicted up to 2.5 times too fast."""
    from edgerobust.edge.estimate.composed import composed_model
    from edgerobust.edge.estimate.kernels import MOVES

    shuffled = 0
    for seed in range(12):
        kernels = extract(composed_model(seed, "int8", batch=2), "all")
        shuffled += any(k.op == "Split" for k in kernels)
        for k in kernels:
            if k.kind.removesuffix("-nchw") in ("conv", "pointwise", "depthwise", "grouped"):
                assert k.cin > 0 and k.pixels >= 2 and k.pixels % 2 == 0, (seed, k)
            elif k.kind in MOVES and k.op != "DequantizeLinear":
                assert k.bytes_in > 0 and k.bytes_out > 0, (seed, k)
    assert shuffled >= 3


def test_a_transpose_the_runtime_runs_element_by_element_is_a_kind_of_its_own(tiny_calibration, tmp_path):
    """A channel shuffle after a channels-last int8 convolution becomes, in the runtime's graph, a five-dimensional
    transpose that moves the innermost axis: onnxruntime gathers it element by element, tens of times slower per
    byte than the shuffle the grid timed before. The grid times it now; a calibration without it costs it as a
    shuffle, too fast, and says so."""
    import dataclasses

    from edgerobust.edge.estimate.composed import composed_model
    from edgerobust.edge.estimate.graph import gathers
    from edgerobust.edge.estimate.predict import uncosted_warning

    assert gathers((0, 4, 3, 1, 2)) and gathers((0, 3, 4, 1, 2)) and gathers((2, 1, 0)) and gathers((), 3)
    # innermost axis kept (block copies), or a single axis moved (the runtime's fast paths: NCHW <-> NHWC)
    assert not any(map(gathers, [(0, 2, 1, 3, 4), (0, 2, 3, 1), (0, 3, 1, 2), (1, 0), (0, 1, 3, 2), (0, 2, 1, 3)]))
    point = Point("transpose", 16, 0, 8, op="gather", n=2)
    for dtype in ("fp32", "int8"):
        [k] = [k for k in extract(micro_model(point, dtype), "all") if k.op == "Transpose"]
        assert (k.kind, k.dtype, k.bytes_in) == ("transpose-gather", dtype, 2 * 16 * 8 * 8 * (1 if dtype == "int8" else 4))
    assert sum(p.op == "gather" for p in draw(0)) >= 6
    nets = [composed_model(seed, "int8") for seed in range(8)]
    assert any(k.kind == "transpose-gather" for net in nets for k in extract(net, "all"))  # the calibration's networks have it
    path = tmp_path / "g.onnx"
    path.write_bytes(micro_model(point, "int8"))
    before = dataclasses.replace(tiny_calibration, fits={k: v for k, v in tiny_calibration.fits.items()
                                                         if not k.startswith("transpose-gather")})
    m = estimate(EstimateConfig(before, {"base": path})).model("base")
    assert "transpose-gather as transpose" in m.uncosted and "lower bound" in uncosted_warning(m)
    slow = {"features": ["act", "n"], "coef": [0.0, 1e-3, 0.0], "n_fit": 7, "holdout": {"n": 0}}  # 1 ns a byte
    timed = dataclasses.replace(before, fits={**before.fits, "transpose-gather/fp32": slow})
    m2 = estimate(EstimateConfig(timed, {"base": path})).model("base")  # int8's missing: fp32's fit, not a shuffle's
    assert "transpose-gather int8 as fp32" in m2.uncosted and uncosted_warning(m2) is None
    assert m2.by_kind["transpose-gather"] == pytest.approx(2 * 16 * 8 * 8 * 2 * 1e-6, rel=0.02)  # ms, 4 decimals
