"""A config that travels: `--config FILE` (TOML, JSON, a bundle's manifest.json) builds what the flags build.

Real compress runs on the session's zoo checkpoint (tiny settings), real files in tmp_path.
"""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerobust.cli import app
from edgerobust.configio import CONFIG_VERSION, from_dict, load_config, to_dict
from edgerobust.errors import UsageError
from edgerobust.workstation.configs import CompressConfig, PrepareConfig, PruneConfig, QuantConfig, TrainConfig

SMALL = ["--sparsity", "0.5", "--int8", "--finetune-epochs", "1", "--eval-samples", "32", "--attacks", "fgsm",
         "--eps", "8/255", "--calib-samples", "64", "--max-prune-drop", "50", "--max-int8-drop", "50",
         "--min-int8-agreement", "0.5"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def by_flags(zoo_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("byflags") / "b"
    r = run("-q", "compress", zoo_checkpoint.path, *SMALL, "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_a_toml_config_builds_the_same_model_bytes_as_the_flags(by_flags, zoo_checkpoint, tmp_path):
    toml = tmp_path / "compress.toml"
    toml.write_text(f'''int8 = true
max_prune_drop = 50
max_int8_drop = 50.0
min_int8_agreement = 0.5
attacks = {{ names = "fgsm", eps = "8/255" }}

[prepare]
model = "{zoo_checkpoint.path.as_posix()}"
eval_samples = 32
calib_samples = 64

[prune]
sparsity = 0.5

[finetune]
epochs = 1
''')
    r = run("-q", "compress", "--config", toml, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert sha(tmp_path / "b" / "model.onnx") == sha(by_flags / "model.onnx")
    assert sha(tmp_path / "b" / "base.onnx") == sha(by_flags / "base.onnx")
    made = json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]
    assert made == json.loads((by_flags / "manifest.json").read_text())["config"] | {"out": str(tmp_path / "b")}


@pytest.mark.slow
def test_a_bundle_manifest_replays_and_flags_beside_it_win(by_flags, tmp_path):
    manifest = by_flags / "manifest.json"
    r = run("-q", "compress", "--config", manifest, "--out", tmp_path / "again")
    assert r.exit_code == 0, r.output
    assert sha(tmp_path / "again" / "model.onnx") == sha(by_flags / "model.onnx")
    recorded = json.loads(manifest.read_text())["config"]
    assert recorded["_type"] == "edgerobust.CompressConfig" and recorded["_version"] == CONFIG_VERSION
    assert [a["attack"] for a in recorded["attacks"]] == ["fgsm"]
    # a flag typed beside --config overrides the file; the rest stays as recorded
    r = run("-q", "compress", "--config", manifest, "--out", tmp_path / "other", "--sparsity", "0.3")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "other" / "manifest.json").read_text())["config"]
    assert cfg["prune"]["sparsity"] == 0.3
    assert cfg["finetune"]["epochs"] == 1 and cfg["prepare"]["eval_samples"] == 32 and cfg["int8"] is True
    assert sha(tmp_path / "other" / "model.onnx") != sha(by_flags / "model.onnx")


BAD_FILES = {
    "unknown-key": ("[prune]\nsparsty = 0.5\n", ["Unknown key 'prune.sparsty'", "Did you mean 'prune.sparsity'?"]),
    "unknown-top-key": ("int9 = true\n", ["Unknown key 'int9'", "config version 1"]),
    "wrong-type": ("[prune]\nsparsity = true\n", ["prune.sparsity"]),
    "newer-version": ("_version = 99\n", ["config version 99", f"reads version {CONFIG_VERSION}"]),
    "other-type": ('_type = "edgerobust.SweepConfig"\n', ["edgerobust.SweepConfig", "edgerobust.CompressConfig"]),
    "bad-toml": ("int8 = \n", ["Cannot read the config file", "as TOML"]),
    "bad-attacks": ('attacks = { names = "fgsm", epz = "1/255" }\n', ["Unknown key 'attacks.epz'"]),
    "out-of-range": ("[prune]\nsparsity = 1.5\n", ["strictly between 0 and 1"]),
}


@pytest.mark.parametrize("text,expected", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_config_file_is_one_message_exit_2_and_nothing_written(zoo_checkpoint, tmp_path, text, expected):
    f = tmp_path / "c.toml"
    f.write_text(text)
    r = run("compress", zoo_checkpoint.path, "--config", f, "--out", tmp_path / "b")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert flat.startswith("error:") and "Traceback" not in r.output
    for e in expected:
        assert e in flat, flat
    assert not (tmp_path / "b").exists()


def test_a_missing_config_file_and_a_missing_model_are_one_message(tmp_path):
    r = run("compress", "--config", tmp_path / "nope.toml")
    assert r.exit_code == 2 and "not found" in " ".join(r.output.split()), r.output
    f = tmp_path / "c.toml"
    f.write_text("[prune]\nsparsity = 0.5\n")
    r = run("compress", "--config", f)
    assert r.exit_code == 2 and "No MODEL to compress" in " ".join(r.output.split()), r.output


def test_to_dict_and_from_dict_round_trip_every_field():
    from edgerobust.workstation.attacks import make_specs

    cfg = CompressConfig(PrepareConfig("m.pt", data="digits", normalize="0.5/0.25", eval_samples=7, seed=3),
                         prune=PruneConfig(sparsity=0.4, ratios="mrs", round_to=4, ignore_layers=("fc",)),
                         finetune=TrainConfig(epochs=0, mode="trades", adv_eps=4 / 255),
                         quant=QuantConfig(calibration="percentile", stem="space-to-depth"), int8=True, fp16=True,
                         attacks=tuple(make_specs("fgsm,pgd:5", "2/255,8/255", seed=3)), max_int8_drop=None)
    data = json.loads(json.dumps(to_dict(cfg)))  # through JSON, as a manifest keeps it
    assert from_dict(CompressConfig, data) == cfg


def test_from_dict_reads_fractions_and_tables_and_checks_types(tmp_path):
    cfg = from_dict(CompressConfig, {"prepare": {"model": "m.pt", "seed": 5}, "finetune": {"adv_eps": "4/255"},
                                     "attacks": {"names": "pgd", "eps": "1/255,2/255", "steps": 3}})
    assert cfg.finetune.adv_eps == pytest.approx(4 / 255)
    assert [(a.attack, a.eps_text, a.steps, a.seed) for a in cfg.attacks] == [("pgd", "1/255", 3, 5), ("pgd", "2/255", 3, 5)]
    assert from_dict(CompressConfig, {"prepare": {"model": "m.pt"}, "attacks": "none"}).attacks == ()
    with pytest.raises(UsageError, match="'prune.iterative_steps' in the config must be a whole number"):
        from_dict(CompressConfig, {"prepare": {"model": "m.pt"}, "prune": {"iterative_steps": 1.5}})
    with pytest.raises(UsageError, match="'prepare' in the config must be a table"):
        from_dict(CompressConfig, {"prepare": "m.pt"})
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"prepare": {"model": "m.pt"}, "int8": True}))
    assert load_config(CompressConfig, j).int8 is True


@pytest.mark.slow
def test_attack_and_sweep_take_a_config_file_too(zoo_checkpoint, tmp_path):
    from edgerobust.research.configs import SweepConfig

    f = tmp_path / "attack.toml"
    f.write_text(f'out = "{(tmp_path / "sets").as_posix()}"\nattacks = {{ names = "fgsm", eps = "4/255" }}\n'
                 f'[prepare]\nmodel = "{zoo_checkpoint.path.as_posix()}"\neval_samples = 16\n')
    r = run("-q", "attack", "--config", f)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "sets" / "adv").iterdir()) == ["fgsm_4-255.npz"]
    s = tmp_path / "sweep.toml"
    s.write_text('out = "x"\nsparsities = [0.3, 0.6]\nprecisions = ["int8"]\nattacks = "pgd"\neps = "8/255"\n'
                 '[prepare]\nmodel = "m.pt"\n[finetune]\nepochs = 0\n')
    cfg = load_config(SweepConfig, s)
    assert cfg.sparsities == (0.3, 0.6) and cfg.precisions == ("int8",) and cfg.finetune.epochs == 0
    s.write_text('out = "x"\nsparsitys = [0.3]\n[prepare]\nmodel = "m.pt"\n')
    r = run("sweep", "--config", s)
    assert r.exit_code == 2 and "Unknown key 'sparsitys'" in " ".join(r.output.split()), r.output


def test_no_command_function_takes_more_than_15_parameters_nor_locals():
    root = Path(__file__).resolve().parents[2] / "edgerobust" / "cli"
    big = []
    for path in root.glob("*.py"):
        src = path.read_text()
        assert "**locals()" not in src, path
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef):
                n = len(node.args.args) + len(node.args.kwonlyargs) + len(node.args.posonlyargs)
                if n > 15:
                    big.append(f"{path.name}:{node.name} takes {n}")
    assert not big, big


def test_workstation_modules_live_in_concept_packages():
    ws = Path(__file__).resolve().parents[2] / "edgerobust" / "workstation"
    loose = sorted(p.name for p in ws.glob("*.py"))
    # the package's entry points: compress (the job), its configs (the API's types) and the demo
    assert loose == ["__init__.py", "compress.py", "configs.py", "demo.py"], loose


class Built(Exception):
    """Raised by a stand-in for the library call: carries the config the command built."""


@pytest.fixture
def capture(monkeypatch):
    """Stand-ins for the library entry points, so a command's config is checked without the work."""
    def stub(module, name):
        def fake(cfg, *a, **k):
            raise Built(cfg)
        monkeypatch.setattr(module, name, fake)

    import edgerobust.edge.audit as audit_mod
    import edgerobust.research.recipes as recipes_mod
    import edgerobust.workstation.attacks.sets as sets_mod
    import edgerobust.workstation.compress as compress_mod
    stub(compress_mod, "compress")
    stub(sets_mod, "attack_sets")
    stub(audit_mod, "audit")
    monkeypatch.setattr(recipes_mod, "run_recipe", lambda name, cfg, runner: (_ for _ in ()).throw(Built(cfg)))

    def built(*args):
        r = run(*args)
        assert isinstance(r.exception, Built), r.output
        return r.exception.args[0]
    return built


def test_a_typed_flag_wins_even_when_it_equals_its_default(capture, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('int8 = true\n[prepare]\nmodel = "m.pt"\nnormalize = "none"\n[prune]\nsparsity = 0.3\n')
    cfg = capture("compress", "--config", f)
    assert cfg.prune.sparsity == 0.3 and cfg.int8 is True and cfg.prepare.normalize.kind == "none"
    cfg = capture("compress", "--config", f, "--sparsity", "0.5", "--no-int8", "--normalize", "auto")
    assert cfg.prune.sparsity == 0.5 and cfg.int8 is False and cfg.prepare.normalize.kind == "auto"


def test_flags_over_a_recorded_list_of_attacks(capture, tmp_path):
    from edgerobust.workstation.attacks import make_specs

    cfg = CompressConfig(PrepareConfig("m.pt"), attacks=tuple(make_specs("cw,square:500", "0.5")))
    f = tmp_path / "manifest.json"
    f.write_text(json.dumps({"schema_version": 1, "config": to_dict(cfg) | {"out": "old", "overwrite": True}}))
    r = run("compress", "--config", f, "--eps", "0.25")
    assert r.exit_code == 2 and "--eps cannot change part of that list" in " ".join(r.output.split()), r.output
    got = capture("compress", "--config", f, "--attacks", "fgsm", "--eps", "0.25")
    assert [(a.attack, a.eps_text) for a in got.attacks] == [("fgsm", "0.25")]
    got = capture("compress", "--config", f)  # the list as recorded; never the recorded out or overwrite
    assert got.attacks == cfg.attacks and got.out is None and got.overwrite is False


def test_the_new_spelling_wins_over_the_old_one(capture, zoo_checkpoint, tmp_path):
    cfg = capture("attack", zoo_checkpoint.path, "--out", tmp_path / "s", "--attacks", "pgd", "--eps", "8/255",
                  "--steps", "3", "--attack-steps", "10")
    assert {a.steps for a in cfg.attacks} == {10}


def test_recipe_run_takes_a_config_and_keeps_its_default_folder(capture, tmp_path):
    f = tmp_path / "r.toml"
    f.write_text("seeds = 2\nfinetune_epochs = 0\n")
    cfg = capture("recipe", "run", "transfer", "--config", f)
    assert cfg.seeds == 2 and cfg.finetune_epochs == 0 and Path(cfg.out) == Path("research") / "transfer"


def test_audit_query_settings_ask_for_the_full_query_attack(capture, tmp_path, tiny_bundle):
    cfg = capture("audit", tiny_bundle / "model.onnx", "--queries", "50")
    assert cfg.query.attack == "square" and cfg.query.queries == 50
    cfg = capture("audit", tiny_bundle / "model.onnx", "--query-attack", "none", "--queries", "50")
    assert cfg.query is None


def test_a_flag_name_used_as_a_key_says_where_it_belongs(zoo_checkpoint, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("sparsity = 0.5\n")
    r = run("compress", zoo_checkpoint.path, "--config", f)
    assert r.exit_code == 2 and "in a config file it is the key 'prune.sparsity'" in " ".join(r.output.split())


def test_round_trips_of_every_command_config_and_optional_none(tmp_path):
    from edgerobust.research.configs import RecipeConfig, SweepConfig, Variant
    from edgerobust.workstation.attacks import AttackSpec
    from edgerobust.workstation.attacks.sets import SetsConfig

    specs = (AttackSpec("pgd", 8 / 255), AttackSpec("fgsm", 2 / 255, seed=4))  # eps typed as floats
    for cfg in (CompressConfig(PrepareConfig("m.pt", normalize="0.5,0.4/0.2,0.3"), attacks=specs),
                SetsConfig(PrepareConfig("m.pt"), out="sets", attacks=specs),
                SweepConfig(PrepareConfig("m.pt"), out="sw", variants=(Variant(0.3, "a", PruneConfig(ratios="global")),
                                                                        Variant(0.5, "b"))),
                RecipeConfig(out="r", sparsities=(0.2,), eps="8/255")):
        back = from_dict(type(cfg), json.loads(json.dumps(to_dict(cfg))))
        assert back == cfg, type(cfg).__name__
    cfg = from_dict(CompressConfig, {"prepare": {"model": Path("m.pt")}, "max_int8_drop": "none",
                                     "prune": {"sparsity": __import__("numpy").float32(0.25)}})
    assert cfg.max_int8_drop is None and cfg.prepare.model == "m.pt" and cfg.prune.sparsity == 0.25
    with pytest.raises(UsageError, match="lacks the key 'out'"):
        from_dict(SetsConfig, {"prepare": {"model": "m.pt"}, "attacks": "fgsm"})
    with pytest.raises(UsageError, match="no config version"):
        from_dict(CompressConfig, {"_version": 0, "prepare": {"model": "m.pt"}})
    with pytest.raises(UsageError, match="Unknown `normalize` kind"):
        from_dict(CompressConfig, {"prepare": {"model": "m.pt", "normalize": {"kind": "bogus"}}})
