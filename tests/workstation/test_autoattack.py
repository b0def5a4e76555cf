"""AutoAttack as a set family: apgd-t and fab-t, the `autoattack` family and its budgets, the
expected-time message, and the registry's independence from the configs."""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerobust import events, ui
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.errors import UsageError
from edgerobust.workstation.attacks import (ATTACKS, FAMILIES, AttackSpec, craft_set, craft_sets, craft_time, make_specs,
                                            parse_attack_items, parse_attacks)

STANDARD = {"apgd": ("steps", 100), "apgd-t": ("steps", 100), "fab-t": ("steps", 100), "square": ("n_queries", 5000)}
EPS = 0.3  # on 8x8 digits every component breaks the tiny model at this radius, in well under a second


def _quiet(n, status=None):
    pass


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits as [0, 1] pixels (N, 1, 8, 8): 1500 to train, 24 to attack."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    return x[:1500], y[:1500], x[1500:1524], y[1500:1524]


@pytest.fixture(scope="module")
def model(digits):
    """A tiny CNN trained for about a second; accuracy ~0.9 on held-out digits."""
    xtr, ytr, _, _ = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 64, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
        for _ in range(5):
            for i in range(0, len(X), 100):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(X[i:i + 100]), Y[i:i + 100]).backward()
                opt.step()
    opt.zero_grad(set_to_none=True)
    return net.eval()


@pytest.fixture(scope="module")
def family_sets(model, digits, tmp_path_factory):
    """The standard family at EPS, written by craft_sets, with what the command line shows on stderr."""
    _, _, x, y = digits
    out = tmp_path_factory.mktemp("adv")
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(buf):  # bars and messages go to stderr
        mp.setenv("COLUMNS", "400")
        ui.install()  # the CLI's status lines and progress bars (the library alone prints nothing)
        try:
            paths = craft_sets(model, EvalSet(x=x, y=y), make_specs("autoattack", str(EPS)), out,
                               base_sha256="b" * 64, eval_sha256="e" * 64, batch_size=16)
        finally:
            ui.uninstall()
    return {AdvSet.load(p).meta["attack"]: AdvSet.load(p) for p in paths}, buf.getvalue()


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# ---------------------------------------------------------------------------------------------
# the family and its budgets


def test_family_expands_to_the_standard_components_at_each_eps():
    specs = make_specs("autoattack", "2/255,0.05")
    assert [s.name for s in specs] == ["apgd_2-255", "apgd_0.05", "apgd-t_2-255", "apgd-t_0.05",
                                       "fab-t_2-255", "fab-t_0.05", "square_2-255", "square_0.05"]
    assert {s.family for s in specs} == {"autoattack"}
    for s in specs:
        key, budget = STANDARD[s.attack]
        assert s.steps == budget and dataclasses.replace(s, n_classes=10).params()[key] == budget
    assert parse_attacks("pgd,autoattack") == ["pgd", "apgd", "apgd-t", "fab-t", "square"]
    assert dict(FAMILIES["autoattack"].members) == {k: v for k, (_, v) in STANDARD.items()}


def test_single_use_keeps_the_cheap_defaults():
    assert AttackSpec("apgd", 0.1).params()["steps"] == 10
    assert AttackSpec("square", 0.1).params()["n_queries"] == 1000
    assert AttackSpec("apgd-t", 0.1, n_classes=10).params()["steps"] == 10
    assert AttackSpec("fab-t", 0.1, n_classes=10).params()["steps"] == 10
    assert make_specs("apgd", "0.1")[0].family is None


def test_explicit_budgets_override_the_family_and_the_steps_option():
    with events.recording_warnings() as shown:
        specs = make_specs("pgd,autoattack,apgd-t:20,square:1000,mifgsm:7", "0.1", steps=3)
    got = {s.attack: (s.steps, s.family) for s in specs}
    assert got == {"pgd": (3, None), "apgd": (100, "autoattack"), "apgd-t": (20, "autoattack"),
                   "fab-t": (100, "autoattack"), "square": (1000, "autoattack"), "mifgsm": (7, None)}
    assert [s.attack for s in specs] == ["pgd", "apgd", "apgd-t", "fab-t", "square", "mifgsm"]
    assert len(shown) == 1 and "`steps`" in shown[0] and "square 5000 queries" in shown[0]
    assert "--" not in shown[0]  # library messages name config fields, never flags
    with events.recording_warnings() as shown:
        make_specs("autoattack", "0.1")
    assert shown == []


@pytest.mark.parametrize("text, words", [
    ("autoattack,apgd", "already part of autoattack"), ("autoattack:20", "takes no budget"),
    ("fgsm:3", "takes no budget"), ("pgd:0", "budget"), ("pgd:x", "budget"), ("autoattack,autoattack", "more than once"),
    ("autoattack,apgd:5,apgd:6", "more than once"), ("autoatack", "Unknown attack"),
], ids=lambda v: str(v))
def test_attacks_text_errors_say_what_is_wrong(text, words):
    with pytest.raises(UsageError) as e:
        parse_attack_items(text)
    assert words in str(e.value.what)


def test_unknown_attack_lists_the_families():
    with pytest.raises(UsageError) as e:
        make_specs("deepfool", "0.1")
    assert "autoattack" in e.value.why
    with pytest.raises(UsageError, match="not a member"):
        AttackSpec("pgd", 0.1, family="autoattack")


def test_targeted_components_take_the_classes_from_the_model_capped_at_nine_targets(model, digits):
    assert AttackSpec("apgd-t", 0.1, n_classes=100).params()["n_classes"] == 10  # 9 targets, as AutoAttack
    assert AttackSpec("fab-t", 0.1, n_classes=3).params()["n_classes"] == 3
    with pytest.raises(UsageError, match="number of classes"):
        AttackSpec("apgd-t", 0.1).params()
    _, _, x, y = digits
    head = torch.nn.Sequential(model, torch.nn.Linear(10, 4))  # 4 classes: 3 targets
    s = craft_set(head, x[:4], y[:4] % 4, AttackSpec("fab-t", EPS, steps=2), progress=_quiet)
    assert s.meta["params"]["n_classes"] == 4


# ---------------------------------------------------------------------------------------------
# the component sets


def test_component_sets_stay_within_eps_and_record_family_and_params(family_sets, digits):
    sets, _ = family_sets
    _, _, x, _ = digits
    assert sorted(sets) == sorted(STANDARD)
    for attack, s in sets.items():
        key, budget = STANDARD[attack]
        assert s.meta["family"] == "autoattack" and s.meta["name"] == f"{attack}_{EPS}"
        assert s.meta["params"][key] == budget, attack
        assert np.abs(s.x.astype(np.float64) - x).max() <= EPS + 1e-6
        assert s.x.min() >= 0 and s.x.max() <= 1
    assert sets["apgd-t"].meta["params"]["n_classes"] == sets["fab-t"].meta["params"]["n_classes"] == 10
    assert sets["fab-t"].meta["torchattacks_class"] == "FAB" and sets["fab-t"].meta["params"]["multi_targeted"]


def test_an_override_changes_the_recorded_budget(model, digits, tmp_path):
    _, _, x, y = digits
    specs = make_specs("autoattack,apgd:5,apgd-t:3,fab-t:2,square:50", str(EPS))
    paths = craft_sets(model, EvalSet(x=x[:8], y=y[:8]), specs, tmp_path, base_sha256="", eval_sha256="")
    params = {AdvSet.load(p).meta["attack"]: AdvSet.load(p).meta["params"] for p in paths}
    assert {a: params[a][STANDARD[a][0]] for a in params} == {"apgd": 5, "apgd-t": 3, "fab-t": 2, "square": 50}


@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
def test_targeted_components_lower_accuracy(name, model, digits):
    _, _, x, y = digits
    s = craft_set(model, x, y, AttackSpec(name, 0.15, steps=10), progress=_quiet)
    clean, adv = _accuracy(model, x, y), _accuracy(model, s.x, y)
    assert clean > 0.8 and adv <= clean - 0.3, (clean, adv)
    assert s.meta["base_adv_accuracy"] == pytest.approx(adv) and s.meta["family"] is None


def test_the_worst_case_over_the_family_is_at_most_each_component(family_sets, model, digits):
    sets, _ = family_sets
    _, _, x, y = digits
    with torch.no_grad():
        ok = model(torch.from_numpy(x)).argmax(1).numpy() == y
        per = {a: model(torch.from_numpy(s.x)).argmax(1).numpy() == y for a, s in sets.items()}
    worst = ok & np.logical_and.reduce(list(per.values()))
    assert worst.mean() <= min(s.meta["base_adv_accuracy"] for s in sets.values())


# ---------------------------------------------------------------------------------------------
# expected time and progress


def test_crafting_on_the_cpu_says_the_expected_time_and_shows_a_bar_per_component(family_sets):
    _, err = family_sets
    text = " ".join(err.split())
    assert "Expected time on the CPU: about" in text and "Scaled from a timed pass" in text
    assert text.index("Expected time") < text.index("autoattack apgd eps=0.3 (100 steps)")
    for attack, (key, budget) in STANDARD.items():
        unit = "queries" if key == "n_queries" else "steps"
        assert f"autoattack {attack} eps=0.3 ({budget} {unit}):" in text  # its own bar, by name


def test_craft_time_scales_one_measured_pass_by_each_attacks_evaluations(model, digits):
    _, _, x, y = digits
    specs = make_specs("autoattack,fgsm", "0,0.1")
    est = craft_time(model, x, specs, y)
    assert est.probe == 24 and est.n == 24 and est.grad_s > 0 and est.forward_s > 0
    n, g, f, a = len(x), est.grad_s, est.forward_s, est.clean_accuracy
    assert a == pytest.approx(_accuracy(model, x, y))
    # the AutoAttack components attack only the samples answered correctly; fgsm attacks every one
    assert est.seconds["apgd_0.1"] == pytest.approx(n * (a * 100 * g + 2 * f))
    assert est.seconds["apgd-t_0.1"] == pytest.approx(n * (a * 900 * g + 2 * f))  # 9 targets x 100 steps
    assert est.seconds["fab-t_0.1"] == pytest.approx(n * (a * 900 * (g + f) + 2 * f))
    assert est.seconds["square_0.1"] == pytest.approx(n * (a * 5000 * f + 2 * f))
    assert est.seconds["fgsm_0.1"] == pytest.approx(n * (g + 2 * f))
    assert est.seconds["apgd_0"] == pytest.approx(n * 2 * f)  # eps 0 is the clean set
    assert est.total == pytest.approx(sum(est.seconds.values()))
    assert craft_time(model, x, specs[:1]).clean_accuracy == 1.0  # without labels: no scaling
    assert "about" in est.message() and "timed pass" in est.message()


# ---------------------------------------------------------------------------------------------
# layout


def test_the_registry_never_imports_the_configs_not_even_for_type_checking():
    import edgerobust.workstation.attacks.registry as registry

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):  # every import, TYPE_CHECKING blocks and function bodies included
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {i for i in imported if i.split(".")[-1] in ("spec", "AttackSpec", "craft", "cost")}, imported
    assert "TYPE_CHECKING" not in Path(registry.__file__).read_text()
    assert set(STANDARD) <= set(ATTACKS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_family_crafts_on_the_models_cuda_device(model, digits):
    import copy

    _, _, x, y = digits
    gpu = copy.deepcopy(model).cuda()
    for spec in make_specs("autoattack,apgd:5,apgd-t:3,fab-t:3,square:100", str(EPS)):
        s = craft_set(gpu, x, y, spec, progress=_quiet)
        assert np.abs(s.x - x).max() <= EPS + 1e-6 and s.meta["base_adv_accuracy"] < s.meta["base_accuracy"]
    assert next(gpu.parameters()).is_cuda
