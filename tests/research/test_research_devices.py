"""Where torch runs in the research commands (--device; PrepareConfig.device): a CUDA request on a host
without one is refused before any folder, a CPU run records where torch ran, and Ray tasks ask for a GPU on CUDA."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from _fixtures_gauntlet import assert_user_error, cli
from edgerobust.errors import UsageError

CUDA = torch.cuda.is_available()
TINY = ("--sparsities", "0.5", "--precisions", "fp32", "--attacks", "fgsm", "--eps", "8/255", "--eval-samples", "32",
        "--finetune-epochs", "0")


def _study(tmp_path, model) -> object:
    f = tmp_path / "in" / "study.toml"
    f.parent.mkdir()
    f.write_text(f'[[models]]\nname = "cnn"\npath = "{model}"\n[grid]\nsparsities = [0.5]\nprecisions = ["fp32"]\n'
                 'finetune_epochs = 0\nattacks = ["fgsm"]\neps = ["8/255"]\neval_samples = 32\nlatency_rounds = 1\n')
    return f


@pytest.mark.skipif(CUDA, reason="this host has CUDA; the refusal is for hosts without it")
def test_cuda_on_a_host_without_cuda_is_refused_before_any_folder(zoo_checkpoint, tmp_path):
    study = _study(tmp_path, zoo_checkpoint.path)
    runs = {"sweep": ("sweep", zoo_checkpoint.path, "--out", tmp_path / "s", "--device", "cuda", *TINY),
            "recipe": ("recipe", "run", "transfer", "--model", zoo_checkpoint.path, "--out", tmp_path / "r",
                       "--device", "cuda"),
            "recipe-zoo": ("recipe", "run", "transfer", "--out", tmp_path / "z", "--device", "cuda:0"),
            "study": ("study", study, "--out", tmp_path / "t", "--device", "cuda"),
            "sweep-ray": ("sweep", zoo_checkpoint.path, "--out", tmp_path / "y", "--device", "cuda", "--ray")}
    for name, args in runs.items():
        text = assert_user_error(cli(*args), "asks for CUDA", "torch sees no CUDA GPU", "--device cpu")
        assert "study.toml" not in text, name  # the device's error, not the study file's
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in"], name


def test_unknown_device_is_refused_by_the_research_configs(tmp_path):
    from edgerobust.research.configs import RecipeConfig, SweepConfig
    from edgerobust.research.study import load_study
    from edgerobust.workstation.configs import PrepareConfig

    for build in (lambda: SweepConfig(PrepareConfig("m.pt", device="gpu"), out=tmp_path / "o"),
                  lambda: RecipeConfig(out=tmp_path / "r", prepare=PrepareConfig(device="gpu")),
                  lambda: load_study(tmp_path / "missing.toml", tmp_path / "t", device="gpu")):
        with pytest.raises(UsageError, match="Unknown `device` 'gpu'"):
            build()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(CUDA, reason="this host has CUDA; the refusal is for hosts without it")
def test_library_cuda_request_without_cuda_is_refused_before_any_folder(zoo_checkpoint, tmp_path):
    from edgerobust.research.configs import RecipeConfig, SweepConfig
    from edgerobust.research.recipes import run_recipe
    from edgerobust.research.sweep import sweep
    from edgerobust.workstation.configs import PrepareConfig

    prep = PrepareConfig(zoo_checkpoint.path, device="cuda")
    with pytest.raises(UsageError, match="asks for CUDA"):
        sweep(SweepConfig(prep, out=tmp_path / "s"))
    with pytest.raises(UsageError, match="asks for CUDA"):
        run_recipe("transfer", RecipeConfig(out=tmp_path / "r", prepare=prep))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sweep_on_cpu_records_cpu_and_keeps_todays_points(zoo_checkpoint, tmp_path):
    from edgerobust.research.sweep import sweep
    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig, TrainConfig

    torch.set_num_threads(1)
    r = cli("sweep", zoo_checkpoint.path, "--out", tmp_path / "s", "--device", "cpu", *TINY)
    assert r.exit_code == 0, r.output
    assert "torch on cpu" in " ".join(r.stdout.split())  # the closing table's title
    data = json.loads((tmp_path / "s" / "sweep.json").read_text())["_data"]
    assert data["device"] == "cpu" and data["config"]["device"] == "cpu" and data["runs"][0]["config"]["device"] == "cpu"
    assert data["config"]["prepare"]["device"] == "cpu"  # as given; "device" is where torch ran
    assert [m["model"] for m in data["runs"][0]["models"]] == ["base", "s=0.5 fp32"]
    # the library's default (auto, the CPU on this host) keys the point as --device cpu did: it is reused,
    # and the record is the same
    again = sweep(SweepConfig(PrepareConfig(zoo_checkpoint.path, eval_samples=32), out=tmp_path / "s",
                              sparsities=(0.5,), precisions=("fp32",), attacks="fgsm", eps="8/255",
                              finetune=TrainConfig(epochs=0)))
    if not CUDA:
        assert (again.reused, again.computed) == (1, 0)
        assert [(s.model, s.set, s.accuracy.k) for s in again.sets] == \
            [(s["model"], s["set"], s["accuracy"]["k"]) for s in data["runs"][0]["sets"]]


@pytest.mark.slow
def test_recipe_and_study_record_the_device(zoo_checkpoint, tmp_path):
    from edgerobust.research.configs import RecipeConfig
    from edgerobust.research.recipes import run_recipe
    from edgerobust.workstation.configs import PrepareConfig

    torch.set_num_threads(1)
    r = run_recipe("transfer", RecipeConfig(out=tmp_path / "r",
                                            prepare=PrepareConfig(zoo_checkpoint.path, eval_samples=32, device="cpu"),
                                            finetune_epochs=0, sparsities=(0.5,), eps="8/255", attack_steps=1,
                                            latency_rounds=1))
    doc = json.loads((r.out / "recipe.json").read_text())["_data"]
    assert doc["device"] == "cpu" and doc["config"]["prepare"]["device"] == "cpu"
    assert doc["sweep_config"]["device"] == "cpu" and doc["sweep_config"]["prepare"]["device"] == "cpu"
    res = cli("study", _study(tmp_path, zoo_checkpoint.path), "--out", tmp_path / "t", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "torch on cpu" in " ".join(res.stdout.split())
    assert json.loads((tmp_path / "t" / "study.json").read_text())["_data"]["device"] == "cpu"


def test_gpus_per_ray_task_follow_the_device():
    from edgerobust.research.runners import LocalRunner, gpus_per_task, point_device

    assert gpus_per_task(torch.device("cuda", 1)) == 1.0 and gpus_per_task(torch.device("cuda")) == 1.0
    assert gpus_per_task("cpu") == 0.0 and gpus_per_task(torch.device("cpu")) == 0.0
    assert gpus_per_task("auto") == (1.0 if CUDA else 0.0)
    with pytest.raises(UsageError, match="Unknown `device`"):
        gpus_per_task("tpu")
    # in this process a point keeps the device as resolved
    assert point_device(LocalRunner(), torch.device("cuda", 1)) == "cuda:1"
    assert point_device(LocalRunner(), torch.device("cpu")) == "cpu"


class _Ref:
    def __init__(self, value):
        self.value = value


class _FakeRay(types.ModuleType):
    """Just enough of ray for RayRunner.map: records what each remote function asks for and runs it here."""

    class exceptions:
        RayTaskError = RuntimeError

    def __init__(self):
        super().__init__("ray")
        self.asked: list[dict] = []

    def is_initialized(self) -> bool:
        return True

    def remote(self, **resources):
        self.asked.append(resources)
        return lambda in_worker: types.SimpleNamespace(remote=lambda fn, item, threads: _Ref(fn(item)))

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value


def test_ray_runner_asks_for_a_gpu_per_task_on_cuda(monkeypatch):
    from edgerobust.research.runners import RayRunner, make_runner, point_device

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    cuda, cpu = make_runner("ray", device=torch.device("cuda", 1)), make_runner("ray", device="cpu")
    assert isinstance(cuda, RayRunner) and (cuda.gpus, cpu.gpus) == (1.0, 0.0)
    # on a Ray worker the assigned GPU is the only one it sees: the index asked for here names none there
    assert point_device(cuda, torch.device("cuda", 1)) == "cuda"
    assert point_device(cpu, torch.device("cpu")) == "cpu"
    with pytest.raises(UsageError, match="asks Ray for no GPU"):
        point_device(cpu, torch.device("cuda", 0))
    got = {}
    cuda.map(lambda x: x * 2, [1, 2, 3], lambda i, r: got.__setitem__(i, r))
    cpu.map(lambda x: x, [7], lambda i, r: None)
    assert got == {0: 2, 1: 4, 2: 6}
    assert [a["num_gpus"] for a in fake.asked] == [1.0, 0.0]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CI has none): run on a GPU machine")
def test_sweep_on_cuda_records_the_gpu(zoo_checkpoint, tmp_path):
    r = cli("sweep", zoo_checkpoint.path, "--out", tmp_path / "s", "--device", "cuda", "--threats",
            "transfer,whitebox", *TINY)
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "s" / "sweep.json").read_text())["_data"]
    assert data["device"].startswith("cuda:0 (") and "torch on cuda:0" in " ".join(r.stdout.split())
    cpu = cli("sweep", zoo_checkpoint.path, "--out", tmp_path / "s", "--device", "cpu", "--threats",
              "transfer,whitebox", *TINY)
    assert cpu.exit_code == 0, cpu.output  # a CUDA point is not reused on the CPU: keyed apart
    run = json.loads((tmp_path / "s" / "sweep.json").read_text())["_data"]["runs"][0]
    assert run["config"]["device"] == "cpu" and (run["reused"], run["computed"]) == (0, 1)
