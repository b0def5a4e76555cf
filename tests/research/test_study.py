"""Resumable sweeps: a sweep killed with SIGKILL part way picks up its finished points, a corrupt point is
rebuilt, a changed option recomputes only the points it affects; the runner registry; study files."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _fixtures_gauntlet import fast_profile
from edgerobust.cli import app
from edgerobust.errors import DependencyError, UsageError

# A sweep in a child process whose second point blocks after telling the test it started: the test
# then kills the child with SIGKILL, with the first point finished and the second half-built.
_CHILD = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
import edgerobust.research.sweep_points as sp
from edgerobust.research.configs import SweepConfig
from edgerobust.research.sweep import sweep
from edgerobust.workstation.configs import PrepareConfig, TrainConfig

args = json.loads(sys.argv[1])
real, calls = sp.build_point, []

def build_point(task):
    calls.append(task)
    if len(calls) == 2:
        Path(args["ready"]).write_text("second point started")
        time.sleep(600)
    return real(task)

sp.build_point = build_point
sweep(SweepConfig(PrepareConfig(args["model"], eval_samples=48), out=args["out"], sparsities=(0.3, 0.5),
                  precisions=("fp32",), attacks="fgsm", eps="8/255", finetune=TrainConfig(epochs=0), latency_rounds=1,
                  latency_profile=args["profile"], write_report=False))
"""


def _config(model, out, seed=0, eval_samples=48, **kw):
    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig, TrainConfig

    args = dict(out=out, sparsities=(0.3, 0.5), precisions=("fp32",), attacks="fgsm", eps="8/255",
                finetune=TrainConfig(epochs=0), latency_rounds=1, write_report=False)
    return SweepConfig(PrepareConfig(model, seed=seed, eval_samples=eval_samples), **{**args, **kw})


def _accuracies(result) -> dict:
    return {(s.model, s.set.split("/")[-1]): s.accuracy.k for s in result.sets} | \
        {(m.model, "clean"): m.clean.k for m in result.models}


@pytest.mark.slow
def test_killed_sweep_resumes_and_reuses_only_intact_points(zoo_checkpoint, tmp_path):
    import torch

    from edgerobust.research.sweep import sweep

    torch.set_num_threads(1)
    out, ready = tmp_path / "s", tmp_path / "ready"
    quick = str(fast_profile(tmp_path / "quick.toml"))  # speedups measured in a few runs: what is tested is the resume
    child = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(
        {"model": str(zoo_checkpoint.path), "out": str(out), "ready": str(ready), "profile": quick})],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while not ready.exists():
            assert child.poll() is None, child.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the child sweep never reached its second point"
            time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    done = [p for p in (out / "points").iterdir() if (p / "point.json").is_file()]
    assert [p.name.split("-")[0] for p in done] == ["s_0.3"] and not (out / "sweep.json").exists()

    # the same command again: the finished point is reused, the killed one computed
    first = sweep(_config(zoo_checkpoint.path, out, latency_profile=quick))
    assert (first.reused, first.computed) == (1, 1)
    assert [m.model for m in first.models] == ["base", "s=0.3 fp32", "s=0.5 fp32"]
    assert not [p for p in out.rglob(".*tmp-*")], "a half-written point folder was left behind"
    doc = json.loads((out / "sweep.json").read_text())["_data"]
    assert {p["model"] for p in doc["points"]} == {"base", "s=0.3 fp32", "s=0.5 fp32"}

    # a corrupt point is rebuilt, never trusted; rebuilt, it scores the same
    (point,) = [p for p in (out / "points").iterdir() if p.name.startswith("s_0.5")]
    (point / "bundle" / "model.onnx").write_bytes(b"not a model")
    again = sweep(_config(zoo_checkpoint.path, out, latency_profile=quick))
    assert (again.reused, again.computed) == (1, 1)
    assert _accuracies(again) == _accuracies(first)

    # a changed option recomputes only the points it affects: 0.3 is kept, 0.7 is new
    changed = sweep(_config(zoo_checkpoint.path, out, sparsities=(0.3, 0.7), latency_profile=quick))
    assert (changed.reused, changed.computed) == (1, 1)
    assert _accuracies(changed)[("s=0.3 fp32", "fgsm_8-255.npz")] == _accuracies(first)[("s=0.3 fp32",
                                                                                           "fgsm_8-255.npz")]


def test_point_keys_follow_the_options_that_change_results(tmp_path):
    import dataclasses

    from edgerobust.research.configs import Variant
    from edgerobust.research.sweep_points import Shared, point_key
    from edgerobust.workstation.configs import TrainConfig
    from edgerobust.workstation.data.normalization import NormSpec

    def shared_of(cfg, **kw):  # what the base stage decides once for ``cfg`` (sweep.base_stage)
        decided = dataclasses.replace(cfg.prepare, **{"data": "digits", "allow_weak_base": True,
                                                      "normalize": NormSpec("custom", (0.3,), (0.3,)), **kw})
        return Shared(root=str(tmp_path), prepare=decided, model_sha256="ab" * 32, data_digest="cd" * 32,
                      base_params=1, base_macs=1, transfer={})

    cfg = _config("m.pt", tmp_path / "o")
    shared = shared_of(cfg)
    key = point_key(cfg, Variant(0.5), shared)
    same = _config("m.pt", tmp_path / "elsewhere", latency_rounds=3, fresh=True)
    assert key == point_key(same, Variant(0.5), shared_of(same))
    for other in (_config("m.pt", tmp_path / "o", finetune=TrainConfig(epochs=1)),
                  _config("m.pt", tmp_path / "o", eps="4/255"), _config("m.pt", tmp_path / "o", seed=1),
                  _config("m.pt", tmp_path / "o", eval_samples=64)):
        assert point_key(other, Variant(0.5), shared_of(other)) != key
    assert point_key(cfg, Variant(0.3), shared) != key
    assert point_key(cfg, Variant(0.5), dataclasses.replace(shared, model_sha256="ef" * 32)) != key
    assert point_key(cfg, Variant(0.5), shared_of(cfg, normalize=NormSpec("custom", (0.5,), (0.3,)))) != key


def test_runner_registry_and_missing_ray(monkeypatch, zoo_checkpoint, tmp_path):
    from edgerobust.research.runners import RUNNERS, LocalRunner, make_runner

    assert set(RUNNERS) == {"local", "ray"} and isinstance(make_runner(), LocalRunner)
    with pytest.raises(UsageError, match="Unknown runner"):
        make_runner("slurm")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(DependencyError) as exc:
        make_runner("ray")
    assert "pip install 'edgerobust[ray]'" in exc.value.fix
    res = CliRunner().invoke(app, ["sweep", str(zoo_checkpoint.path), "--out", str(tmp_path / "o"), "--ray"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "pip install 'edgerobust[ray]'" in text and not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, ["recipe", "run", "transfer", "--out", str(tmp_path / "r"), "--ray"])
    assert res.exit_code == 2 and "edgerobust[ray]" in " ".join(res.output.split())


def test_out_that_is_not_a_sweep_is_refused(tmp_path):
    from edgerobust.research.sweep import prepare_out

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        prepare_out(tmp_path / "x", "sweep", overwrite=False, fresh=False)
    prepare_out(tmp_path / "y", "sweep", overwrite=False, fresh=False)
    (tmp_path / "y" / "points").mkdir()
    prepare_out(tmp_path / "y", "sweep", overwrite=False, fresh=False)  # its own folder: resumed
    assert (tmp_path / "y" / "points").is_dir()
    with pytest.raises(UsageError, match="already exists"):  # a sweep folder is not a recipe's
        prepare_out(tmp_path / "y", "recipe", overwrite=False, fresh=False)
    prepare_out(tmp_path / "y", "sweep", overwrite=False, fresh=True)
    assert not (tmp_path / "y" / "points").exists()
    assert Path(tmp_path / "x" / "keep.txt").exists()


@pytest.mark.parametrize("text, key, fix", [
    ('[[models]]\npath = "m.pt"\n[grid]\nsparsity = [0.5]\n', "grid.sparsity", "sparsities"),
    ('[[models]]\npath = "m.pt"\n[grid]\nsparsities = 0.5\n', "grid.sparsities", "sparsities = [...]"),
    ('[[models]]\npath = "m.pt"\n[grid]\nsparsities = [1.5]\n', "sparsity must lie", "`sparsities`"),
    ('[[models]]\narch = "zoo:digits-cnn"\n', "models[0].path", "path ="),
    ('[grid]\nseeds = [0]\n', "models", "[[models]]"),
    ('[[models]]\npath = "m.pt"\n[grid]\nprecisions = ["fp16"]\n', "precision", "fp32"),
    ('[[models]]\npath = "m.pt"\nmodel = "x"\n', "models[0].model", "path"),
    ('[[models]\npath = "m.pt"\n', "not valid TOML", "line"),
    ('[[models]]\npath = "m.pt"\n[grid]\ncorruptions = ["gaussian_nois"]\n', "gaussian_nois", "'gaussian_noise'"),
    ('[[models]]\npath = "m.pt"\n[grid]\ncorruption_severities = [6]\n', "`corruption_severities`", "1,3,5"),
], ids=["unknown-key", "not-a-list", "bad-sparsity", "no-path", "no-models", "bad-precision", "model-key", "toml",
        "bad-corruption", "bad-severity"])
def test_bad_study_file_is_refused(text, key, fix, tmp_path):
    from edgerobust.research.study import load_study

    f = tmp_path / "study.toml"
    f.write_text(text)
    with pytest.raises(UsageError) as exc:
        load_study(f, tmp_path / "out")
    message = f"{exc.value.what} {exc.value.why or ''} {exc.value.fix or ''}"
    assert str(f) in message and key in message and fix in message
    res = CliRunner().invoke(app, ["study", str(f), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "study.toml" in "".join(res.output.split()) and not (tmp_path / "o").exists()


def test_study_grid_takes_corruptions(tmp_path):
    from edgerobust.research.study import load_study

    f = tmp_path / "study.toml"
    f.write_text('[[models]]\npath = "m.pt"\n[grid]\ncorruptions = ["noise", "fog"]\ncorruption_severities = [5, 2]\n')
    (cfg,) = [c for _, _, c in load_study(f, tmp_path / "out").sweeps]
    assert cfg.corruptions == ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "fog")
    assert cfg.corruption_severities == (2, 5)
    f.write_text('[[models]]\npath = "m.pt"\n')
    assert load_study(f, tmp_path / "out").sweeps[0][2].corruptions == ()  # none unless asked


@pytest.mark.slow
def test_study_runs_models_as_series(zoo_checkpoint, tmp_path):
    import torch

    torch.set_num_threads(1)
    link = tmp_path / "cnn.pt"
    link.symlink_to(zoo_checkpoint.path)
    (tmp_path / "study.toml").write_text(f'''name = "tiny"
[[models]]
name = "a"
path = "cnn.pt"
[[models]]
name = "b"
path = "{zoo_checkpoint.path}"
[grid]
sparsities = [0.5]
precisions = ["fp32"]
finetune_epochs = 0
attacks = ["fgsm"]
eps = ["8/255"]
eval_samples = 32
latency_rounds = 1
''')
    res = CliRunner().invoke(app, ["study", str(tmp_path / "study.toml"), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["_type"] == "edgerobust.research.study" and doc["_data"]["series"] == ["a", "b"]
    models = {p["model"] for p in doc["_data"]["points"]}
    assert models == {"a base", "a s=0.5 fp32", "b base", "b s=0.5 fp32"}
    # the same model under two names: the same figures
    acc = {p["model"]: p["accuracy"] for p in doc["_data"]["points"] if p["threat"] == "transfer"}
    assert acc["a s=0.5 fp32"] == acc["b s=0.5 fp32"]
    assert (tmp_path / "o" / "report.html").is_file() and (tmp_path / "o" / "a" / "seed-0" / "sweep.json").is_file()
