"""--device: torch's work on the CPU or a CUDA GPU; a CUDA request on a host without one is refused."""
from __future__ import annotations

import json

import pytest
import torch

from _fixtures_gauntlet import assert_user_error, cli
from edgerobust.workstation.resources.torch_device import model_device, on_device, resolve_device
from edgerobust.errors import UsageError

CUDA = torch.cuda.is_available()


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_is_refused(spec):
    with pytest.raises(UsageError, match="Unknown `device`"):
        resolve_device(spec)


@pytest.mark.skipif(CUDA, reason="this host has CUDA; the refusal is for hosts without it")
def test_cuda_on_a_host_without_cuda_writes_nothing(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--device", "cuda", "--out", tmp_path / "b", "--attacks", "none")
    assert_user_error(r, "--device cuda asks for CUDA", "torch sees no CUDA GPU", "--device cpu")
    assert list(tmp_path.iterdir()) == []
    r = cli("attack", zoo_checkpoint.path, "--device", "cuda:0", "--out", tmp_path / "sets")
    assert_user_error(r, "asks for CUDA")
    assert list(tmp_path.iterdir()) == []


def test_on_device_returns_the_model_to_the_cpu():
    m = torch.nn.Linear(2, 2)
    with on_device(m, resolve_device("auto")) as moved:
        assert model_device(moved) == resolve_device("auto")
    assert model_device(m) == torch.device("cpu")


def test_manifest_records_where_torch_ran(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--device", "cpu", "--out", tmp_path / "b", "--attacks", "fgsm",
            "--eps", "8/255", "--eval-samples", "24", "--finetune-epochs", "1", "--max-prune-drop", "100")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["device"] == "cpu"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CI has none): run on a GPU machine")
def test_compress_on_cuda_matches_the_cpu_pipeline(zoo_checkpoint, tmp_path):
    r = cli("compress", zoo_checkpoint.path, "--device", "cuda", "--out", tmp_path / "b", "--attacks", "fgsm,pgd",
            "--eps", "8/255", "--eval-samples", "64", "--finetune-epochs", "1", "--finetune", "pgd-at",
            "--ratios", "mrs", "--mrs-samples", "32", "--whitebox", "--int8", "--max-prune-drop", "100")
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["device"].startswith("cuda:0") and len(man["adv"]) == 6
