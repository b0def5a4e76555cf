"""ONNX export (opset, names, dynamic batch, parity gate) and int8 (QDQ nodes, int8 weights, accuracy)."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, numpy_helper

from edgerobust.workstation.data.sources import load_data, split
from edgerobust.errors import QualityGateError, UsageError
from edgerobust.workstation.model.export import export_onnx, onnx_logits, parity, require_parity
from edgerobust.workstation.model.load import load_model
from edgerobust.workstation.model.nets import PixelModel
from edgerobust.registries import CALIBRATIONS
from edgerobust.workstation.configs import PrepareConfig, QuantConfig
from edgerobust.workstation.quantize.int8 import quantize


@pytest.fixture(scope="module")
def trained(zoo_checkpoint):
    lm = load_model(zoo_checkpoint.path)
    return PixelModel(lm.model, lm.input_spec["mean"], lm.input_spec["std"]).eval()


@pytest.fixture(scope="module")
def splits():
    return split(load_data("digits"), seed=0, eval_samples=200, calib_samples=64)


@pytest.fixture(scope="module")
def fp32(trained, splits, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    return export_onnx(trained, torch.from_numpy(splits.eval.x[:1]), path)


@pytest.fixture(scope="module")
def int8(fp32, splits):
    out = fp32.with_name("int8.onnx")
    return out, quantize(fp32, out, splits.calib.x, QuantConfig(keep_fp32="first"))


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _top1(path, x):
    return onnx_logits(path, x).argmax(1)


# ------------------------------------------------------------------------------------ export


def test_export_opset_names_and_dynamic_batch(fp32):
    m = onnx.load(str(fp32))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = m.graph.input, m.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [1, 16, 16]


@pytest.mark.parametrize("batch", [1, 7])
def test_export_runs_at_any_batch(fp32, trained, splits, batch):
    x = splits.eval.x[:batch]
    got = onnx_logits(fp32, x)
    assert got.shape == (batch, 10)
    with torch.no_grad():
        np.testing.assert_allclose(got, trained(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_parity_of_a_correct_export(trained, fp32, splits):
    p = parity(trained, fp32, splits.eval.x)
    assert p.n == 200 and p.top1_agreement == 1.0
    assert p.max_abs_diff < 1e-4 and p.ok
    require_parity(p, "base model")


def test_parity_catches_a_tampered_export(trained, fp32, splits, tmp_path):
    m = onnx.load(str(fp32))
    init = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest weight
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(-w, init.name))
    onnx.save(m, str(tmp_path / "tampered.onnx"))
    p = parity(trained, tmp_path / "tampered.onnx", splits.eval.x)
    assert not p.ok and p.max_abs_diff > 0.1 and p.top1_agreement < 0.9
    with pytest.raises(QualityGateError, match="does not match the torch model"):
        require_parity(p, "base model")


# -------------------------------------------------------------------------------------- int8


def test_static_int8_has_qdq_nodes_and_int8_weights(int8, fp32):
    path, res = int8
    ops = _ops(path)
    nq, ndq = ops.count("QuantizeLinear"), ops.count("DequantizeLinear")
    assert nq > 0 and ndq > nq  # weights have a DequantizeLinear without a QuantizeLinear
    assert res.qdq_nodes == nq + ndq and res.mode == "static" and res.calib_samples == 64
    assert ops.count("Conv") == _ops(fp32).count("Conv")
    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    weight_types = {inits[n.input[0]].data_type for n in m.graph.node
                    if n.op_type == "DequantizeLinear" and n.input[0] in inits
                    and len(inits[n.input[0]].dims) == 4}
    assert weight_types == {TensorProto.INT8}
    # keep_fp32="first": exactly one conv weight stays float
    float_conv_w = [inits[n.input[1]] for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    assert len(float_conv_w) == 1 and float_conv_w[0].data_type == TensorProto.FLOAT
    assert float_conv_w[0].dims[1] == 1  # the first conv: one input channel


def test_static_int8_close_to_fp32(int8, fp32, splits):
    path, _ = int8
    x, y = splits.eval.x, splits.eval.y
    q, f = _top1(path, x), _top1(fp32, x)
    assert (q == f).mean() >= 0.97
    assert (f == y).mean() - (q == y).mean() <= 0.02
    assert (q == y).mean() > 0.9


@pytest.mark.parametrize("method", list(CALIBRATIONS))
def test_every_calibration_method(method, fp32, splits, tmp_path):
    out = tmp_path / f"{method}.onnx"
    res = quantize(fp32, out, splits.calib.x[:32], QuantConfig(calibration=method))  # every row given calibrates
    assert res.calibration == method and res.qdq_nodes > 0 and res.calib_samples == 32
    agree = (_top1(out, splits.eval.x) == _top1(fp32, splits.eval.x)).mean()
    assert agree >= 0.9


def test_dynamic_int8_on_a_linear_model(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                        nn.Linear(128, 10)).eval()
    fp = export_onnx(mlp, torch.rand(1, 1, 16, 16), tmp_path / "mlp.onnx")
    out = tmp_path / "mlp_int8.onnx"
    res = quantize(fp, out, np.zeros((0, 1, 16, 16), np.float32), QuantConfig(mode="dynamic", keep_fp32="none"))
    ops = _ops(out)
    assert res.mode == "dynamic" and res.calibration == "none" and res.calib_samples == 0
    assert ops.count("DynamicQuantizeLinear") >= 1 and ops.count("MatMulInteger") == 3
    assert "QuantizeLinear" not in ops
    x = np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32)
    ref = onnx_logits(fp, x)
    got = onnx_logits(out, x)
    assert got.shape == ref.shape
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.15  # 8-bit weights and activations


BAD_QUANT = {
    "mode": (dict(mode="fp16"), "Unknown `int8_mode` 'fp16'"),
    "calibration": (dict(calibration="kl"), "Unknown `calibration` 'kl'"),
    "keep-fp32": (dict(keep_fp32="middle"), "Unknown `keep_fp32` 'middle'"),
    "target": (dict(int8_target="gpu"), "Unknown `int8_target` 'gpu'"),
    "stem": (dict(stem="s2d"), "Unknown `int8_stem` 's2d'"),
    "format": (dict(format="qlinear"), "Unknown int8 `format` 'qlinear'"),
}


@pytest.mark.parametrize("kwargs,message", BAD_QUANT.values(), ids=BAD_QUANT.keys())
def test_quant_config_rejects(kwargs, message):
    with pytest.raises(UsageError, match=message):
        QuantConfig(**kwargs)


def test_quant_config_leaves_the_target_choices_open():
    q = QuantConfig()
    assert q.int8_target is None and q.stem is None and not hasattr(q, "calib_samples")
    with pytest.raises(UsageError, match="`calib_samples` must be an integer >= 1"):  # the split's size now
        PrepareConfig("m.pt", calib_samples=0)


def test_a_model_over_onnx_single_file_limit_is_refused(monkeypatch, tmp_path):
    """regnet_y_128gf and vit_h_14 (2.5 GB of fp32 weights) failed inside protobuf; now a clear refusal."""
    import torch

    from edgerobust.errors import ExportError
    from edgerobust.workstation.model import export

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    monkeypatch.setattr(export, "MAX_ONNX_BYTES", 100)  # 272 bytes of weights: "over the limit"
    with pytest.raises(ExportError, match="over the 2 GB that one ONNX file can hold"):
        export.export_onnx(net, torch.zeros(1, 1, 4, 4), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
