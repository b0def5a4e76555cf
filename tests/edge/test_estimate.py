"""Latency estimates for devices not at hand: kernels from the runtime's own graph, a tiny calibration on real
onnxruntime sessions, the fit, the prediction and its labels, and the CLI (`calibrate`, `audit`/`profile
--estimate`)."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from edgerobust.edge.estimate import fit as F
from edgerobust.edge.estimate.calibrate import CalibrateConfig, Sample, calibrate, load_calibration
from edgerobust.edge.estimate.grid import residual_model
from edgerobust.edge.estimate.kernels import Kernel, extract
from edgerobust.edge.estimate.predict import EstimateConfig, estimate
from edgerobust.edge.estimate.kernels import WEIGHTED
from edgerobust.edge.estimate.timing import cold_share, last_level_cache_bytes
from edgerobust.errors import UsageError
from onnx_models import make_bundle, write_profile

runner = CliRunner()


def small_cnn(path, seed=0):
    """3x16x16 -> conv 3x3 s2 (16) -> depthwise 3x3 -> pointwise (32) -> conv 3x3 + residual add -> pool -> fc 10."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), f"w{len(inits)}")

    inits, nodes = [], []

    def conv(x, cout, cin, k, stride=1, group=1, relu=True):
        inits.append(w(cout, cin // group, k, k))
        y = f"c{len(nodes)}"
        nodes.append(helper.make_node("Conv", [x, inits[-1].name], [y], kernel_shape=[k, k], strides=[stride] * 2,
                                      pads=[k // 2] * 4, group=group))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            y += "r"
        return y

    a = conv("input", 16, 3, 3, stride=2)
    b = conv(a, 16, 16, 3, group=16)
    c = conv(b, 32, 16, 1)
    d = conv(c, 32, 32, 3, relu=False)
    nodes += [helper.make_node("Add", [d, c], ["sum"]), helper.make_node("Relu", ["sum"], ["sr"]),
              helper.make_node("GlobalAveragePool", ["sr"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"])]
    inits.append(w(10, 32))
    nodes.append(helper.make_node("Gemm", ["flat", inits[-1].name], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def int8_cnn(src, dst):
    """The CNN quantized as compress does for the CPU: static QDQ, per-channel int8 weights, uint8 activations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"input": np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32)}
                                for i in range(4))

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    fp32 = small_cnn(d / "fp32.onnx")
    return {"fp32": fp32, "int8": int8_cnn(fp32, d / "int8.onnx")}


@pytest.fixture(scope="module")
def profile(estimate_profile):
    return estimate_profile


@pytest.fixture(scope="module")
def calibration(tiny_calibration_file):
    """A tiny calibration of this host through the CLI (conftest): its file."""
    out, stdout = tiny_calibration_file
    assert "Calibration of" in stdout and "conv/int8" in stdout and "held-out" in stdout
    return out


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setattr(ui.out, "width", 200)


COMPUTE = ("conv", "depthwise", "pointwise", "add", "pool", "linear")


def test_kernels_of_a_small_cnn_as_the_runtime_fuses_it(cnn):
    ks = extract(cnn["fp32"], "extended")
    kinds = [k.kind for k in ks]
    assert kinds == ["conv", "depthwise", "pointwise", "conv", "add", "elementwise", "pool", "view", "linear"]
    macs = {k.kind: k.macs for k in ks if k.kind != "conv"} | {"stem": ks[0].macs, "conv": ks[3].macs}
    assert macs == {"stem": 16 * 64 * 3 * 9, "depthwise": 16 * 64 * 9, "pointwise": 32 * 64 * 16,
                    "conv": 32 * 64 * 32 * 9, "add": 0, "elementwise": 0, "pool": 32 * 64, "view": 0, "linear": 320}
    assert ks[0].op == "FusedConv" and ks[3].op == "Conv"  # the Relu went into the conv it follows
    assert ks[0].bytes_in == 3 * 16 * 16 * 4 and ks[0].bytes_out == 16 * 8 * 8 * 4 and ks[0].stride == 2
    fused = extract(cnn["fp32"], "all", fuses_add=True)  # the residual add and its Relu run inside the conv
    assert [k.kind for k in fused if k.kind in COMPUTE] == ["conv", "depthwise", "pointwise", "conv", "pool", "linear"]


def test_int8_kernels_are_the_runtimes_integer_ops_with_the_same_work(cnn):
    f32 = [k for k in extract(cnn["fp32"], "extended") if k.kind in ("conv", "depthwise", "pointwise")]
    i8 = [k for k in extract(cnn["int8"], "extended") if k.kind in ("conv", "depthwise", "pointwise")]
    assert [k.op for k in i8] == ["QLinearConv"] * 4 and {k.dtype for k in i8} == {"int8"}
    assert [k.macs for k in i8] == [k.macs for k in f32] and [k.kind for k in i8] == [k.kind for k in f32]
    assert all(a.bytes_out == b.bytes_out / 4 and a.bytes_w == b.bytes_w / 4 for a, b in zip(i8, f32))
    adds = [k for k in extract(cnn["int8"], "all", fuses_add=True) if k.kind == "add"]
    assert [k.op for k in adds] == ["QLinearAdd"]  # int8 residual adds stay their own kernel
    moves = {k.kind for k in extract(cnn["int8"], "all")}  # the quantize nodes at the float edges, the layout
    assert "quantize" in moves and "transpose" in moves  # changes around the channels-last int8 convolutions


def test_residual_model_fuses_on_this_runtime():
    ks = extract(residual_model(), "all", fuses_add=True)
    assert [k.kind for k in ks if k.kind in COMPUTE] == ["conv", "conv"]


def _samples(macs, us, split="fit"):
    return [Sample("conv", "fp32", split, {}, {"macs": m, "cout": 1, "bytes_in": 0, "bytes_out": 0, "bytes_w": 0}, t)
            for m, t in zip(macs, us)]


def test_fit_tells_a_cost_per_image_from_a_cost_per_run_once_the_grid_has_two_batch_sizes():
    """A batch of 8 small images is not one image of 8 times the pixels: each image pays a setup of its own."""
    macs = np.geomspace(1e4, 1e7, 24)
    batch = [1, 8] * 12
    law = [3 + 2 * n + 1e-3 * m for m, n in zip(macs, batch)]
    samples = [Sample("depthwise", "fp32", "fit", {}, {"macs": m, "bytes_in": 0, "bytes_out": 0, "batch": n}, t)
               for m, n, t in zip(macs, batch, law)]
    fit = F.fit_all(samples)["depthwise/fp32"]
    k = {"macs": 8e5, "bytes_in": 0, "bytes_out": 0}
    assert F.predict_us(fit, {**k, "batch": 8}) == pytest.approx(3 + 16 + 800, rel=1e-6)
    assert F.predict_us(fit, {**k, "batch": 1}) == pytest.approx(3 + 2 + 800, rel=1e-6)  # an old kernel: batch 1
    assert F.predict_us(fit, k) == pytest.approx(805, rel=1e-6)


def test_fit_costs_each_group_per_image_and_each_input_of_a_concatenation():
    """A grouped convolution runs one small convolution per group and image; QLinearConcat a table per input."""
    rng = np.random.default_rng(0)
    ks = [{"macs": float(m), "cout": 64, "bytes_in": 0, "bytes_out": 0, "bytes_w": 0, "batch": int(n), "groups": int(g)}
          for m, n, g in zip(np.geomspace(1e4, 1e7, 30), rng.choice([1, 8], 30), rng.choice([2, 5, 16, 40], 30))]
    law = lambda k: 2 + 1e-3 * k["macs"] + 0.5 * k["groups"] * k["batch"]  # noqa: E731
    fit = F.fit_all([Sample("grouped", "int8", "fit", {}, k, law(k)) for k in ks])["grouped/int8"]
    k = {"macs": 1e5, "cout": 64, "bytes_in": 0, "bytes_out": 0, "bytes_w": 0, "batch": 8, "groups": 25}
    assert F.predict_us(fit, k) == pytest.approx(2 + 100 + 0.5 * 25 * 8, rel=1e-6)
    cs = [{"bytes_in": float(b), "bytes_out": float(b), "batch": 1, "k": int(i)}
          for b, i in zip(np.geomspace(1e3, 1e6, 20), [2, 3, 6, 12, 24] * 4)]
    fit = F.fit_all([Sample("concat", "int8", "fit", {}, c, 1 + 1e-4 * c["bytes_in"] + 2 * c["k"]) for c in cs])
    assert F.predict_us(fit["concat/int8"], {"bytes_in": 5e4, "bytes_out": 5e4, "batch": 1, "k": 20}) == \
        pytest.approx(1 + 5 + 40, rel=1e-6)  # 1e-4 per byte read: 5e-5 per byte read or written


def test_fit_costs_a_grouped_convolution_per_group_and_output_position():
    """onnxruntime's int8 grouped convolution runs one small GEMM per group and image, each row of it (an output
    position) paying more than its few MACs: narrow groups cost 15x more per MAC than wide ones."""
    rng = np.random.default_rng(1)
    ks = []
    for _ in range(30):
        g, width, px = int(rng.choice([2, 4, 10, 25])), int(rng.choice([8, 16, 48])), int(rng.choice([16, 64, 512]))
        ks.append({"macs": float(g * width * width * 9 * px), "cout": g * width, "bytes_in": 0, "bytes_out": 0,
                   "bytes_w": 0, "batch": 1, "groups": g, "pixels": px})
    law = lambda k: 2 + 0.035 * k["groups"] * k["pixels"] + 2e-6 * k["macs"]  # noqa: E731
    fit = F.fit_all([Sample("grouped", "int8", "fit", {}, k, law(k)) for k in ks])["grouped/int8"]
    narrow = {"macs": 10 * 8 * 8 * 9 * 512.0, "cout": 80, "bytes_in": 0, "bytes_out": 0, "bytes_w": 0, "batch": 8,
              "groups": 10, "pixels": 512}  # regnet_x_400mf's 80 channels in groups of 8, 8 images of 8x8
    assert F.predict_us(fit, narrow) == pytest.approx(law(narrow), rel=1e-3)


def test_fit_recovers_a_linear_law_and_its_band_is_the_held_out_error():
    macs = np.geomspace(1e4, 1e8, 20)
    fits = F.fit_all(_samples(macs, 4 + 1e-3 * macs) + _samples([5e6], [(4 + 5e3) * 1.25], "holdout"))
    fit = fits["conv/fp32"]
    assert fit["coef"][0] == pytest.approx(4, rel=1e-6) and fit["n_fit"] == 20
    assert F.predict_us(fit, {"macs": 1e6, "cout": 1, "bytes_in": 0, "bytes_out": 0, "bytes_w": 0}) == pytest.approx(1004)
    h = fit["holdout"]  # the held-out kernel ran 25% slower than the law: predicted 20% low
    assert h["n"] == 1 and h["low"] == h["high"] == pytest.approx(-0.2) and h["within20"] == 1.0
    low, high = F.band(fits, {"conv/fp32": 100.0})  # the truth 25% above the prediction; the band holds both
    assert low == pytest.approx(100.0) and high == pytest.approx(125.0)


def test_a_kind_with_few_points_gets_a_fit_of_few_coefficients():
    """Three points and six coefficients fit every point exactly and predict nonsense between them: a kind with
    few points (a plain convolution on a blocked-layout device) is fitted on its strongest feature alone."""
    ks = [{"macs": m, "cout": c, "bytes_in": a, "bytes_out": a, "bytes_w": w, "batch": 1}
          for m, c, a, w in ((2e6, 16, 4e4, 9e3), (8e6, 64, 3e4, 4e4), (3e7, 32, 2e5, 2e4))]
    law = [1e-4 * k["macs"] * f for k, f in zip(ks, (0.9, 1.2, 1.0))]  # work-bound, with 20% noise
    fit = F.fit_all([Sample("conv-nchw", "fp32", "fit", {}, k, t) for k, t in zip(ks, law)])["conv-nchw/fp32"]
    assert sum(c != 0 for c in fit["coef"]) == 1 and fit["coef"][1] > 0  # macs alone
    k = {"macs": 5e6, "cout": 32, "bytes_in": 6e5, "bytes_out": 6e5, "bytes_w": 1e5, "batch": 1}
    assert F.predict_us(fit, k) == pytest.approx(500, rel=0.25)
    assert F.nnls(np.eye(3), np.ones(3), most=1).tolist().count(0.0) == 2  # one column of three
    assert F.nnls(np.eye(3), np.ones(3)).tolist() == [1, 1, 1]


def test_ops_of_an_elementwise_kind_get_fits_of_their_own_and_kernels_take_them():
    """A Relu and an Erf both move bytes, at costs per byte fivefold apart: one fit of the kind averages them and
    mispredicts both; each op met often enough gets its own, and a kernel of that op takes it."""
    from edgerobust.edge.estimate.sumup import fit_key, kernel_sum

    per_byte = {"Relu": 1e-5, "Erf": 5e-5, "Sigmoid": 3e-5}
    drawn = {"Relu": 10, "Erf": 8, "Sigmoid": F.OP_POINTS - 1}  # Sigmoid one point short of a fit of its own
    samples = [Sample("elementwise", "fp32", "fit", {}, {"op": op, "bytes_in": b, "bytes_out": b, "batch": 1},
                      1 + per_byte[op] * 2 * b)
               for op, n in drawn.items() for b in np.geomspace(1e4, 1e7, n)]
    held = {"op": "Relu", "bytes_in": 5e5, "bytes_out": 5e5, "batch": 1}  # ran 25% slower than Relu's law
    samples.append(Sample("elementwise", "fp32", "holdout", {}, held, (1 + 1e-5 * 1e6) * 1.25))
    fits = F.fit_all(samples)
    assert {"elementwise:Relu/fp32", "elementwise:Erf/fp32", "elementwise/fp32"} <= set(fits)
    assert "elementwise:Sigmoid/fp32" not in fits
    assert fits["elementwise:Relu/fp32"]["holdout"]["low"] == pytest.approx(-0.2)  # its own held-out point
    erf = fits["elementwise:Erf/fp32"]["holdout"]  # none of its own: the kind's error bounds its band
    assert erf["from"] == "elementwise/fp32" and erf["low"] == fits["elementwise/fp32"]["holdout"]["low"] != 0
    assert fit_key(fits, "elementwise", "fp32", "Erf") == ("elementwise:Erf/fp32", None)
    assert fit_key(fits, "elementwise", "fp32", "Sigmoid") == ("elementwise/fp32", None)  # the kind's
    # no int8 fit at all: the kind's fp32 fit stands in, said (never another precision's op fit silently)
    assert fit_key(fits, "elementwise", "int8", "Erf") == ("elementwise/fp32", "elementwise int8 as fp32")
    k = {"bytes_in": 1e6, "bytes_out": 1e6, "batch": 1}
    for op in ("Relu", "Erf"):
        assert F.predict_us(fits[F.op_key("elementwise", op, "fp32")], k) == pytest.approx(1 + per_byte[op] * 2e6,
                                                                                        rel=1e-6)
    erf = Kernel("elementwise", "fp32", "Erf", bytes_in=1e6, bytes_out=1e6)
    s = kernel_sum(fits, {}, [erf])
    assert set(s.per_key) == {"elementwise:Erf/fp32"} and s.us == pytest.approx(101, rel=1e-6)
    assert s.by_kind == {"elementwise": pytest.approx(0.101, rel=1e-6)}  # still counted under its kind


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_calibration_file_round_trips_and_is_small(calibration):
    cal = load_calibration(calibration)
    assert cal.timing == "nodes" and cal.dtypes == ("fp32", "int8") and cal.fuses_add
    compute = {f"{k}/{d}" for k in ("conv", "pointwise", "depthwise", "linear") for d in ("fp32", "int8")}
    assert {"grouped/int8", "avgpool/fp32", "avgpool/int8"} <= set(cal.fits)  # fp32's grouped may all run plain
    kinds = {k for k in cal.fits if ":" not in k}  # an op of an elementwise or norm kind may have a fit of its own
    assert compute | {f"{k}/cold" for k in compute} <= kinds and kinds <= {
        f"{k}/{d}{c}" for k in F.FEATURES for d in ("fp32", "int8") for c in ("", "/cold")}
    for key in set(cal.fits) - kinds:  # "elementwise:QLinearAdd/int8": its kind's fit exists beside it
        assert key.split(":")[0] in F.PER_OP and key.split(":")[0] + "/" + key.split("/")[1] in cal.fits
    assert cal.cache[0][1] == 0.0 and all(0 <= f <= 1 for _, f in cal.cache) and cal.profiler_us >= 0
    assert all(s.cold_us is not None for s in cal.samples if s.kind in WEIGHTED and s.point["kind"] == s.kind)
    assert {s.split for s in cal.samples} == {"fit", "holdout"} and all(s.us >= 0 for s in cal.samples)
    # 0: a kernel below the profiler's own cost (shape arithmetic, a reshape: those are their node's cost alone)
    assert np.mean([s.us > 0 for s in cal.samples if s.kind in WEIGHTED]) > 0.8
    assert cal.host["cpu"] and cal.host["onnxruntime"] and cal.run_us > 0
    # the fixed costs measured before and after the grid's one pass: their medians kept
    assert len(cal.fixed_rounds) == 2 and all(len(r) == 3 for r in cal.fixed_rounds)
    for value, measured in zip((cal.run_us, cal.node_us, cal.profiler_us), zip(*cal.fixed_rounds)):
        assert value == pytest.approx(np.median(measured), abs=2e-3)
    from edgerobust.edge.render.estimate_lines import calibration_table

    note = calibration_table(cal)[3][0]  # what `calibrate` prints under its table
    assert f"profiler {cal.profiler_us:.2f} µs a node (medians of 2 measurements; the profiler's ranged" in note
    assert calibration.stat().st_size < 200_000


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_calibration_refuses_to_overwrite(calibration, profile):
    with pytest.raises(UsageError, match="`out`"):
        calibrate(CalibrateConfig(profile=profile, out=calibration, scale=0.03, passes=1, show_progress=False))
    r = runner.invoke(app, ["calibrate", "-p", profile, "-o", str(calibration), "--grid-scale", "0.05"])
    assert r.exit_code == 2 and "--out" in " ".join(r.stderr.split()) and "Traceback" not in r.output
    with pytest.raises(UsageError, match="`dtypes`"):
        CalibrateConfig(dtypes=("fp8",))


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_estimate_structure_and_labels(calibration, cnn):
    e = estimate(EstimateConfig(calibration, {"base": cnn["fp32"], "deployed": cnn["int8"]}))
    assert e.label == "estimated" and e.same_host and e.batch_size == 1 and e.calibration_sha256
    for m in e.models:
        assert m.low_ms <= m.p50_ms <= m.high_ms and m.kernels > 0 and not m.missing
        assert sum(m.by_kind.values()) + m.fixed_ms == pytest.approx(m.p50_ms, abs=1e-3)  # by_kind: 0.1 µs
    assert e.model("deployed").dtypes == ("int8",) and e.model("base").dtypes == ("fp32",)
    sp = e.speedup["deployed"]
    assert sp["low"] <= sp["p50"] <= sp["high"]
    assert sp["p50"] == pytest.approx(e.model("base").p50_ms / e.model("deployed").p50_ms)
    data = e.to_dict()
    assert data["_type"] == "edgerobust.edge.estimate.estimate" and data["_data"]["label"] == "estimated"


def test_a_precision_the_calibration_lacks_gets_no_estimate(tmp_path, profile, cnn):
    cal = calibrate(CalibrateConfig(profile=profile, dtypes=("fp32",), scale=0.03, passes=1, seconds=0.01,
                                    timing="wall", show_progress=False))  # wall: the quickest calibration
    e = estimate(EstimateConfig(cal, {"base": cnn["fp32"], "deployed": cnn["int8"]}))
    dep = e.model("deployed")
    assert dep.p50_ms is None and dep.missing == ("int8",) and "deployed" not in e.speedup
    assert any("no int8 kernels" in w for w in e.warnings)


def test_wall_timing_for_providers_whose_nodes_run_asynchronously(profile):
    cal = calibrate(CalibrateConfig(profile=profile, dtypes=("fp32",), scale=0.03, passes=1, seconds=0.01,
                                    timing="wall", show_progress=False))
    assert cal.timing == "wall" and all(s.us >= 0 for s in cal.samples) and "conv/fp32" in cal.fits
    assert cal.cache == () and not any(k.endswith("/cold") for k in cal.fits)  # a flush reaches no GPU


def test_cold_share_follows_the_weights_on_the_cache_curve(tmp_path):
    curve = ((1 << 20, 0.0), (2 << 20, 0.5), (4 << 20, 1.0))
    assert cold_share(curve, 1000) == 0.0 and cold_share(curve, 64 << 20) == 1.0
    assert cold_share(curve, 2 ** 20.5) == pytest.approx(0.25) and cold_share(curve, 3 << 20) > 0.5
    for level, size in ((0, "32K"), (2, "1024K"), (3, "32768K")):
        (tmp_path / f"index{level}").mkdir()
        (tmp_path / f"index{level}" / "size").write_text(size + "\n")
    assert last_level_cache_bytes(str(tmp_path)) == 32 << 20


@pytest.fixture(scope="module")
def foreign(calibration, tmp_path_factory):
    """The calibration as if it came from another device (a Raspberry Pi's CPU)."""
    data = json.loads(calibration.read_text())
    data["_data"]["host"].update(cpu="Cortex-A76", cores=4, machine="aarch64", isa=["asimd", "asimddp"])
    data["_data"]["profile"] = "raspberry-pi-5"
    out = tmp_path_factory.mktemp("pi") / "pi5.json"
    out.write_text(json.dumps(data))
    return out


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_audit_estimate_labels_every_figure_as_estimated(tmp_path, foreign, profile):
    bundle = make_bundle(tmp_path / "b")
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "-p", profile, "--no-memory", "--out",
                            str(tmp_path / "r"), "--estimate", str(foreign)])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "ESTIMATED on raspberry-pi-5 from its calibration (not a measurement)" in out  # the headline
    assert "ESTIMATED latency on raspberry-pi-5 at batch 1" in out and "not measured on this host" in out
    assert "Cortex-A76" in out and "band ms" in out and "estimated speedup" in out
    data = json.loads((tmp_path / "r" / "report.json").read_text())["_data"]
    est = data["estimate"]
    assert est["label"] == "estimated" and not est["same_host"] and "own networks" in est["band"]
    roles = {m["role"] for m in est["models"]}
    assert roles == {"base", "deployed", "fp32"} and all(m["low_ms"] <= m["p50_ms"] <= m["high_ms"]
                                                         for m in est["models"])
    m = json.dumps(data["measurement"])  # never mixed with what was measured
    assert "estimate" not in data["measurement"] and '"estimated"' not in m and "p50_ms\": null" not in m
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Estimated latency on raspberry-pi-5 (estimates, not measurements)" in md
    assert "energy" in md  # joules per inference, or why absent
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Estimated latency on raspberry-pi-5 (estimates, not measurements)" in html and "band ms" in html


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_estimates_at_every_batch_size_and_beside_measured_devices_in_compare(tmp_path, foreign):
    bundle = make_bundle(tmp_path / "b")
    two = str(write_profile(tmp_path / "two.toml", batch_sizes=(1, 2)))
    for out, extra in (("r1", ["--estimate", str(foreign)]), ("r2", [])):
        r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "-p", two, "--no-memory", "--out",
                                str(tmp_path / out), *extra])
        assert r.exit_code == 0, r.output
    est = json.loads((tmp_path / "r1" / "report.json").read_text())["_data"]["estimate"]
    got = {(m["role"], m["batch_size"]): m["p50_ms"] for m in est["models"]}
    assert est["batch_sizes"] == [1, 2] and set(got) == {(r, b) for r in ("base", "deployed", "fp32") for b in (1, 2)}
    assert all(got[(r, 2)] >= got[(r, 1)] for r in ("base", "deployed"))  # two samples cost no less than one
    assert set(est["speedups"]) == {"1", "2"} and est["speedup"] == est["speedups"]["1"]
    r = runner.invoke(app, ["compare", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "raspberry-pi-5 (ESTIMATED)" in out and "not measurements" in out
    html = (tmp_path / "c" / "compare.html").read_text()
    assert "raspberry-pi-5 (ESTIMATED)" in html
    data = json.loads((tmp_path / "c" / "compare.json").read_text())["_data"]
    assert [e["batch_size"] for e in data["estimated"]] == [1, 2] and all("ESTIMATED" not in x["device"]
                                                                          for x in data["latency"])


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_profile_estimate_predicts_instead_of_measuring(cnn, calibration):
    r = runner.invoke(app, ["profile", str(cnn["int8"]), "--baseline", str(cnn["fp32"]), "--estimate",
                            str(calibration), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["_type"] == "edgerobust.edge.estimate.estimate"
    assert {m["role"] for m in data["_data"]["models"]} == {"base", "deployed"}
    r = runner.invoke(app, ["profile", str(cnn["int8"]), "--estimate", str(calibration)])
    assert r.exit_code == 0 and "ESTIMATED latency on" in r.stdout and "Latency on" not in r.stdout


def test_a_file_that_is_no_calibration_is_one_message(tmp_path, cnn):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"_type": "something else"}))
    r = runner.invoke(app, ["profile", str(cnn["fp32"]), "--estimate", str(bad)])
    text = " ".join(r.stderr.split())
    assert r.exit_code == 2 and "--estimate" in text and "not an edgerobust calibration file" in text
    r = runner.invoke(app, ["profile", str(cnn["fp32"]), "--estimate", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "does not exist" in " ".join(r.stderr.split())


@pytest.mark.slow  # the calibration fixture runs `calibrate` end to end
def test_calibration_is_a_frozen_dataclass_of_plain_data(calibration):
    cal = load_calibration(calibration)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.run_us = 0
    json.dumps(dataclasses.asdict(cal))
