"""The budget search (edgerobust optimize): bad input before torch, a real search on the digits zoo
model, resume from Optuna's SQLite storage, and an impossible budget."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> str:
    """laptop-cpu-1thread measuring in a tenth of its time (one probe process, 0.2 s a model): the search's own
    full audit of its chosen bundle in a second or two. How a profile measures is tested in tests/edge."""
    text = (Path(__file__).parents[2] / "device_profiles" / "laptop-cpu-1thread.toml").read_text(encoding="utf-8")
    for key, value in (("warmup_runs", 2), ("rounds", 2), ("min_seconds", 0.2), ("max_seconds", 1.0), ("processes", 1)):
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, f"laptop-cpu-1thread.toml no longer sets {key}: the quick copy would measure at full length"
    path = tmp_path_factory.mktemp("profile") / "quick-1thread.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _cfg(ckpt, out, trials, profile="laptop-cpu-1thread", **kw):
    from edgerobust.workstation.attacks.spec import make_specs
    from edgerobust.workstation.configs import PrepareConfig

    space = SearchSpace(ratios=("uniform", "global"), modes=("standard",), epochs_min=0, epochs_max=1,
                        calibrations=("minmax",), keep_fp32=("none",))
    return OptimizeConfig(PrepareConfig(ckpt, eval_samples=32, calib_samples=64, device="cpu"), out=out,
                          profile=profile, attacks=make_specs("fgsm", "8/255"), trials=trials,
                          latency_rounds=2, space=space, max_clean_drop=100.0, **kw)  # 32 samples: a coarse gate


def _points(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}


def _stored_trials(out) -> int:
    import optuna

    from edgerobust.research.optimize.search import STUDY_NAME

    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}")
    return len(study.trials)


CORRUPT = dict(corruptions="gaussian_noise", corruption_severities=(3,))  # one set: every point's pooled figure


@pytest.fixture(scope="module")
def searched(zoo_checkpoint, quick, tmp_path_factory):
    """One search of two trials under a generous budget: its folder (read-only: copy it) and its result."""
    from edgerobust.research.optimize.search import optimize

    out = tmp_path_factory.mktemp("searched") / "opt"
    return out, optimize(_cfg(zoo_checkpoint.path, out, trials=2, max_latency_ms=1000.0, profile=quick, **CORRUPT))


@pytest.mark.slow
def test_search_writes_the_front_and_an_audited_bundle_and_resumes(zoo_checkpoint, searched, quick, tmp_path):
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.research.optimize.search import optimize

    out = shutil.copytree(searched[0], tmp_path / "opt")  # copy2: the resume below compares modification times
    assert searched[1].ran == 2 and _stored_trials(out) == 2
    data = json.loads((out / "pareto.json").read_text())["_data"]
    ref = data["reference"]  # compress's own s=0.5 int8, built beside the study, not a trial
    assert ref["reference"] and ref["config"].startswith("s=0.5 int8") and ref["robust_n"] == ref["robust"]["n"]
    assert all(not t.get("reference") for t in data["trials"])
    for t in [ref] + data["trials"]:
        assert t["latency"]["kind"] == "measured"
        assert 0 <= t["robust"]["ci_low"] <= t["robust"]["value"] <= t["robust"]["ci_high"] <= 1
        assert t["robust"]["value"] <= t["clean"]["value"]  # worst case over the sets: never above clean
        assert t["corruption"]["k"] == _corruption_right(out / t["model"], out / "corruptions" / "gaussian_noise_s3.npz")
        assert t["corruption"]["n"] == 32 and t["corruption"]["ci_low"] is None  # pooled: no interval
    assert data["base"]["corruption"]["k"] == _corruption_right(out / "base.onnx",
                                                                out / "corruptions" / "gaussian_noise_s3.npz")
    assert "under common corruptions" in data["closing"]
    # pruned and fine-tuned once per (sparsity, ratios, round_to, fine-tuning); precisions derived from it
    prune_keys = {tuple(t["params"][k] for k in ("sparsity", "ratios", "round_to", "mode", "epochs"))
                  for t in data["trials"]}
    assert len(list((out / "points").iterdir())) == len(prune_keys)
    for t in data["trials"]:
        assert t["model"].startswith("derived/" if t["params"]["precision"] != "fp32" else "points/")
    assert data["chosen"] is not None and data["chosen"]["feasible"]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "budget 1e+03 ms" in page and "reference" in page
    # the chosen bundle is an ordinary bundle; its own audit meets the (generous) budget
    rep = audit(AuditConfig(model=out / "best" / "model.onnx", profile=quick, measure_memory=False,
                            show_progress=False, allow_fallback=True, out_dir=tmp_path / "audit"))
    assert rep.measurement.model("deployed").latency_at(1).p50_ms <= 1000.0
    assert rep.sets  # the attack sets travelled with it, and the corruption set
    assert [s.name for s in rep.corruption.sets] == ["gaussian_noise_s3"]
    assert not (out / ".best-candidate").exists()
    # resume: one trial more, the first two neither run again nor rebuilt, the reference reused
    before = _points(out)
    ref_time = (out / "reference" / "reference.json").stat().st_mtime_ns
    second = optimize(_cfg(zoo_checkpoint.path, out, trials=3, max_latency_ms=1000.0, profile=quick, **CORRUPT))
    assert second.ran == 1 and _stored_trials(out) == 3
    after = _points(out)
    assert all(after[name] == t for name, t in before.items())
    assert (out / "reference" / "reference.json").stat().st_mtime_ns == ref_time


def _corruption_right(model, corrupted) -> int:
    """How many of the corruption set's samples a plain onnxruntime session on ``model`` gets right."""
    import numpy as np
    import onnxruntime as ort

    with np.load(corrupted, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return int(np.sum(np.argmax(s.run(None, {s.get_inputs()[0].name: x})[0], axis=1) == y))


def test_aim_corruption_ranks_by_the_pooled_corruption_accuracy(tmp_path):
    from types import SimpleNamespace

    from edgerobust.research.optimize.choose import ranked
    from edgerobust.research.optimize.report import closing_line
    from edgerobust.workstation.attacks.spec import make_specs
    from edgerobust.workstation.corrupt.registry import DEFAULT_CORRUPTIONS

    base = dict(attacks=make_specs("fgsm", "8/255"), max_latency_ms=1.0)
    assert OptimizeConfig("m.pt", out=tmp_path, aim="corruption", **base).corruptions == DEFAULT_CORRUPTIONS
    assert OptimizeConfig("m.pt", out=tmp_path, **base).corruptions == ()  # aim robust: none unless asked
    with pytest.raises(UsageError, match="`corruptions` is none"):
        OptimizeConfig("m.pt", out=tmp_path, aim="corruption", corruptions="none", **base)
    pooled = lambda v: {"value": v, "ci_low": None, "ci_high": None, "k": 1, "n": 2}  # noqa: E731
    acc = {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95}
    a = {"number": 0, "config": "a", "feasible": True, "check_ms": 0.02, "latency": {"kind": "measured", "p50_ms": 0.02},
         "robust": dict(acc, value=0.95), "clean": acc, "corruption": pooled(0.5)}
    b = dict(a, number=1, config="b", robust=dict(acc, value=0.85), corruption=pooled(0.7))
    ref = dict(a, number=None, config="ref", reference=True, corruption=pooled(0.6))
    assert [r["config"] for r in ranked([a, b, ref], "corruption")] == ["b", "ref", "a"]
    assert [r["config"] for r in ranked([a, b, ref], "robust")][0] == "a"
    line = closing_line(SimpleNamespace(chosen=b, reference=ref, budget_ms=1.0, audited=None, aim="corruption"))
    assert "under common corruptions 70.0% (pooled over the sets)" in line
    assert "+10.0 points corruption accuracy over the reference (ref: 60.0%" in line


@pytest.mark.slow
def test_impossible_budget_names_the_fastest_point(zoo_checkpoint, quick, tmp_path):
    from edgerobust.research.optimize.search import optimize

    out = tmp_path / "opt"
    with pytest.raises(QualityGateError) as err:
        optimize(_cfg(zoo_checkpoint.path, out, trials=2, max_latency_ms=0.0001, profile=quick))
    text = str(err.value)
    assert "No point met the budget of 0.0001 ms p50. The fastest found, " in text
    assert "ms (measured)" in text and "(bound from the measured base, not built)" in (out / "report.html").read_text()
    assert not (out / "best").exists() and not (out / ".best-candidate").exists()
    data = json.loads((out / "pareto.json").read_text())["_data"]
    skipped = [t for t in data["trials"] if t["state"] == "skipped"]
    assert skipped and all("not built" in t["why"] for t in skipped)  # cheap before dear: never built


@pytest.mark.slow
def test_estimate_labels_every_latency_and_checks_the_band(zoo_checkpoint, tiny_calibration_file, quick, tmp_path):
    """With a calibration, every latency is an estimate with its band; the budget meets the upper edge."""
    from edgerobust.research.optimize.search import optimize

    cal = tiny_calibration_file[0]  # conftest: `calibrate` on a 0.05 grid, one pass
    out = tmp_path / "opt"
    try:
        result = optimize(_cfg(zoo_checkpoint.path, out, trials=2, min_speedup=1.01, estimate=str(cal), profile=quick))
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


def _study_cfg(tmp_path, **kw):
    from edgerobust.workstation.attacks.spec import make_specs

    kw.setdefault("max_latency_ms", 1.0)
    kw.setdefault("profile", "laptop-cpu-1thread")
    return OptimizeConfig("m.pt", out=tmp_path / "o", attacks=make_specs("fgsm", "8/255"), trials=3, **kw)


@pytest.mark.parametrize("profile,match", [("raspberry-pi-5", "is another device"), ("no-such-profile", "")],
                         ids=["another-device", "unknown-profile"])
def test_profile_of_another_device_or_unknown_is_refused_before_anything_is_written(profile, match, tmp_path):
    """Without `estimate`, latency is measured here: a profile of another device (or none) is refused first."""
    from edgerobust.errors import EdgeRobustError
    from edgerobust.research.optimize.search import optimize

    cfg = _study_cfg(tmp_path, profile=profile)
    with pytest.raises(EdgeRobustError, match=match or None) as err:
        optimize(cfg)
    if match:
        assert isinstance(err.value, UsageError) and "`estimate`" in str(err.value)
        assert "--" not in str(err.value)  # config fields, not CLI flags
    assert not (tmp_path / "o").exists()


def test_a_rerun_with_changed_settings_is_refused_naming_them(tmp_path):
    import optuna

    from edgerobust.edge.audit import resolve_profile
    from edgerobust.research.optimize.search import _study, fingerprint

    out = tmp_path / "o"
    out.mkdir()
    cfg = _study_cfg(tmp_path)
    prof, _ = resolve_profile(cfg.profile)
    _study(optuna, cfg, out, fp=fingerprint(cfg, prof))
    import dataclasses

    _study(optuna, dataclasses.replace(cfg, trials=9), out, fp=fingerprint(dataclasses.replace(cfg, trials=9), prof))
    changed = dataclasses.replace(cfg, max_clean_drop=1.0, space=SearchSpace(sparsity_max=0.6))
    with pytest.raises(UsageError, match="was made with other settings") as err:
        _study(optuna, changed, out, fp=fingerprint(changed, prof))
    text = str(err.value)
    assert "`max_clean_drop`" in text and "`space.sparsity_max`" in text and "another `out`" in text
    assert "`trials`" not in text


def test_a_trial_left_running_by_a_kill_is_marked_failed(tmp_path):
    import optuna

    from edgerobust.research.optimize.search import _study

    out = tmp_path / "o"
    out.mkdir()
    cfg = _study_cfg(tmp_path)
    _study(optuna, cfg, out).ask()  # left running, as a killed run leaves it
    again = _study(optuna, cfg, out)
    assert [x.state.name for x in again.trials] == ["FAIL"]


def test_the_searched_precisions_follow_the_profiles_runtime(tmp_path):
    from edgerobust.research.optimize import space as S

    cfg = _study_cfg(tmp_path)
    assert S.precisions(cfg, "cpu") == ("int8", "fp32")
    assert S.precisions(cfg, "tensorrt") == ("int8", "fp16", "fp32")
    assert S.precisions(cfg, "cuda") == ("fp16", "fp32")  # int8 QDQ falls back to the CPU there
    assert S.precisions(_study_cfg(tmp_path, space={"precisions": ("fp16",)}), "cpu") == ("fp16",)
    with pytest.raises(UsageError, match="precisions"):
        _study_cfg(tmp_path, space={"precisions": ("int4",)})


def test_halving_stops_a_point_worse_than_the_best_on_the_same_rows(tmp_path):
    """The first rung's per-row outcomes go to Optuna's WilcoxonPruner, paired with the best feasible trial's."""
    from types import SimpleNamespace

    import numpy as np
    import optuna

    from edgerobust.research.optimize.search import _halter, _pruner
    from edgerobust.research.optimize.trial import first_rung

    cfg = _study_cfg(tmp_path)
    assert [first_rung(SimpleNamespace(cfg=cfg, rows=np.arange(n))) for n in (359, 100, 50)] == [90, 64, 50]
    assert first_rung(SimpleNamespace(cfg=_study_cfg(tmp_path, halving=False), rows=np.arange(359))) == 359
    assert first_rung(SimpleNamespace(cfg=_study_cfg(tmp_path, aim="speed"), rows=np.arange(359))) == 359
    study = optuna.create_study(direction="maximize", pruner=_pruner(optuna, cfg))
    rows = np.random.default_rng(0).permutation(359)[:90]
    rng = np.random.default_rng(1)

    def run(p_robust):
        t = study.ask()
        ok = rng.random(90) < p_robust
        seen = {}
        stop = _halter(t, seen)(rows, ok)
        t.set_constraint("budget", -1.0)  # feasible
        study.tell(t, seen.get("estimate", float(ok.mean())))
        return stop

    assert run(0.9) is None  # the first: nothing to compare with
    assert run(0.88) is None  # about as good: scored on every row
    stop = run(0.3)
    assert stop is not None and "stopped at the first rung" in stop and "WilcoxonPruner (p < 0.05)" in stop
    assert "of 90 rows" in stop
    assert study.best_trial.number != 2  # the stopped trial's paired estimate cannot pass for the best
    assert study.trials[2].value < study.best_trial.value


def test_a_failing_candidate_leaves_no_candidate_folder_and_a_stale_best_is_removed(tmp_path, monkeypatch, caplog):
    from types import SimpleNamespace

    from edgerobust.research.optimize import choose as C

    def boom(ctx, p, out):
        (out / "half").mkdir(parents=True)
        raise RuntimeError("compress failed")

    monkeypatch.setattr(C, "_compress", boom)
    ctx = SimpleNamespace(out=tmp_path, cfg=SimpleNamespace(aim="robust", min_speedup=None), budget_ms=1.0)
    rec = {"feasible": True, "robust": {"value": 0.5}, "check_ms": 0.5, "params": {}, "config": "c"}
    with pytest.raises(RuntimeError):
        C.choose(ctx, [rec])
    assert not (tmp_path / ".best-candidate").exists()
    (tmp_path / "best").mkdir()
    C.clear_best(tmp_path)
    assert not (tmp_path / "best").exists() and "removed" in caplog.text
    from edgerobust.cli import _RESUMABLE

    assert "optimize" in _RESUMABLE  # Ctrl-C says the finished points are kept, not "Nothing half-written is left"


def test_a_calibration_missing_the_base_kernels_is_one_message(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import edgerobust.edge.estimate.predict as P
    from edgerobust.research.optimize.search import base_estimate

    monkeypatch.setattr(P, "predict_model", lambda cal, role, path: SimpleNamespace(
        p50_ms=None, low_ms=None, high_ms=None, missing=("int8",)))
    with pytest.raises(UsageError, match="`estimate` calibration lacks the kernels of the base model's int8"):
        base_estimate(None, tmp_path / "base.onnx")


def test_a_speedup_budget_is_checked_against_the_base_of_the_same_run():
    from types import SimpleNamespace

    from edgerobust.research.optimize.trial import judge

    cfg = SimpleNamespace(min_speedup=2.0, aim="robust", max_clean_drop=100.0)
    ctx = SimpleNamespace(cfg=cfg, budget_ms=1.25)  # from an early base measurement of 2.5 ms
    lat = {"kind": "measured", "p50_ms": 1.0, "low_ms": None, "high_ms": None, "base_p50_ms": 1.9}
    rec = judge(ctx, {"latency": lat, "clean_drop": 0.0})
    assert not rec["feasible"] and rec["speedup"] == pytest.approx(1.9) and "below `min_speedup` 2" in rec["why"]
    rec = judge(ctx, {"latency": dict(lat, base_p50_ms=2.1), "clean_drop": 0.0})
    assert rec["feasible"] and rec["within_budget"]


def test_every_latency_names_its_kind_and_the_band_edge():
    from types import SimpleNamespace

    from edgerobust.research.optimize.choose import closest_error
    from edgerobust.research.optimize.report import _lat, closing_line, fmt_latency

    est = {"kind": "estimated", "p50_ms": 0.4, "low_ms": 0.3, "high_ms": 0.5}
    assert fmt_latency({"kind": "measured", "p50_ms": 0.4}) == "0.4 ms (measured)"
    assert fmt_latency(est) == "0.4 ms (estimated, band 0.3-0.5 ms)"
    assert "band upper edge" in fmt_latency(est, edge=True) and "estimated" in fmt_latency(est, edge=True)
    assert _lat({"bound_ms": 0.2, "bound_kind": "estimated"}) == "≥ 0.2 ms (bound from the estimated base, not built)"
    trial = {"config": "c", "number": 3, "check_ms": 0.5, "latency": est, "why": "w", "feasible": False,
             "within_budget": False}
    result = SimpleNamespace(trials=[trial], reference=None, budget_ms=0.45, aim="robust", tried=[])
    text = str(closest_error(result))
    assert "runs at 0.5 ms (estimated: the band upper edge; p50 0.4 ms, band 0.3-0.5 ms)" in text
    chosen = dict(trial, clean={"value": 0.9, "ci_low": 0.8, "ci_high": 0.95}, robust=None)
    line = closing_line(SimpleNamespace(chosen=chosen, reference=None, budget_ms=1.0,
                                        audited=dict(est, kind="estimated"), aim="robust"))
    assert "its full audit: 0.5 ms (estimated: the band upper edge" in line


@pytest.mark.slow
def test_a_run_killed_during_a_trial_resumes_with_the_same_front(zoo_checkpoint, searched, quick, tmp_path):
    """A trial left running (a kill) is marked failed; the rerun runs the missing trials only."""
    import optuna

    from edgerobust.edge.audit import resolve_profile
    from edgerobust.research.optimize.search import KIND, _study, fingerprint, optimize
    from edgerobust.research.sweep import prepare_out

    plain = searched[1]  # the same settings, never killed
    cfg = _cfg(zoo_checkpoint.path, tmp_path / "killed", trials=2, max_latency_ms=1000.0, profile=quick, **CORRUPT)
    prepare_out(tmp_path / "killed", KIND, overwrite=False, fresh=False)
    _study(optuna, cfg, tmp_path / "killed", fp=fingerprint(cfg, resolve_profile(cfg.profile)[0])).ask()
    resumed = optimize(cfg)
    assert resumed.ran == 2 and len(resumed.trials) == 2
    key = lambda r: sorted((t["config"], t["state"], (t.get("robust") or {}).get("value")) for t in r.trials)  # noqa: E731
    assert key(resumed) == key(plain)
    assert resumed.reference["robust"] == plain.reference["robust"]


def test_the_reference_point_is_a_candidate_and_named_as_such():
    from types import SimpleNamespace

    from edgerobust.research.optimize.choose import closest_error, ranked
    from edgerobust.research.optimize.report import closing_line

    lat = {"kind": "measured", "p50_ms": 0.03}
    ref = {"reference": True, "number": None, "config": "s=0.5 int8 (compress's defaults)", "feasible": True,
           "check_ms": 0.03, "latency": lat, "robust": {"value": 0.9, "ci_low": 0.8, "ci_high": 0.95},
           "clean": {"value": 0.99, "ci_low": 0.97, "ci_high": 1.0}, "within_budget": False, "why": "w"}
    trial = dict(ref, reference=False, number=0, config="c", robust={"value": 0.8, "ci_low": 0.7, "ci_high": 0.9},
                 check_ms=0.05)
    assert ranked([trial, ref], "robust")[0] is ref
    line = closing_line(SimpleNamespace(chosen=ref, reference=ref, budget_ms=1.0, audited=None, aim="robust"))
    assert "(the reference point)" in line and "no trial beat the reference point" in line
    err = closest_error(SimpleNamespace(trials=[trial], reference=ref, budget_ms=0.01, aim="robust", tried=[]))
    assert "The fastest found, s=0.5 int8 (compress's defaults) (the reference point), runs at 0.03 ms" in str(err)


def test_a_candidate_is_judged_by_its_own_audit_speedup_and_host():
    from types import SimpleNamespace

    from edgerobust.research.optimize.choose import _misses

    ctx = SimpleNamespace(cfg=SimpleNamespace(min_speedup=2.0), budget_ms=0.05)
    audited = {"kind": "measured", "p50_ms": 0.1, "check_ms": 0.1, "speedup": 2.2, "host_matches": True}
    assert _misses(ctx, audited) is None  # over the run's first base / 2, but 2.2x its own audit's base
    assert "speedup of 1.5x" in _misses(ctx, dict(audited, speedup=1.5))
    assert "not the profile's device" in _misses(ctx, dict(audited, host_matches=False))


def test_precisions_are_derived_once_from_the_fp32_point_and_reused(tmp_path):
    """int8 and fp16 come from the point's fp32 file (no re-prune), keyed by their settings, reused on a rerun."""
    from types import SimpleNamespace

    import numpy as np

    from edgerobust.edge.files.bundle import EvalSet
    from edgerobust.research.optimize.derive import derive
    from edgerobust.workstation.pipeline.target import resolve_target
    from onnx_models import mlp_weights, ort_predictions, save_mlp

    (tmp_path / "points").mkdir()
    save_mlp(tmp_path / "points" / "fp32.onnx", mlp_weights(0))
    x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    ctx = SimpleNamespace(out=tmp_path, plan=resolve_target("laptop-cpu"), shared=SimpleNamespace(data_digest="d"),
                          ev=EvalSet(x=x, y=np.zeros(64, dtype=np.int64)))
    int8 = {"precision": "int8", "calibration": "minmax", "keep_fp32": "none"}
    assert derive(ctx, "points/fp32.onnx", {"precision": "fp32"})["path"] == "points/fp32.onnx"
    a = derive(ctx, "points/fp32.onnx", int8)
    b = derive(ctx, "points/fp32.onnx", dict(int8, calibration="percentile"))
    f = derive(ctx, "points/fp32.onnx", {"precision": "fp16"})
    assert len({a["path"], b["path"], f["path"]}) == 3 and all(p["path"].startswith("derived/") for p in (a, b, f))
    assert f["fp16_agreement"] > 0.9 and a["fp16_agreement"] is None
    ref = ort_predictions(tmp_path / "points" / "fp32.onnx", x)
    assert (ort_predictions(tmp_path / f["path"], x) == ref).mean() == f["fp16_agreement"]
    stamp = (tmp_path / a["path"]).stat().st_mtime_ns
    assert derive(ctx, "points/fp32.onnx", int8) == a and (tmp_path / a["path"]).stat().st_mtime_ns == stamp
    (tmp_path / a["path"]).write_bytes(b"tampered")  # a changed file is derived again, not trusted
    assert derive(ctx, "points/fp32.onnx", int8) == a and (tmp_path / a["path"]).read_bytes() != b"tampered"


def test_a_trial_stopped_by_ctrl_c_prints_no_traceback_of_optunas(capfd):
    """Found by the crash test: Optuna logged the stopped trial with its traceback before the CLI's line."""
    import optuna

    from edgerobust.research.optimize.search import _quiet

    def objective(trial):
        raise KeyboardInterrupt

    with _quiet(optuna), pytest.raises(KeyboardInterrupt):
        optuna.create_study().optimize(objective, n_trials=1)
    assert "Traceback" not in capfd.readouterr().err
