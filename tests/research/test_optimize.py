"""The budget search (edgerobust optimize): bad input before torch, a real search on the digits zoo
model, resume from Optuna's SQLite storage, and an impossible budget."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgerobust.errors import QualityGateError, UsageError
from edgerobust.research.optimize.configs import OptimizeConfig, SearchSpace

BAD = [
    (["--max-latency-ms", "1", "--min-speedup", "2"], "exactly one budget, --max-latency-ms or --min-speedup; got "
                                                      "--max-latency-ms and --min-speedup"),
    ([], "exactly one budget, --max-latency-ms or --min-speedup; got neither"),
    (["--max-latency-ms", "0"], "--max-latency-ms must be a positive number; got 0.0"),
    (["--min-speedup", "-1"], "--min-speedup must be a positive number; got -1.0"),
    (["--max-latency-ms", "1", "--trials", "0"], "--trials must be an integer >= 1; got 0"),
    (["--max-latency-ms", "1", "--aim", "fast"], "Unknown --aim 'fast'"),
]

CHECK = """
import sys
from typer.testing import CliRunner
from edgerobust.cli import app
r = CliRunner().invoke(app, {args!r})
assert 'torch' not in sys.modules, 'torch was imported'
assert 'optuna' not in sys.modules, 'optuna was imported'
print('EXIT', r.exit_code)
print(r.output)
"""


@pytest.mark.parametrize("args,message", BAD, ids=["both-budgets", "no-budget", "zero-latency", "negative-speedup",
                                                   "zero-trials", "unknown-aim"])
def test_bad_input_is_one_message_before_torch(args, message, tmp_path):
    argv = ["optimize", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), *args]
    out = subprocess.run([sys.executable, "-c", CHECK.format(args=argv)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EXIT 2" in out.stdout
    text = " ".join(out.stdout.split())
    assert message in text
    assert "Traceback" not in out.stdout
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_latency_ms=1.0, attacks=()), "needs adversarial sets"),
    (dict(max_latency_ms=1.0, space={"sparsity_min": 0.9, "sparsity_max": 0.5}), "sparsity_min"),
    (dict(max_latency_ms=1.0, space={"ratios": ("uniform", "fancy")}), "ratios"),
    (dict(max_latency_ms=1.0, max_clean_drop=-1), "max_clean_drop"),
], ids=["no-attacks", "sparsity-bounds", "unknown-ratios", "negative-gate"])
def test_bad_library_config(kwargs, match, tmp_path):
    from edgerobust.workstation.attacks.spec import make_specs

    kwargs.setdefault("attacks", make_specs("fgsm", "8/255"))
    with pytest.raises(UsageError, match=match):
        OptimizeConfig("m.pt", out=tmp_path, **kwargs)


def _cfg(ckpt, out, trials, **kw):
    from edgerobust.workstation.attacks.spec import make_specs
    from edgerobust.workstation.configs import PrepareConfig

    space = SearchSpace(ratios=("uniform", "global"), modes=("standard",), epochs_min=0, epochs_max=1,
                        calibrations=("minmax",), keep_fp32=("none",))
    return OptimizeConfig(PrepareConfig(ckpt, eval_samples=32, calib_samples=64, device="cpu"), out=out,
                          profile="laptop-cpu-1thread", attacks=make_specs("fgsm", "8/255"), trials=trials,
                          latency_rounds=2, space=space, max_clean_drop=100.0, **kw)  # 32 samples: a coarse gate


def _points(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}


def _stored_trials(out) -> int:
    import optuna

    from edgerobust.research.optimize.search import STUDY_NAME

    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    return len(study.trials)


@pytest.mark.slow
def test_search_writes_the_front_and_an_audited_bundle_and_resumes(zoo_checkpoint, tmp_path):
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.research.optimize.search import optimize

    out = tmp_path / "opt"
    first = optimize(_cfg(zoo_checkpoint.path, out, trials=2, max_latency_ms=1000.0))
    assert first.ran == 2 and _stored_trials(out) == 2
    data = json.loads((out / "pareto.json").read_text())["_data"]
    ref = [t for t in data["trials"] if t["reference"]]
    assert len(ref) == 1 and ref[0]["params"]["sparsity"] == 0.5 and ref[0]["params"]["precision"] == "int8"
    for t in data["trials"]:
        assert t["latency"]["kind"] == "measured"
        assert 0 <= t["robust"]["ci_low"] <= t["robust"]["value"] <= t["robust"]["ci_high"] <= 1
        assert t["robust"]["value"] <= t["clean"]["value"]  # worst case over the sets: never above clean
    assert data["chosen"] is not None and data["chosen"]["feasible"]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "budget 1e+03 ms" in page and "reference" in page
    # the chosen bundle is an ordinary bundle; its own audit meets the (generous) budget
    rep = audit(AuditConfig(model=out / "best" / "model.onnx", profile="laptop-cpu-1thread", measure_memory=False,
                            show_progress=False, allow_fallback=True, out_dir=tmp_path / "audit"))
    assert rep.measurement.model("deployed").latency_at(1).p50_ms <= 1000.0
    assert rep.sets  # the attack sets travelled with it
    assert not (out / ".best-candidate").exists()
    # resume: one trial more, the first two neither run again nor rebuilt
    before = _points(out)
    second = optimize(_cfg(zoo_checkpoint.path, out, trials=3, max_latency_ms=1000.0))
    assert second.ran == 1 and _stored_trials(out) == 3
    after = _points(out)
    assert all(after[name] == t for name, t in before.items())


@pytest.mark.slow
def test_impossible_budget_names_the_fastest_point(zoo_checkpoint, tmp_path):
    from edgerobust.research.optimize.search import optimize

    out = tmp_path / "opt"
    with pytest.raises(QualityGateError) as err:
        optimize(_cfg(zoo_checkpoint.path, out, trials=2, max_latency_ms=0.0001))
    text = str(err.value)
    assert "No point met the budget of 0.0001 ms p50. The fastest found, s=0.5 uniform" in text
    assert "ms (measured)" in text
    assert not (out / "best").exists() and not (out / ".best-candidate").exists()
    data = json.loads((out / "pareto.json").read_text())["_data"]
    skipped = [t for t in data["trials"] if t["state"] == "skipped"]
    assert skipped and all("not built" in t["why"] for t in skipped)  # cheap before dear: never built


@pytest.mark.slow
def test_estimate_labels_every_latency_and_checks_the_band(zoo_checkpoint, tmp_path):
    """With a calibration, every latency is an estimate with its band; the budget meets the upper edge."""
    from typer.testing import CliRunner

    from edgerobust.cli import app
    from edgerobust.research.optimize.search import optimize
    from onnx_models import write_profile

    profile = str(write_profile(tmp_path / "fast.toml", batch_sizes=(1,)))
    cal = tmp_path / "device.json"
    r = CliRunner().invoke(app, ["-q", "calibrate", "-p", profile, "-o", str(cal), "--grid-scale", "0.05",
                                 "--passes", "1"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "opt"
    try:
        result = optimize(_cfg(zoo_checkpoint.path, out, trials=2, min_speedup=1.01, estimate=str(cal)))
    except QualityGateError:  # no band's upper edge within the budget: said so, and the front still written
        result = None
    data = json.loads((out / "pareto.json").read_text())["_data"]
    assert data["latency"] == "estimated" and data["base"]["latency"]["kind"] == "estimated"
    built = [t for t in data["trials"] if t["state"] == "complete"]
    assert built
    for t in built:
        lat = t["latency"]
        assert lat["kind"] == "estimated" and lat["low_ms"] <= lat["p50_ms"] <= lat["high_ms"]
        assert t["check_ms"] == lat["high_ms"]  # the budget is checked against the band's upper edge
        assert (lat["high_ms"] <= data["budget_ms"]) or not t["feasible"]
    assert "estimated" in (out / "report.html").read_text()
    if result is not None:
        assert result.audited["kind"] == "estimated"
        assert result.audited["check_ms"] <= result.budget_ms
