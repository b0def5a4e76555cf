"""The CLI of the audit half, through typer's CliRunner: exit codes and the lines a person reads."""
import json

import pytest
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from edgerobust.profiles import list_profiles
from onnx_models import make_bundle, write_profile

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cli") / "tiny")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return str(write_profile(tmp_path_factory.mktemp("p") / "fast.toml",
                             budgets="[budgets]\nlatency_ms_p50 = 1000\nmodel_size_mb = 0.001\n"))


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setattr(ui.out, "width", 200)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """The text with line wrapping undone (stderr wraps at the runner's 80 columns)."""
    return " ".join(text.split())


def test_profiles_list():
    r = run("profiles", "list")
    assert r.exit_code == 0, r.output
    for name in list_profiles():
        assert name in r.stdout
    assert "best match for this host: laptop-cpu" in r.stdout


def test_profiles_show_prints_the_reasons():
    r = run("profiles", "show", "jetson-orin-nano")
    assert r.exit_code == 0, r.output
    assert "jetson-orin-nano" in r.stdout and "valid" in r.stdout
    assert 'name = "TensorrtExecutionProvider"' in r.stdout and "# TensorRT first" in r.stdout


def test_profiles_show_bad_file_is_one_message(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[[providers]]\nname = "CPUExecutionProvider"\n[session]\nintra_op_threads = -2\n')
    r = run("profiles", "show", f)
    assert r.exit_code == 2
    assert "error:" in flat(r.stderr) and "session.intra_op_threads" in flat(r.stderr) and str(f) in flat(r.stderr)
    assert "Traceback" not in r.output


def test_audit_help_lists_profiles_and_exit_code():
    r = run("audit", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    for name in list_profiles():
        assert name in text
    assert "Exit with code 1" in text and "--allow-fallback" in text and "--no-verify" in text


def test_audit_prints_robustness_next_to_speed(bundle, profile, tmp_path):
    r = run("audit", bundle / "model.onnx", "--profile", profile, "--out", tmp_path / "r", "--batch-size", 32)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "Deployed vs base:" in out and "speedup at batch 1" in out
    for word in ("Robustness", "clean", "fgsm_0.02", "fgsm_0.08", "McNemar p", "speedup", "peak RSS"):
        assert word in out
    assert "FAIL  model_size_mb" in out and "PASS  latency_ms_p50" in out
    assert f"Report written to {tmp_path / 'r'}" in flat(r.stderr)
    assert (tmp_path / "r" / "report.json").is_file() and (tmp_path / "r" / "report.md").is_file()
    again = run("audit", bundle / "model.onnx", "--profile", profile, "--out", tmp_path / "r", "--no-memory")
    assert again.exit_code == 2 and "already holds a report" in flat(again.stderr)
    assert "Measuring" not in again.stderr  # refused before any time was spent


def test_audit_json_and_fail_on_budget(bundle, profile, tmp_path):
    r = run("--quiet", "audit", bundle / "model.onnx", "-p", profile, "--out", tmp_path / "j", "--json",
            "--fail-on-budget", "--no-memory")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data == json.loads((tmp_path / "j" / "report.json").read_text())
    assert data["_data"]["summary"]["budgets_passed"] is False
    assert "budget missed: model_size_mb" in flat(r.stderr)


def test_default_profile_is_the_best_match(bundle):
    r = run("profile", bundle / "model.onnx", "--no-memory", "-b", 1)
    assert r.exit_code == 0, r.output
    assert "Profile: laptop-cpu (best match for this host" in flat(r.stderr)
    assert "Latency on laptop-cpu" in r.stdout and "model p50" in r.stdout


def test_profile_compares_two_models_as_json(bundle, profile):
    r = run("profile", bundle / "model.onnx", "--baseline", bundle / "base.onnx", "-p", profile, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["_type"] == "edgerobust.measure-report"
    assert [m["role"] for m in data["_data"]["models"]] == ["base", "deployed"]
    assert [s["batch_size"] for s in data["_data"]["speedup"]] == [1, 4]


def test_missing_gpu_provider_needs_allow_fallback(bundle, tmp_path):
    gpu = write_profile(tmp_path / "orin-like.toml", providers=("TensorrtExecutionProvider", "CPUExecutionProvider"))
    r = run("audit", bundle / "model.onnx", "-p", gpu, "--out", tmp_path / "a", "--no-memory")
    assert r.exit_code == 2
    assert "asks for TensorrtExecutionProvider" in flat(r.stderr) and "--allow-fallback" in flat(r.stderr)
    r = run("audit", bundle / "model.onnx", "-p", gpu, "--out", tmp_path / "b", "--no-memory", "--allow-fallback")
    assert r.exit_code == 0, r.output
    assert "WARNING: fallback" in r.stdout and "WARNING: FALLBACK" in r.stdout


def test_tampered_bundle_exit_2(bundle, profile, tmp_path):
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "copy", ignore=shutil.ignore_patterns("reports"))
    with open(copy / "adv" / "fgsm_0.02.npz", "ab") as f:
        f.write(b"junk")
    r = run("audit", copy / "model.onnx", "-p", profile, "--no-memory")
    assert r.exit_code == 2 and "does not match the bundle's manifest" in flat(r.stderr)
    assert "--no-verify" in flat(r.stderr)


def test_missing_model_exit_2(tmp_path):
    r = run("audit", tmp_path / "nope.onnx", "-p", "laptop-cpu")
    assert r.exit_code == 2 and "does not exist" in flat(r.stderr)
