"""The compress-side CLI through typer's CliRunner: exit codes and the lines a person reads."""
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from edgerobust.workstation.model.nets import ZOO
from edgerobust.workstation.prune.structural import CRITERIA

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide(monkeypatch, tmp_path):
    monkeypatch.setattr(ui.out, "width", 200)
    monkeypatch.setattr(ui.err, "width", 200)
    monkeypatch.chdir(tmp_path)  # a forgotten --out would land here, not in the repository


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def _flat(text):
    return re.sub(r"[\s│]+", " ", text)


def test_compress_help_lists_options_and_criteria():
    r = run("compress", "--help")
    assert r.exit_code == 0, r.output
    text = _flat(r.output)
    for opt in ("--sparsity", "--int8", "--arch", "--criterion", "--finetune-epochs", "--calibration",
                "--out", "--overwrite", "--json", "--trust-model", "--data"):
        assert opt in text
    assert all(f"{name}: " in text for name in CRITERIA)  # the help names every registered criterion


def test_zoo_list_shows_every_model():
    r = run("zoo", "list")
    assert r.exit_code == 0, r.output
    for name, entry in ZOO.items():
        assert re.search(rf"{name}\s+│\s+digits\s+│\s+1x16x16", r.stdout), r.stdout


def test_zoo_train_writes_a_checkpoint(tmp_path):
    r = run("zoo", "train", "digits-cnn", "-o", tmp_path / "z.pt", "--epochs", 1)
    assert r.exit_code == 0, r.output
    assert re.search(r"digits-cnn: eval accuracy \d+\.\d\d%, 140,458 params", r.stdout)
    obj = torch.load(tmp_path / "z.pt", weights_only=True)
    assert obj["arch"] == "zoo:digits-cnn" and obj["info"]["epochs"] == 1
    again = run("zoo", "train", "digits-cnn", "-o", tmp_path / "z.pt", "--epochs", 1)
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.slow
def test_compress_prints_the_table(zoo_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    r = run("compress", zoo_checkpoint.path, "--sparsity", 0.5, "--int8", "--finetune-epochs", 1, "--max-prune-drop", 100,
            "--eval-samples", 100, "--out", out)
    assert r.exit_code == 0, r.output
    row = r"│ (base|pruned fp32|pruned int8 \(static\))\s+│\s+([\d,]+) │\s+(.+?) │\s+(.+?) │\s+([\d.]+)%"
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(row, r.stdout)}
    assert set(rows) == {"base", "pruned fp32", "pruned int8 (static)"}, r.stdout
    assert rows["base"][0] == "140,458" and rows["base"][1] == "7.23 M"
    assert re.fullmatch(r"[\d.]+ M \([\d.]+x fewer\)", rows["pruned int8 (static)"][1])
    assert float(rows["base"][3]) > 90
    assert f"Bundle written to {out}" in _flat(r.stdout) and "torch ran on cpu" in _flat(r.stdout)
    assert (out / "manifest.json").is_file() and (out / "model.onnx").is_file()


def test_compress_json(zoo_checkpoint, tmp_path):
    r = run("compress", zoo_checkpoint.path, "--finetune-epochs", 0, "--max-prune-drop", 100, "--eval-samples", 50, "--json",
            "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [row["model"] for row in d["rows"]] == ["base", "pruned fp32"]
    assert d["prune"]["macs_reduction"] >= 3 and d["quant"] is None
    assert d["bundle"] == str(tmp_path / "b")


def test_compress_shows_the_library_status_lines_and_warnings_with_flags(zoo_checkpoint, tmp_path):
    """The library only logs (edgerobust.events); the CLI's handler prints INFO as a status line and
    WARNING as `warning: ...` on stderr, naming flags, and -q hides the status lines only."""
    args = ["compress", zoo_checkpoint.path, "--int8-stem", "space-to-depth", "--finetune-epochs", 0,
            "--max-prune-drop", 100, "--eval-samples", 50, "--attacks", "none"]
    r = run(*args, "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    err = _flat(r.stderr)
    assert "warning: --int8-stem has no effect without --int8 (there is no int8 model to rewrite)." in err
    assert "torch runs on cpu" in err and "pruned: params 140,458 -> " in err and "deployed: fp32, because" in err
    assert "`int8_stem`" not in err and "Bundle written" not in r.stderr  # results stay on stdout
    quiet = run("-q", *args, "--out", tmp_path / "q")
    assert quiet.exit_code == 0, quiet.output
    assert _flat(quiet.stderr).strip() == ("warning: --int8-stem has no effect without --int8 (there is no int8 "
                                           "model to rewrite).")


BAD = {
    "sparsity-0": (["--sparsity", "0"], "--sparsity must be strictly between 0 and 1; got 0.0"),
    "sparsity-1.5": (["--sparsity", "1.5"], "--sparsity must be strictly between 0 and 1; got 1.5"),
    "missing-file": ("MISSING", "does not exist"),
    "state-dict-no-arch": ("STATE_DICT", "is a state_dict"),
    "unknown-data": (["--data", "imagenet"], "Unknown data source 'imagenet'"),
    "unknown-criterion": (["--criterion", "magic"], "Unknown --criterion 'magic'"),
    "unknown-device": (["--device", "gpu"], "Unknown --device 'gpu'"),
    "existing-out": ("EXISTING", "already exists"),
    "bad-mean": (["--mean", "a,b", "--std", "1"], "--mean must be comma-separated numbers"),
}


@pytest.mark.parametrize("extra,message", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_message_and_exit_2(zoo_checkpoint, gz_state_dict, tmp_path, extra, message):
    model, args = zoo_checkpoint.path, ["--out", tmp_path / "b"]
    if extra == "MISSING":
        model = tmp_path / "nope.pt"
    elif extra == "STATE_DICT":
        model = gz_state_dict  # the session checkpoint's bare weights
    elif extra == "EXISTING":
        (tmp_path / "b").mkdir()
    else:
        args += extra
    r = run("compress", model, *args)
    assert r.exit_code == 2, r.output
    assert message in _flat(r.output)
    assert "error:" in r.output and "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)
    if extra != "EXISTING":
        assert not (tmp_path / "b").exists()
