"""Sweeps on a real local Ray (num_cpus=2): the same points as in this process. Skipped without ray."""
import json

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance for the session (its start-up is seconds; keep it out of other tests)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_sweep_on_ray_equals_the_sweep_in_process(local_ray, zoo_checkpoint, tmp_path):
    import torch

    from edgerobust.cli import app
    from edgerobust.research.sweep import sweep
    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig, TrainConfig

    torch.set_num_threads(1)  # as each Ray task runs
    here = sweep(SweepConfig(PrepareConfig(zoo_checkpoint.path, eval_samples=48), out=tmp_path / "local",
                             sparsities=(0.0, 0.5), attacks="fgsm", eps="8/255", finetune=TrainConfig(epochs=0),
                             latency_rounds=1, write_report=False))
    res = CliRunner().invoke(app, ["sweep", str(zoo_checkpoint.path), "--out", str(tmp_path / "ray"), "--ray",
                                   "--sparsities", "0,0.5", "--attacks", "fgsm", "--eps", "8/255",
                                   "--eval-samples", "48", "--finetune-epochs", "0", "--json"])
    assert res.exit_code == 0, res.output
    assert "ran 2 point(s) on Ray" in " ".join(res.stderr.split())
    run = json.loads(res.stdout)["_data"]["runs"][0]
    assert run["runner"] == "ray" and (run["computed"], run["reused"]) == (2, 0)
    assert [m["model"] for m in run["models"]] == [m.model for m in here.models]
    assert [(m["macs"], m["clean"]["k"]) for m in run["models"]] == [(m.macs, m.clean.k) for m in here.models]
    assert [(s["model"], s["set"].split("/")[-1], s["accuracy"]["k"]) for s in run["sets"]] == \
        [(s.model, s.set.split("/")[-1], s.accuracy.k) for s in here.sets]
