"""White-box sets (edgerobust.workstation.attacks.whitebox): the int8 simulation, STE gradients, crafting, audit and CLI."""
import json
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.workstation.attacks import AttackSpec, craft_set
from edgerobust.edge.files.provenance import check_adv_provenance
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.edge.files.npzio import sha256_file
from edgerobust.cli import app
from edgerobust.workstation.data.sources import load_data, split
from edgerobust.errors import BundleError
from edgerobust.workstation.model.export import onnx_logits
from edgerobust.workstation.model.load import load_model
from edgerobust.workstation.model.nets import PixelModel
from edgerobust.workstation.attacks.whitebox import FakeQuantLayer, fake_quant_weight, int8_simulation, whitebox_sets

SPEC = AttackSpec("pgd", 8 / 255, eps_text="8/255", steps=5)


@pytest.fixture(scope="module")
def pruned(compressed):
    """The pruned fp32 model of the session bundle, its calibration split and eval set."""
    root = compressed.bundle
    m = json.loads((root / "manifest.json").read_text())
    loaded = load_model(root / "pruned.pt")
    model = PixelModel(loaded.model, m["input"]["mean"], m["input"]["std"]).eval()
    sp = split(load_data("digits"), seed=0, eval_samples=200, calib_samples=256)  # as compress drew it
    return model, sp.calib.x, EvalSet.load(root / "eval.npz"), root


def test_fake_quant_weight_is_per_channel_int8_with_identity_gradient():
    w = torch.randn(6, 3, 3, 3, requires_grad=True)
    q = fake_quant_weight(w)
    scale = w.detach().abs().flatten(1).amax(1) / 127
    levels = q.detach() / scale.view(-1, 1, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.abs().max() <= 127 + 1e-3
    assert float((q - w).detach().abs().max()) <= float(scale.max()) / 2 + 1e-6
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_simulation_follows_the_int8_onnx_model_and_passes_gradients(pruned):
    model, calib_x, ev, root = pruned
    from edgerobust.workstation.configs import QuantConfig

    keep = json.loads((root / "manifest.json").read_text())["metrics"]["int8_keep_fp32"]  # what compress chose
    sim = int8_simulation(model, calib_x, QuantConfig(keep_fp32=keep))
    fq = [m for m in sim.modules() if isinstance(m, FakeQuantLayer)]
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(fq) == len(convs) - {"none": 0, "first": 1, "last": 1, "ends": 2}[keep]
    with torch.no_grad():
        sim_pred = sim(torch.from_numpy(ev.x)).argmax(1).numpy()
        fp32_logits = model(torch.from_numpy(ev.x)).numpy()
    int8_pred = onnx_logits(root / "model.onnx", ev.x).argmax(1)
    assert (sim_pred == int8_pred).mean() >= 0.95
    assert not np.allclose(sim(torch.from_numpy(ev.x)).detach().numpy(), fp32_logits)  # it does quantize
    x = torch.from_numpy(ev.x[:8]).requires_grad_(True)
    sim(x).logsumexp(1).sum().backward()
    assert float(x.grad.abs().sum()) > 0
    assert all(float(m.layer.weight.grad.abs().sum()) > 0 for m in fq)
    assert all(p.grad is None for p in model.parameters())  # the original is untouched


def test_whitebox_sets_respect_eps_and_hurt_more_than_transfer(pruned, compressed, zoo_checkpoint):
    model, calib_x, ev, root = pruned
    sub = EvalSet(x=ev.x[:100], y=ev.y[:100], meta=ev.meta)
    sets = whitebox_sets(model, calib_x, sub, [SPEC], int8=True, fp32_sha256="f" * 64, int8_sha256="i" * 64,
                         eval_sha256="e" * 64)
    assert [s.meta["source"] for s in sets] == ["whitebox-fp32", "whitebox-int8"]
    assert [s.meta["name"] for s in sets] == ["whitebox-fp32/pgd_8-255", "whitebox-int8/pgd_8-255"]
    assert [s.meta["target_sha256"] for s in sets] == ["f" * 64, "i" * 64] and "base_sha256" not in sets[0].meta
    base = PixelModel(load_model(zoo_checkpoint.path).model, *(json.loads((root / "manifest.json").read_text())
                                                               ["input"][k] for k in ("mean", "std"))).eval()
    transfer = craft_set(base, sub.x, sub.y, SPEC)
    assert transfer.meta["source"] == "transfer"

    def acc(x):
        with torch.no_grad():
            return float((model(torch.from_numpy(x)).argmax(1).numpy() == sub.y).mean())

    for s in sets:
        assert np.abs(s.x - sub.x).max() <= 8 / 255 + 1e-6 and s.x.min() >= 0 and s.x.max() <= 1
    clean, wb, tr = acc(sub.x), acc(sets[0].x), acc(transfer.x)
    assert wb < clean and wb <= tr, (clean, wb, tr)
    q_wb = (onnx_logits(root / "model.onnx", sets[1].x).argmax(1) == sub.y).mean()
    q_clean = (onnx_logits(root / "model.onnx", sub.x).argmax(1) == sub.y).mean()
    assert q_wb < q_clean


def test_provenance_keeps_whitebox_and_transfer_apart():
    y = np.arange(4) % 2
    ev_y = y.copy()

    def adv(**meta):
        return AdvSet(x=np.zeros((4, 1, 2, 2), np.float32), y=y, idx=np.arange(4), meta={"eval_sha256": "e", **meta})

    check_adv_provenance(adv(base_sha256="b"), "t.npz", "b", "e", 4, ev_y)  # transfer, no source field
    check_adv_provenance(adv(source="whitebox-int8", target_sha256="d"), "w.npz", "b", "e", 4, ev_y,
                         {"d": "model.onnx"})
    with pytest.raises(BundleError, match="not audited here"):  # crafted on the deployed model, not base
        check_adv_provenance(adv(source="whitebox-int8", target_sha256="b"), "w.npz", "b", "e", 4, ev_y,
                             {"d": "model.onnx"})
    with pytest.raises(BundleError, match="another base model"):
        check_adv_provenance(adv(source="transfer", base_sha256="d"), "t.npz", "b", "e", 4, ev_y, {"d": "m"})


@pytest.mark.slow
def test_cli_mrs_pgd_at_whitebox_then_audit(zoo_checkpoint, tmp_path, monkeypatch, quick_measure):
    monkeypatch.setattr(ui.out, "width", 200)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = tmp_path / "b"
    r = runner.invoke(app, [str(a) for a in (
        "compress", zoo_checkpoint.path, "--max-prune-drop", 100, "--ratios", "mrs", "--mrs-samples", 32, "--finetune", "pgd-at",
        "--adv-eps", "8/255", "--adv-steps", 2, "--finetune-epochs", 1, "--int8", "--attacks", "pgd",
        "--eps", "8/255", "--attack-steps", 3, "--whitebox", "--eval-samples", 60, "--out", out)],
        env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "module robustness sensitivity" in r.output and "features.0.0" in r.output
    m = json.loads((out / "manifest.json").read_text())
    layers = m["sensitivity"]["layers"]
    assert {la["name"] for la in layers} == {f"features.{i}.0" for i in range(5)}
    assert all(la["channels_after"] == int(la["channels_before"] * (1 - la["ratio"])) for la in layers)
    assert m["config"]["finetune"]["mode"] == "pgd-at" and m["config"]["prune"]["ratios"] == "mrs"
    assert m["config"]["finetune"]["adv_eps"] == pytest.approx(8 / 255) and m["config"]["whitebox"]
    assert "val_robust_acc" in m["metrics"]["finetune_history"][0]
    assert m["metrics"]["int8_sim_top1_agreement_with_int8"] >= 0.9
    assert m["adv"] == ["adv/pgd_8-255.npz", "adv/whitebox-fp32/pgd_8-255.npz", "adv/whitebox-int8/pgd_8-255.npz"]
    wb = AdvSet.load(out / "adv/whitebox-fp32/pgd_8-255.npz").meta
    assert wb["target"] == "model_fp32.onnx" and wb["target_sha256"] == sha256_file(out / "model_fp32.onnx")
    assert AdvSet.load(out / "adv/whitebox-int8/pgd_8-255.npz").meta["target_sha256"] == sha256_file(out / "model.onnx")
    assert AdvSet.load(out / "adv/pgd_8-255.npz").meta["source"] == "transfer"

    r = runner.invoke(app, ["audit", str(out / "model.onnx"), "--no-memory", "--allow-fallback",
                            "--out", str(tmp_path / "rep")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = re.sub(r"\s+", " ", r.output)
    i_t, i_f, i_q = (text.index(s) for s in ("clean and transfer sets", "white-box fp32 sets", "white-box int8 sets"))
    assert i_t < i_f < i_q
    assert text.index("pgd_8-255", i_t) < i_f < text.index("whitebox-fp32/pgd_8-255", i_f) < i_q
    assert "white-box (upper bound from PGD; Δ: each model against the same attacks crafted on itself): eps 8/255 deployed" in text, text[text.index("Per threat model"):][:700]
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())["_data"]
    assert [s["source"] for s in rep["sets"]] == ["clean", "transfer", "whitebox-fp32", "whitebox-int8"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### White-box int8 sets" in md and "### Clean and transfer sets" in md
