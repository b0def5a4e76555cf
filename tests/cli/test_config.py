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
