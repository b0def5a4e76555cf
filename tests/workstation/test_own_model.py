"""A user's own model, first five minutes (issue 16): normalization decided from evidence and said,
a near-chance base refused, default attack sets, the pruning gate, --arch module:factory from the
current folder, -q after the subcommand, and Ctrl-C's exit code (in test_interrupts)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _fixtures_gauntlet import assert_user_error, cli
from edgerobust.workstation.data.sources import load_data
from edgerobust.workstation.data.normalization import decide, parse_normalize, weak_base_check
from edgerobust.errors import DataError, UsageError

MYNET = '''
import torch
import torch.nn as nn


class MyNet(nn.Module):
    """A small MLP as a user would write it (no edgerobust inside)."""

    def __init__(self, num_classes=10, standardize=False):
        super().__init__()
        self.standardize = standardize
        self.fc1 = nn.Linear(256, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        if self.standardize:  # per-image standardization: blind to any affine input normalization
            x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def make_mynet(num_classes=10):
    return MyNet(num_classes)


def make_standardizing(num_classes=10):
    return MyNet(num_classes, standardize=True)
'''


def _train_raw(net: nn.Module, epochs: int = 12) -> nn.Module:
    """Train on raw [0, 1] digits pixels, outside edgerobust's pipeline (plain torch)."""
    ds = load_data("digits")
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A folder with mynet.py and two state_dicts trained on raw pixels; no PYTHONPATH set."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "mynet.py").write_text(MYNET)
    sys.path.insert(0, str(folder))
    try:
        import mynet
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("mynet", None)
    torch.manual_seed(0)  # the initial weights too: the global generator's state depends on the tests run before
    torch.save(_train_raw(mynet.make_mynet()).state_dict(), folder / "raw.pt")
    torch.save(_train_raw(mynet.make_standardizing(), epochs=6).state_dict(), folder / "std.pt")
    torch.save(mynet.make_mynet().state_dict(), folder / "untrained.pt")
    return folder


@pytest.fixture(autouse=True)
def _forget_mynet():
    """Each test imports the user's module afresh, as a new process would."""
    sys.modules.pop("mynet", None)
    yield
    sys.modules.pop("mynet", None)


def _compress(folder: Path, sd: str, arch: str, *extra):
    return cli("compress", folder / sd, "--arch", f"mynet:{arch}", "--out", folder / f"out-{sd}", "--overwrite",
               "--finetune-epochs", "1", "--eval-samples", "200", "--sparsity", "0.25", *extra)


def test_raw_pixel_model_gets_no_normalization_and_its_own_accuracy(user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)  # --arch mynet:make_mynet is found in the current folder
    r = _compress(user_folder, "raw.pt", "make_mynet", "--attacks", "none")
    assert r.exit_code == 0, r.output
    bundle = user_folder / "out-raw.pt"
    man = json.loads((bundle / "manifest.json").read_text())
    norm = man["normalization"]
    assert norm["choice"] == "none" and norm["source"] == "auto", norm
    assert norm["val_accuracy"]["none"] - norm["val_accuracy"]["data"] >= 0.05, norm
    assert man["input"]["mean"] == [0.0] and man["input"]["std"] == [1.0]
    # the manifest's base accuracy is the model's own on the bundle's eval set, fed as it was trained
    sys.path.insert(0, str(user_folder))
    try:
        import mynet

        net = mynet.make_mynet()
    finally:
        sys.path.remove(str(user_folder))
        sys.modules.pop("mynet", None)
    net.load_state_dict(torch.load(user_folder / "raw.pt", weights_only=True))
    ev = np.load(bundle / "eval.npz")
    with torch.no_grad():
        own = float((net.eval()(torch.from_numpy(ev["x"])).argmax(1).numpy() == ev["y"]).mean())
    assert own > 0.8
    assert abs(man["metrics"]["base_accuracy"] - own) <= 0.01, (man["metrics"]["base_accuracy"], own)


def test_undecidable_normalization_is_refused_naming_the_flag(user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    r = _compress(user_folder, "std.pt", "make_standardizing", "--attacks", "none")
    assert_user_error(r, "Cannot tell which input normalization the model expects", "--normalize")
    assert not (user_folder / "out-std.pt").exists()
    # naming it settles it
    r = _compress(user_folder, "std.pt", "make_standardizing", "--attacks", "none", "--normalize", "none",
                  "--max-prune-drop", "100")
    assert r.exit_code == 0, r.output
    man = json.loads((user_folder / "out-std.pt" / "manifest.json").read_text())
    assert man["normalization"]["source"] == "flag" and man["normalization"]["choice"] == "none"


def test_near_chance_base_is_refused_unless_allowed(user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    r = _compress(user_folder, "untrained.pt", "make_mynet", "--attacks", "none", "--normalize", "data")
    assert_user_error(r, "near chance level", "--allow-weak-base")
    r = _compress(user_folder, "untrained.pt", "make_mynet", "--attacks", "none", "--normalize", "data",
                  "--allow-weak-base", "--max-prune-drop", "100")
    assert r.exit_code == 0, r.output
    man = json.loads((user_folder / "out-untrained.pt" / "manifest.json").read_text())
    assert any("near chance level" in w for w in man["warnings"])


def test_module_outside_the_current_folder_says_where_it_looked(user_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _compress(user_folder, "raw.pt", "make_mynet")
    assert_user_error(r, "Cannot import the module 'mynet'", "mynet.py")


def test_default_compress_crafts_fgsm_and_pgd_sets(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--out", tmp_path / "b", "--finetune-epochs", "1",
            "--eval-samples", "24", "--sparsity", "0.25", "--max-prune-drop", "100")
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert sorted(man["adv"]) == sorted(f"adv/{a}_{e}-255.npz" for a in ("fgsm", "pgd") for e in (2, 4, 8))
    assert man["normalization"]["source"] == "checkpoint"
    pruning = man["pruning"]
    assert pruning["requested_sparsity"] == 0.25 and pruning["honest"] is True and pruning["warnings"] == []
    assert pruning["realized_macs_reduction"] == man["metrics"]["macs_reduction"] > 1.3


def test_pruning_gate_stops_compress_with_the_figures(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--out", tmp_path / "b", "--finetune-epochs", "0",
            "--eval-samples", "100", "--sparsity", "0.9", "--round-to", "1", "--attacks", "none")
    text = assert_user_error(r, "Pruning lost", "--max-prune-drop 5", "No bundle was written", "--finetune-epochs")
    assert "sparsity 0.9, 0 fine-tuning epoch(s)" in text
    assert not (tmp_path / "b").exists()


def test_quiet_after_the_subcommand():
    from typer.testing import CliRunner

    from edgerobust import ui
    from edgerobust.cli import app

    ui.set_quiet(False)
    try:
        r = CliRunner().invoke(app, ["profiles", "list", "-q"])
        assert r.exit_code == 0, r.output
        assert ui.is_quiet() is True
    finally:
        ui.set_quiet(False)


@pytest.mark.parametrize("text,kind,mean", [
    ("auto", "auto", None), ("none", "none", None), ("imagenet", "imagenet", None),
    ("0.5/0.25", "custom", (0.5,)), ("0.485,0.456,0.406/0.229,0.224,0.225", "custom", (0.485, 0.456, 0.406)),
])
def test_parse_normalize(text, kind, mean):
    spec = parse_normalize(text)
    assert spec.kind == kind and spec.mean == mean


@pytest.mark.parametrize("text", ["bogus", "0.5/", "0.5,0.4/0.2", "0.5/0", "a/b"])
def test_parse_normalize_rejects(text):
    with pytest.raises(UsageError):
        parse_normalize(text)


def _correct(k: int, n: int = 500) -> np.ndarray:
    return np.arange(n) < k


def test_decide_needs_a_clear_lead():
    assert decide({"none": _correct(485), "data": _correct(185)})[0] == "none"  # 60 points
    # 3 points on 500 paired samples, every sample data gets right none gets right too: significant
    assert decide({"none": _correct(485), "data": _correct(470)})[0] == "none"
    # 3 points that are not paired evidence: each gets other samples right
    a, b = _correct(485), np.roll(_correct(470), 20)
    with pytest.raises(DataError, match="lead of 5 points"):
        decide({"none": a, "data": b})
    with pytest.raises(DataError):  # identical
        decide({"none": a, "data": a.copy()})


def test_weak_base_margin():
    assert weak_base_check(0.25, 0.11, 100, allow=False) is None
    with pytest.raises(DataError):
        weak_base_check(0.15, 0.11, 100, allow=False)
    assert "near chance" in weak_base_check(0.15, 0.11, 100, allow=True)


def test_ignore_layers_keeps_their_channels_and_the_exporter_is_recorded(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--out", tmp_path / "b", "--finetune-epochs", "0", "--attacks", "none",
            "--eval-samples", "24", "--max-prune-drop", "100", "--ignore-layers", "features.0")
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    first = next(row for row in man["pruning"]["layers"] if row["name"] == "features.0.0")
    assert first["before"] == first["after"] == 32
    assert man["metrics"]["onnx_exporter"] == {"base": "torchscript", "pruned": "torchscript"}
