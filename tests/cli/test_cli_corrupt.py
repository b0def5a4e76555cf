"""`edgerobust corrupt`, compress's --corruptions and the audit of corruption sets through the CLI: what a
person reads, and one message with exit 2 for every bad input (nothing written)."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from _fixtures_gauntlet import flat
from edgerobust.edge.files.corruptset import CorruptionSet
from onnx_models import write_profile

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("quick_measure")


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setattr(ui.out, "width", 200)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    root = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("cli-corr") / "tiny")
    r = run("corrupt", root, "--corruptions", "gaussian_noise,contrast,saturate", "--corruption-severities", "1,5")
    assert r.exit_code == 0, r.output
    out = flat(r.stdout)
    assert "corruption sets: 4 (3 corruptions at severities 1,5)" in out
    assert "corruption saturate left out: saturation is a property of colour" in out
    return root


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return str(write_profile(tmp_path_factory.mktemp("p") / "fast.toml", batch_sizes=(1,)))


def test_audit_prints_the_corruption_table(bundle, profile, tmp_path):
    r = run("audit", bundle / "model.onnx", "--profile", profile, "--no-memory", "--query-attack", "none",
            "--out", tmp_path / "rep")
    assert r.exit_code in (0, 1), r.output
    out = flat(r.stdout)
    assert "Common corruptions (4 sets" in out and "gaussian_noise" in out and "mCE deployed:" in out
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [s["name"] for s in data["_data"]["corruption"]["sets"]] == ["gaussian_noise_s1", "gaussian_noise_s5",
                                                                       "contrast_s1", "contrast_s5"]


@pytest.mark.parametrize("args, words", [
    (("--corruptions", "gausian_noise"), "Did you mean 'gaussian_noise'?"),
    (("--corruption-severities", "0,3"), "must be whole numbers from 1 to 5; got '0'"),
    (("--corruption-severities", "6"), "got '6'"),
    (("--corruptions", "frost"), "not available"),
], ids=["typo", "severity-0", "severity-6", "frost"])
def test_bad_corruption_flags_are_one_message(bundle, args, words):
    before = (bundle / "manifest.json").read_bytes()
    r = run("corrupt", bundle, "--overwrite", *args)
    assert r.exit_code == 2, r.output
    assert words in flat(r.output) and "Traceback" not in r.output
    assert (bundle / "manifest.json").read_bytes() == before  # nothing written


def test_compress_refuses_a_bad_corruption_before_any_work(tmp_path):
    r = run("compress", tmp_path / "absent.pt", "--corruptions", "impulse-nois", "--out", tmp_path / "b")
    assert r.exit_code == 2 and "Did you mean 'impulse_noise'?" in flat(r.output)
    assert not (tmp_path / "b").exists()


def test_corrupt_twice_needs_overwrite(bundle):
    r = run("corrupt", bundle)
    assert r.exit_code == 2 and "already holds 4 corruption sets" in flat(r.output)


@pytest.mark.parametrize("damage", ["tamper", "nan", "shape"])
def test_audit_refuses_a_damaged_set(bundle, profile, tmp_path, damage):
    root = shutil.copytree(bundle, tmp_path / "b")
    p = root / "corruptions" / "contrast_s1.npz"
    cs = CorruptionSet.load(p)
    x = cs.x.copy()
    if damage == "nan":
        x[1, 0, 2, 2] = np.nan
    elif damage == "shape":
        x = x[:, :, :, :4]
    else:
        x = np.clip(x + 0.01, 0, 1)
    np.savez(p, x=x, y=cs.y, idx=cs.idx, meta=np.array(json.dumps(cs.meta)))
    args = () if damage == "tamper" else ("--no-verify",)
    r = run("audit", root / "model.onnx", "--profile", profile, "--no-memory", *args)
    assert r.exit_code == 2, r.output
    words = {"tamper": "does not match the bundle's manifest", "nan": "NaN or infinite", "shape": "shape"}[damage]
    assert words in flat(r.output) and "Traceback" not in r.output
    assert not (root / "reports").exists() or not any((root / "reports").rglob("report.json"))


@pytest.mark.parametrize("missing, package", [(("scipy", "scipy.ndimage"), "scipy"), (("PIL", "PIL.Image"), "pillow")])
def test_corrupt_without_scipy_or_pillow_is_one_message(bundle, monkeypatch, missing, package):
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # `import scipy` now raises ImportError
    before = (bundle / "manifest.json").read_bytes()
    r = run("corrupt", bundle, "--overwrite", "--corruptions", "gaussian_blur")
    assert r.exit_code == 2, r.output
    out = flat(r.output)
    assert f"needs the Python package '{package}', which is not installed" in out
    assert "pip install 'edgerobust[compress]'" in out and "Traceback" not in r.output
    assert (bundle / "manifest.json").read_bytes() == before


def test_compress_with_corruptions_without_scipy_stops_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    r = run("compress", tmp_path / "absent.pt", "--corruptions", "gaussian_noise", "--out", tmp_path / "b")
    assert r.exit_code == 2, r.output
    out = flat(r.output)
    assert "needs the Python package 'scipy'" in out and "pip install 'edgerobust[compress]'" in out
    assert "Traceback" not in r.output and not (tmp_path / "b").exists()
