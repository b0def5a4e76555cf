"""Recipes: the registry, their plans, one recipe end to end in a reduced setting, and the CLI."""
import dataclasses
import json
import re

import pytest
from typer.testing import CliRunner

from edgerobust.cli import app
from edgerobust.errors import UsageError
from edgerobust.research.configs import RecipeConfig
from edgerobust.research.recipes import RECIPES
from edgerobust.workstation.configs import PrepareConfig

pytest.importorskip("matplotlib")
NAMES = ("transfer", "mrs-vs-uniform", "pruning-defence", "int8-strength", "adv-finetune")


def test_recipe_list_shows_the_five():
    res = CliRunner().invoke(app, ["recipe", "list"])
    assert res.exit_code == 0, res.output
    for name in NAMES:
        assert name in res.output
    assert tuple(RECIPES) == NAMES


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_each_recipe_cites_its_paper_and_plans(name, tmp_path):
    recipe = RECIPES[name]
    assert re.search(r"\(\d{4}\)|et al\.", recipe.doc) and re.search(r"et al\.|Pedrini", recipe.paper)
    cfg = RecipeConfig(out=tmp_path / "r", sparsities=(0.5,))
    plan = recipe.plan(cfg)
    assert plan.variants and plan.focus_eps in plan.eps.split(",")
    assert all(v.sparsity in (0.0, 0.5) for v in plan.variants)


def test_plans_compare_what_their_papers_compare(tmp_path):
    cfg = RecipeConfig(out=tmp_path / "r")
    defence = RECIPES["pruning-defence"].plan(cfg)
    assert {v.group for v in defence.variants} >= {"l1", "random"} and defence.threats == ("whitebox",)
    assert all(v.finetune.epochs == cfg.finetune_epochs for v in defence.variants)
    int8 = RECIPES["int8-strength"].plan(cfg)
    assert int8.precisions == ("fp32", "int8") and any(v.sparsity == 0 for v in int8.variants)
    assert len(int8.eps.split(",")) >= 4
    adv = RECIPES["adv-finetune"].plan(cfg)
    assert sorted({v.sparsity for v in adv.variants}) == [0.5, 0.7, 0.9]
    assert {v.finetune.mode for v in adv.variants} == {"standard", "pgd-at"}


@pytest.mark.slow
def test_transfer_recipe_end_to_end_two_seeds(zoo_checkpoint, tmp_path):
    from edgerobust.research.recipes import run_recipe
    from edgerobust.research.points import find, pct

    out = tmp_path / "transfer"
    cfg = RecipeConfig(out=out, prepare=PrepareConfig(zoo_checkpoint.path, eval_samples=48), seeds=2,
                       finetune_epochs=0, sparsities=(0.5,), eps="4/255,8/255", attack_steps=2, latency_rounds=1)
    r = run_recipe("transfer", cfg)
    assert len(r.runs) == 2 and [x.seed for x in r.runs] == [0, 1]
    base = find(r.points, model="base", threat="transfer", attack="pgd", eps_text="8/255")[0]
    pruned = find(r.points, model="s=0.5 fp32", threat="transfer", attack="pgd", eps_text="8/255")[0]
    assert base.seeds == 2 and base.accuracy_std is not None
    # the finding sentence carries the numbers behind it
    assert pct(base.accuracy, base.accuracy_std) in r.finding
    assert pct(pruned.accuracy, pruned.accuracy_std) in r.finding
    assert "n=48" in r.finding and "2 seeds" in r.finding
    assert f"s=0.5 ({pruned.macs_reduction:.1f}x fewer MACs)" in r.finding  # the realized compression, quoted
    gap = abs(100 * (pruned.accuracy - base.accuracy))
    assert f"{gap:.1f} pp" in r.finding or f"{100 * (pruned.accuracy - base.accuracy):+.1f} pp" in r.finding
    doc = json.loads((out / "recipe.json").read_text())
    assert doc["_type"] == "edgerobust.recipe" and doc["_version"] == 1
    data = doc["_data"]
    assert data["finding"] == r.finding and len(data["runs"]) == 2
    prep = data["config"]["prepare"]
    assert prep["model"] == str(zoo_checkpoint.path) and prep["eval_samples"] == 48 and prep["device"] == "auto"
    assert [(run["seed"], run["config"]["prepare"]["seed"]) for run in data["runs"]] == [(0, 0), (1, 1)]
    keys = {f'{p["model"]}|{p["threat"]}|{p["attack"]}|{p["eps_text"]}' for p in data["points"]}
    assert all(d["key"] in keys for plot in data["plots"] for d in plot["points"])
    page = (out / "report.html").read_text()
    assert "Vora" in page and r.finding.split(" (")[0] in page and "https://" not in page
    assert (out / "seed-1" / "sweep" / "sweep.json").is_file()
    # run again: the zoo checkpoints and every point are reused, the finding is the same
    again = run_recipe("transfer", cfg)
    assert [(x.reused, x.computed) for x in again.runs] == [(1, 0), (1, 0)] and again.finding.split(" (")[0] in page
    assert [p.accuracy for p in again.points] == [p.accuracy for p in r.points]


def test_recipe_config_validation(tmp_path):
    with pytest.raises(UsageError, match="`arch` 'resnet50' is not a zoo model"):
        RecipeConfig(out=tmp_path / "r", prepare=PrepareConfig(arch="resnet50"))
    with pytest.raises(UsageError, match="trains on 'digits'"):
        RecipeConfig(out=tmp_path / "r", prepare=PrepareConfig(data="cifar10:/nowhere"))
    with pytest.raises(UsageError, match="`seeds` must be an integer >= 1"):
        RecipeConfig(out=tmp_path / "r", seeds=0)
    with pytest.raises(UsageError, match="sparsity"):
        RecipeConfig(out=tmp_path / "r", sparsities=(1.5,))
    with pytest.raises(UsageError, match="`model` '.*missing.pt' does not exist"):
        RecipeConfig(out=tmp_path / "r", prepare=PrepareConfig(tmp_path / "missing.pt"))
    with pytest.raises(UsageError, match="`eval_samples` must be an integer >= 1"):
        RecipeConfig(out=tmp_path / "r", prepare=PrepareConfig(eval_samples=0))
    assert RecipeConfig(out=tmp_path / "r", prepare=PrepareConfig(arch="zoo:digits-cnn")).zoo_name == "digits-cnn"
    assert not (tmp_path / "r").exists()


def test_cli_recipe_errors():
    runner = CliRunner()
    for args, message in ((["nope"], "Unknown recipe"), (["transfer", "--arch", "vgg99"], "not a zoo model"),
                          (["transfer", "--sparsities", "a,b"], "comma-separated numbers")):
        res = runner.invoke(app, ["recipe", "run", *args])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
