"""The CLI of the audit half, through typer's CliRunner: exit codes and the lines a person reads."""
import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from edgerobust.edge.runtime.profiles import list_profiles
from onnx_models import make_bundle, write_profile

runner = CliRunner()
# What the audit says is under test here, not its timings: measure with the fewest runs.
pytestmark = pytest.mark.usefixtures("quick_measure")


@pytest.fixture(scope="module")
def bundle(tiny_bundle, tmp_path_factory):
    return shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("cli") / "tiny")  # this module's own copy


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
    joined = "".join(r.stderr.split())  # a long tmp path may be wrapped mid-word at 80 columns
    assert "error:" in flat(r.stderr) and "session.intra_op_threads" in flat(r.stderr) and str(f) in joined
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
    assert data["_type"] == "edgerobust.edge.runtime.measure-report"
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


def test_device_profile_on_another_host_says_so_everywhere(bundle, tmp_path, monkeypatch):
    """Issue 16: `audit --profile raspberry-pi-5` on an x86 host with 2 cores (made up, so the test
    does not depend on the machine it runs on)."""
    from edgerobust.edge import audit as audit_mod
    from edgerobust.edge.runtime.hostcheck import HostFacts

    monkeypatch.setattr(audit_mod, "host_facts", lambda: HostFacts(machine="x86_64", cores=2))
    r = run("audit", bundle / "model.onnx", "--profile", "raspberry-pi-5", "--out", tmp_path / "r", "--no-memory")
    assert r.exit_code == 0, r.output
    out = flat(r.stdout)
    assert ("WARNING: host: this host is not raspberry-pi-5's device (architecture: the device is aarch64, this "
            "host is x86_64; cores: the device has 4, this host 2; model: the device is a Raspberry Pi 5, this host "
            "reports no board model).") in out
    assert "WARNING: threads: the profile runs 4 intra-op threads on this host's 2 cores" in out
    assert ("Figures are this host's (x86_64, 2 cores) running raspberry-pi-5's settings, not evidence for that "
            "device. Deployed vs base:") in out
    assert "Latency of raspberry-pi-5's settings on this host (x86_64, 2 cores), not on the device" in out
    assert "Latency on raspberry-pi-5" not in out
    assert re.search(r"PASS latency_ms_p50: \S+ ms \(limit 33 ms\), not evidence for the device", out)
    assert re.search(r"PASS model_size_mb: \S+ MiB \(limit 100 MiB\)$", out)  # a file's size is the same anywhere
    data = json.loads((tmp_path / "r" / "report.json").read_text())["_data"]
    assert data["summary"]["host_matches_profile"] is False and len(data["summary"]["host_mismatch"]) == 3
    assert {b["name"]: b["evidence"] for b in data["budgets"]} == {
        "latency_ms_p50": False, "peak_memory_mb": False, "model_size_mb": True}
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**Figures are this host's (x86_64, 2 cores) running raspberry-pi-5's settings" in md
    assert "- matches the profile's device: **no** (architecture: the device is aarch64" in md


def test_generic_profile_on_this_host_does_not_warn(bundle, tmp_path):
    r = run("audit", bundle / "model.onnx", "--profile", "laptop-cpu-1thread", "--out", tmp_path / "r", "--no-memory")
    assert r.exit_code == 0, r.output
    # (a busy host may add a noise warning: this test is about the host check only)
    assert "WARNING: host" not in r.stdout and "not evidence" not in r.stdout
    assert "Latency on laptop-cpu-1thread" in r.stdout
    assert json.loads((tmp_path / "r" / "report.json").read_text())["_data"]["summary"]["host_matches_profile"]


def test_bundle_without_adversarial_sets_says_how_to_add_them(tmp_path, profile):
    bare = make_bundle(tmp_path / "bare", attacks=())
    r = run("audit", bare / "model.onnx", "-p", profile, "--out", tmp_path / "r", "--no-memory")
    assert r.exit_code == 0, r.output
    out = flat(r.stdout)
    assert "WARNING: no adversarial sets: only clean accuracy was audited, robustness was not." in out
    assert ("`edgerobust attack` on the workstation (e.g. pgd at eps 8/255 into a folder sets)" in out
            and "sets/eval.npz as the evaluation set and sets/adv/pgd_8-255.npz as an adversarial set" in out)
    assert "Robustness not audited: no adversarial sets (the warning says how to add them)." in out


def test_profile_command_on_another_host_says_so(bundle, profile, monkeypatch):
    from edgerobust.edge.runtime import hostcheck
    from edgerobust.edge.runtime.hostcheck import HostFacts

    monkeypatch.setattr(hostcheck, "host_facts", lambda: HostFacts(machine="x86_64", cores=2))
    r = run("profile", bundle / "model.onnx", "-p", "raspberry-pi-5", "--no-memory", "-b", 1)
    assert r.exit_code == 0, r.output
    assert "this host is not raspberry-pi-5's device" in flat(r.stderr)
    assert "Latency of raspberry-pi-5's settings on this host (x86_64, 2 cores)" in flat(r.stdout)
