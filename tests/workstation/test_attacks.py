"""Adversarial-set crafting: the registry, configs and parsers, craft_set/craft_sets, `edgerobust attack`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgerobust.workstation.attacks import (ATTACKS, NORMS, AttackSpec, craft_set, craft_sets, make_specs, parse_attacks,
                                parse_eps_grid)
from edgerobust.edge.files.bundle import AdvSet, EvalSet
from edgerobust.errors import DataError, UsageError

REQUIRED = ("fgsm", "pgd", "pgdl2", "mifgsm", "difgsm", "cw", "apgd", "square", "apgd-t", "fab-t")
# Strong enough on 8x8 digits that every attack must hurt: 0.3 in Linf, 2.0 in L2 (of 8 max).
STRENGTH = {"Linf": 0.3, "L2": 2.0}
# Few iterations keep the file fast; cw needs a larger Adam rate to get anywhere in 50 steps.
OPTIONS = {"cw": {"steps": 50, "alpha": 0.1}, "square": {"steps": 200}, "fgsm": {}}


def _quiet(n, status=None):
    pass


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits as [0, 1] pixels (N, 1, 8, 8): 1500 to train, 64 to attack."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    return x[:1500], y[:1500], x[1500:1564], y[1500:1564]


@pytest.fixture(scope="session")
def model(digits):
    """A small CNN trained for about a second; accuracy ~0.9 on held-out digits."""
    xtr, ytr, _, _ = digits
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(16 * 64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(5):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 100):
            b = perm[i:i + 100]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[b]), Y[b]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return net.eval()


def _spec(name: str, **kw) -> AttackSpec:
    return AttackSpec(name, STRENGTH[ATTACKS[name].norm], **{**OPTIONS.get(name, {"steps": 10}), **kw})


@pytest.fixture(scope="session")
def crafted(model, digits):
    """One set per attack, crafted once per session."""
    _, _, x, y = digits
    cache: dict[str, AdvSet] = {}

    def get(name: str) -> AdvSet:
        if name not in cache:
            cache[name] = craft_set(model, x, y, _spec(name), batch_size=40, progress=_quiet)
        return cache[name]

    return get


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_has_the_promised_attacks_each_documented():
    assert set(REQUIRED) <= set(ATTACKS)
    for name, entry in ATTACKS.items():
        assert entry.norm in NORMS, name
        assert "arXiv:" in entry.doc and entry.norm in entry.doc.splitlines()[0], name
        assert entry.uses <= {"steps", "alpha", "random_start", "seed"}, name
    assert ATTACKS["cw"].norm == ATTACKS["pgdl2"].norm == "L2"
    assert ATTACKS["apgd"].kwargs(AttackSpec("apgd", 0.1))["loss"] == "ce"


@pytest.mark.parametrize("name", list(ATTACKS), ids=list(ATTACKS))
def test_params_fit_the_torchattacks_constructor(name):
    import inspect

    import torchattacks

    params = AttackSpec(name, 0.1, steps=7, seed=3, n_classes=10).params()  # craft_set reads n_classes off the model
    sig = inspect.signature(getattr(torchattacks, ATTACKS[name].torchattacks_class).__init__)
    assert set(params) <= set(sig.parameters) - {"self", "model"}
    if "steps" in ATTACKS[name].uses:
        assert 7 in params.values()


# ---------------------------------------------------------------------------------------------
# crafting, for every attack


@pytest.mark.parametrize("name", list(ATTACKS), ids=list(ATTACKS))
def test_set_respects_its_eps_bound_and_pixel_range(name, crafted, digits):
    s, x = crafted(name), digits[2]
    eps = STRENGTH[ATTACKS[name].norm]
    delta = (s.x.astype(np.float64) - x).reshape(len(x), -1)
    if ATTACKS[name].norm == "Linf":
        assert np.abs(delta).max() <= eps + 1e-6
    else:
        assert np.linalg.norm(delta, axis=1).max() <= eps + 1e-5
    assert s.x.min() >= 0.0 and s.x.max() <= 1.0
    assert s.x.dtype == np.float32 and s.x.shape == x.shape
    assert np.abs(delta).max() > 0.01  # the attack did perturb
    assert s.meta["max_perturbation"] == pytest.approx(np.abs(delta).max() if ATTACKS[name].norm == "Linf"
                                                       else np.linalg.norm(delta, axis=1).max(), abs=1e-6)


@pytest.mark.parametrize("name", list(ATTACKS), ids=list(ATTACKS))
def test_set_lowers_the_base_models_accuracy(name, crafted, model, digits):
    s, (_, _, x, y) = crafted(name), digits
    clean, adv = _accuracy(model, x, y), _accuracy(model, s.x, y)
    assert clean > 0.8
    assert adv <= clean - 0.3, f"{name}: clean {clean:.2f}, adversarial {adv:.2f}"
    assert s.meta["base_accuracy"] == pytest.approx(clean)
    assert s.meta["base_adv_accuracy"] == pytest.approx(adv)


@pytest.mark.parametrize("name", list(ATTACKS), ids=list(ATTACKS))
def test_metadata_round_trips_through_npz_without_pickle(name, crafted, tmp_path):
    s = crafted(name)
    path = tmp_path / f"{s.meta['name']}.npz"
    s.save(path)
    with np.load(path, allow_pickle=False) as z:  # raises if anything was pickled
        assert sorted(z.files) == ["idx", "meta", "x", "y"]
        assert all(z[k].dtype != object for k in z.files)
    back = AdvSet.load(path)
    assert np.array_equal(back.x, s.x) and np.array_equal(back.y, s.y) and np.array_equal(back.idx, s.idx)
    m = back.meta
    assert {k: m[k] for k in s.meta} == json.loads(json.dumps(s.meta))
    spec = _spec(name, n_classes=10)  # the digits model's output width, which craft_set fills in
    assert m["name"] == spec.name and m["attack"] == name and m["norm"] == ATTACKS[name].norm
    assert m["params"] == spec.params() and m["eps"] == spec.eps and m["eps_text"] == spec.eps_text
    assert m["n"] == 64 and m["seed"] == 0 and m["seconds"] >= 0
    assert set(m["versions"]) == {"torch", "torchattacks", "edgerobust", "numpy"}
    assert m["kind"] == "edgerobust-adversarial-set" and "T" in m["created"]


def test_pgd_params_default_step_size_and_random_start():
    p = AttackSpec("pgd", 8 / 255, steps=10).params()
    assert p == {"eps": 8 / 255, "alpha": 2.5 * (8 / 255) / 10, "steps": 10, "random_start": True}
    assert AttackSpec("pgd", 8 / 255, alpha=0.01, random_start=False).params()["alpha"] == 0.01
    assert AttackSpec("pgd", 8 / 255, random_start=False).params()["random_start"] is False


def test_crafting_leaves_model_and_rng_untouched(model, digits):
    _, _, x, y = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # a model in train mode is attacked in eval mode and handed back in train mode
    model[0].eval()
    rng = torch.get_rng_state()
    try:
        with torch.no_grad():  # the attack needs gradients and must get them regardless
            s = craft_set(model, x[:16], y[:16], _spec("cw", steps=10), progress=_quiet)
        assert torch.equal(torch.get_rng_state(), rng)
        assert [m.training for m in model.modules()] == [True, False, True, True, True]
        assert all(p.requires_grad and p.grad is None for p in model.parameters())
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        model.eval()
    assert s.meta["n"] == 16


def test_pgd_is_deterministic_for_a_seed(model, digits):
    _, _, x, y = digits
    spec = AttackSpec("pgd", 0.1, steps=3, seed=7)
    a = craft_set(model, x[:32], y[:32], spec, batch_size=16, progress=_quiet)
    b = craft_set(model, x[:32], y[:32], spec, batch_size=16, progress=_quiet)
    c = craft_set(model, x[:32], y[:32], AttackSpec("pgd", 0.1, steps=3, seed=8), batch_size=16, progress=_quiet)
    assert np.array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)  # random start depends on the seed


def test_eps_zero_gives_the_clean_set(model, digits):
    _, _, x, y = digits
    s = craft_set(model, x[:8], y[:8], AttackSpec("pgd", 0.0, "0"), progress=_quiet)
    assert np.array_equal(s.x, x[:8]) and s.meta["name"] == "pgd_0"
    assert s.meta["base_adv_accuracy"] == s.meta["base_accuracy"]


def test_inputs_outside_unit_range_are_refused(model, digits):
    _, _, x, y = digits
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        craft_set(model, (x[:4] - 0.5) / 0.25, y[:4], AttackSpec("fgsm", 0.1), progress=_quiet)
    with pytest.raises(DataError, match="classes"):
        craft_set(model, x[:4], np.array([0, 1, 2, 10]), AttackSpec("fgsm", 0.1), progress=_quiet)


def test_craft_sets_writes_one_named_npz_per_spec(model, digits, tmp_path):
    _, _, x, y = digits
    ev = EvalSet(x=x[:10], y=y[:10])
    specs = make_specs("fgsm,pgd", "2/255,0.05", steps=2)
    paths = craft_sets(model, ev, specs, tmp_path / "adv", base_sha256="b" * 64, eval_sha256="e" * 64)
    assert [p.name for p in paths] == ["fgsm_2-255.npz", "fgsm_0.05.npz", "pgd_2-255.npz", "pgd_0.05.npz"]
    s = AdvSet.load(paths[2])
    assert s.meta["base_sha256"] == "b" * 64 and s.meta["eval_sha256"] == "e" * 64
    assert np.array_equal(s.idx, np.arange(10)) and np.array_equal(s.y, y[:10])
    with pytest.raises(UsageError, match="pgd_0.05.npz"):
        craft_sets(model, ev, [AttackSpec("pgd", 0.05, steps=2), AttackSpec("pgd", 0.05, steps=3)], tmp_path,
                   base_sha256="", eval_sha256="")


# ---------------------------------------------------------------------------------------------
# configs and parsing


@pytest.mark.parametrize("text, expected", [
    ("8/255", [8 / 255]), ("0.03", [0.03]), ("0", [0.0]), ("1e-2", [0.01]), (".5", [0.5]),
    ("2/255,4/255,8/255", [2 / 255, 4 / 255, 8 / 255]), (" 2/255 , 0.1 ", [2 / 255, 0.1]), ("2.5/255", [2.5 / 255]),
], ids=lambda v: str(v))
def test_parse_eps_grid_accepts(text, expected):
    assert parse_eps_grid(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("text, bad", [
    ("abc", "abc"), ("-0.1", "-0.1"), ("8/0", "8/0"), ("1/2/3", "1/2/3"), ("nan", "nan"), ("inf", "inf"),
    ("1e999", "1e999"), ("8/255,x", "x"), ("__import__('os')", "__import__"), ("0x10", "0x10"),
], ids=lambda v: str(v))
def test_parse_eps_grid_names_the_bad_token(text, bad):
    with pytest.raises(UsageError) as e:
        parse_eps_grid(text)
    assert bad in e.value.what


@pytest.mark.parametrize("text", ["8/255,,", "", "8/255,8/255"])
def test_parse_eps_grid_rejects_empty_and_repeated_entries(text):
    with pytest.raises(UsageError):
        parse_eps_grid(text)


def test_unknown_attack_lists_the_known_ones():
    with pytest.raises(UsageError) as e:
        AttackSpec("deepfool", 0.1)
    assert "deepfool" in e.value.what and all(n in e.value.why for n in ATTACKS)
    with pytest.raises(UsageError, match="'foo'"):
        parse_attacks("fgsm,foo")
    assert parse_attacks(" FGSM, pgd") == ["fgsm", "pgd"]


@pytest.mark.parametrize("kw", [
    {"eps": -0.1}, {"eps": float("nan")}, {"eps": 8.0}, {"eps": 0.1, "steps": 0}, {"eps": 0.1, "steps": 2.5},
    {"eps": 0.1, "alpha": 0.0}, {"eps": 0.1, "seed": -1}, {"eps": 0.1, "eps_text": "8/255"},
    {"eps": 0.1, "random_start": "yes"},
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_attack_spec_validates(kw):
    with pytest.raises(UsageError):
        AttackSpec("pgd", **kw)


def test_spec_names_are_file_name_safe_and_stable():
    assert AttackSpec("pgd", 8 / 255, "8/255").name == "pgd_8-255"
    assert AttackSpec("pgd", 0.03, "0.03").name == "pgd_0.03"
    assert AttackSpec("pgd", 8 / 255).name == "pgd_0.0313725"
    assert AttackSpec("pgdl2", 1.0, "1E+0").name == "pgdl2_1e_0"
    assert AttackSpec("fgsm", 0.1, steps=3, alpha=0.2).ignored() == ["steps", "alpha"]
    assert AttackSpec("cw", 8.0).eps == 8.0  # an L2 radius may exceed 1


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_import_stays_torch_free():
    code = "import sys, edgerobust.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """An (untrained) zoo digits CNN saved as a self-describing checkpoint."""
    from edgerobust.workstation.data.sources import load_data
    from edgerobust.workstation.model.load import save_checkpoint
    from edgerobust.workstation.model.nets import ZOO
    from edgerobust.workstation.train.zoo import input_spec

    ds = load_data("digits", image_size=16)
    torch.manual_seed(0)
    net = ZOO["digits-cnn"].factory(num_classes=10, in_channels=1)
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    save_checkpoint(path, net, "zoo:digits-cnn", 10, input_spec(ds, "digits", 16))
    return path


def test_cli_attack_writes_eval_and_sets_and_prints_the_table(checkpoint, tmp_path):
    from edgerobust.cli import app

    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["attack", str(checkpoint), "--out", str(out), "--attacks", "fgsm,pgd",
                                 "--eps", "0,8/255", "-n", "12", "--steps", "2", "--batch-size", "5",
                                 "--allow-weak-base"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["adv", "base.onnx", "eval.npz"]
    assert sorted(p.name for p in (out / "adv").iterdir()) == ["fgsm_0.npz", "fgsm_8-255.npz", "pgd_0.npz",
                                                                "pgd_8-255.npz"]
    ev = EvalSet.load(out / "eval.npz")
    assert ev.x.shape == (12, 1, 16, 16) and ev.meta["data"] == "digits"
    s = AdvSet.load(out / "adv" / "pgd_8-255.npz")
    from edgerobust.edge.files.npzio import sha256_file

    assert s.meta["eval_sha256"] == sha256_file(out / "eval.npz")
    # crafted on the exported base, whose hash the audit checks (--baseline OUT/base.onnx); the .pt's beside it
    assert s.meta["base_sha256"] == sha256_file(out / "base.onnx")
    assert ev.meta["source_sha256"] == sha256_file(checkpoint)
    assert s.meta["params"]["steps"] == 2
    rows = [line.split("│")[1:-1] for line in r.output.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in row[:4]] for row in rows] == [
        ["fgsm", "0", "Linf", "12"], ["fgsm", "8/255", "Linf", "12"], ["pgd", "0", "Linf", "12"],
        ["pgd", "8/255", "Linf", "12"]]
    assert rows[3][4].strip() == f"{s.meta['base_accuracy']:.1%}"
    assert rows[3][5].strip() == f"{s.meta['base_adv_accuracy']:.1%}"
    assert "fgsm does not take --steps" in " ".join(r.output.split())


@pytest.mark.parametrize("args, message", [
    (["--eps", "8/0"], "divides by zero"),
    (["--attacks", "pgd,deepfool"], "Unknown attack 'deepfool'"),
    (["--eps", "8"], "larger than 1"),
    (["--alpha", "fast"], "Cannot read the alpha value 'fast'"),
], ids=["eps", "attack", "linf-eps", "alpha"])
def test_cli_attack_bad_options_give_one_message_and_exit_2(checkpoint, tmp_path, args, message):
    from edgerobust.cli import app

    r = CliRunner().invoke(app, ["attack", str(checkpoint), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_cli_attack_refuses_to_overwrite(checkpoint, tmp_path):
    from edgerobust.cli import app

    (tmp_path / "o").mkdir()
    # the model and data are prepared first (seconds), as in compress: the untrained model needs --allow-weak-base
    r = CliRunner().invoke(app, ["attack", str(checkpoint), "--out", str(tmp_path / "o"), "--allow-weak-base"])
    assert r.exit_code == 2 and "already exists" in " ".join(r.output.split())
    assert "--overwrite" in r.output and list((tmp_path / "o").iterdir()) == []


def test_sets_from_attack_on_the_source_model_pass_the_bundles_audit(zoo_checkpoint, tmp_path, quick_measure):
    """`edgerobust attack` on the .pt a bundle was compressed from, then `audit --eval --adv` on the bundle."""
    import json

    from edgerobust.cli import app

    runner = CliRunner()
    bundle = tmp_path / "bundle"
    r = runner.invoke(app, ["compress", str(zoo_checkpoint.path), "--finetune-epochs", "0", "--max-prune-drop", "100", "--eval-samples", "24",
                            "--out", str(bundle)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "sets"
    r = runner.invoke(app, ["attack", str(zoo_checkpoint.path), "--out", str(out), "--attacks", "fgsm",
                            "--eps", "8/255", "-n", "16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile", "laptop-cpu-1thread", "--no-memory",
                            "--eval", str(out / "eval.npz"), "--adv", str(out / "adv" / "fgsm_8-255.npz"),
                            "--out", str(tmp_path / "report"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())["_data"]
    sets = data["sets"]
    assert [s["name"] for s in sets] == ["clean", "fgsm_8-255"] and sets[1]["n"] == 16
    # the bundle's corruption sets were made from its own eval.npz: with another one, not replayed, and said so
    assert data["corruption"] is None and any("corruption sets were made from" in w for w in data["warnings"])
    # a set crafted on another model is still refused
    other = tmp_path / "other.pt"
    from edgerobust.workstation.train.zoo import train_zoo

    train_zoo("digits-cnn", other, epochs=1, seed=1)
    r = runner.invoke(app, ["attack", str(other), "--out", str(tmp_path / "sets2"), "--attacks", "fgsm",
                            "--eps", "8/255", "-n", "16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", str(bundle / "model.onnx"), "--profile", "laptop-cpu-1thread", "--no-memory",
                            "--eval", str(tmp_path / "sets2" / "eval.npz"),
                            "--adv", str(tmp_path / "sets2" / "adv" / "fgsm_8-255.npz"), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "crafted on another base model" in r.output


def test_sets_config_validates_before_any_work():
    from edgerobust.workstation.attacks import make_specs
    from edgerobust.workstation.configs import PrepareConfig
    from edgerobust.workstation.attacks.sets import SetsConfig

    specs = tuple(make_specs("fgsm", "8/255"))
    with pytest.raises(UsageError, match="No `attacks` to craft"):
        SetsConfig(PrepareConfig("m.pt"), out="o")
    with pytest.raises(UsageError, match="`batch_size` must be an integer >= 1"):
        SetsConfig(PrepareConfig("m.pt"), out="o", attacks=specs, batch_size=0)
    with pytest.raises(UsageError, match="No `model` to attack"):
        SetsConfig(PrepareConfig(), out="o", attacks=specs)
    assert SetsConfig(PrepareConfig("m.pt"), out="o", attacks=list(specs)).attacks == specs
