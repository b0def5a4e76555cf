"""Loading PyTorch models: checkpoints, state_dicts with --arch, and pickled modules only when trusted."""
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgerobust.edge.files.bundle import EvalSet
from edgerobust.workstation.data.sources import load_data, split
from edgerobust.errors import ModelLoadError, UnsafeModelError, UsageError
from edgerobust.workstation.model.export import onnx_logits
from edgerobust.workstation.train.finetune import accuracy
from edgerobust.workstation.model.load import load_model, save_checkpoint
from edgerobust.workstation.model.nets import DigitsCNN, PixelModel


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


X16 = np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def cnn7():
    torch.manual_seed(0)
    return DigitsCNN(num_classes=7).eval()


@pytest.fixture(scope="module")
def cnn7_state(cnn7, tmp_path_factory):
    path = tmp_path_factory.mktemp("sd") / "cnn7.pth"
    torch.save(cnn7.state_dict(), path)
    return path


# ------------------------------------------------------------------------------- checkpoints


def test_zoo_checkpoint_loads_and_reproduces_its_accuracy(zoo_checkpoint):
    assert zoo_checkpoint.eval_acc > 0.9
    lm = load_model(zoo_checkpoint.path)
    assert (lm.kind, lm.arch, lm.num_classes) == ("checkpoint", "zoo:digits-cnn", 10)
    assert lm.input_spec["shape"] == [None, 1, 16, 16] and lm.input_spec["data"] == "digits"
    sp = split(load_data("digits", image_size=16), seed=0)
    model = PixelModel(lm.model, lm.input_spec["mean"], lm.input_spec["std"])
    assert accuracy(model, sp.eval.x, sp.eval.y) == pytest.approx(lm.info["eval_acc"])


def test_checkpoint_round_trip_same_logits(zoo_checkpoint, tmp_path):
    lm = load_model(zoo_checkpoint.path)
    again = tmp_path / "again.pt"
    save_checkpoint(again, lm.model, lm.arch, lm.num_classes, lm.input_spec, info={"note": "x"})
    lm2 = load_model(again)
    np.testing.assert_array_equal(_logits(lm.model, X16), _logits(lm2.model, X16))
    assert lm2.info == {"note": "x"}
    assert not list(tmp_path.glob(".*tmp*"))


def test_checkpoint_num_classes_contradiction(zoo_checkpoint):
    with pytest.raises(UsageError, match="`num_classes` 5 contradicts"):
        load_model(zoo_checkpoint.path, num_classes=5)


def test_checkpoint_from_the_future(zoo_checkpoint, tmp_path):
    obj = torch.load(zoo_checkpoint.path, weights_only=True)
    obj["version"] = 99
    torch.save(obj, tmp_path / "future.pt")
    with pytest.raises(ModelLoadError, match="version 99"):
        load_model(tmp_path / "future.pt")


# ------------------------------------------------------------------------------- state_dicts


@pytest.mark.parametrize("arch", ["digits-cnn", "zoo:digits-cnn"])
def test_state_dict_with_zoo_arch(cnn7, cnn7_state, arch):
    lm = load_model(cnn7_state, arch=arch)
    assert (lm.kind, lm.num_classes) == ("state_dict", 7)  # inferred from fc.weight
    np.testing.assert_array_equal(_logits(lm.model, X16), _logits(cnn7, X16))


def test_state_dict_nested_and_dataparallel_prefix(cnn7, tmp_path):
    sd = {f"module.{k}": v for k, v in cnn7.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": sd}, tmp_path / "ckpt.pth")
    lm = load_model(tmp_path / "ckpt.pth", arch="digits-cnn")
    np.testing.assert_array_equal(_logits(lm.model, X16), _logits(cnn7, X16))


def test_state_dict_torchvision_resnet18(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    lm = load_model(tmp_path / "r18.pth", arch="torchvision:resnet18")
    assert lm.num_classes == 10 and lm.model.fc.out_features == 10
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(_logits(lm.model, x), _logits(ref, x), rtol=0, atol=1e-6)


def test_state_dict_without_arch_names_the_flag(cnn7_state):
    with pytest.raises(UsageError, match="is a state_dict") as e:
        load_model(cnn7_state)
    assert "`arch`" in e.value.fix


def test_wrong_arch_lists_missing_and_unexpected(cnn7_state):
    with pytest.raises(ModelLoadError, match="do not fit `arch` digits-resnet with 7 classes") as e:
        load_model(cnn7_state, arch="digits-resnet")
    assert "missing (e.g. stem.0.weight" in e.value.why and "unexpected (e.g. features.0.0.weight" in e.value.why


def test_wrong_num_classes_shows_the_shapes(cnn7_state):
    with pytest.raises(ModelLoadError, match="with 5 classes") as e:
        load_model(cnn7_state, arch="digits-cnn", num_classes=5)
    assert "fc.weight: file (7, 128) vs digits-cnn (5, 128)" in e.value.why


@pytest.mark.parametrize("arch,message", [
    ("torchvision:no_such_net", "torchvision has no model 'no_such_net'"),
    ("zoo:nope", "Unknown zoo model 'nope'"),
    ("no_such_pkg_xyz:factory", "Cannot import the module 'no_such_pkg_xyz'"),
    ("weird", "Cannot read `arch` 'weird'"),
], ids=["torchvision", "zoo", "module", "unparsable"])
def test_unknown_arch(cnn7_state, arch, message):
    with pytest.raises(UsageError, match=message):
        load_model(cnn7_state, arch=arch)


# ----------------------------------------------------------------------------- bad files


def _write_bad(kind, tmp_path, cnn7_state):
    p = tmp_path / "model.pt"
    if kind == "missing":
        return tmp_path / "nope.pt"
    if kind == "folder":
        return tmp_path
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(cnn7_state.read_bytes()[: cnn7_state.stat().st_size // 2])
    elif kind == "random-bytes":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "plain-zip":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("readme.txt", "hello")
    elif kind == "onnx":
        p = tmp_path / "model.onnx"
        p.write_bytes(b"\x08\x07")
    elif kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
            torch.jit.script(nn.Sequential(nn.Linear(3, 2), nn.ReLU())).save(str(p))
    elif kind == "torch-export":
        ep = torch.export.export(nn.Linear(3, 2), (torch.randn(1, 3),))
        torch.export.save(ep, str(p))
    elif kind == "tensor":
        torch.save(torch.zeros(3), p)
    return p


BAD_FILES = {
    "missing": "does not exist",
    "folder": "is a folder, not a model file",
    "empty": "is empty",
    "truncated": "not a readable PyTorch model file",
    "random-bytes": "not a readable PyTorch model file",
    "plain-zip": "zip archive but not a PyTorch model file",
    "onnx": "is an ONNX model; compress needs the PyTorch model",
    "torchscript": "is a TorchScript archive",
    "torch-export": r"is a torch.export archive \(ExportedProgram\)",
    "tensor": "holds a Tensor, not a model or a state_dict",
}


@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trusted"])
@pytest.mark.parametrize("kind,message", [
    pytest.param(k, m, id=k) for k, m in BAD_FILES.items()])
def test_bad_model_files(tmp_path, cnn7_state, kind, message, trust):
    # random-bytes guards a fixed bug: garbage starting with '_' ("Unsupported operand") was
    # reported as an unsafe pickle and sent the user to --trust-model.
    path = _write_bad(kind, tmp_path, cnn7_state)
    with pytest.raises(ModelLoadError, match=message) as e:
        load_model(path, arch="digits-cnn", trust_model=trust)
    assert not isinstance(e.value, UnsafeModelError)


# ---------------------------------------------------------------------------- pickled modules


class MarkerModule(nn.Module):
    """A module whose unpickling creates a file: stands in for a malicious checkpoint."""

    def __init__(self, marker):
        super().__init__()
        self.marker = str(marker)
        self.fc = nn.Linear(2, 2)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(MarkerModule(marker), tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(UnsafeModelError, match="needs code to be run") as e:
        load_model(tmp_path / "evil.pt")
    assert "`trust_model`" in e.value.fix
    assert not marker.exists()


def test_whole_module_needs_trust_then_loads(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 6)).eval()
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(UnsafeModelError, match="pickled Python object"):
        load_model(tmp_path / "whole.pt")
    lm = load_model(tmp_path / "whole.pt", trust_model=True)
    assert (lm.kind, lm.num_classes, lm.arch) == ("module", 6, None)
    np.testing.assert_array_equal(_logits(lm.model, X16), _logits(net, X16))


# ------------------------------------------------------------------------ pruned checkpoint


def test_pruned_checkpoint_matches_the_exported_fp32(compressed):
    root = compressed.bundle
    lm = load_model(root / "pruned.pt")
    assert (lm.kind, lm.arch, lm.num_classes) == ("checkpoint", "zoo:digits-cnn", 10)
    got = {n: m.out_channels for n, m in lm.model.named_modules() if isinstance(m, nn.Conv2d)}
    want = {l["name"]: l["after"] for l in compressed.prune.layers if l["type"] == "Conv2d"}
    assert got == want and got["features.4.0"] == 64
    assert lm.model.fc.in_features == 64 and lm.model.fc.out_features == 10
    ev = EvalSet.load(root / "eval.npz")
    model = PixelModel(lm.model, lm.input_spec["mean"], lm.input_spec["std"])
    np.testing.assert_allclose(_logits(model, ev.x), onnx_logits(root / "model_fp32.onnx", ev.x), atol=1e-4)
