"""compress() end to end on the digits zoo model: the bundle's files, hashes, metrics and atomicity."""
import hashlib
import json

import numpy as np
import onnx
import pytest

from edgerobust.edge.files.bundle import Bundle, EvalSet
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.workstation.compress import compress
from edgerobust.workstation.configs import CompressConfig, PrepareConfig, TrainConfig
from edgerobust.errors import QualityGateError, UsageError
from edgerobust.workstation.model.export import onnx_logits


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(p.relative_to(root).as_posix().encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _quick(model, out, data=None, **kw):
    """The cheapest run: no fine-tuning, no int8, a small evaluation set."""
    kw.setdefault("max_prune_drop", None)
    return CompressConfig(PrepareConfig(model, data=data, eval_samples=50), out=out, finetune=TrainConfig(epochs=0),
                          **kw)


def test_bundle_files(compressed):
    root = compressed.bundle
    assert sorted(p.name for p in root.iterdir()) == [
        "base.onnx", "eval.npz", "manifest.json", "model.onnx", "model_fp32.onnx", "pruned.pt"]
    assert not [p.name for p in root.parent.iterdir() if ".tmp" in p.name or ".old" in p.name]


def test_manifest_hashes_match(compressed):
    root = compressed.bundle
    m = json.loads((root / "manifest.json").read_text())
    assert set(m["files"]) == {"base.onnx", "eval.npz", "model.onnx", "model_fp32.onnx", "pruned.pt"}
    for name, digest in m["files"].items():
        assert sha256_file(root / name) == digest
    b = Bundle.open(root)
    b.verify()
    assert b.path("deployed").name == "model.onnx" and b.path("fp32").name == "model_fp32.onnx"
    assert m["input"]["shape"] == [None, 1, 16, 16] and m["output"] == {"name": "logits", "shape": [None, 10]}
    assert m["source"]["kind"] == "checkpoint" and m["config"]["prune"]["sparsity"] == 0.5
    assert m["config"]["prepare"]["eval_samples"] == 200 and m["config"]["prepare"]["seed"] == 0
    assert m["target"]["runtime"] == "cpu" and m["target"]["round_to"] == 8 and m["target"]["profile"] is None
    assert m["target"]["reasons"]["round_to"] == "the default" and compressed.target == m["target"]


def test_metrics(compressed):
    mt = compressed.metrics
    assert mt["macs_reduction"] >= 3 and mt["params_reduction"] >= 3
    assert mt["base_accuracy"] > 0.9
    assert mt["pruned_accuracy"] > 0.5  # one fine-tuning epoch after halving every layer
    assert mt["int8_drop_points"] <= 2.0 and mt["int8_top1_agreement_with_fp32"] >= 0.95
    assert mt["deployed_accuracy"] == mt["int8_accuracy"]
    assert [r.model for r in compressed.rows] == ["base", "pruned fp32", "pruned int8 (static)"]
    assert compressed.rows[2].size_bytes < compressed.rows[1].size_bytes < compressed.rows[0].size_bytes
    assert compressed.parity["base"]["top1_agreement"] == 1.0


def test_deployed_model_is_int8_and_reproduces_the_metrics(compressed):
    root = compressed.bundle
    ops = [n.op_type for n in onnx.load(str(root / "model.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert "QuantizeLinear" not in [n.op_type for n in onnx.load(str(root / "model_fp32.onnx")).graph.node]
    ev = EvalSet.load(root / "eval.npz")
    assert ev.x.shape == (200, 1, 16, 16) and ev.meta["split"] == "eval"
    for name, key in [("model.onnx", "int8_accuracy"), ("base.onnx", "base_accuracy")]:
        acc = float((onnx_logits(root / name, ev.x).argmax(1) == ev.y).mean())
        assert acc == pytest.approx(compressed.metrics[key])


def test_existing_bundle_is_refused_and_left_alone(compressed, zoo_checkpoint):
    root = compressed.bundle
    before = _tree_digest(root)
    with pytest.raises(UsageError, match="already exists") as e:
        compress(_quick(zoo_checkpoint.path, root))
    assert "`overwrite`" in e.value.fix
    assert _tree_digest(root) == before


def test_overwrite_replaces_only_when_complete(zoo_checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    res = compress(_quick(zoo_checkpoint.path, out, overwrite=True))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["base.onnx", "eval.npz", "manifest.json", "model.onnx", "pruned.pt"]  # no int8: no fp32 copy
    assert res.quant is None and len(res.rows) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    Bundle.open(out).verify()


def test_failing_run_leaves_no_half_bundle(zoo_checkpoint, tmp_path):
    # A parity tolerance no export can meet makes the run fail after base.onnx was written.
    with pytest.raises(QualityGateError, match="does not match the torch model"):
        compress(_quick(zoo_checkpoint.path, tmp_path / "new", parity_atol=1e-15))
    assert list(tmp_path.iterdir()) == []


def test_failing_overwrite_keeps_the_old_bundle(zoo_checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(QualityGateError):
        compress(_quick(zoo_checkpoint.path, out, parity_atol=1e-15, overwrite=True))
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("prep,kwargs,message", [
    (dict(num_classes=1), {}, "`num_classes` must be >= 2"),
    ({}, dict(max_int8_drop=-1), "`max_int8_drop` must be >= 0"),
    ({}, dict(parity_atol=0), "`parity_atol` must be positive"),
    (dict(normalize="0.5"), {}, "Unknown `normalize` '0.5'"),
    (dict(normalize="0.5/0.0"), {}, "std values must be positive"),
    (dict(normalize="0.5,0.5/0.2"), {}, "2 mean but 1 std values"),
    (dict(device="gpu"), {}, "Unknown `device` 'gpu'"),
], ids=["num-classes", "int8-drop", "parity-atol", "mean-alone", "std-zero", "mean-std-lengths", "device"])
def test_compress_config_rejects(prep, kwargs, message):
    with pytest.raises(UsageError, match=message):
        CompressConfig(PrepareConfig("m.pt", **prep), **kwargs)


def test_compress_config_takes_a_bare_path():
    cfg = CompressConfig("m.pt")
    assert cfg.prepare == PrepareConfig("m.pt") and cfg.bundle_name == "m"
    with pytest.raises(UsageError, match="No `model` to compress"):
        CompressConfig(PrepareConfig())


def test_data_of_the_wrong_shape_is_refused_before_writing(zoo_checkpoint, tmp_path):
    x = np.random.default_rng(0).random((20, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "rgb.npz", x=x, y=np.arange(20) % 10)
    from edgerobust.errors import DataError

    with pytest.raises(DataError, match=r"trained on \(1, 16, 16\)"):
        compress(_quick(zoo_checkpoint.path, tmp_path / "out", data=f"npz:{tmp_path / 'rgb.npz'}"))
    assert not (tmp_path / "out").exists()


def test_int8_auto_picks_the_fastest_layout_that_passes_the_gate(compressed):
    from edgerobust.workstation.quantize.int8 import AUTO_ORDER

    m = compressed.metrics
    attempts = m["int8_attempts"]
    assert [a["keep_fp32"] for a in attempts] == list(AUTO_ORDER[:len(attempts)])  # tried in order, no skips
    assert all(a["drop_points"] > 2.0 for a in attempts[:-1])  # earlier layouts failed the default gate
    assert attempts[-1]["drop_points"] <= 2.0 and m["int8_keep_fp32"] == attempts[-1]["keep_fp32"]
    assert m["int8_accuracy"] == attempts[-1]["accuracy"]
